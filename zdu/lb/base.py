"""The load-balancer hook interface.

A hook takes a node out of traffic before the disruptive part of its upgrade
(``disable``: drain, then stop sending) and puts it back once it is healthy
(``enable``).  ``check`` runs before anything changes and refuses, with a clear
message, a load balancer that cannot be reached or does not know a node.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Sequence

from zdu.model import Node


@dataclass(frozen=True)
class LbResult:
    """The outcome of one hook action."""

    ok: bool
    message: str = ""
    duration: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)


class LoadBalancer(abc.ABC):
    """Base class of every load-balancer hook."""

    #: the name shown in plans and logs
    name: str = "lb"

    def check(self, nodes: Sequence[Node]) -> None:
        """Raise LoadBalancerError if the hook cannot act on every node; change nothing."""

    @abc.abstractmethod
    def disable(self, node: Node) -> LbResult:
        """Take ``node`` out of traffic, waiting for it to drain; never raises for a refusal."""

    @abc.abstractmethod
    def enable(self, node: Node) -> LbResult:
        """Put ``node`` back in traffic, waiting until the balancer sees it healthy."""

    def describe(self, action: str, node: Node) -> str:
        """One line for ``--dry-run``: what ``action`` on ``node`` will do."""
        return f"{self.name} {action} {node.lb_name}"

    def close(self) -> None:
        """Release connections (idempotent)."""
