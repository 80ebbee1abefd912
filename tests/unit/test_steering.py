"""Steering a run, with in-memory nodes and balancer: tiers in order with gates, before/after
steps, pauses (continue / abort / keep / timeout / resume at a pause), the failure budget, the
capacity guard and the repair of a lost node.  The lab proves the same end to end."""
from __future__ import annotations

import re
import threading
from typing import Any

import pytest

from tests.support.fakes import PROFILE, FakeFleet, FakeLb, lost, make_plan, run
from zdu.errors import ConfigError
from zdu.model import CommandResult
from zdu.planning.plan import format_plan
from zdu.run import events as ev
from zdu.run.conductor import PauseAnswer, PauseRequest
from zdu.run.resume import needs_repair
from zdu.run.state import replay
from zdu.status import LbState, Outcome, Phase, Status, Version

APINIZER = {
    "groups": {"A": "manager", "B": "cache", "C": "cache", "D": "worker", "E": "worker", "F": "portal"},
    "tiers": ["manager", {"name": "cache", "serial": 1,
                          "gate": [{"name": "members", "wait": {"command": "members {{ node.name }}",
                                                                "deadline": 1, "interval": 0.01}}]},
              {"name": "worker", "serial": 2}, "portal"],
    "hosts": [{"name": "mongo", "host": "127.0.0.99"}],
    "before": [{"name": "backup", "on": "mongo", "run": "mongodump {{ run_id }}"}],
    "after": [{"name": "clean", "on": "all", "run": "clean {{ node.name }}"}],
}


def online(log: list[str]) -> list[str]:
    return [c for c in log if c.split()[0] in ("pre-apply", "apply", "post-apply", "members", "clean",
                                               "mongodump", "undo")]


# --------------------------------------------------------------------------- tiers, before, after

def test_tiers_go_in_order_with_their_gates_and_waves_never_mix_tiers() -> None:
    out = run(nodes="ABCDEF", topology=APINIZER)
    assert out.status is Status.SUCCESS
    log = online(out.log)
    assert log[0] == "mongodump r"                                    # the backup first, once
    order = [c.split()[1] for c in log if c.startswith("apply ")]
    assert order[:3] == ["A", "B", "C"] and sorted(order[3:5]) == ["D", "E"] and order[5] == "F"
    # the cache gate ran on both cache nodes after both were upgraded, before any worker
    members = [i for i, c in enumerate(log) if c.startswith("members")]
    assert sorted(log[i] for i in members) == ["members B", "members C"]
    assert max(members) < log.index(next(c for c in log if c.startswith("pre-apply D")))
    assert min(members) > log.index("post-apply C")
    assert sorted(log[-6:]) == [f"clean {n}" for n in "ABCDEF"]     # after, on every node, at the end
    assert out.state.tiers == {"manager": ["A"], "cache": ["B", "C"], "worker": ["D", "E"], "portal": ["F"]}
    assert out.state.run_phases["before"].outcome is Outcome.PASSED
    assert out.state.run_phases["gate cache"].outcome is Outcome.PASSED
    assert out.state.run_phases["after"].outcome is Outcome.PASSED
    assert make_plan(nodes="ABCDEF", topology=APINIZER).waves == (("A",), ("B",), ("C",), ("D", "E"), ("F",))


def test_the_plan_shows_tiers_gates_before_and_after() -> None:
    text = format_plan(make_plan(nodes="ABCDEF", topology=APINIZER))
    assert "tiers, in order: manager (A); cache (B, C); worker (D, E); portal (F)" in text
    assert "Before any node is changed, once" in text and "backup on mongo" in text
    assert "gate of tier cache" in text and "After a successful run, once" in text


def test_a_failed_before_step_changes_nothing() -> None:
    out = run({"mongodump r": 1}, nodes="ABCDEF", topology=APINIZER)
    assert out.status is Status.BEFORE_FAILED
    assert online(out.log) == ["mongodump r"] and out.lb.calls == []
    assert not any(c.startswith(("export", "upgrade")) for c in out.log)
    assert out.state.run_phases["before"].outcome is Outcome.FAILED


