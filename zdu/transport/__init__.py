"""Command handlers: how zdupgrade runs a shell command on a node.

``make_handler`` picks the implementation from ``node.transport``; the SSH handler
(and with it fabric/paramiko) is imported only when a node needs it.

The SSH handlers of one run should share one :func:`make_pool` (jump-host connections,
parsed known_hosts, warnings reported once): ``make_handler(node, settings, pool=pool,
target=targets[node.name], on_warning=log.warning)``; ``pool.close()`` at the end.
"""
from __future__ import annotations

from typing import Any

from zdu.model import Node, SshSettings
from zdu.transport.base import (BastionError, CommandHandler, InvalidCommandError,
                                group_bastion_errors)

__all__ = ["BastionError", "CommandHandler", "InvalidCommandError", "group_bastion_errors",
           "make_handler", "make_pool"]


def make_pool(**kw: Any) -> Any:
    """A new :class:`~zdu.transport.ssh.SshPool` (``failure_ttl``, ``on_warning``, ``give_up``)."""
    from zdu.transport.ssh import SshPool
    return SshPool(**kw)


def make_handler(node: Node, settings: SshSettings, **kw: Any) -> CommandHandler:
    """A handler for ``node``: :class:`~zdu.transport.ssh.SshHandler` for ``transport: ssh``,
    :class:`~zdu.transport.local.LocalHandler` for ``transport: local``.

    Keyword arguments (``target``, ``pool``, ``on_host_key_accepted``, ``on_warning``,
    ``sleep``, ``backoff``) go to the SSH handler; the local handler ignores them.
    """
    if node.transport == "local":
        from zdu.transport.local import LocalHandler
        return LocalHandler(node, settings)
    if node.transport == "ssh":
        from zdu.transport.ssh import SshHandler
        return SshHandler(node, settings, **kw)
    raise ValueError(f"{node.name}: unknown transport {node.transport!r}")
