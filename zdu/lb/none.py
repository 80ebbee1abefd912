"""The ``none`` load-balancer hook: for fleets without one (traffic is not managed)."""
from __future__ import annotations

from zdu.model import Node
from zdu.lb.base import LbResult, LoadBalancer


class NoLoadBalancer(LoadBalancer):
    """Does nothing and always succeeds; the run log says traffic was not managed."""

    name = "none"

    def disable(self, node: Node) -> LbResult:
        return LbResult(True, "no load balancer configured: traffic not managed")

    def enable(self, node: Node) -> LbResult:
        return LbResult(True, "no load balancer configured: traffic not managed")

    def describe(self, action: str, node: Node) -> str:
        return f"none ({action} {node.name}: nothing to do, traffic is not managed)"