def test_a_gate_that_does_not_hold_goes_to_the_policy() -> None:
    out = run({"members C": 1}, nodes="ABCDEF", topology=APINIZER)
    assert out.status is Status.POST_APPLY_FAILED
    decision = out.state.decisions[0]
    assert (decision.node, decision.phase, decision.action) == ("C", Phase.GATE, "ROLLBACK_ALL")
    assert [c for c in out.log if c.startswith("undo")] == ["undo C", "undo B", "undo A"]
    assert not any(c.startswith("pre-apply D") for c in out.log)
    assert not any(c.startswith("clean") for c in out.log)            # after: only for a successful run
    assert all(out.node(n).version is Version.OLD and out.node(n).lb is LbState.IN for n in "ABC")


def test_a_failed_after_step_is_its_own_status() -> None:
    out = run({"clean B": 1}, nodes="ABCDEF", topology=APINIZER)
    assert out.status is Status.AFTER_FAILED
    assert all(out.node(n).version is Version.NEW and out.node(n).lb is LbState.IN for n in "ABCDEF")


def test_an_interrupt_before_the_after_steps_is_not_a_silent_success() -> None:
    """Ctrl-C / SIGTERM after the last node finished, before after: began: the steps did not
    run, the run says so (130, a warning), and its resume runs them."""
    stop = threading.Event()

    def last_post_apply(command: str) -> CommandResult:
        stop.set()
        return CommandResult(command, 0, "", "")
    out = run({"post-apply F": last_post_apply}, nodes="ABCDEF", topology=APINIZER, stop=stop)
    assert out.status is Status.INTERRUPTED
    assert not any(c.startswith("clean") for c in out.log)
    assert all(out.node(n).version is Version.NEW and out.node(n).lb is LbState.IN for n in "ABCDEF")
    assert out.state.run_phases["after"].outcome is Outcome.FAILED
    assert any("before the after: steps: none of them ran" in w for w in out.state.warnings)
    again = run(previous=out.events, nodes="ABCDEF", topology=APINIZER)
    assert again.status is Status.SUCCESS
    assert sorted(again.log) == [f"clean {n}" for n in "ABCDEF"]     # only the after: steps
    assert again.state.run_phases["after"].outcome is Outcome.PASSED


