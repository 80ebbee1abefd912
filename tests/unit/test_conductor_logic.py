"""The conductor's logic with in-memory nodes and balancer: order, policy, rollback, the
load-balancer gate, interrupts and resume (fast; the real proof is tests/integration)."""
from __future__ import annotations

import threading
from typing import Any

import pytest

from tests.support.fakes import PROFILE, FakeFleet, FakeHandler, FakeLb, lost, run, timed_out
from zdu.model import CommandResult
from zdu.run import events as ev
from zdu.run.policy import Action, Decision, FailureContext, rollback_node_only
from zdu.run.state import replay
from zdu.status import FailureKind, LbState, Outcome, Phase, Status, Version


def disables(calls: list[tuple[str, str]], node: str) -> int:
    return sum(1 for c in calls if c == ("disable", node))


def enables(calls: list[tuple[str, str]], node: str) -> int:
    return sum(1 for c in calls if c == ("enable", node))


# --------------------------------------------------------------------------- the happy path

def test_success_order() -> None:
    out = run()
    assert out.status is Status.SUCCESS
    assert sorted(out.log[:3]) == ["export A", "export B", "export C"]
    assert sorted(out.log[3:6]) == ["upgrade A", "upgrade B", "upgrade C"]
    assert out.log[6:] == ["pre-apply A", "apply A", "post-apply A", "pre-apply B", "apply B", "post-apply B",
                           "pre-apply C", "apply C", "post-apply C"]
    assert out.lb.calls == [("disable", "A"), ("enable", "A"), ("disable", "B"), ("enable", "B"),
                            ("disable", "C"), ("enable", "C")]
    assert all(out.node(n).version is Version.NEW and out.node(n).lb is LbState.IN for n in "ABC")


@pytest.mark.parametrize("phase,status", [("export", Status.EXPORT_FAILED), ("upgrade", Status.UPGRADE_FAILED)])
def test_offline_failure_changes_nothing(phase: str, status: Status) -> None:
    out = run({f"{phase} B": 1})
    assert out.status is status
    assert not any(c.startswith(("pre-apply", "apply", "undo")) for c in out.log)
    assert out.lb.calls == []
    assert out.state.decisions[0].action == "ABORT"


def test_apply_failure_rolls_back_newest_first() -> None:
    out = run({"apply B": 1})
    assert out.status is Status.APPLY_FAILED
    assert out.log[-2:] == ["undo B", "undo A"]
    assert "pre-apply C" not in out.log
    assert out.lb.calls == [("disable", "A"), ("enable", "A"), ("disable", "B"), ("enable", "B"),
                            ("disable", "A"), ("enable", "A")]
    assert out.node("A").version is out.node("B").version is Version.OLD
    assert out.node("B").rollback.outcome is Outcome.PASSED


def test_pre_apply_failure_does_not_touch_lb_of_failed_node() -> None:
    out = run({"pre-apply B": 1})
    assert out.status is Status.PRE_APPLY_FAILED
    assert "cleanup B" in out.log and out.log[-1] == "undo A"
    assert ("disable", "B") not in out.lb.calls


# --------------------------------------------------------------------------- the gate

def test_a_node_whose_rollback_failed_stays_out() -> None:
    out = run({"post-apply B": 1, "undo B": 1})
    assert out.status is Status.ROLLBACK_FAILED
    assert out.node("B").rollback.outcome is Outcome.FAILED
    assert out.node("B").lb is LbState.OUT and enables(out.lb.calls, "B") == 0
    assert out.node("A").lb is LbState.IN and out.node("A").version is Version.OLD
    assert any("B stays OUT OF THE LOAD BALANCER" in w or "!!! B is OUT" in w for w in out.state.warnings)


def test_half_done_rollback_leaves_the_version_unknown_and_the_node_out() -> None:
    profile = dict(PROFILE, rollback={"APPLY": ["stop new {{ node.name }}", "start old {{ node.name }}"]})
    out = run({"apply B": 1, "start old B": 1}, profile=profile)
    assert out.status is Status.ROLLBACK_FAILED
    assert out.log[-4:] == ["stop new B", "start old B", "stop new A", "start old A"]
    assert out.node("B").version is Version.UNKNOWN and out.node("A").version is Version.OLD
    assert out.node("B").lb is LbState.OUT and enables(out.lb.calls, "B") == 0


