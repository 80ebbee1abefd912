"""The rollback coordinator: every failure goes to the policy; its decisions are carried out.

:meth:`RollbackCoordinator.decide` asks the policy about **each** failure of a wave (nodes of a
wave run in parallel, so several can fail) and returns a :class:`Verdict`: which nodes to roll
back, in which order, and whether the run stops.  :meth:`RollbackCoordinator.roll_back` runs them.
A policy that raises or answers nonsense is replaced by the safe default for that failure.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

from ..planning.plan import Plan
from ..status import UPGRADE_PHASES, FailureKind, LbState, Outcome, Phase, Version
from . import events as ev
from ..plugins import exception_line, raise_if_interrupt
from .gate import LbGate
from .policy import Action, Decision, FailureContext, Policy
from .state import Recorder
from .steps import StepRunner

_ORDER = {p: i for i, p in enumerate(UPGRADE_PHASES)}


@dataclass(frozen=True)
class Failure:
    """Why a node stopped."""

    node: str
    phase: Phase
    kind: FailureKind
    message: str
    exit_code: int | None = None


@dataclass(frozen=True)
class Verdict:
    """What the policy decided about a set of failures."""

    decisions: tuple[tuple[Failure, Decision], ...]
    order: tuple[str, ...]         # nodes to roll back, in this order
    stop: bool                     # the run ends after the rollbacks
    within_budget: bool = False    # decided by the failure budget: roll back the failed, go on


def first_failure(failures: Sequence[Failure]) -> Failure:
    """The failure that names the run's status: the earliest phase, then wave order."""
    return min(failures, key=lambda f: _ORDER.get(f.phase, 99))


