"""The command-handler interface: run one shell command on one node."""
from __future__ import annotations

import abc
from typing import Iterable

from zdu.errors import TransportError, UnreachableError
from zdu.model import CommandResult, Node

#: the environment variable every step's command gets: ``RUN-ID/STEP-KEY`` (the step key is
#: ``node/PHASE/index``); over SSH the node's driver also notes it while the step runs, so that a
#: resume can find the step if the run died under it (:meth:`CommandHandler.end_lost_step`)
STEP_TAG = "ZDU_STEP"


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

    def end_lost_step(self, tag: str) -> bool | None:
        """End the step ``tag`` (see :data:`STEP_TAG`) if a run that died left it running on the
        node: True when it was running and was ended, False when it is not running, None when
        this transport cannot tell (nothing was done).  Raises TransportError when it cannot
        be ended or the node does not answer."""
        return None

    def __enter__(self) -> "CommandHandler":
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BastionError(UnreachableError):
    """A jump host on the way to the node failed: dead, refused, its host key refused,
    our credentials refused, or it will not forward.  ``bastion`` names it (as written in
    proxy_jump / ssh_config, with its ``user@address:port``); ``reason`` is one of
    ``"unreachable"``, ``"auth"``, ``"host-key"``, ``"forwarding"``; ``problem`` is the
    message about the bastion alone, the same for every node behind it (see
    :func:`group_bastion_errors`)."""

    def __init__(self, node: str, bastion: str, reason: str, problem: str) -> None:
        super().__init__(node, f"cannot reach the node through bastion {bastion}: {problem}")
        self.bastion = bastion
        self.reason = reason
        self.problem = problem


class InvalidCommandError(TransportError):
    """The command cannot be sent at all (a character that is not UTF-8, a NUL byte, an
    invalid environment name); nothing ran.  The message never quotes the command."""


def group_bastion_errors(errors: Iterable[tuple[str, BaseException]]
                         ) -> tuple[list[str], list[tuple[str, BaseException]]]:
    """Split per-node connect errors into one line per failed bastion and the rest.

    ``errors`` are ``(node_name, exception)`` pairs, in node order; the lines read
    ``bastion X: <problem>; nodes behind it: a, b, c``.  The rest keeps its order.
    """
    by_bastion: dict[tuple[str, str], list[str]] = {}
    rest: list[tuple[str, BaseException]] = []
    for node, exc in errors:
        if isinstance(exc, BastionError):
            by_bastion.setdefault((exc.bastion, exc.problem), []).append(node)
        else:
            rest.append((node, exc))
    # a problem that ends a sentence ("... -f FILE).") must not read ".; nodes behind it"
    lines = [f"bastion {bastion}: {problem.rstrip('.')}; nodes behind it: {', '.join(nodes)}"
             for (bastion, problem), nodes in by_bastion.items()]
    return lines, rest