def test_a_lost_node_is_not_waited_for() -> None:
    """sshd dies mid-APPLY: the rollback cannot reach it; it stays out, no enable is attempted."""
    out = run({"apply B": lost, "undo B": lost})
    assert out.status is Status.ROLLBACK_FAILED
    b = out.node("B")
    assert b.phases[Phase.APPLY].classification is FailureKind.UNREACHABLE
    assert b.rollback.classification is FailureKind.UNREACHABLE
    assert b.version is Version.UNKNOWN and b.lb is LbState.OUT
    assert enables(out.lb.calls, "B") == 0 and disables(out.lb.calls, "B") == 1
    assert out.node("A").version is Version.OLD and out.node("A").lb is LbState.IN


def test_a_timed_out_step_is_a_timeout() -> None:
    out = run({"apply B": timed_out})
    assert out.status is Status.APPLY_FAILED
    assert out.node("B").phases[Phase.APPLY].classification is FailureKind.TIMEOUT
    assert out.state.decisions[0].classification is FailureKind.TIMEOUT


def test_enable_failure_after_post_apply_rolls_back() -> None:
    out = run(lb=FakeLb(fail=[("enable", "B")]))
    assert out.status is Status.POST_APPLY_FAILED
    assert out.node("B").phases[Phase.POST_APPLY].classification is FailureKind.LB
    assert out.log[-2:] == ["undo B", "undo A"]
    assert all(out.node(n).lb is LbState.IN for n in "AB")


def test_disable_refused_rolls_back_what_was_switched() -> None:
    out = run(lb=FakeLb(fail=[("disable", "B")]))
    assert out.status is Status.APPLY_FAILED
    assert "apply B" not in out.log and out.log[-1] == "undo A"
    assert out.node("B").version is Version.OLD


def test_a_hook_that_raises_is_a_failed_action() -> None:
    out = run(lb=FakeLb(raises=[("disable", "B")]))
    assert out.status is Status.APPLY_FAILED
    assert "hook bug" in out.node("B").phases[Phase.APPLY].message


def test_a_node_that_can_not_be_put_back_after_its_rollback_is_reported() -> None:
    out = run({"apply B": 1}, lb=FakeLb(always_fail=[("enable", "B")]))
    assert out.status is Status.ROLLBACK_FAILED
    assert out.node("B").version is Version.OLD and out.node("B").rollback.outcome is Outcome.PASSED
    assert out.node("B").lb is not LbState.IN
    assert any("!!! B is OUT OF THE LOAD BALANCER" in w for w in out.state.warnings)


# --------------------------------------------------------------------------- faults inside steps

def test_an_exception_inside_a_step_reaches_the_policy() -> None:
    """A step that raises (a library bug, a health gate meeting garbage) is a failed step: the
    policy decides and the stopped node is not put back on an unknown version."""
    def boom(command: str) -> CommandResult:
        raise RuntimeError("BadStatusLine('\\x00garbage')")
    out = run({"apply B": boom})
    assert out.status is Status.APPLY_FAILED
    b = out.node("B")
    assert b.phases[Phase.APPLY].classification is FailureKind.ERROR
    assert "BadStatusLine" in b.phases[Phase.APPLY].message
    assert out.state.decisions[0].action == "ROLLBACK_ALL"
    assert out.log[-2:] == ["undo B", "undo A"]
    assert b.version is Version.OLD and b.lb is LbState.IN


def test_a_policy_that_raises_falls_back_to_the_safe_default() -> None:
    def broken(ctx: FailureContext) -> Decision:
        raise ValueError("oops")
    out = run({"apply B": 1}, policy=broken)
    assert out.status is Status.APPLY_FAILED
    assert out.state.decisions[0].action == "ROLLBACK_ALL"
    assert "the rollback policy failed (ValueError: oops)" in out.state.decisions[0].reason
    assert out.log[-2:] == ["undo B", "undo A"]


def test_a_policy_that_answers_nonsense_falls_back() -> None:
    out = run({"apply B": 1}, policy=lambda ctx: "rollback please")  # type: ignore[arg-type,return-value]
    assert out.state.decisions[0].action == "ROLLBACK_ALL"


