"""The command-handler interface: run one shell command on one node."""
from __future__ import annotations

import abc

from zdu.model import CommandResult, Node


class CommandHandler(abc.ABC):
    """Runs commands on one node over one reused connection.

    ``run`` returns a :class:`CommandResult` for every command that ran, whatever its
    exit code.  A command that outlives ``timeout`` gives a result with
    ``exit_code=None, error="timeout"``.  Failing to reach the node at all raises a
    :class:`zdu.errors.TransportError` subclass (unreachable, auth, host key).
    """

    def __init__(self, node: Node) -> None:
        self.node = node

    @abc.abstractmethod
    def open(self) -> None:
        """Connect (idempotent).  Raises TransportError with a clear message."""

    @abc.abstractmethod
    def run(self, command: str, *, timeout: float | None = None,
            env: dict[str, str] | None = None) -> CommandResult:
        """Run ``command`` through the node's shell; never raises for a non-zero exit."""

    @abc.abstractmethod
    def close(self) -> None:
        """Drop the connection (idempotent)."""

    def __enter__(self) -> "CommandHandler":
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