class RollbackCoordinator:
    """Asks the policy and rolls nodes back (each taken out of traffic around its rollback)."""

    def __init__(self, plan: Plan, recorder: Recorder, steps: StepRunner, gate: LbGate, policy: Policy) -> None:
        self.plan = plan
        self.recorder = recorder
        self.steps = steps
        self.gate = gate
        self.policy = policy

    # ------------------------------------------------------------------ deciding

    def decide(self, failures: Sequence[Failure], *, budget: float | None = None, wave_size: int = 0) -> Verdict:
        """Ask the policy about every failure; record each decision and the rollback order.

        With a failure ``budget`` (``max_fail_percentage``, ansible's meaning: the run stops when
        more than that share of a wave fails) failures within it are decided here: each failed
        node is rolled back and the run goes on."""
        switched, results = self.recorder.query(lambda s: (
            list(s.switched), {n: {p: o.outcome.value for p, o in node.phases.items()}
                               for n, node in s.nodes.items()}))
        failed = [f.node for f in failures]
        decisions: list[tuple[Failure, Decision]] = []
        wanted: set[str] = set()
        budgeted = self._within_budget(failures, budget, wave_size)
        for failure in failures:
            context = FailureContext(
                node=failure.node, phase=failure.phase, classification=failure.kind, message=failure.message,
                exit_code=failure.exit_code, switched=tuple(n for n in switched if n != failure.node),
                results=results, others=tuple(n for n in failed if n != failure.node))
            decision = budgeted or self._ask(context)
            targets: list[str] = []
            if decision.action is Action.ROLLBACK_NODE:
                targets = [failure.node]
            elif decision.action is Action.ROLLBACK_ALL:
                targets = [failure.node] + [n for n in reversed(context.switched)]
            wanted.update(targets)
            decisions.append((failure, decision))
            self.recorder.emit(ev.Decided(node=failure.node, phase=failure.phase, action=decision.action,
                                          reason=decision.reason, failure=failure.kind,
                                          message=failure.message, targets=tuple(targets),
                                          within_budget=budgeted is not None))
        # the failed nodes first (in wave order), then the others newest first
        order = [n for n in failed if n in wanted] + [n for n in reversed(switched) if n in wanted and n not in failed]
        stop = budgeted is None and any(d.action is not Action.CONTINUE for _, d in decisions)
        self.recorder.emit(ev.RollbacksPlanned(order=tuple(order), stop=stop))
        return Verdict(tuple(decisions), tuple(order), stop, within_budget=budgeted is not None)

    @staticmethod
    def _within_budget(failures: Sequence[Failure], budget: float | None, wave_size: int) -> Decision | None:
        if budget is None or wave_size <= 0 or any(f.phase.is_offline or f.kind is FailureKind.INTERRUPTED
                                                   for f in failures):
            return None
        share = 100.0 * len(failures) / wave_size
        if share > budget:
            return None
        return Decision(Action.ROLLBACK_NODE, f"{len(failures)} of {wave_size} node(s) of the wave failed "
                                              f"({share:.0f}%), within the failure budget of {budget:g}%: "
                                              "rolling back the failed node, going on with the others")

    def _ask(self, context: FailureContext) -> Decision:
        """The policy's decision; its reason (and the message of an exception it raised) is
        masked: a policy may quote what it was told, or a token of a service it asked."""
        mask = self.plan.mask
        try:
            decision = self.policy(context)
            if not isinstance(decision, Decision) or not isinstance(decision.action, Action):
                raise TypeError(f"returned {mask(repr(decision))[:100]}, not a Decision")
            return dataclasses.replace(decision, reason=mask(str(decision.reason)))   # its __str__ may raise too
        except BaseException as exc:  # noqa: BLE001 - a user's policy (SystemExit, its own BaseException
            raise_if_interrupt(exc)   # subclass, a raising __repr__) must not abandon the fleet mid-run
            action = Action.ABORT if context.phase.is_offline else Action.ROLLBACK_ALL
            return Decision(action, f"the rollback policy failed ({mask(exception_line(exc))[:250]}); "
                                    f"falling back to the safe default: {action}")

    # ------------------------------------------------------------------ rolling back

    def roll_back_queue(self) -> bool:
        """Roll back every node still queued, in order; False if one rollback failed."""
        ok = True
        while True:
            queue = self.recorder.query(lambda s: list(s.rollback_queue))
            if not queue:
                return ok
            ok = self.roll_back_node(queue[0]) and ok

    def roll_back_node(self, name: str) -> bool:
        """Undo what ``name`` went through (the rollback of its furthest phase); True if it is
        back on the old version (or nothing needed undoing) and back in traffic."""
        node = self.recorder.node(name)
        if node.furthest is None:
            self.recorder.emit(ev.RollbackFinished(node=name, outcome=Outcome.PASSED, version=node.version,
                                                   message="nothing to undo"))
            return True
        steps = self.plan.node_plan(name).rollback_for(node.furthest)
        disruptive = node.furthest in (Phase.APPLY, Phase.POST_APPLY)
        self.recorder.emit(ev.RollbackStarted(node=name, undoing=node.furthest, steps=len(steps)))
        if steps and disruptive and node.lb is not LbState.OUT:
            # a failed enable (or disable) may have acted anyway: the node may take traffic
            out = self.gate.take_out(name)
            if not out.ok:
                self.recorder.emit(ev.Warned(node=name, message=(
                    f"{name}: could not take the node out of the load balancer before rolling it back "
                    f"({out.message}); rolling back anyway so the fleet runs one version")))
        done = 0
        failure: FailureKind | None = None
        code: int | None = None
        message = ""
        for step in steps:
            result = self.steps.run(step, interruptible=False)
            if not result.ok:
                failure, code, message = result.failure, result.exit_code, f"step {step.name!r}: {result.message}"
                break
            done += 1
        if failure is None:
            version = Version.OLD if disruptive else node.version
        elif disruptive and (done or failure is not FailureKind.UNREACHABLE):
            version = Version.UNKNOWN     # the rollback changed the node, then stopped half-way
        else:
            version = node.version        # not reached at all: it is as it was
        self.recorder.emit(ev.RollbackFinished(node=name, outcome=Outcome.FAILED if failure else Outcome.PASSED,
                                               version=version, code=code if failure else 0, failure=failure,
                                               message=message))
        if failure is not None:
            return False
        if self.recorder.node(name).lb is LbState.IN:
            return True
        return self.gate.put_back(name).ok
