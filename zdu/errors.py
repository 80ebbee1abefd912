"""zdupgrade's exception types.

Every error a user can cause or meet carries a message that names what is
wrong and where; ``cli`` prints it without a traceback.  Transport errors
(refused, auth, host key, timeout) raised by third-party libraries are mapped
to these types in ``transport/ssh.py`` and nowhere else.
"""
from __future__ import annotations


class ZduError(Exception):
    """Base of every error zdupgrade reports to the user."""


class ConfigError(ZduError):
    """A bad topology, profile, option or directory: nothing has been contacted."""


class TemplateError(ConfigError):
    """A profile template that does not render (syntax error, undefined variable)."""


class TransportError(ZduError):
    """The command could not be run on the node at all (as opposed to running and failing)."""

    #: how the conductor classifies the failure: "unreachable" or "timeout"
    kind = "unreachable"

    def __init__(self, node: str, message: str) -> None:
        super().__init__(f"{node}: {message}")
        self.node = node
        self.detail = message


class UnreachableError(TransportError):
    """Connection refused, no route, DNS failure, connect timeout, dropped connection."""


class AuthError(TransportError):
    """The node refused our credentials."""


class HostKeyError(TransportError):
    """The node's host key is unknown or does not match what we expect."""

    def __init__(self, node: str, message: str, *, expected: str | None = None,
                 offered: str | None = None) -> None:
        super().__init__(node, message)
        self.expected = expected
        self.offered = offered


class CommandTimeout(TransportError):
    """The command did not finish within its timeout."""

    kind = "timeout"


class LoadBalancerError(ZduError):
    """The load balancer refused or failed an action, or cannot be reached."""


class LockError(ZduError):
    """Another run holds the fleet lock."""
