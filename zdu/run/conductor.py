"""The conductor: walks the plan and hands each failure to the rollback coordinator.

It is assembled from parts that each do one thing and return their result as a value:

* :class:`~zdu.run.walk.Walker` -- which nodes go together (waves);
* :class:`NodeRunner` -- a node's phases, and the online sequence around the load balancer;
* :class:`~zdu.run.steps.StepRunner` -- one step (command, gate, request) -> ``StepResult``;
* :class:`~zdu.run.gate.LbGate` -- the only way in and out of traffic -> ``LbOutcome``;
* :class:`~zdu.run.rollback.RollbackCoordinator` -- the policy's decisions -> ``Verdict``.

Nothing here prints or writes files: every change is an event given to the
:class:`~zdu.run.state.Recorder`, which the logs, run.json and the console follow.

Order of a run:
  1. EXPORT on every node (``parallel`` at a time), then UPGRADE on every node.
     Any failure there stops the run; nothing running has been changed.
  2. Wave by wave: for each node PRE-APPLY, load balancer disable, APPLY, POST-APPLY (with the
     smoke checks last), load balancer enable.  Nodes of one wave run in parallel; every
     failure of a wave goes to the policy.
  3. Whatever happened, every node still out of the load balancer is put back if it runs a
     known, health-checked version, and reported loudly otherwise.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

from ..lb.base import LoadBalancer
from ..planning.plan import Plan
from ..status import OFFLINE_PHASES, FailureKind, LbState, Outcome, Phase, Status
from . import events as ev
from .gate import LbGate
from .policy import Action, Policy, default_policy
from .rollback import Failure, RollbackCoordinator, first_failure
from .state import Recorder
from .steps import Handlers, StepRunner
from .walk import Walker

__all__ = ["Conductor", "Failure", "NodeRunner"]


class NodeRunner:
    """Runs one node's phases; returns a :class:`Failure` or None."""

    def __init__(self, plan: Plan, recorder: Recorder, steps: StepRunner, gate: LbGate,
                 stop: Callable[[], bool], done: frozenset[str] = frozenset()) -> None:
        self.plan = plan
        self.recorder = recorder
        self.steps = steps
        self.gate = gate
        self.stop = stop
        self.done = done            # keys of steps that passed before a resume

    def phase(self, name: str, phase: Phase) -> Failure | None:
        """Run one phase of ``name`` (skipped if it passed before a resume)."""
        if self.recorder.node(name).passed(phase):
            return None
        steps = self.plan.node_plan(name).phases[phase]
        self.recorder.emit(ev.PhaseStarted(node=name, phase=phase, steps=len(steps)))
        failure: Failure | None = None
        for step in steps:
            if step.key in self.done:
                continue
            if self.stop():
                failure = Failure(name, phase, FailureKind.INTERRUPTED, f"interrupted before step {step.name!r}")
                break
            result = self.steps.run(step)
            if not result.ok:
                assert result.failure is not None
                failure = Failure(name, phase, result.failure, f"step {step.name!r}: {result.message}",
                                  result.exit_code)
                break
        self._finish(name, phase, failure)
        return failure

    def _finish(self, name: str, phase: Phase, failure: Failure | None) -> None:
        if failure is None:
            self.recorder.emit(ev.PhaseFinished(node=name, phase=phase, outcome=Outcome.PASSED, code=0))
        else:
            self.recorder.emit(ev.PhaseFinished(node=name, phase=phase, outcome=Outcome.FAILED,
                                                code=failure.exit_code, failure=failure.kind,
                                                message=failure.message))

    def _lb_failure(self, name: str, phase: Phase, message: str) -> Failure:
        failure = Failure(name, phase, FailureKind.LB, message)
        self._finish(name, phase, failure)
        return failure

    def online(self, name: str) -> Failure | None:
        """PRE-APPLY, take out, APPLY, POST-APPLY, put back."""
        failure = self.phase(name, Phase.PRE_APPLY)
        if failure:
            return failure
        node = self.recorder.node(name)
        finished = node.passed(Phase.APPLY) and node.passed(Phase.POST_APPLY)
        if not finished:
            if self.stop():
                return Failure(name, Phase.PRE_APPLY, FailureKind.INTERRUPTED,
                               "interrupted before the node was taken out of the load balancer")
            if node.lb is not LbState.OUT:   # in rotation, or uncertain after a kill: (re)take it out
                out = self.gate.take_out(name)
                if not out.ok:
                    return self._lb_failure(name, Phase.APPLY, f"load balancer disable failed: {out.message}")
            for phase in (Phase.APPLY, Phase.POST_APPLY):
                failure = self.phase(name, phase)
                if failure:
                    return failure
        if self.recorder.node(name).lb is LbState.IN:
            return None
        back = self.gate.put_back(name)
        if not back.ok:
            return self._lb_failure(name, Phase.POST_APPLY, f"load balancer enable failed: {back.message}")
        return None

    def guarded(self, work: Callable[[str], Failure | None], name: str, phase: Phase) -> Failure | None:
        """``work(name)``, with an unexpected exception turned into a failure of ``phase``."""
        try:
            return work(name)
        except Exception as exc:  # noqa: BLE001 - every node's outcome must reach the policy
            message = f"internal error: {type(exc).__name__}: {exc}"
            self.recorder.emit(ev.Warned(node=name, message=self.plan.mask(message)))
            return Failure(name, phase, FailureKind.ERROR, self.plan.mask(message))


