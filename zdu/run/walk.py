"""The walk: what the online part of a run goes through, in order.

Tier by tier (a topology without tiers is one tier), wave by wave; a :class:`Pause` after a wave
where the serial list or ``--pause-after-wave`` says so; a tier's :class:`Gate` after its last
wave (before a pause after that wave).  Waves never mix tiers.  The walker only says what comes next; the conductor does it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Mapping

from ..planning.plan import Plan, PlannedTier


@dataclass(frozen=True)
class Wave:
    """Nodes upgraded in parallel; the next wave starts when all of them are done."""

    number: int                   # 1-based, across tiers
    nodes: tuple[str, ...]
    tier: PlannedTier


@dataclass(frozen=True)
class Pause:
    """The run waits for the operator after wave ``after``."""

    after: int


@dataclass(frozen=True)
class Gate:
    """The tier's gate must hold before the next tier starts."""

    tier: PlannedTier


Item = Wave | Pause | Gate


class Walker:
    """Yields the plan's waves, pauses and gates in order."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan

    def items(self) -> Iterator[Item]:
        number = 0
        for tier in self.plan.tiers:
            for index, nodes in enumerate(tier.waves):
                number += 1
                if nodes:
                    yield Wave(number, tuple(nodes), tier)
                last = index == len(tier.waves) - 1
                if last and tier.gate:
                    # a pause after a tier's last wave comes once its gate held: the operator
                    # decides on a tier known to be healthy
                    yield Gate(tier)
                if number - 1 in self.plan.pauses:
                    yield Pause(number)
            if tier.gate and not tier.waves:
                yield Gate(tier)

    def waves(self) -> Iterator[Wave]:
        return (item for item in self.items() if isinstance(item, Wave))


def needed(minimum: int | str, total: int) -> int:
    """How many nodes ``min_in_service`` asks for: a count, or a percentage of ``total`` rounded up."""
    if isinstance(minimum, int):
        return minimum
    return math.ceil(total * float(minimum.strip().rstrip("%")) / 100)


def capacity(plan: Plan, wave: Wave, serving: Mapping[str, bool]) -> tuple[int, int, list[str]] | None:
    """The capacity guard for ``wave``: (nodes that would still serve, nodes needed, the guard's
    scope) or None when no guard applies.  ``serving`` says which nodes serve now."""
    checks = []
    if plan.min_in_service is not None:
        checks.append(([n.name for n in plan.backend_nodes], plan.min_in_service))
    if wave.tier.min_in_service is not None:
        checks.append((list(wave.tier.scope), wave.tier.min_in_service))  # --limit's left-out nodes too
    worst: tuple[int, int, list[str]] | None = None
    for scope, minimum in checks:
        left = sum(1 for n in scope if serving.get(n, False) and n not in wave.nodes)
        want = needed(minimum, len(scope))
        if worst is None or left - want < worst[0] - worst[1]:
            worst = (left, want, scope)
    return worst
