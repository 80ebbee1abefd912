"""The one owner of a run's connections.

Preflight, the fleet lock, the conductor and a load balancer reached over SSH (``via:``) all
ask :class:`Connections` for a node's handler; each node has one handler (one SSH connection,
opened on first use, reused), and :meth:`Connections.close` closes them all once.
"""
from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Mapping

from ..errors import ConfigError
from ..model import Node, Topology
from .base import CommandHandler

#: ``(node_name, key_type, fingerprint)`` when accept-new trusted a new host key
HostKeyCallback = Callable[[str, str, str], None]
HandlerFactory = Callable[[Node], CommandHandler]

_VIA = re.compile(r"(?:([A-Za-z0-9._-]+)@)?([A-Za-z0-9][A-Za-z0-9.\-]*|\[[0-9a-fA-F:]+\])(?::(\d{1,5}))?")


class Connections:
    """One handler per node, created on first use; thread-safe."""

    def __init__(self, topology: Topology, on_host_key: HostKeyCallback | None = None, *,
                 factory: HandlerFactory | None = None, targets: Mapping[str, Any] | None = None,
                 on_warning: Callable[[str], None] | None = None,
                 give_up: Callable[[], bool] = lambda: False) -> None:
        """``give_up()`` true: a connect that fails is not tried again (the caller was
        interrupted before it changed anything, and wants out, not the remaining retries)."""
        self._pool: Any = None
        if factory is None:
            from . import make_handler, make_pool
            known = dict(targets or {})

            def factory(node: Node) -> CommandHandler:
                if self._pool is None and node.transport == "ssh":
                    # made on first use: a dry run never imports the SSH stack
                    self._pool = make_pool(on_warning=on_warning, give_up=give_up)
                extra: dict[str, Any] = {"pool": self._pool, "on_warning": on_warning}
                if node.name in known:
                    extra["target"] = known[node.name]
                return make_handler(node, topology.ssh, on_host_key_accepted=on_host_key, **extra)
        self._factory = factory
        self._topology = topology
        self._handlers: dict[str, CommandHandler] = {}
        self._lock = threading.Lock()

    def __call__(self, node: Node) -> CommandHandler:
        """The handler of ``node`` (not necessarily connected yet: its ``run`` connects)."""
        with self._lock:
            handler = self._handlers.get(node.name)
            if handler is None:
                handler = self._handlers[node.name] = self._factory(node)
            return handler

    def by_name(self, name: str) -> CommandHandler:
        """The handler of a topology node, or of another host given as ``[user@]host[:port]``
        (a load balancer reached over SSH: ``load_balancer.via``)."""
        try:
            return self(self._topology.node(name))
        except KeyError:
            pass
        match = _VIA.fullmatch(name)
        if not match or (match.group(3) and not 0 < int(match.group(3)) < 65536):
            raise ConfigError(f"load_balancer.via: {name[:80]!r} is neither a node of the topology nor "
                              "[user@]host[:port]")
        user, host, port = match.groups()
        return self(Node(name=f"lb-{host.strip('[]')}", host=host.strip("[]"), port=int(port or 22), user=user))

    def abandon_connects(self) -> int:
        """End the SSH handshakes under way at once (see :meth:`SshPool.abandon_connects`): for an
        interrupt before anything changed, so that a node that accepts and never answers does not
        hold the exit back until its ``connect_timeout``.  How many were ended."""
        pool = self._pool
        return pool.abandon_connects() if pool is not None else 0

    def opened(self) -> list[str]:
        """Names of the nodes a handler was created for."""
        with self._lock:
            return list(self._handlers)

    def close(self) -> None:
        """Close every connection (idempotent); closing never raises."""
        with self._lock:
            handlers, self._handlers = list(self._handlers.values()), {}

        def close(handler: CommandHandler) -> None:
            try:
                handler.close()
            except Exception:  # noqa: BLE001 - closing must not hide the run's real outcome
                pass
        if len(handlers) > 1:
            # a connection takes a few ms to close (its transport thread is joined): 100 in a row
            # held the end of a run back by half a second
            with ThreadPoolExecutor(max_workers=min(16, len(handlers))) as pool:
                list(pool.map(close, handlers))
        else:
            for handler in handlers:
                close(handler)
        if self._pool is not None:
            try:
                self._pool.close()
            except Exception:  # noqa: BLE001
                pass