# --------------------------------------------------------------------------- policies

def test_continue_leaves_the_failed_node_out_and_goes_on() -> None:
    calls = []

    def keep_going(ctx: FailureContext) -> Decision:
        calls.append((ctx.node, ctx.phase, ctx.switched))
        return Decision(Action.CONTINUE, "known flaky check, operator accepts")
    out = run({"post-apply B": 1}, policy=keep_going)
    assert out.status is Status.POST_APPLY_FAILED          # the run still says what failed ...
    assert "post-apply C" in out.log and not any(c.startswith("undo") for c in out.log)  # ... but went on
    assert calls == [("B", Phase.POST_APPLY, ("A",))]
    assert out.state.decisions[0].action == "CONTINUE" and "operator accepts" in out.state.decisions[0].reason
    # B runs a new version that failed its checks: it is not put back into traffic
    assert out.node("B").lb is LbState.OUT and enables(out.lb.calls, "B") == 0
    assert out.node("A").lb is out.node("C").lb is LbState.IN


def test_node_only_policy() -> None:
    out = run({"apply B": 1}, policy=rollback_node_only)
    assert out.status is Status.APPLY_FAILED and out.log[-1] == "undo B" and "undo A" not in out.log
    assert out.node("A").version is Version.NEW and out.node("B").version is Version.OLD


# --------------------------------------------------------------------------- waves of several nodes

def test_every_failure_of_a_wave_goes_to_the_policy() -> None:
    """serial 2: both nodes of the wave fail; each gets a decision and a rollback."""
    seen: list[tuple[str, tuple[str, ...]]] = []

    def node_only(ctx: FailureContext) -> Decision:
        seen.append((ctx.node, ctx.others))
        return rollback_node_only(ctx)
    out = run({"apply A": 1, "post-apply B": 1}, serial=2, policy=node_only)
    assert sorted(seen) == [("A", ("B",)), ("B", ("A",))]
    assert {d.node for d in out.state.decisions} == {"A", "B"}
    assert "undo A" in out.log and "undo B" in out.log
    assert out.status is Status.APPLY_FAILED           # the earliest phase names the status
    for name in "AB":
        assert out.node(name).version is Version.OLD and out.node(name).lb is LbState.IN
    assert "pre-apply C" not in out.log


def test_interrupt_with_two_nodes_in_flight_rolls_back_both() -> None:
    stop = threading.Event()
    barrier = threading.Barrier(2, timeout=5)

    def apply_then_interrupt(command: str) -> CommandResult:
        barrier.wait()          # both nodes are in APPLY
        stop.set()
        return CommandResult(command, 0)
    profile = dict(PROFILE, phases=dict(PROFILE["phases"], APPLY=["apply {{ node.name }}", "apply2 {{ node.name }}"]))
    out = run({"apply A": apply_then_interrupt, "apply B": apply_then_interrupt}, profile=profile, serial=2,
              stop=stop)
    assert out.status is Status.INTERRUPTED
    assert {(d.node, d.action) for d in out.state.decisions} == {("A", "ROLLBACK_NODE"), ("B", "ROLLBACK_NODE")}
    assert "undo A" in out.log and "undo B" in out.log
    assert not any(c.startswith("apply2") for c in out.log)
    for name in "AB":
        assert out.node(name).version is Version.OLD and out.node(name).lb is LbState.IN
    assert not any(c.endswith("C") and not c.startswith(("export", "upgrade")) for c in out.log)


def test_interrupt_between_waves_changes_nothing_more() -> None:
    stop = threading.Event()

    def post_then_interrupt(command: str) -> CommandResult:
        stop.set()
        return CommandResult(command, 0)
    out = run({"post-apply A": post_then_interrupt}, stop=stop)
    assert out.status is Status.INTERRUPTED
    assert out.node("A").version is Version.NEW and out.node("A").lb is LbState.IN
    assert not any(c.endswith(("B", "C")) and not c.startswith(("export", "upgrade")) for c in out.log)
    assert out.state.decisions[-1].action == "ABORT"