class Conductor:
    """Runs one plan against real nodes."""

    def __init__(self, plan: Plan, recorder: Recorder, *, handlers: Handlers, lb: LoadBalancer,
                 policy: Policy = default_policy, command_timeout: float = 600.0,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 stop_event: threading.Event | None = None, resume: bool = False,
                 walker: Walker | None = None) -> None:
        self.plan = plan
        self.recorder = recorder
        self.stop_event = stop_event or threading.Event()
        self.resume = resume
        stop = self.stop_event.is_set
        self.steps = StepRunner(plan, recorder, handlers, command_timeout=command_timeout, stop=stop,
                                clock=clock, sleep=sleep)
        self.gate = LbGate(plan, recorder, lb)
        self.rollback = RollbackCoordinator(plan, recorder, self.steps, self.gate, policy)
        done = recorder.query(lambda s: frozenset(
            r.key for r in s.steps if r.ended is not None and r.error is None and r.phase is not Phase.ROLLBACK)
        ) if resume else frozenset()
        self.nodes = NodeRunner(plan, recorder, self.steps, self.gate, stop, done)
        self.walker = walker or Walker(plan)

    def execute(self) -> Status:
        """Run the plan; return the run's status (also recorded by ``RunFinished``)."""
        self.recorder.emit(ev.RunStarted(message=f"run {self.plan.run_id}: {len(self.plan.nodes)} node(s), "
                                                 f"profile {self.plan.profile}", resumed=self.resume))
        status = Status.FATAL_ERROR
        try:
            status = self._run()
        except Exception as exc:  # noqa: BLE001 - a bug must still leave the fleet in the load balancer
            self.recorder.emit(ev.Warned(message=self.plan.mask(f"internal error: {type(exc).__name__}: {exc}")))
            status = Status.FATAL_ERROR
        finally:
            left_out = self.gate.restore()
            status = self._final(status, left_out)
            self.recorder.emit(ev.RunFinished(status=status, message=str(status)))
        return status

    # ------------------------------------------------------------------ the walk

    def _run(self) -> Status:
        if self.resume:
            resumed = self._resume_decided()
            if resumed is not None:
                return resumed
        for phase in OFFLINE_PHASES:
            failures = self._offline(phase)
            if failures:
                return self._decide(failures)[0]
        first: Status | None = None
        for wave in self.walker.waves():
            if self.stop_event.is_set():
                status, _ = self._decide([Failure(wave.nodes[0], Phase.PRE_APPLY, FailureKind.INTERRUPTED,
                                                  "interrupted before the wave started")])
                return status
            failures = self._wave(wave.nodes)
            if not failures:
                continue
            status, stop = self._decide(failures)
            if stop:
                return status
            first = first or status
        return first or Status.SUCCESS

    def _offline(self, phase: Phase) -> list[Failure]:
        names = self._active()
        workers = max(1, min(self.plan.parallel, len(names)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"zdu-{phase.value}") as pool:
            results = list(pool.map(lambda n: self.nodes.guarded(lambda x: self.nodes.phase(x, phase), n, phase),
                                    names))
        return [f for f in results if f is not None]

    def _wave(self, names: Sequence[str]) -> list[Failure]:
        if len(names) == 1:
            result = self.nodes.guarded(self.nodes.online, names[0], Phase.APPLY)
            return [result] if result else []
        with ThreadPoolExecutor(max_workers=len(names), thread_name_prefix="zdu-wave") as pool:
            results = list(pool.map(lambda n: self.nodes.guarded(self.nodes.online, n, Phase.APPLY), names))
        return [f for f in results if f is not None]

    def _active(self) -> list[str]:
        return self.recorder.query(lambda s: s.active_nodes)

    # ------------------------------------------------------------------ decisions

    def _decide(self, failures: Sequence[Failure]) -> tuple[Status, bool]:
        verdict = self.rollback.decide(failures)
        rolled_back = self.rollback.roll_back_queue()
        return self._decided_status(first_failure(failures), rolled_back), verdict.stop

    def _decided_status(self, failure: Failure, rolled_back: bool) -> Status:
        if not rolled_back or self._a_rollback_failed():
            return Status.ROLLBACK_FAILED
        if failure.kind is FailureKind.INTERRUPTED:
            return Status.INTERRUPTED
        return failure.phase.failed_status

    def _a_rollback_failed(self) -> bool:
        return self.recorder.query(lambda s: any(
            n.rollback is not None and n.rollback.outcome is Outcome.FAILED for n in s.nodes.values()))

    def _resume_decided(self) -> Status | None:
        """A run killed after its policy decided to stop: finish the rollbacks, report the status."""
        stopping, queue, decisions = self.recorder.query(
            lambda s: (s.stopping, list(s.rollback_queue), list(s.decisions)))
        if not stopping and not queue:
            return None
        if queue:
            self.recorder.emit(ev.Noted(message=f"resuming the rollback: {', '.join(queue)}"))
        rolled_back = self.rollback.roll_back_queue()
        if not stopping:
            return None if rolled_back else Status.ROLLBACK_FAILED
        first = next((d for d in decisions if d.action != Action.CONTINUE.value), decisions[0])
        return self._decided_status(Failure(first.node, first.phase, first.classification, first.reason),
                                    rolled_back)

    def _final(self, status: Status, left_out: list[str]) -> Status:
        if left_out and status in (Status.SUCCESS, Status.INTERRUPTED):
            status = Status.ROLLBACK_FAILED
        if self.stop_event.is_set() and status not in (Status.SUCCESS, Status.ROLLBACK_FAILED):
            status = Status.INTERRUPTED
        return status
