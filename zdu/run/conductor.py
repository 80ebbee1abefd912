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

import dataclasses
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Sequence

from ..lb.base import LoadBalancer
from ..planning.plan import Plan, PlannedStep, PlannedTier
from ..status import OFFLINE_PHASES, FailureKind, LbState, Outcome, Phase, Status, Version
from . import events as ev
from .gate import LbGate
from .policy import Action, Policy, default_policy
from .rollback import Failure, RollbackCoordinator, Verdict, first_failure
from .state import DecisionRecord, Recorder, RunState
from .steps import Handlers, StepRunner
from .walk import Gate, Pause, Walker, Wave, capacity

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


@dataclass(frozen=True)
class PauseRequest:
    """What the operator is asked at a pause."""

    run_id: str
    wave: int                     # the wave just finished (1-based)
    waves: int                    # how many the plan has
    timeout: float
    on_timeout: str               # abort | continue
    done: tuple[str, ...]         # nodes upgraded so far
    rolled_back: tuple[str, ...] = ()   # nodes rolled back within the failure budget so far


@dataclass(frozen=True)
class PauseAnswer:
    answer: str                   # continue | abort | abort-keep | interrupted
    by: str = ""


#: waits at a pause and returns the operator's answer (the CLI asks the terminal and watches
#: for ``zdupgrade continue``/``abort``); the default answers at once with the timeout's action
Pauser = Callable[[PauseRequest, Callable[[], bool]], PauseAnswer]


#: seconds between two looks at the clock and the interrupt during a soak, and between two
#: questions to the load balancer
SOAK_TICK, SOAK_POLL = 0.5, 5.0


def _timeout_pauser(request: PauseRequest, stop: Callable[[], bool]) -> PauseAnswer:
    return PauseAnswer(request.on_timeout, "no operator (no pauser)")


