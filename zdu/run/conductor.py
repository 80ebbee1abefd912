"""The conductor: executes a plan, asks the rollback policy, drives the load balancer.

It never prints: everything it does is an event (``events``) and a change of
the shared ``RunState``, which the logs, run.json and the console follow.

Order of a run:
  1. EXPORT on every node (``parallel`` at a time), then UPGRADE on every node.
     Any failure there stops the run; nothing running has been changed.
  2. Wave by wave (``serial``), for each node: PRE-APPLY, load balancer disable,
     APPLY, POST-APPLY (with the smoke checks last), load balancer enable.
     Nodes of one wave run in parallel.  After a failure the policy decides.
  3. Whatever happened, every node still out of the load balancer is put back.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable

from zdu.run import events as ev
from zdu.errors import TransportError
from zdu.run.events import Event, EventBus
from zdu.transport.base import CommandHandler
from zdu.lb.base import LbResult, LoadBalancer
from zdu.model import CommandResult, Node
from zdu.planning.plan import Plan, PlannedStep
from zdu.run.state import DecisionRecord, PhaseOutcome, RunState, StepRecord
from zdu.run.policy import Action, Decision, FailureContext, Policy, default_policy
from zdu.status import OFFLINE_PHASES, Phase, Status
from zdu.run.waits import run_wait

HandlerFactory = Callable[[Node], CommandHandler]


@dataclass(frozen=True)
class Failure:
    """Why a node stopped."""

    node: str
    phase: Phase
    classification: str          # failed | timeout | unreachable | lb | interrupted
    message: str
    exit_code: int | None = None


class Conductor:
    """Runs one plan against real nodes."""

    def __init__(self, plan: Plan, state: RunState, *, handler_factory: HandlerFactory,
                 lb: LoadBalancer, bus: EventBus, policy: Policy = default_policy,
                 command_timeout: float = 600.0, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep,
                 stop_event: threading.Event | None = None, resume: bool = False) -> None:
        self.plan = plan
        self.state = state
        self.lb = lb
        self.bus = bus
        self.policy = policy
        self.command_timeout = command_timeout
        self.clock = clock
        self.sleep = sleep
        self.stop_event = stop_event or threading.Event()
        self._factory = handler_factory
        self._handlers: dict[str, CommandHandler] = {}
        self._handler_lock = threading.Lock()
        self.resume = resume
        self._rollback_failed = False
        self._rolling_back = False
        # steps that completed in an earlier attempt of this run (resume skips them)
        self._done = {s.key for s in state.steps if s.ended is not None and not s.error
                      and s.phase != Phase.ROLLBACK.value} if resume else set()
        self._last_action: Action | None = None
        # node -> (action, ok) of the last load-balancer call this process made for it
        self._last_lb: dict[str, tuple[str, bool]] = {}

    # ------------------------------------------------------------------ public

    def execute(self) -> Status:
        """Run the plan; return the run's status (also stored in ``state.status``)."""
        self._emit(ev.RUN_STARTED, message=f"run {self.plan.run_id}: {len(self.plan.nodes)} node(s), "
                                               f"profile {self.plan.profile}")
        status = Status.FATAL_ERROR
        try:
            status = self._run()
        except Exception as exc:  # a bug must still leave the fleet in the load balancer
            self._warn(f"internal error: {type(exc).__name__}: {exc}")
            status = Status.FATAL_ERROR
        finally:
            if not self._restore_lb() and status is Status.SUCCESS:
                status = Status.ROLLBACK_FAILED
            if self.stop_event.is_set() and status is not Status.SUCCESS:
                status = Status.INTERRUPTED
            self._close_handlers()
            self.state.status = status
            self.state.ended = time.time()
            self._emit(ev.RUN_FINISHED, message=str(status), data={"status": int(status)})
        return status

    def close(self) -> None:
        self._close_handlers()

    # ------------------------------------------------------------------ run

    def _run(self) -> Status:
        if self.resume and self.state.decisions:
            return self._finish_decided_run()
        for phase in OFFLINE_PHASES:
            failures = self._offline_phase(phase)
            if failures:
                return self._handle(failures[0])
        first: Status | None = None
        for wave in self.plan.waves:
            if self.stop_event.is_set():
                return self._handle(Failure(wave[0], Phase.PRE_APPLY, "interrupted",
                                            "interrupted before the node was started"))
            failures = self._online_wave(wave)
            if not failures:
                continue
            status = self._handle(failures[0])
            for extra in failures[1:]:
                self._record_failure_only(extra)
            if self._last_action is not Action.CONTINUE:
                return status
            first = first or status
        return first or Status.SUCCESS


    def _offline_phase(self, phase: Phase) -> list[Failure]:
        names = self.plan.node_names
        workers = max(1, min(self.plan.parallel, len(names)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"zdu-{phase.value}") as pool:
            results = list(pool.map(lambda n: self._phase(n, phase), names))
        return [f for f in results if f is not None]

    def _online_wave(self, wave: Iterable[str]) -> list[Failure]:
        names = list(wave)
        if len(names) == 1:
            result = self._online_node(names[0])
            return [result] if result else []
        with ThreadPoolExecutor(max_workers=len(names), thread_name_prefix="zdu-wave") as pool:
            results = list(pool.map(self._online_node, names))
        return [f for f in results if f is not None]

    def _online_node(self, name: str) -> Failure | None:
        node_state = self.state.nodes[name]
        failure = self._phase(name, Phase.PRE_APPLY)
        if failure:
            return failure
        if self._passed(name, Phase.APPLY) and self._passed(name, Phase.POST_APPLY) and node_state.in_lb:
            return None  # finished before a resume
        if self.stop_event.is_set():
            return Failure(name, Phase.APPLY, "interrupted", "interrupted before the node was taken out")
        result = self._lb_action(name, "disable") if node_state.in_lb else LbResult(True, "already out")
        if not result.ok:
            return self._fail_phase_without_steps(name, Phase.APPLY, "lb",
                                                  f"load balancer disable failed: {result.message}")
        for phase in (Phase.APPLY, Phase.POST_APPLY):
            failure = self._phase(name, phase)
            if failure:
                return failure
        result = self._lb_action(name, "enable") if not node_state.in_lb else LbResult(True)
        if not result.ok:
            return self._fail_phase_without_steps(name, Phase.POST_APPLY, "lb",
                                                  f"load balancer enable failed: {result.message}")
        return None

    # ------------------------------------------------------------------ phases and steps

    def _passed(self, name: str, phase: Phase) -> bool:
        outcome = self.state.nodes[name].outcome(phase)
        return outcome is not None and outcome.outcome == "PASSED"

    def _phase(self, name: str, phase: Phase) -> Failure | None:
        node_state = self.state.nodes[name]
        if self._passed(name, phase):
            return None  # done before a resume
        steps = self.plan.node_plan(name).phases[phase]
        node_state.furthest = phase.value
        if phase is Phase.APPLY:
            if name not in self.state.switched:
                self.state.switched.append(name)
            node_state.version = "unknown"
        outcome = PhaseOutcome("RUNNING")
        node_state.phases[phase.value] = outcome
        self._emit(ev.PHASE_STARTED, node=name, phase=phase, message=f"{len(steps)} step(s)")
        failure: Failure | None = None
        for step in steps:
            if step.key in self._done:
                continue
            if self.stop_event.is_set():
                failure = Failure(name, phase, "interrupted", f"interrupted before step {step.name!r}")
                break
            record = self._run_step(step)
            if record.error:
                failure = Failure(name, phase, record.error, f"step {step.name!r}: {record.message}",
                                  record.exit_code)
                break
        outcome.ended = time.time()
        if failure:
            outcome.outcome = "FAILED"
            outcome.code = failure.exit_code
            outcome.classification = failure.classification
            outcome.message = failure.message
        else:
            outcome.outcome = "PASSED"
            outcome.code = 0
            if phase is Phase.APPLY:
                node_state.version = "new"
        self._emit(ev.PHASE_FINISHED, node=name, phase=phase, message=outcome.cell(),
                   data={"outcome": outcome.outcome, "code": outcome.code,
                         "classification": outcome.classification, "message": outcome.message})
        return failure

    def _fail_phase_without_steps(self, name: str, phase: Phase, classification: str, message: str) -> Failure:
        outcome = PhaseOutcome("FAILED", None, classification, message, ended=time.time())
        self.state.nodes[name].phases[phase.value] = outcome
        self._emit(ev.PHASE_FINISHED, node=name, phase=phase, message=outcome.cell(),
                   data={"outcome": "FAILED", "code": None, "classification": classification, "message": message})
        return Failure(name, phase, classification, message)

    def _run_step(self, step: PlannedStep) -> StepRecord:
        shown = self.plan.mask((step.command or "") if step.kind == "run" else (step.wait.target if step.wait else ""))
        record = StepRecord(key=step.key, node=step.node, phase=step.phase.value, name=step.name,
                            kind=step.kind, command=shown, started=time.time())
        self.state.steps.append(record)
        self._emit(ev.STEP_STARTED, node=step.node, phase=step.phase, message=step.name,
                   data={"key": step.key, "kind": step.kind, "command": shown})
        output: CommandResult | None = None
        try:
            if step.kind == "run":
                assert step.command is not None
                output = self._handler(step.node).run(step.command, timeout=step.timeout or self.command_timeout)
                record.exit_code = output.exit_code
                if output.error:
                    record.error = output.error
                    record.message = ("timed out" if output.error == "timeout" else output.error) + \
                        f" after {output.duration:.1f}s"
                elif output.exit_code != 0:
                    record.error = "failed"
                    last = (output.stderr or output.stdout).strip().splitlines()
                    record.message = f"exit code {output.exit_code}" + (f": {last[-1][:300]}" if last else "")
            else:
                assert step.wait is not None
                handler = self._handler(step.node) if step.wait.where == "node" else None
                outcome = run_wait(
                    step.wait,
                    run_on_node=lambda cmd, t: handler.run(cmd, timeout=t),  # type: ignore[union-attr]
                    clock=self.clock, sleep=self.sleep,
                    stop=(lambda: False) if self._rolling_back else self.stop_event.is_set)
                record.polls = outcome.polls
                record.message = f"{outcome.message} ({outcome.polls} check(s), {outcome.waited:.2f}s)"
                if not outcome.ok:
                    record.error = "failed"
        except TransportError as exc:
            record.error = exc.kind
            record.message = exc.detail
        record.message = self.plan.mask(record.message)
        record.ended = time.time()
        data = {"key": step.key, "kind": step.kind, "command": shown, "exit_code": record.exit_code,
                "error": record.error, "duration": record.duration, "message": record.message,
                "polls": record.polls}
        if output is not None:
            data["stdout"] = self.plan.mask(output.stdout)
            data["stderr"] = self.plan.mask(output.stderr)
        self._emit(ev.STEP_FINISHED, node=step.node, phase=step.phase, message=step.name, data=data)
        return record

    # ------------------------------------------------------------------ failures and rollback

    def _handle(self, failure: Failure) -> Status:
        """Ask the policy about ``failure`` and carry out its decision; return the run status."""
        context = FailureContext(
            node=failure.node, phase=failure.phase, classification=failure.classification,
            message=failure.message, exit_code=failure.exit_code,
            switched=tuple(n for n in self.state.switched if n != failure.node),
            results={n: {Phase(p): o.outcome for p, o in s.phases.items()} for n, s in self.state.nodes.items()})
        try:
            decision = self.policy(context)
            if not isinstance(decision, Decision):
                raise TypeError(f"returned {decision!r}, not a Decision")
        except Exception as exc:
            decision = Decision(Action.ROLLBACK_ALL if not failure.phase.is_offline else Action.ABORT,
                                f"the rollback policy failed ({exc}); falling back to the safe default")
        self._last_action = decision.action
        self.state.decisions.append(DecisionRecord(failure.node, failure.phase.value,
                                                   decision.action.value, decision.reason))
        self._emit(ev.DECISION, node=failure.node, phase=failure.phase,
                   message=f"{decision.action}: {decision.reason}",
                   data={"action": decision.action.value, "reason": decision.reason,
                         "classification": failure.classification})
        targets: list[str] = []
        if decision.action is Action.ROLLBACK_NODE:
            targets = [failure.node]
        elif decision.action is Action.ROLLBACK_ALL:
            targets = [failure.node] + [n for n in reversed(self.state.switched) if n != failure.node]
        self.state.rollback_queue = targets
        self._drain_rollback_queue()
        if decision.action is Action.CONTINUE and not self.state.nodes[failure.node].in_lb:
            self._lb_action(failure.node, "enable")
        return self._decided_status(failure.phase, failure.classification)

    def _drain_rollback_queue(self) -> None:
        """Roll back the queued nodes in order; each leaves the queue once its rollback ran."""
        self._rolling_back = True
        try:
            while self.state.rollback_queue:
                name = self.state.rollback_queue[0]
                if not self._rollback_node(name):
                    self._rollback_failed = True
                self.state.rollback_queue.pop(0)
        finally:
            self._rolling_back = False

    def _decided_status(self, phase: Phase, classification: str | None) -> Status:
        if self._rollback_failed or any(s.rollback and s.rollback.outcome == "FAILED"
                                        for s in self.state.nodes.values()):
            return Status.ROLLBACK_FAILED
        if classification == "interrupted":
            return Status.INTERRUPTED
        return phase.failed_status

    def _finish_decided_run(self) -> Status:
        """Resume a run that was killed after its policy decided: finish the rollbacks."""
        first = self.state.decisions[0]
        if self.state.rollback_queue:
            self._emit(ev.INFO, message=f"resuming the rollback: {', '.join(self.state.rollback_queue)}")
            self._drain_rollback_queue()
        phase = Phase.parse(first.phase)
        outcome = self.state.nodes[first.node].outcome(phase)
        return self._decided_status(phase, outcome.classification if outcome else None)

    def _record_failure_only(self, failure: Failure) -> None:
        self._warn(f"{failure.node}: {failure.phase} also failed in the same wave: {failure.message}")

    def _rollback_node(self, name: str) -> bool:
        node_state = self.state.nodes[name]
        if node_state.furthest is None:
            return True
        furthest = Phase.parse(node_state.furthest)
        steps = self.plan.node_plan(name).rollback_for(furthest)
        disruptive = furthest in (Phase.APPLY, Phase.POST_APPLY)
        outcome = PhaseOutcome("RUNNING")
        node_state.rollback = outcome
        self._emit(ev.ROLLBACK_STARTED, node=name, phase=Phase.ROLLBACK,
                   message=f"undoing {furthest}: {len(steps)} step(s)")
        ok = True
        message = ""
        # a failed enable (or disable) may have acted anyway: unless the last call was a
        # successful disable, the node may be taking traffic, so take it out first
        known_out = not node_state.in_lb and self._last_lb.get(name, ("disable", True)) == ("disable", True)
        if steps and disruptive and not known_out:
            result = self._lb_action(name, "disable")
            if not result.ok:
                self._warn(f"{name}: could not take the node out of the load balancer before rolling it "
                           f"back ({result.message}); rolling back anyway so the fleet runs one version")
        steps_done = 0
        for step in steps:
            record = self._run_step(step)
            if record.error:
                ok = False
                message = f"step {step.name!r}: {record.message}"
                outcome.code = record.exit_code
                outcome.classification = record.error
                break
            steps_done += 1
        if not node_state.in_lb:
            result = self._lb_action(name, "enable")
            if not result.ok:
                ok = False
                message = message or f"load balancer enable failed: {result.message}"
                outcome.classification = outcome.classification or "lb"
        outcome.outcome = "PASSED" if ok else "FAILED"
        outcome.code = 0 if ok else outcome.code
        outcome.message = message
        outcome.ended = time.time()
        if ok and disruptive:
            node_state.version = "old"
        elif disruptive and (steps_done or outcome.classification != "unreachable"):
            node_state.version = "unknown"  # the rollback changed the node, then stopped half-way
        # (a node that could not be reached for the first rollback step keeps the version it had)
        self._emit(ev.ROLLBACK_FINISHED, node=name, phase=Phase.ROLLBACK, message=outcome.cell(),
                   data={"outcome": outcome.outcome, "code": outcome.code,
                         "classification": outcome.classification, "message": message})
        return ok

    # ------------------------------------------------------------------ load balancer

    def _lb_action(self, name: str, action: str) -> LbResult:
        node = self.plan.node_plan(name).node
        node_state = self.state.nodes[name]
        node_state.lb_calls[action] += 1
        if action == "disable":
            # counted out before the call: a run killed mid-drain must know on resume
            if node_state.in_lb:
                node_state.out_since = time.time()
            node_state.in_lb = False
        self._emit(ev.LB_STARTED, node=name, message=action, data={"action": action})
        started = time.time()
        try:
            result = self.lb.disable(node) if action == "disable" else self.lb.enable(node)
        except Exception as exc:  # a hook bug is a failed action, not a crashed run
            result = LbResult(False, f"{type(exc).__name__}: {exc}", time.time() - started)
        now = time.time()
        self._last_lb[name] = (action, result.ok)
        self.state.lb_actions.append({"node": name, "action": action, "ok": result.ok, "message": result.message,
                                      "started": started, "duration": result.duration,
                                      "details": _jsonable(result.details)})
        if action == "enable" and result.ok:
            node_state.in_lb = True
            if node_state.out_since is not None:
                node_state.out_windows.append({"out": node_state.out_since, "in": now,
                                               "seconds": now - node_state.out_since})
                node_state.out_since = None
        self._emit(ev.LB_ACTION, node=name, message=f"{action}: {'ok' if result.ok else 'FAILED'}"
                                                    f"{(' - ' + result.message) if result.message else ''}",
                   data={"action": action, "ok": result.ok, "message": result.message,
                         "duration": result.duration, "details": result.details})
        return result

    def _restore_lb(self) -> bool:
        """Put back every node still out of the load balancer; False if one stays out."""
        all_in = True
        for name in self.plan.node_names:
            if self.state.nodes[name].in_lb:
                continue
            self._warn(f"{name} is still out of the load balancer at the end of the run; putting it back")
            if not self._lb_action(name, "enable").ok:
                all_in = False
                self._warn(f"!!! {name} is OUT OF THE LOAD BALANCER: enable failed; put it back by hand "
                           f"once it is healthy")
        return all_in

    # ------------------------------------------------------------------ plumbing

    def _handler(self, name: str) -> CommandHandler:
        with self._handler_lock:
            handler = self._handlers.get(name)
            if handler is None:
                handler = self._factory(self.plan.node_plan(name).node)
                self._handlers[name] = handler
        handler.open()
        return handler

    def _close_handlers(self) -> None:
        with self._handler_lock:
            handlers, self._handlers = list(self._handlers.values()), {}
        for handler in handlers:
            try:
                handler.close()
            except Exception:  # closing must not hide the run's real outcome
                pass

    def _warn(self, message: str) -> None:
        self.state.warnings.append(message)
        self._emit(ev.WARNING, message=message)

    def _emit(self, kind: str, *, node: str | None = None, phase: Phase | None = None, message: str = "",
              data: dict | None = None) -> None:
        self.bus.emit(Event(kind, node=node, phase=phase, message=message, data=data or {}))



def _jsonable(value: object) -> object:
    """``value`` with anything JSON cannot hold turned into text (hook details are free-form)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)
