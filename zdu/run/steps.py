"""Running one step of a plan: a command, a health gate or a request, on one node.

:meth:`StepRunner.run` never raises for anything that happens while the step runs: a
non-zero exit, a timeout, a lost node, a health gate that does not hold, and also an
unexpected exception (a bug, a library that raises what it should not) all come back as a
:class:`StepResult` with a :class:`~zdu.status.FailureKind`, so that every fault reaches the
rollback policy.  It records ``StepStarted`` / ``StepFinished`` with masked text.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from ..errors import TransportError, UnreachableError
from ..model import CommandResult
from ..planning.masking import Masker
from ..planning.plan import Plan, PlannedRequest, PlannedStep
from ..status import FailureKind, StepKind
from ..transport.base import STEP_TAG, CommandHandler
from ..model import Node
from . import events as ev
from .state import Recorder, StepRecord
from .waits import run_wait

Handlers = Callable[[Node], CommandHandler]


@dataclass(frozen=True)
class StepResult:
    """How one step ended."""

    failure: FailureKind | None
    message: str = ""
    exit_code: int | None = None
    stdout: str = ""
    stderr: str = ""
    polls: int = 0
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        return self.failure is None


class StepRunner:
    """Runs steps over the run's connections and records what they did."""

    def __init__(self, plan: Plan, recorder: Recorder, handlers: Handlers, *, command_timeout: float = 600.0,
                 stop: Callable[[], bool] = lambda: False, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.plan = plan
        self.recorder = recorder
        self.handlers = handlers
        self.command_timeout = command_timeout
        self.stop = stop
        self.clock = clock
        self.sleep = sleep
        self.mask: Masker = plan.masker

    def run(self, step: PlannedStep, *, interruptible: bool = True) -> StepResult:
        """Run ``step``; ``interruptible=False`` (rollbacks) lets health gates run to their end
        even after an interrupt."""
        node: str | None = step.node
        target = ""
        if step.node in self.plan.hosts:       # control or another host: not a node of the run
            node, target = None, step.node
        self.recorder.emit(ev.StepStarted(node=node, phase=step.phase, key=step.key, name=step.name,
                                          kind=step.kind, command=step.shown, target=target))
        started = self.clock()
        try:
            result = self._run(step, interruptible)
        except TransportError as exc:
            kind = FailureKind.TIMEOUT if exc.kind == "timeout" else FailureKind.UNREACHABLE
            result = StepResult(kind, exc.detail)
        except Exception as exc:  # noqa: BLE001 - a bug must still reach the rollback policy
            result = StepResult(FailureKind.ERROR, f"internal error while running the step: "
                                                   f"{type(exc).__name__}: {exc}")
        duration = self.clock() - started
        result = StepResult(result.failure, self.mask(result.message)[:2000], result.exit_code,
                            self.mask(result.stdout), self.mask(result.stderr), result.polls, duration)
        self.recorder.emit(ev.StepFinished(
            node=node, phase=step.phase, key=step.key, name=step.name, kind=step.kind, command=step.shown,
            exit_code=result.exit_code, failure=result.failure, duration=duration, message=result.message,
            polls=result.polls, stdout=result.stdout, stderr=result.stderr, target=target))
        return result

    # ------------------------------------------------------------------ kinds

    def _handler(self, name: str) -> CommandHandler:
        return self.handlers(self.plan.target(name))

    def tag(self, key: str) -> str:
        """What a step's command finds in ``$ZDU_STEP``: this run and the step."""
        return f"{self.plan.run_id}/{key}"

    def end_lost(self, record: StepRecord) -> None:
        """A resume: the run that died had ``record``'s step in flight, and it may still be
        running on its node.  End it before anything else runs there, and say what was found."""
        where = record.node or record.target          # a node, or a host of the topology
        node = record.node or None
        about = "" if node else f"{where}: "
        try:
            ended = self._handler(where).end_lost_step(self.tag(record.key))
        except TransportError as exc:
            # the handler runs nothing more there: the node's next step fails as unreachable
            self.recorder.emit(ev.Warned(node=node, message=self.mask(
                f"{about}step {record.name!r} ({record.phase.value}) was running when the run died and may "
                f"still be running: {exc.detail}")))
            return
        if ended is None:
            message = (f"{about}step {record.name!r} ({record.phase.value}) was running when the run died; "
                       "this node cannot tell whether it still runs, and it is run again now")
        elif ended:
            message = (f"{about}step {record.name!r} ({record.phase.value}) of the run that died was still "
                       "running; it was ended before the resume went on")
        else:
            return
        self.recorder.emit(ev.Warned(node=node, message=self.mask(message)))

    def _run(self, step: PlannedStep, interruptible: bool) -> StepResult:
        if step.kind is StepKind.RUN:
            assert step.command is not None
            output = self._handler(step.node).run(step.command, timeout=step.timeout or self.command_timeout,
                                                  env={STEP_TAG: self.tag(step.key)})
            return _command_result(output, self.mask)
        if step.kind is StepKind.WAIT:
            return self._wait(step, interruptible)
        if step.kind is StepKind.HTTP:
            assert step.request is not None
            return self._request(step.node, step.request)
        raise NotImplementedError(f"step kind {step.kind}")

    def _request(self, name: str, request: PlannedRequest) -> StepResult:
        from .http import http_request, judge_response    # urllib and ssl: only a profile with http steps
        if request.where == "node":
            assert request.curl is not None
            output = self._handler(name).run(request.curl, timeout=request.timeout + 10)
            if output.error:
                return _command_result(output, self.mask)
            body, _, code = output.stdout.rpartition("\n")
            if output.exit_code != 0 or not code.strip().isdigit():
                detail = (self.mask(output.stderr).strip().splitlines() or ["no answer"])[-1][:300]
                return StepResult(FailureKind.FAILED, f"{request.method} {request.url}: {detail}",
                                  output.exit_code, output.stdout, output.stderr)
            status, text = int(code), body
        else:
            answer = http_request(request)
            if answer.error:
                return StepResult(FailureKind.FAILED, f"{request.method} {request.url}: {answer.error}")
            status, text = answer.status, answer.body
        judged = judge_response(request, status, text, self.mask)
        return StepResult(None if judged is None else FailureKind.FAILED, judged or f"status {status}",
                          status, text[:65536], "")

    def _wait(self, step: PlannedStep, interruptible: bool) -> StepResult:
        wait = step.wait
        assert wait is not None
        handler = self._handler(step.node) if wait.where == "node" else None

        def on_node(command: str, timeout: float) -> CommandResult:
            assert handler is not None
            result = handler.run(command, timeout=timeout)
            if result.error == "unreachable":  # the node is gone, not unhealthy
                raise UnreachableError(step.node, "the connection was lost while polling the health gate")
            return result
        outcome = run_wait(wait, run_on_node=on_node, clock=self.clock, sleep=self.sleep,
                           stop=self.stop if interruptible else (lambda: False), mask=self.mask)
        message = f"{outcome.message} ({outcome.polls} check(s), {outcome.waited:.2f}s)"
        if outcome.ok:
            return StepResult(None, message, polls=outcome.polls)
        kind = FailureKind.INTERRUPTED if outcome.interrupted else FailureKind.FAILED
        return StepResult(kind, message, polls=outcome.polls)


def _command_result(output: CommandResult, mask: Masker) -> StepResult:
    """The step's result; a failed one's message is the last line of its output, masked before
    it is cut to 300 characters (a cut would leave a piece of a secret the masker cannot know)."""
    if output.error:
        kind = FailureKind.TIMEOUT if output.error == "timeout" else FailureKind.UNREACHABLE
        what = "timed out" if kind is FailureKind.TIMEOUT else output.error
        return StepResult(kind, f"{what} after {output.duration:.1f}s", output.exit_code,
                          output.stdout, output.stderr)
    if output.exit_code != 0:
        last = mask(output.stderr or output.stdout).strip().splitlines()
        message = f"exit code {output.exit_code}" + (f": {last[-1][:300]}" if last else "")
        return StepResult(FailureKind.FAILED, message, output.exit_code, output.stdout, output.stderr)
    return StepResult(None, "", 0, output.stdout, output.stderr)
