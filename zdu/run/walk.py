"""The walk: which nodes go through the online phases together (waves), in which order."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from ..planning.plan import Plan


@dataclass(frozen=True)
class Wave:
    """Nodes upgraded in parallel; the next wave starts when all of them are done."""

    number: int                   # 1-based
    nodes: tuple[str, ...]


class Walker:
    """Yields the plan's waves in order."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan

    def waves(self) -> Iterator[Wave]:
        for number, nodes in enumerate(self.plan.waves, 1):
            if nodes:
                yield Wave(number, tuple(nodes))
