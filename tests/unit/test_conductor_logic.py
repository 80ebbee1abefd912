"""Conductor flow with an in-memory node (pure logic; the real proof is tests/integration)."""
from __future__ import annotations

import pytest

from zdu.run.conductor import Conductor
from zdu.run.events import EventBus
from zdu.transport.base import CommandHandler
from zdu.lb.base import LbResult, LoadBalancer
from zdu.model import CommandResult, Node, Topology
from zdu.planning.plan import build_plan
from zdu.config.profile import parse_profile
from zdu.run.state import RunState
from zdu.status import Phase, Status

PROFILE = {
    "name": "fake",
    "phases": {p: [f"{p.lower()} {{{{ node.name }}}}"] for p in ("EXPORT", "UPGRADE", "PRE-APPLY", "APPLY", "POST-APPLY")},
    "rollback": {"APPLY": ["undo {{ node.name }}"], "PRE-APPLY": ["cleanup {{ node.name }}"]},
}


class FakeNode(CommandHandler):
    def __init__(self, node: Node, fail: set[str], log: list[str]) -> None:
        super().__init__(node)
        self.fail, self.log = fail, log

    def open(self) -> None:
        pass

    def run(self, command, *, timeout=None, env=None):  # type: ignore[override]
        self.log.append(command)
        return CommandResult(command, 1 if command in self.fail else 0)

    def close(self) -> None:
        pass


class CountingLb(LoadBalancer):
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def disable(self, node: Node) -> LbResult:
        self.calls.append(("disable", node.name))
        return LbResult(True)

    def enable(self, node: Node) -> LbResult:
        self.calls.append(("enable", node.name))
        return LbResult(True)


def run(fail: set[str], profile: dict | None = None) -> tuple[Status, RunState, list[str], CountingLb]:
    topo = Topology(nodes=tuple(Node(name=n, host=f"127.0.0.{i + 1}") for i, n in enumerate("ABC")))
    plan = build_plan(topo, parse_profile(profile or PROFILE, source="p"), old_install_dir="/o",
                      new_install_dir="/n", run_id="r")
    state = RunState(run_id="r", old_install_dir="/o", new_install_dir="/n", profile="p", topology="t",
                     node_names=list("ABC"))
    log: list[str] = []
    lb = CountingLb()
    status = Conductor(plan, state, handler_factory=lambda node: FakeNode(node, fail, log), lb=lb,
                       bus=EventBus()).execute()
    return status, state, log, lb


def test_success_order() -> None:
    status, state, log, lb = run(set())
    assert status is Status.SUCCESS
    assert log[:6] == ["export A", "export B", "export C", "upgrade A", "upgrade B", "upgrade C"] or \
        sorted(log[:3]) == ["export A", "export B", "export C"]
    assert log[6:] == ["pre-apply A", "apply A", "post-apply A", "pre-apply B", "apply B", "post-apply B",
                       "pre-apply C", "apply C", "post-apply C"]
    assert lb.calls == [("disable", "A"), ("enable", "A"), ("disable", "B"), ("enable", "B"),
                        ("disable", "C"), ("enable", "C")]
    assert all(state.nodes[n].version == "new" for n in "ABC")


@pytest.mark.parametrize("phase,status", [("export", Status.EXPORT_FAILED), ("upgrade", Status.UPGRADE_FAILED)])
def test_offline_failure_changes_nothing(phase: str, status: Status) -> None:
    got, state, log, lb = run({f"{phase} B"})
    assert got is status
    assert not any(c.startswith(("pre-apply", "apply", "undo")) for c in log)
    assert lb.calls == []
    assert state.decisions[0].action == "ABORT"


def test_apply_failure_rolls_back_newest_first() -> None:
    status, state, log, lb = run({"apply B"})
    assert status is Status.APPLY_FAILED
    assert log[-2:] == ["undo B", "undo A"]
    assert "pre-apply C" not in log
    assert lb.calls == [("disable", "A"), ("enable", "A"), ("disable", "B"), ("enable", "B"),
                        ("disable", "A"), ("enable", "A")]
    assert state.nodes["A"].version == state.nodes["B"].version == "old"
    assert state.nodes["B"].rollback.outcome == "PASSED"


def test_pre_apply_failure_does_not_touch_lb_of_failed_node() -> None:
    status, state, log, lb = run({"pre-apply B"})
    assert status is Status.PRE_APPLY_FAILED
    assert "cleanup B" in log and log[-1] == "undo A"
    assert ("disable", "B") not in lb.calls


def test_rollback_failure_is_status_75() -> None:
    status, state, _, lb = run({"post-apply B", "undo B"})
    assert status is Status.ROLLBACK_FAILED
    assert state.nodes["B"].rollback.outcome == "FAILED"
    assert all(state.nodes[n].in_lb for n in "ABC")
    assert sum(1 for c in lb.calls if c[0] == "disable") == sum(1 for c in lb.calls if c[0] == "enable")


def test_phase_enum_values() -> None:
    assert Phase.parse("pre_apply") is Phase.PRE_APPLY


def test_half_done_rollback_leaves_the_version_unknown() -> None:
    profile = dict(PROFILE, rollback={"APPLY": ["stop new {{ node.name }}", "start old {{ node.name }}"]})
    status, state, log, _ = run({"apply B", "start old B"}, profile)
    assert status is Status.ROLLBACK_FAILED
    assert log[-4:] == ["stop new B", "start old B", "stop new A", "start old A"]
    assert state.nodes["B"].version == "unknown" and state.nodes["A"].version == "old"


def test_custom_policy_continue_and_node_only() -> None:
    from zdu.run.policy import Action, Decision

    calls = []

    def keep_going(ctx):  # type: ignore[no-untyped-def]
        calls.append((ctx.node, ctx.phase, ctx.switched))
        return Decision(Action.CONTINUE, "known flaky check, operator accepts")

    topo = Topology(nodes=tuple(Node(name=n, host=f"127.0.0.{i + 1}") for i, n in enumerate("ABC")))
    plan = build_plan(topo, parse_profile(PROFILE, source="p"), old_install_dir="/o", new_install_dir="/n",
                      run_id="r")
    state = RunState(run_id="r", old_install_dir="/o", new_install_dir="/n", profile="p", topology="t",
                     node_names=list("ABC"))
    log: list[str] = []
    lb = CountingLb()
    status = Conductor(plan, state, handler_factory=lambda node: FakeNode(node, {"post-apply B"}, log), lb=lb,
                       bus=EventBus(), policy=keep_going).execute()
    assert status is Status.POST_APPLY_FAILED          # the run still says what failed ...
    assert "post-apply C" in log and not any(c.startswith("undo") for c in log)  # ... but went on
    assert calls == [("B", Phase.POST_APPLY, ("A",))]
    assert state.decisions[0].action == "CONTINUE" and "operator accepts" in state.decisions[0].reason
    assert all(state.nodes[n].in_lb for n in "ABC")

    from zdu.run.policy import rollback_node_only
    state2 = RunState(run_id="r", old_install_dir="/o", new_install_dir="/n", profile="p", topology="t",
                      node_names=list("ABC"))
    log2: list[str] = []
    status = Conductor(plan, state2, handler_factory=lambda node: FakeNode(node, {"apply B"}, log2), lb=CountingLb(),
                       bus=EventBus(), policy=rollback_node_only).execute()
    assert status is Status.APPLY_FAILED and log2[-1] == "undo B" and "undo A" not in log2
    assert state2.nodes["A"].version == "new" and state2.nodes["B"].version == "old"
