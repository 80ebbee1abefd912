"""Command handlers: how zdupgrade runs a shell command on a node.

``make_handler`` picks the implementation from ``node.transport``; the SSH handler
(and with it fabric/paramiko) is imported only when a node needs it.
"""
from __future__ import annotations

from typing import Any

from zdu.model import Node, SshSettings
from zdu.transport.base import CommandHandler

__all__ = ["CommandHandler", "make_handler"]


def make_handler(node: Node, settings: SshSettings, **kw: Any) -> CommandHandler:
    """A handler for ``node``: :class:`~zdu.transport.ssh.SshHandler` for ``transport: ssh``,
    :class:`~zdu.transport.local.LocalHandler` for ``transport: local``.

    Keyword arguments (``on_host_key_accepted``, ``sleep``, ``backoff``) go to the SSH
    handler; the local handler ignores them.
    """
    if node.transport == "local":
        from zdu.transport.local import LocalHandler
        return LocalHandler(node, settings)
    if node.transport == "ssh":
        from zdu.transport.ssh import SshHandler
        return SshHandler(node, settings, **kw)
    raise ValueError(f"{node.name}: unknown transport {node.transport!r}")