def test_interrupt_does_not_cut_a_load_balancer_action() -> None:
    stop = threading.Event()

    def interrupt_mid_drain(action: str, node: str) -> None:
        if (action, node) == ("disable", "B"):
            stop.set()
    out = run(lb=FakeLb(during=interrupt_mid_drain), stop=stop)
    assert out.status is Status.INTERRUPTED
    # the drain finished, then the node was put back untouched (APPLY never started on it)
    assert "apply B" not in out.log
    assert out.lb.calls[-2:] == [("disable", "B"), ("enable", "B")]
    assert out.node("B").lb is LbState.IN and out.node("B").version is Version.OLD


def test_interrupt_during_rollback_health_gate_does_not_stop_it() -> None:
    profile = dict(PROFILE, rollback={"APPLY": [
        "undo {{ node.name }}", {"name": "old healthy", "wait": {"command": "healthy {{ node.name }}",
                                                               "deadline": 5, "interval": 0.01}}]})
    stop = threading.Event()
    attempts = {"n": 0}

    def slowly_healthy(command: str) -> CommandResult:
        stop.set()             # a second Ctrl-C while the rollback's gate polls
        attempts["n"] += 1
        return CommandResult(command, 0 if attempts["n"] >= 3 else 1)
    out = run({"apply B": 1, "healthy B": slowly_healthy, "healthy A": 0}, profile=profile, stop=stop)
    assert attempts["n"] >= 3
    assert out.node("B").rollback.outcome is Outcome.PASSED and out.node("B").lb is LbState.IN


# --------------------------------------------------------------------------- resume

def _events_until(predicate: Any, **kw: Any) -> list[ev.Event]:
    """The events of a run, cut right after the first that matches: a process killed there."""
    events = run(**kw).events
    for i, event in enumerate(events):
        if predicate(event):
            return events[: i + 1]
    raise AssertionError("no such event")


def test_resume_after_a_kill_during_disable_takes_the_node_out_again() -> None:
    """Killed while the disable of B was running: B's place in the balancer is uncertain, so
    the resumed run calls disable again before APPLY."""
    killed = _events_until(lambda e: isinstance(e, ev.LbStarted) and e.node == "B")
    state = replay(killed)
    assert state.nodes["B"].lb is LbState.TAKING_OUT
    out = run(previous=killed)
    assert out.status is Status.SUCCESS
    assert out.lb.calls[:2] == [("disable", "B"), ("enable", "B")]
    assert out.log[:3] == ["apply B", "post-apply B", "pre-apply C"]   # A and B's PRE-APPLY were done


def test_resume_after_a_kill_mid_rollback_finishes_it() -> None:
    killed = _events_until(lambda e: isinstance(e, ev.RollbackFinished) and e.node == "B", script={"apply B": 1})
    out = run(previous=killed)
    assert out.status is Status.APPLY_FAILED
    assert out.log == ["undo A"]
    assert out.node("A").version is Version.OLD and out.node("A").lb is LbState.IN


class _FindsLostSteps(FakeHandler):
    """A node whose lost step is found running and ended (logged as ``end-lost TAG``)."""

    def end_lost_step(self, tag: str) -> bool | None:
        with self.fleet.lock:
            self.fleet.log.append(f"end-lost {tag}")
        return True


class EndsLostSteps(FakeFleet):
    handler_class = _FindsLostSteps


def test_a_resume_first_ends_the_step_the_dead_run_had_in_flight() -> None:
    """Killed while B's APPLY step ran: that step may still run on B (its connection died with
    the control process).  The resume asks B's handler to end it -- by the run's tag for the
    step -- before anything else runs there, says so, then runs the step again."""
    killed = _events_until(lambda e: isinstance(e, ev.StepStarted) and e.key == "B/APPLY/0")
    out = run(previous=killed, fleet=EndsLostSteps())
    assert out.status is Status.SUCCESS
    assert out.log[:2] == ["end-lost r/B/APPLY/0", "apply B"], out.log
    warned = [e.message for e in out.events if isinstance(e, ev.Warned) and e.node == "B"]
    assert any("of the run that died was still running; it was ended" in m for m in warned), warned
    # a transport that cannot tell says so, and nothing is ended
    plain = run(previous=killed)
    assert plain.status is Status.SUCCESS and not any(c.startswith("end-lost") for c in plain.log)
    assert any("cannot tell whether it still runs" in e.message for e in plain.events
               if isinstance(e, ev.Warned)), "the resume must say the step may be running twice"