class Conductor:
    """Runs one plan against real nodes."""

    def __init__(self, plan: Plan, recorder: Recorder, *, handlers: Handlers, lb: LoadBalancer,
                 policy: Policy = default_policy, command_timeout: float = 600.0,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 stop_event: threading.Event | None = None, resume: bool = False,
                 walker: Walker | None = None, pauser: Pauser = _timeout_pauser,
                 repair: Sequence[str] = ()) -> None:
        self.plan = plan
        self.recorder = recorder
        self._clock, self._sleep = clock, sleep
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
        self.done = done
        self.nodes = NodeRunner(plan, recorder, self.steps, self.gate, stop, done)
        self.walker = walker or Walker(plan)
        self.pauser = pauser
        self.repair = tuple(repair)
        self._partial: list[str] = []
        #: nodes an earlier attempt of this run already decided about and went on past (rolled
        #: back within the failure budget, or left as they were by a CONTINUE): a resume walks
        #: them no more -- their steps that passed before the rollback are not "done" any longer,
        #: and running the rest again would half-upgrade them -- and keeps their status
        self._settled: frozenset[str] = frozenset()
        self._earlier: Status | None = None
        if resume:
            decisions = recorder.query(lambda s: list(s.decisions))
            self._settled = frozenset(d.node for d in decisions)
            self._partial = [d.node for d in decisions if d.within_budget]
            kept = next((d for d in decisions if not d.within_budget), None)
            if kept is not None:
                self._earlier = self._decided_status(_failure_of(kept), True)

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
            if status in (Status.SUCCESS, Status.PARTIAL) and self._lost_after_put_back(None):
                status = self._degraded(status)
            if status is Status.SUCCESS and self.plan.after:     # every node made it (not PARTIAL)
                status = self._after(status)
            self.recorder.emit(ev.RunFinished(status=status, message=str(status)))
        return status

    # ------------------------------------------------------------------ the walk

    def _run(self) -> Status:
        if self.resume:
            self._end_lost_steps()
        if self.repair:
            return self._repair()
        if self.resume:
            resumed = self._resume_decided()
            if resumed is not None:
                return resumed
        if self.plan.before and not self._run_phase(Phase.BEFORE, "before", self.plan.before):
            return Status.BEFORE_FAILED
        for phase in OFFLINE_PHASES:
            failures = self._offline(phase)
            if failures:
                return self._decide(failures)[0]
        first: Status | None = self._earlier
        for item in self.walker.items():
            if isinstance(item, Pause):
                status, stop = self._pause(item.after), True
            elif isinstance(item, Gate):
                status, stop = self._tier_gate(item.tier)
            elif not (item := self._still_in(item)).nodes:
                continue                          # every node of the wave was left out (already upgraded)
            elif self._lost_after_put_back(item.number, soak=self._pending(item)):
                # a node put back earlier died since (a new version crashing under load): taking
                # out more nodes would leave fewer serving; the operator looks first
                status, stop = Status.DEGRADED, True
            else:
                status, stop = self._online(item)
            if status is None:
                continue
            if stop:
                return status
            first = first or status
        if self._partial and first in (None, Status.PARTIAL):
            return Status.PARTIAL
        return first or Status.SUCCESS

    def _online(self, wave: Wave) -> tuple[Status | None, bool]:
        """One wave: (None, False) when it went well; else the status it names and whether the
        run stops (a CONTINUE decision, or failures within the budget, go on)."""
        if self.stop_event.is_set():
            return self._decide([Failure(wave.nodes[0], Phase.PRE_APPLY, FailureKind.INTERRUPTED,
                                         "interrupted before the wave started")])[0], True
        if not self._capacity_ok(wave):
            return Status.CAPACITY_REFUSED, True
        failures = self._wave(wave.nodes)
        if not failures:
            return None, False
        budget = wave.tier.max_fail_percentage if wave.tier.max_fail_percentage is not None \
            else self.plan.max_fail_percentage
        if budget is not None and len(failures) >= len(wave.nodes):
            # ansible's meaning: a batch in which every host failed ends the play, whatever the budget
            self.recorder.emit(ev.Warned(message=f"every node of wave {wave.number} failed: the failure budget "
                                                f"({budget:g}%) does not carry the run past a whole wave"))
            budget = None
        verdict, status = self._decided(failures, budget=budget, wave_size=len(wave.nodes))
        if verdict.stop or status is Status.ROLLBACK_FAILED:
            return status, True
        if verdict.within_budget:
            self._partial.extend(f.node for f in failures)
            return Status.PARTIAL, False
        return status, False

    def _offline(self, phase: Phase) -> list[Failure]:
        names = self._active()
        workers = max(1, min(self.plan.parallel, len(names)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"zdu-{phase.value}") as pool:
            results = list(pool.map(lambda n: self.nodes.guarded(lambda x: self.nodes.phase(x, phase), n, phase),
                                    names))
        return [f for f in results if f is not None]

    def _wave(self, names: Sequence[str]) -> list[Failure]:
        names = [n for n in names if n in self._active() and n not in self._settled]
        if len(names) == 1:
            result = self.nodes.guarded(self.nodes.online, names[0], Phase.APPLY)
            return [result] if result else []
        with ThreadPoolExecutor(max_workers=max(1, len(names)), thread_name_prefix="zdu-wave") as pool:
            results = list(pool.map(lambda n: self.nodes.guarded(self.nodes.online, n, Phase.APPLY), names))
        return [f for f in results if f is not None]

    def _active(self) -> list[str]:
        return self.recorder.query(lambda s: s.active_nodes)

    # ------------------------------------------------------------------ run-level steps

    def _run_phase(self, phase: Phase, label: str, steps: Sequence[PlannedStep]) -> bool:
        """before / after / a control gate: run the steps once, in order; True if all passed."""
        if self.recorder.query(lambda s: s.run_phases.get(label)) is not None and \
                self.recorder.query(lambda s: s.run_phases[label].outcome) is Outcome.PASSED:
            return True
        self.recorder.emit(ev.RunPhaseStarted(phase=phase, label=label, steps=len(steps)))
        for step in steps:
            if step.key in self.done:
                continue
            if self.stop_event.is_set() and phase is Phase.BEFORE:
                self.recorder.emit(ev.RunPhaseFinished(phase=phase, label=label, outcome=Outcome.FAILED,
                                                       failure=FailureKind.INTERRUPTED,
                                                       message=f"interrupted before step {step.name!r}"))
                return False
            result = self.steps.run(step, interruptible=phase is Phase.BEFORE)
            if not result.ok:
                self.recorder.emit(ev.RunPhaseFinished(
                    phase=phase, label=label, outcome=Outcome.FAILED, code=result.exit_code, failure=result.failure,
                    message=f"step {step.name!r} on {step.node}: {result.message}"))
                return False
        self.recorder.emit(ev.RunPhaseFinished(phase=phase, label=label, outcome=Outcome.PASSED, code=0))
        return True

    def _after(self, status: Status) -> Status:
        """The after: steps, once, at the end of a run whose nodes all made it.  Interrupted
        before they start, none runs and the run says so: INTERRUPTED, and a resume runs them
        (every node stays on the new version and in the load balancer)."""
        if self.stop_event.is_set():
            message = ("interrupted after every node was upgraded, before the after: steps: none of them ran "
                       f"(zdupgrade --resume {self.plan.run_id} runs them)")
            self.recorder.emit(ev.Warned(message=message))
            self.recorder.emit(ev.RunPhaseStarted(phase=Phase.AFTER, label="after", steps=len(self.plan.after)))
            self.recorder.emit(ev.RunPhaseFinished(phase=Phase.AFTER, label="after", outcome=Outcome.FAILED,
                                                   failure=FailureKind.INTERRUPTED, message=message))
            return Status.INTERRUPTED
        if not self._run_phase(Phase.AFTER, "after", self.plan.after):
            return Status.AFTER_FAILED
        return status

    def _still_in(self, wave: Wave) -> Wave:
        """``wave`` without the nodes this run leaves out (preflight found them already upgraded):
        the capacity guard counts only the nodes it takes out."""
        active = set(self._active())
        nodes = tuple(n for n in wave.nodes if n in active)
        return wave if nodes == wave.nodes else dataclasses.replace(wave, nodes=nodes)

    def _pending(self, wave: Wave) -> bool:
        """Whether ``wave`` has a node still to upgrade (a resume walks past waves that are done:
        they get no soak of their own)."""
        return self.recorder.query(lambda s: any(
            n not in self._settled and not (s.nodes[n].passed(Phase.POST_APPLY) and s.nodes[n].lb is LbState.IN)
            for n in wave.nodes if n in s.nodes and not s.nodes[n].skipped))

    def _lost_after_put_back(self, wave: int | None, *, soak: bool = True) -> bool:
        """Whether a node this run put back is no longer serving, asked of the load balancer before
        ``wave`` (None: at the end).  With ``soak``, the nodes put back are watched that long first
        (asked every SOAK_POLL s; a node lost meanwhile ends the watch at once).  Before a wave,
        False once interrupted (the interrupt is what the run reports); at the end an interrupt
        cuts the soak short, and the balancer is still asked once."""
        if self.stop_event.is_set() and wave is not None:
            return False
        seconds = self.plan.soak if soak else 0.0
        if seconds > 0 and not self.stop_event.is_set() and self.gate.returned():
            when = f"wave {wave}" if wave is not None else "the end of the run"
            self.recorder.emit(ev.Noted(message=f"soak: watching the nodes put back for {seconds:g}s before {when}"))
            deadline = asked = self._clock()
            deadline += seconds
            while not self.stop_event.is_set() and self._clock() < deadline:
                self._sleep(min(SOAK_TICK, max(0.0, deadline - self._clock())))
                if self._clock() - asked >= SOAK_POLL and self._clock() < deadline:
                    asked = self._clock()
                    if self.gate.check_serving(wave, quiet=True):
                        return True
            if self.stop_event.is_set() and wave is not None:
                return False
        return bool(self.gate.check_serving(wave))

    def _degraded(self, status: Status) -> Status:
        """The end of a run in which a node put back is not serving: DEGRADED; its after: steps
        (a clean-up, the old installation removed) are not run while it is so, and a
        ``--resume`` once it serves checks again and runs them."""
        if status is Status.SUCCESS and self.plan.after:
            message = ("not run: a node put back by the run is not serving (see the warning); once it serves "
                       f"again, zdupgrade --resume {self.plan.run_id} checks again and runs them")
            self.recorder.emit(ev.RunPhaseStarted(phase=Phase.AFTER, label="after", steps=len(self.plan.after)))
            self.recorder.emit(ev.RunPhaseFinished(phase=Phase.AFTER, label="after", outcome=Outcome.FAILED,
                                                   failure=FailureKind.LB, message=message))
        return Status.DEGRADED

    def _tier_gate(self, tier: PlannedTier) -> tuple[Status | None, bool]:
        """The gate after a tier: every step on each node of the tier (in parallel) or from the
        control machine; a node where it does not hold is a failure that goes to the policy."""
        label = f"gate {tier.name}"
        done = self.recorder.query(lambda s: s.run_phases.get(label))
        if done is not None and done.outcome is Outcome.PASSED:
            return None, False
        active = set(self._active())
        steps = [s for s in tier.gate if s.node in active or s.node in self.plan.hosts]
        self.recorder.emit(ev.RunPhaseStarted(phase=Phase.GATE, label=label, steps=len(steps)))
        by_node: dict[str, list[PlannedStep]] = {}
        for step in steps:
            by_node.setdefault(step.node, []).append(step)

        def hold(name: str) -> Failure | None:
            for step in by_node[name]:
                result = self.steps.run(step)
                if not result.ok:
                    who = name if name not in self.plan.hosts else tier.nodes[-1]
                    return Failure(who, Phase.GATE, result.failure or FailureKind.FAILED,
                                   f"gate of tier {tier.name}: step {step.name!r} on {name}: {result.message}",
                                   result.exit_code)
            return None
        with ThreadPoolExecutor(max_workers=max(1, len(by_node)), thread_name_prefix="zdu-gate") as pool:
            failures = [f for f in pool.map(lambda n: self.nodes.guarded(hold, n, Phase.GATE), list(by_node)) if f]
        self.recorder.emit(ev.RunPhaseFinished(
            phase=Phase.GATE, label=label, outcome=Outcome.FAILED if failures else Outcome.PASSED,
            failure=failures[0].kind if failures else None, message=failures[0].message if failures else ""))
        if not failures:
            return None, False
        return self._decide(failures)

    # ------------------------------------------------------------------ pauses and capacity

    def _pause(self, wave: int) -> Status | None:
        """Wait for the operator; None to go on."""
        pauses = self.recorder.query(lambda s: [dict(p) for p in s.pauses if p["wave"] == wave])
        if pauses and pauses[-1]["ended"] is not None:
            earlier = str(pauses[-1]["answer"])
            return None if earlier == "continue" else self._aborted(earlier)
        if not pauses:
            self.recorder.emit(ev.Paused(wave=wave, timeout=self.plan.pause_timeout,
                                         on_timeout=self.plan.pause_timeout_action,
                                         message=f"paused after wave {wave} of {len(self.plan.waves)}"))
        done = tuple(self.recorder.query(lambda s: [n for n in s.switched if s.nodes[n].version.value == "new"]))
        rolled_back = tuple(self.recorder.query(lambda s: [d.node for d in s.decisions if d.within_budget]))
        request = PauseRequest(self.plan.run_id, wave, len(self.plan.waves), self.plan.pause_timeout,
                               self.plan.pause_timeout_action, done, rolled_back)
        try:
            answer = self.pauser(request, self.stop_event.is_set)
        except Exception as exc:  # noqa: BLE001 - a broken prompt must not leave the run hanging
            answer = PauseAnswer("abort", f"the pause failed ({type(exc).__name__}: {exc})")
        if self.stop_event.is_set() and answer.answer not in ("abort", "abort-keep"):
            answer = PauseAnswer("interrupted", answer.by or "a signal")
        self.recorder.emit(ev.PauseEnded(wave=wave, answer=answer.answer, by=answer.by,
                                         message=f"{answer.answer} (by {answer.by or 'unknown'})"))
        if answer.answer == "continue":
            return None
        return self._aborted(answer.answer)

    def _aborted(self, answer: str) -> Status:
        """Abort at a pause: roll back the nodes upgraded so far (not with abort-keep)."""
        if answer == "interrupted":
            self.recorder.emit(ev.RollbacksPlanned(order=(), stop=True))
            return Status.INTERRUPTED
        order: tuple[str, ...] = ()
        if answer == "abort":
            # not the nodes a failure already rolled back within the failure budget: they run the
            # old version and are back in (rolling them back again took them out once more)
            order = tuple(self.recorder.query(lambda s: [n for n in reversed(s.switched) if not _rolled_back(s, n)]))
        self.recorder.emit(ev.RollbacksPlanned(order=order, stop=True))
        return Status.ABORTED if self.rollback.roll_back_queue() else Status.ROLLBACK_FAILED

    def _capacity_ok(self, wave: Wave) -> bool:
        """The capacity guard: refuse the wave if it would leave too few nodes serving."""
        if self.plan.min_in_service is None and wave.tier.min_in_service is None:
            return True
        names = [n.name for n in self.plan.backend_nodes]
        source = "the load balancer"
        try:
            serving = self.gate.lb.serving(list(self.plan.backend_nodes))
        except Exception as exc:  # noqa: BLE001 - fall back to what the run knows
            serving, source = None, f"the run's own record (the load balancer did not answer: {exc})"
        if serving is None:
            if source == "the load balancer":
                source = "the run's own record (the hook cannot tell)"
            serving = self.recorder.query(lambda s: {n: s.nodes[n].lb.value == "in" for n in names})
        check = capacity(self.plan, wave, serving)
        if check is None:
            return True
        left, want, scope = check
        ok = left >= want
        message = (f"capacity guard before wave {wave.number}: {left} of {len(scope)} node(s) would stay in service "
                   f"(per {source}), at least {want} must" + ("" if ok else
                   f"; wave {wave.number} ({', '.join(wave.nodes)}) NOT started"))
        self.recorder.emit(ev.CapacityChecked(wave=wave.number, serving=tuple(n for n in scope if serving.get(n)),
                                              leaving=wave.nodes, needed=want, ok=ok, source=source,
                                              message=message))
        return ok

    # ------------------------------------------------------------------ decisions

    def _decide(self, failures: Sequence[Failure]) -> tuple[Status, bool]:
        verdict, status = self._decided(failures)
        return status, verdict.stop

    def _decided(self, failures: Sequence[Failure], *, budget: float | None = None,
                 wave_size: int = 0) -> tuple[Verdict, Status]:
        """Ask the policy (or the budget) about ``failures`` and carry the rollbacks out."""
        verdict = self.rollback.decide(failures, budget=budget, wave_size=wave_size)
        rolled_back = self.rollback.roll_back_queue()
        return verdict, self._decided_status(first_failure(failures), rolled_back)

    def _decided_status(self, failure: Failure, rolled_back: bool) -> Status:
        if not rolled_back or self._a_rollback_failed():
            return Status.ROLLBACK_FAILED
        if failure.kind is FailureKind.INTERRUPTED:
            return Status.INTERRUPTED
        return failure.phase.failed_status

    def _a_rollback_failed(self) -> bool:
        return self.recorder.query(lambda s: any(
            n.rollback is not None and n.rollback.outcome is Outcome.FAILED for n in s.nodes.values()))

    def _end_lost_steps(self) -> None:
        """A resume: the steps the run that died had in flight may still run on their nodes
        (its connections died with it, and sshd does not signal a session command without a
        terminal); each is ended before anything else runs on its node, in parallel."""
        hosts = self.plan.hosts
        lost = self.recorder.query(lambda s: [r for r in s.steps if r.ended is None and
                                              (r.node in s.nodes or r.target in hosts)])
        if not lost:
            return
        with ThreadPoolExecutor(max_workers=max(1, min(self.plan.parallel, len(lost))),
                                thread_name_prefix="zdu-lost-steps") as pool:
            list(pool.map(self.steps.end_lost, lost))

    def _resume_decided(self) -> Status | None:
        """A run killed after it decided to stop: finish the rollbacks, report the status."""
        self._plan_unplanned()
        stopping, queue = self.recorder.query(lambda s: (s.stopping, list(s.rollback_queue)))
        if not stopping and not queue:
            return None
        if queue:
            self.recorder.emit(ev.Noted(message=f"resuming the rollback: {', '.join(queue)}"))
        rolled_back = self.rollback.roll_back_queue()
        if not stopping:
            return None if rolled_back else Status.ROLLBACK_FAILED
        if not rolled_back:
            return Status.ROLLBACK_FAILED
        return self._recorded_status()

    def _recorded_status(self) -> Status:
        """The status the record names once its rollbacks are done: an abort (or an interrupt) at
        a pause; else the first decision that was not a CONTINUE, or the first one (a run that
        went on past a CONTINUE ended with that failure's status); SUCCESS when nothing failed."""
        decisions, pauses = self.recorder.query(lambda s: (list(s.decisions), list(s.pauses)))
        aborted = next((p for p in pauses if p["answer"] in ("abort", "abort-keep", "interrupted")), None)
        if aborted is not None:
            return Status.INTERRUPTED if aborted["answer"] == "interrupted" else Status.ABORTED
        if not decisions:
            return Status.SUCCESS
        first = next((d for d in decisions if d.action != Action.CONTINUE.value), decisions[0])
        return self._decided_status(_failure_of(first), True)

    def _plan_unplanned(self) -> None:
        """A run killed between a decision (``Decided``, fsynced) and its ``RollbacksPlanned``:
        the decision is in the record, its rollbacks and its stop are not.  Plan them now, as the
        dead run would have (the failed nodes first, then the other targets in the decision's
        order), so the resume carries the decision out instead of walking on past it."""
        def unplanned(s: RunState) -> list[DecisionRecord]:
            return [d for d in s.decisions if
                    (d.action != Action.CONTINUE.value and not d.within_budget and not s.stopping) or
                    any(s.nodes[t].rollback is None and t not in s.rollback_queue for t in d.targets)]
        left = self.recorder.query(unplanned)
        if not left:
            return
        failed = [d.node for d in left]
        wanted = {t for d in left for t in d.targets}
        order = [n for n in failed if n in wanted]
        order += [t for d in left for t in d.targets if t not in order]
        stop = any(d.action != Action.CONTINUE.value and not d.within_budget for d in left)
        self.recorder.emit(ev.Noted(message=f"the run died after its decision about {', '.join(failed)}, before "
                                            "carrying it out: carrying it out now"))
        self.recorder.emit(ev.RollbacksPlanned(order=tuple(order), stop=stop))

    def _repair(self) -> Status:
        """A finished run that left nodes behind (a lost node that answers again): run their
        rollbacks again (rollback steps are idempotent), then put back every node that may serve."""
        self.recorder.emit(ev.Noted(message=f"repairing: {', '.join(self.repair)}"))
        ok = True
        for name in self.repair:
            node = self.recorder.node(name)
            failed = node.rollback is not None and node.rollback.outcome is Outcome.FAILED
            if failed or node.version.value == "unknown":
                ok = self.rollback.roll_back_node(name) and ok
        if not ok:
            return Status.ROLLBACK_FAILED
        # repairing the nodes a run left behind does not change what the run was: an abort at a
        # pause stays ABORTED, a failure the run went on past (CONTINUE) keeps its status
        return self._recorded_status()

    def _final(self, status: Status, left_out: list[str]) -> Status:
        if left_out and status in (Status.SUCCESS, Status.INTERRUPTED, Status.PARTIAL, Status.ABORTED):
            status = Status.ROLLBACK_FAILED
        # an interrupt during an abort's rollback changed nothing the operator had not decided:
        # the run still ends as aborted (83) once that rollback is done
        if self.stop_event.is_set() and status not in (Status.SUCCESS, Status.ROLLBACK_FAILED, Status.ABORTED):
            status = Status.INTERRUPTED
        return status


def _rolled_back(state: RunState, name: str) -> bool:
    """Whether ``name``'s rollback passed and left it on the old version."""
    node = state.nodes[name]
    return node.rollback is not None and node.rollback.outcome is Outcome.PASSED and node.version is Version.OLD


def _failure_of(decision: DecisionRecord) -> Failure:
    """The failure a recorded decision was about (a resume's view of it)."""
    return Failure(decision.node, decision.phase, decision.classification, decision.reason)