@pytest.mark.parametrize("topology,message", [
    ({"tiers": ["manager"], "groups": {"A": "manager"}}, "node 'B' (group -, roles -) is in no tier"),
    ({"tiers": ["x", "x"], "groups": {n: "x" for n in "ABC"}}, "duplicate tier 'x'"),
    ({"tiers": [{"name": "t", "nodes": ["A", "Z"]}, {"name": "u", "nodes": ["B", "C"]}]}, "'Z' is not a node"),
    ({"before": [{"on": "nowhere", "run": "x"}]}, "'nowhere' is not control, all, a node or a host"),
    ({"serial": [1, "pause"]}, "a pause cannot be last"),
    ({"min_in_service": "150%"}, "at most 100%"),
])
def test_bad_steering_settings_are_clear_errors(topology: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        make_plan(topology=topology)


# --------------------------------------------------------------------------- pauses

class Answers:
    """A pauser that answers from a list and records what it was asked."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.asked: list[PauseRequest] = []

    def __call__(self, request: PauseRequest, stop: Any) -> PauseAnswer:
        self.asked.append(request)
        return PauseAnswer(self.answers.pop(0), "tester@test")


def test_a_canary_pause_then_continue() -> None:
    pauser = Answers("continue")
    out = run(topology={"serial": [1, "pause", "100%"]}, pauser=pauser)
    assert out.status is Status.SUCCESS
    assert [(r.wave, r.done) for r in pauser.asked] == [(1, ("A",))]
    assert out.state.pauses[0]["answer"] == "continue" and out.state.pauses[0]["by"] == "tester@test"
    assert all(out.node(n).version is Version.NEW for n in "ABC")


def test_abort_at_a_pause_rolls_back_the_canary() -> None:
    out = run(pause_after=frozenset({1}), pauser=Answers("abort"))
    assert out.status is Status.ABORTED
    assert [c for c in out.log if c.startswith("undo")] == ["undo A"]
    assert all(out.node(n).version is Version.OLD and out.node(n).lb is LbState.IN for n in "ABC")
    assert "pre-apply B" not in out.log


def test_an_interrupt_during_the_aborts_rollback_still_ends_as_aborted() -> None:
    stop = threading.Event()

    def undo_interrupted(command: str) -> CommandResult:
        stop.set()                                  # Ctrl-C while the abort rolls the canary back
        return CommandResult(command, 0, "", "")
    out = run({"undo A": undo_interrupted}, pause_after=frozenset({1}), pauser=Answers("abort"), stop=stop)
    assert stop.is_set() and out.status is Status.ABORTED
    assert all(out.node(n).version is Version.OLD and out.node(n).lb is LbState.IN for n in "ABC")


def test_abort_keep_leaves_the_canary_on_the_new_version() -> None:
    out = run(pause_after=frozenset({1}), pauser=Answers("abort-keep"))
    assert out.status is Status.ABORTED
    assert not any(c.startswith("undo") for c in out.log)
    assert out.node("A").version is Version.NEW and out.node("B").version is Version.OLD


def test_a_paused_run_killed_comes_back_to_the_pause_on_resume() -> None:
    events = run(pause_after=frozenset({1}), pauser=Answers("continue")).events
    killed = events[:next(i for i, e in enumerate(events) if isinstance(e, ev.Paused)) + 1]
    assert replay(killed).pauses[0]["ended"] is None
    pauser = Answers("continue")
    out = run(previous=killed, pause_after=frozenset({1}), pauser=pauser)
    assert out.status is Status.SUCCESS
    assert [r.wave for r in pauser.asked] == [1]                # asked again, once
    assert out.log[0] == "pre-apply B"                          # wave 1 is not done twice
    assert len(out.state.pauses) == 1 and out.state.pauses[0]["answer"] == "continue"


def test_resume_after_a_continued_pause_does_not_ask_again() -> None:
    events = run(pause_after=frozenset({1}), pauser=Answers("continue")).events
    killed = events[:next(i for i, e in enumerate(events) if isinstance(e, ev.PauseEnded)) + 1]
    pauser = Answers()
    out = run(previous=killed, pause_after=frozenset({1}), pauser=pauser)
    assert out.status is Status.SUCCESS and pauser.asked == []


def test_a_pause_out_of_the_plan_is_refused() -> None:
    with pytest.raises(ConfigError, match="--pause-after-wave 3: the plan has 3 wave"):
        make_plan(pause_after=frozenset({3}))


# --------------------------------------------------------------------------- failure budget

def test_a_failure_within_the_budget_is_rolled_back_and_the_run_goes_on() -> None:
    out = run({"apply B": 1}, nodes="ABCDEF", topology={"serial": 3, "max_fail_percentage": 34})
    assert out.status is Status.PARTIAL
    assert [c for c in out.log if c.startswith("undo")] == ["undo B"]
    assert any(c.startswith("pre-apply D") for c in out.log)         # the second wave ran
    assert out.node("B").version is Version.OLD and out.node("B").lb is LbState.IN
    assert all(out.node(n).version is Version.NEW for n in "ACDEF")
    assert "within the failure budget of 34%" in out.state.decisions[0].reason


def test_a_pause_names_the_nodes_rolled_back_within_the_budget() -> None:
    pauser = Answers("continue")
    out = run({"apply B": 1}, nodes="ABCDEF", topology={"serial": [3, "pause", 3], "max_fail_percentage": 34},
              pauser=pauser)
    assert out.status is Status.PARTIAL
    assert pauser.asked[0].done == ("A", "C") and pauser.asked[0].rolled_back == ("B",)


def test_a_pause_after_a_tiers_last_wave_comes_after_the_tiers_gate() -> None:
    """--pause-after-wave 3 (the cache tier's last wave): the operator is asked once the cache
    gate held, not before it ran; the plan shows it in that order too."""
    fleet = FakeFleet()
    seen: list[list[str]] = []

    def pauser(request: PauseRequest, stop: Any) -> PauseAnswer:
        seen.append(list(fleet.log))
        return PauseAnswer("continue", "tester@test")
    out = run(nodes="ABCDEF", topology=APINIZER, fleet=fleet, pauser=pauser, pause_after=frozenset({3}))
    assert out.status is Status.SUCCESS and len(seen) == 1
    assert {"members B", "members C"} <= set(seen[0])
    assert not any(c.startswith("pre-apply D") for c in seen[0])
    text = format_plan(make_plan(nodes="ABCDEF", topology=APINIZER, pause_after=frozenset({3})))
    assert text.index("gate of tier cache") < text.index("PAUSE after wave 3") < text.index("wave 4:")


def test_after_steps_do_not_run_when_a_node_was_rolled_back_within_the_budget() -> None:
    """after: is for a run in which every node made it; a PARTIAL run keeps its status (82)
    even when the after: step would fail."""
    topology = {"serial": 3, "max_fail_percentage": 34, "after": APINIZER["after"]}
    for failing_after in ({}, {"clean A": 1}):
        out = run({"apply B": 1, **failing_after}, nodes="ABCDEF", topology=topology)
        assert out.status is Status.PARTIAL
        assert not any(c.startswith("clean") for c in out.log), out.log
        assert "after" not in out.state.run_phases


def test_a_resume_does_not_walk_a_node_rolled_back_within_the_budget_again() -> None:
    """Killed in the second wave after B was rolled back within the budget: the resume leaves
    B rolled back (its APPLY steps that passed before the rollback are not done any more, and
    running the rest would leave it half-upgraded) and still ends PARTIAL."""
    topology = {"serial": 3, "max_fail_percentage": 34}
    first = run({"apply B": 1}, nodes="ABCDEF", topology=topology).events
    cut = next(i for i, e in enumerate(first) if isinstance(e, ev.StepFinished) and e.key.startswith("D/PRE-APPLY"))
    out = run(nodes="ABCDEF", topology=topology, previous=first[: cut + 1])
    assert out.status is Status.PARTIAL
    assert not any(c.split()[-1] == "B" for c in out.log), out.log
    assert out.node("B").version is Version.OLD and out.node("B").lb is LbState.IN
    assert all(out.node(n).version is Version.NEW for n in "ACDEF")


def test_a_failure_over_the_budget_stops_the_run() -> None:
    out = run({"apply B": 1, "apply C": 1}, nodes="ABCDEF", topology={"serial": 3, "max_fail_percentage": 34})
    assert out.status is Status.APPLY_FAILED
    assert not any(c.startswith("pre-apply D") for c in out.log)
    assert {d.action for d in out.state.decisions} == {"ROLLBACK_ALL"}
    assert all(out.node(n).version is Version.OLD for n in "ABC")


# --------------------------------------------------------------------------- capacity

def test_the_capacity_guard_refuses_a_wave_before_it_starts() -> None:
    lb = FakeLb()
    lb.serving_now = {"A": True, "B": True, "C": False, "D": True}   # C is DOWN in the balancer
    out = run(nodes="ABCD", topology={"serial": 2, "min_in_service": 2}, lb=lb)
    assert out.status is Status.CAPACITY_REFUSED
    assert out.lb.calls == [] and not any(c.startswith("pre-apply") for c in out.log)
    check = out.state.capacity[0]
    assert check["ok"] is False and check["needed"] == 2 and check["serving"] == ["A", "B", "D"]
    assert any("wave 1 (A, B) NOT started" in w for w in out.state.warnings)


def test_the_capacity_guard_lets_a_wave_through_that_leaves_enough() -> None:
    lb = FakeLb()
    lb.serving_now = {n: True for n in "ABCD"}
    out = run(nodes="ABCD", topology={"serial": 2, "min_in_service": "50%"}, lb=lb)
    assert out.status is Status.SUCCESS
    assert [c["ok"] for c in out.state.capacity] == [True, True]


# --------------------------------------------------------------------------- repair

def test_a_lost_node_is_repaired_on_resume_once_it_answers() -> None:
    first = run({"apply B": lost, "undo B": lost})
    assert first.status is Status.ROLLBACK_FAILED
    state = replay(first.events)
    assert needs_repair(state) == ["B"]
    # the node answers again: --resume runs its rollback again and puts it back
    out = run(previous=first.events, repair=("B",))
    assert out.status is Status.APPLY_FAILED          # the upgrade failed; the fleet is whole again
    assert out.log == ["undo B"]
    assert out.lb.calls[-1] == ("enable", "B")
    b = out.node("B")
    assert b.version is Version.OLD and b.lb is LbState.IN and b.rollback.outcome is Outcome.PASSED
    assert needs_repair(out.state) == []
    assert len(out.state.resumed) == 1


def test_a_repair_that_still_cannot_reach_the_node_says_so_and_stays_repairable() -> None:
    first = run({"apply B": lost, "undo B": lost})
    out = run({"undo B": lost}, previous=first.events, repair=("B",))
    assert out.status is Status.ROLLBACK_FAILED
    assert out.node("B").lb is not LbState.IN and needs_repair(out.state) == ["B"]
    assert ("enable", "B") not in out.lb.calls