def test_a_resume_ends_a_lost_step_on_a_host_too_and_a_node_it_cannot_end_runs_nothing() -> None:
    """A before: step on a topology host (a backup) in flight is ended like a node's; a node
    whose lost step cannot be ended fails as unreachable instead of running the step again."""
    from tests.unit.test_steering import APINIZER
    from zdu.errors import UnreachableError
    topology = {"hosts": APINIZER["hosts"], "before": APINIZER["before"]}
    killed = _events_until(lambda e: isinstance(e, ev.StepStarted) and e.target == "mongo", topology=topology)
    out = run(previous=killed, fleet=EndsLostSteps(), topology=topology)
    assert out.log[:2] == ["end-lost r/mongo/BEFORE/0", "mongodump r"], out.log
    assert any(e.message.startswith("mongo: step 'backup'") for e in out.events if isinstance(e, ev.Warned))

    class Stuck(FakeHandler):
        blocked = False

        def end_lost_step(self, tag: str) -> bool | None:
            type(self).blocked = True
            raise UnreachableError(self.node.name, "it is still there after SIGKILL")

        def run(self, command: str, *, timeout: float | None = None,  # type: ignore[override]
                env: dict[str, str] | None = None) -> Any:
            if self.blocked and self.node.name == "B":
                raise UnreachableError("B", "nothing more is run there")
            return super().run(command, timeout=timeout, env=env)

    class StuckFleet(FakeFleet):
        handler_class = Stuck
    killed = _events_until(lambda e: isinstance(e, ev.StepStarted) and e.key == "B/APPLY/0")
    out = run(previous=killed, fleet=StuckFleet())
    # nothing more ran on B: its rollback could not run either, so B is reported loudly (75),
    # out of the load balancer, and A (switched before it) is rolled back
    assert not any(c.endswith(" B") for c in out.log) and out.status is Status.ROLLBACK_FAILED, out.log
    assert out.node("B").lb is not LbState.IN and out.node("A").version is Version.OLD


def test_every_step_command_gets_its_tag() -> None:
    seen: list[dict[str, str] | None] = []

    class Records(FakeHandler):
        def run(self, command: str, *, timeout: float | None = None,  # type: ignore[override]
                env: dict[str, str] | None = None) -> Any:
            seen.append(env)
            return super().run(command, timeout=timeout, env=env)

    class Fleet(FakeFleet):
        handler_class = Records
    run(fleet=Fleet())
    assert {"ZDU_STEP": "r/A/APPLY/0"} in seen and {"ZDU_STEP": "r/C/POST-APPLY/0"} in seen, seen


def test_resume_skips_the_steps_already_done() -> None:
    killed = _events_until(lambda e: isinstance(e, ev.StepFinished) and e.key == "B/APPLY/0")
    out = run(previous=killed)
    assert out.status is Status.SUCCESS
    assert out.log[0] == "post-apply B"


# --------------------------------------------------------------------------- the record

def test_replaying_the_events_gives_the_same_state() -> None:
    out = run({"apply B": 1})
    assert replay(out.events).to_dict() == out.state.to_dict()


def test_events_round_trip_through_json() -> None:
    out = run({"apply B": lost, "undo B": lost})
    again = [ev.Event.from_json(e.to_json()) for e in out.events]
    assert again == out.events
    assert replay(again).to_dict() == out.state.to_dict()


@pytest.mark.parametrize("bad,message", [
    ({"type": "Nope"}, "unknown event type"),
    ({"type": "PhaseStarted", "node": "A", "phase": "DEPLOY", "steps": 1}, "is not a Phase"),
    ({"type": "PhaseStarted", "node": "A", "phase": "APPLY", "steps": "1"}, "expected an integer"),
    ({"type": "Warned", "message": "x", "break_lock": True}, "unknown field 'break_lock'"),
])
def test_a_tampered_event_is_refused(bad: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ev.Event.from_json(bad)


def test_replay_refuses_an_event_about_a_node_that_is_not_in_the_run() -> None:
    events = run().events[:1] + [ev.PhaseStarted(node="ghost", phase=Phase.APPLY, steps=1)]
    with pytest.raises(ValueError, match="'ghost' is not a node of this run"):
        replay(events)
