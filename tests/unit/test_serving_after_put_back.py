"""A node that passed its checks and was put back, then died (a new version crashing under load):
before each wave and at the end of the run the load balancer is asked again whether every node
the run put back still serves (``LoadBalancer.healthy``).  One that does not stops the run before
another node is taken out, or ends it DEGRADED (85).  Fast logic with in-memory nodes and
balancer; the real HAProxy and lab proofs are tests/integration/test_haproxy_hook.py and
tests/e2e/test_steering_lab.py."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import pytest

from tests.support.fakes import PROFILE, FakeLb, run
from zdu.errors import LoadBalancerError
from zdu.lb import GuardedHook
from zdu.lb.base import LbResult, LoadBalancer
from zdu.lb.haproxy import HaproxyBackends
from zdu.model import Node
from zdu.report.summary import render_summary
from zdu.run import events as ev
from zdu.run.resume import after_left
from zdu.run.state import replay
from zdu.status import FailureKind, LbState, Outcome, Status, Version
from tests.unit.test_lb_haproxy import NODE_A, NODE_B, ScriptedApi, hook


class DyingLb(FakeLb):
    """``healthy()`` answers from ``health`` (node -> True / False / a text; unlisted: True);
    ``dies`` maps an action to the node that dies when it is called: (enable, C) -> A."""

    def __init__(self, dies: Mapping[tuple[str, str], tuple[str, bool | str]] | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.health: dict[str, bool | str] = {}
        self.dies = dict(dies or {})
        self.asked: list[tuple[str, ...]] = []
        self.cannot_tell = False
        self.broken: Exception | None = None

    def _act(self, action: str, node: Node) -> LbResult:
        result = super()._act(action, node)
        if (action, node.name) in self.dies:
            name, why = self.dies[(action, node.name)]
            self.health[name] = why
        return result

    def healthy(self, nodes: Sequence[Node]) -> Any:
        self.asked.append(tuple(n.name for n in nodes))
        if self.broken is not None:
            raise self.broken
        if self.cannot_tell:
            return None
        return {n.name: self.health.get(n.name, True) for n in nodes}


def checks(events: list[ev.Event]) -> list[ev.ServingChecked]:
    return [e for e in events if isinstance(e, ev.ServingChecked)]


def test_every_node_still_serving_is_checked_before_each_wave_and_at_the_end() -> None:
    lb = DyingLb()
    out = run(lb=lb)
    assert out.status is Status.SUCCESS
    # before wave 2 (A put back), before wave 3 (A, B), at the end (A, B, C); none before wave 1
    assert lb.asked == [("A",), ("A", "B"), ("A", "B", "C")]
    assert [(c.wave, c.checked, c.not_serving) for c in checks(out.events)] == \
        [(2, ("A",), ()), (3, ("A", "B"), ()), (None, ("A", "B", "C"), ())]
    assert not out.state.warnings


def test_a_node_that_died_after_its_put_back_stops_the_run_before_the_next_wave() -> None:
    lb = DyingLb(dies={("enable", "A"): ("A", "gateways/node-a DOWN (check L7STS)")})
    out = run(lb=lb)
    assert out.status is Status.DEGRADED
    # nothing more was taken out: B and C were not touched, and stay on the old version
    assert lb.calls == [("disable", "A"), ("enable", "A")]
    assert "pre-apply B" not in out.log and "pre-apply C" not in out.log
    assert out.node("A").version is Version.NEW and out.node("A").lb is LbState.IN
    assert out.node("B").version is out.node("C").version is Version.OLD
    assert out.node("A").not_serving == "gateways/node-a DOWN (check L7STS)"
    # no rollback: the node passed its checks, the operator looks first
    assert out.node("A").rollback is None and not out.state.decisions
    [warning] = [w for w in out.state.warnings if "NOT SERVING" in w]
    assert warning.startswith("A: !!! A is NOT SERVING before wave 2, although this run put it back healthy: the "
                              "load balancer shows gateways/node-a DOWN (check L7STS)")
    assert "It runs the new version; the run stops here: no other node is taken out" in warning
    assert [e.node for e in out.events if isinstance(e, ev.Warned)] == ["A"]     # its node log has it too
    summary = render_summary(out.state)
    assert "A: on new (/n), in the load balancer, but NOT SERVING when last checked " \
           "(gateways/node-a DOWN (check L7STS))" in summary
    assert "Status 85 (DEGRADED)" in summary
    assert "--limit B,C" in summary          # the nodes not reached: the rerun that takes them


def test_a_node_that_died_during_the_last_wave_makes_the_end_degraded() -> None:
    lb = DyingLb(dies={("enable", "C"): ("A", False)})
    out = run(lb=lb)
    assert out.status is Status.DEGRADED
    assert all(out.node(n).version is Version.NEW for n in "ABC")
    end = checks(out.events)[-1]
    assert end.wave is None and end.not_serving == ("A",) and end.reasons == ("the node not serving",)
    assert any("A is NOT SERVING at the end of the run" in w and "the run is not a success" in w
               for w in out.state.warnings)
    assert end.message == "not serving at the end of the run: A: the node not serving"
    assert out.state.status is Status.DEGRADED


def test_after_steps_do_not_run_on_a_degraded_end_and_a_resume_runs_them_once_it_serves() -> None:
    topology = {"after": [{"name": "remove old", "on": "all", "run": "clean {{ node.name }}"}]}
    lb = DyingLb(dies={("enable", "C"): ("B", "gateways/node-b MAINT")})
    out = run(lb=lb, topology=topology)
    assert out.status is Status.DEGRADED
    assert not any(c.startswith("clean") for c in out.log)
    after = out.state.run_phases["after"]
    assert after.outcome is Outcome.FAILED and after.classification is FailureKind.LB
    assert "--resume" in after.message
    assert after_left(out.state)
    # the node serves again: the resume checks again, then runs the after: steps
    healed = DyingLb()
    again = run(lb=healed, topology=topology, previous=out.events)
    assert again.status is Status.SUCCESS, again.state.warnings
    assert healed.asked[-1] == ("A", "B", "C")
    assert again.state.run_phases["after"].outcome is Outcome.PASSED
    assert sorted(again.log) == ["clean A", "clean B", "clean C"]      # only the after: steps
    assert again.node("B").not_serving is None
    # still not serving at the resume: still DEGRADED, still resumable
    sick = DyingLb()
    sick.health["B"] = "gateways/node-b DOWN"
    third = run(lb=sick, topology=topology, previous=out.events)
    assert third.status is Status.DEGRADED and after_left(third.state)


def test_a_partial_run_with_a_node_not_serving_at_the_end_is_degraded() -> None:
    lb = DyingLb(dies={("enable", "F"): ("A", "DOWN")})
    out = run({"apply B": 1}, lb=lb, nodes="ABCDEF", topology={"serial": 3, "max_fail_percentage": 34})
    assert out.status is Status.DEGRADED
    assert all(out.node(n).version is Version.NEW for n in "ACDEF")
    assert out.node("B").version is Version.OLD        # rolled back within the budget, put back
    assert [d.node for d in out.state.decisions if d.within_budget] == ["B"]


def test_a_hook_that_cannot_tell_checks_nothing() -> None:
    lb = DyingLb(dies={("enable", "A"): ("A", False)})
    lb.cannot_tell = True
    out = run(lb=lb)
    assert out.status is Status.SUCCESS
    assert not checks(out.events) and len(lb.asked) == 3


def test_a_balancer_that_cannot_be_read_at_a_check_is_a_warning_not_a_stop() -> None:
    lb = DyingLb()
    lb.broken = LoadBalancerError("haproxy /run/x.sock cannot be reached: refused")
    out = run(lb=lb)
    assert out.status is Status.SUCCESS
    assert lb.calls[-1] == ("enable", "C")
    warned = [w for w in out.state.warnings if "cannot read the load balancer" in w]
    assert len(warned) == 3 and "before wave 2" in warned[0] and "at the end of the run" in warned[-1]
    assert "LoadBalancerError: haproxy /run/x.sock cannot be reached: refused" in warned[0]


def test_a_hook_bug_in_healthy_is_a_warning_too() -> None:
    lb = DyingLb()
    lb.broken = ZeroDivisionError("division by zero")
    assert run(lb=lb).status is Status.SUCCESS


def test_an_interrupted_run_is_not_checked_at_its_end() -> None:
    stop = threading.Event()
    lb = DyingLb(during=lambda action, name: stop.set() if (action, name) == ("enable", "A") else None)
    out = run(lb=lb, stop=stop)
    assert out.status is Status.INTERRUPTED
    assert lb.asked == []


def test_the_record_of_a_check_replays_and_refuses_a_stranger() -> None:
    lb = DyingLb(dies={("enable", "A"): ("A", "DOWN")})
    out = run(lb=lb)
    assert replay(out.events).nodes["A"].not_serving == "DOWN"
    for event in out.events:     # through JSON, as the journal holds it
        assert ev.Event.from_json(event.to_json()) == event
    bad = [*out.events[:1], ev.ServingChecked(wave=2, checked=("Z",))]
    with pytest.raises(ValueError, match="'Z' is not a node of this run"):
        replay(bad)
    with pytest.raises(ValueError, match="do not match"):
        replay([*out.events[:1], ev.ServingChecked(wave=2, checked=("A",), not_serving=("A",))])


def test_a_secret_in_what_the_balancer_says_is_masked() -> None:
    profile = dict(PROFILE, secrets=["token"], vars={"token": "s3cr3t-t0ken"})
    lb = DyingLb(dies={("enable", "A"): ("A", "DOWN: api said s3cr3t-t0ken")})
    out = run(lb=lb, profile=profile)
    assert out.status is Status.DEGRADED
    assert "s3cr3t-t0ken" not in str(out.state.warnings) + str(out.node("A").not_serving)
    assert out.node("A").not_serving == "DOWN: api said ******"
    assert any("DOWN: api said ******" in w for w in out.state.warnings)


# ---------------------------------------------------------------------------- haproxy's answer

def test_haproxy_healthy_is_up_whatever_the_weight_and_names_what_it_shows() -> None:
    api = ScriptedApi(rows={"node-a": ("UP", "0", 0), "node-b": ("DOWN", "1", 0)})
    assert hook(api).healthy([NODE_A, NODE_B]) == {"Node-A": True, "Node-B": "gateways/node-b DOWN (check L7OK)"}
    assert api.commands == ["show stat gateways 6 -1"]       # read-only, one command


@pytest.mark.parametrize("status,healthy", [("UP", True), ("UP 1/3", True), ("no check", True),
                                            ("DOWN", False), ("MAINT", False), ("DRAIN", False),
                                            ("NOLB", False), ("DOWN 1/2", False), ("MAINT (via gw/x)", False)])
def test_haproxy_healthy_statuses(status: str, healthy: bool) -> None:
    answer = hook(ScriptedApi(rows={"node-a": (status, "1", 0)})).healthy([NODE_A])["Node-A"]
    assert (answer is True) is healthy
    if not healthy:
        assert status in str(answer)


def test_haproxy_healthy_asks_every_instance_and_says_where() -> None:
    one, two = ScriptedApi("one"), ScriptedApi("two", rows={"node-a": ("MAINT", "1", 0), "node-b": ("UP", "1", 0)})
    assert hook(one, two).healthy([NODE_A, NODE_B]) == {"Node-A": "gateways/node-a MAINT (check L7OK) on two",
                                                        "Node-B": True}
    missing = ScriptedApi(rows={"node-b": ("UP", "1", 0)})
    assert hook(missing).healthy([NODE_A]) == {"Node-A": "not in backend 'gateways'"}


def test_haproxy_backends_healthy_needs_every_backend() -> None:
    good, bad = hook(ScriptedApi()), hook(ScriptedApi(rows={"node-a": ("DOWN", "1", 0), "node-b": ("UP", "1", 0)}))
    both = HaproxyBackends([good, bad])
    assert both.healthy([NODE_A, NODE_B]) == {"Node-A": "gateways/node-a DOWN (check L7OK)", "Node-B": True}


# ---------------------------------------------------------------------------- a plugin's answer

class Plugin(LoadBalancer):
    def __init__(self, answer: Any = None, serving: Any = None, sleep: float = 0.0) -> None:
        self.answer, self.serving_answer, self.sleep = answer, serving, sleep

    def disable(self, node: Node) -> LbResult:
        return LbResult(True)

    def enable(self, node: Node) -> LbResult:
        return LbResult(True)

    def serving(self, nodes: Any) -> Any:
        return self.serving_answer


class WithHealthy(Plugin):
    def healthy(self, nodes: Any) -> Any:
        time.sleep(self.sleep)
        return self.answer


def test_a_plugin_healthy_may_answer_a_text_made_one_line() -> None:
    plugin = GuardedHook(WithHealthy({"Node-A": "pool member\ndown\x1b[2J " + "x" * 5000, "Node-B": True}), "p:make")
    answer = plugin.healthy([NODE_A, NODE_B])
    assert answer is not None and answer["Node-B"] is True
    assert answer["Node-A"] == "pool member down\x1b[2J " + "x" * 5000     # whole: masked first, then cut


def test_what_the_balancer_shows_is_masked_before_it_is_cut() -> None:
    profile = dict(PROFILE, secrets=["token"], vars={"token": "s3cr3t-t0ken"})
    text = "x" * 990 + " s3cr3t-t0ken and more"          # the cut at 1,000 falls inside the secret
    out = run(lb=DyingLb(dies={("enable", "A"): ("A", text)}), profile=profile)
    assert out.node("A").not_serving == ("x" * 990 + " ****** and more")[:1000]
    assert "s3cr3t" not in str(out.state.warnings) and "t0ken" not in str(out.state.warnings)


def test_a_plugin_without_healthy_is_asked_serving() -> None:
    assert GuardedHook(Plugin(serving={"Node-A": False}), "p:make").healthy([NODE_A]) == {"Node-A": False}
    assert GuardedHook(Plugin(serving=None), "p:make").healthy([NODE_A]) is None


@pytest.mark.parametrize("answer,needle", [
    (["Node-A"], "a list, not a mapping"),
    ({"Node-A": "yes", "Node-B": 1}, "a int for node 'Node-B', not true/false or a text"),
    ({}, "nothing for node 'Node-A'"),
])
def test_a_plugin_healthy_answer_that_cannot_be_read_is_an_unreadable_balancer(answer: Any, needle: str) -> None:
    with pytest.raises(LoadBalancerError, match="healthy\\(\\) answered") as info:
        GuardedHook(WithHealthy(answer), "p:make").healthy([NODE_A, NODE_B])
    assert needle in str(info.value)


def test_a_plugin_healthy_that_hangs_is_bounded_by_call_timeout() -> None:
    plugin = GuardedHook(WithHealthy({"Node-A": True}, sleep=5), "p:make", call_timeout=0.2)
    with pytest.raises(LoadBalancerError, match="healthy\\(\\) did not return within 0.2 s"):
        plugin.healthy([NODE_A])


# ---------------------------------------------------------------------------- the review of such a run

def test_show_runs_and_the_html_report_name_the_node_not_serving(tmp_path: Path) -> None:
    from tests.unit.test_review import cli, write_run
    from zdu.report.html import render_html
    from zdu.report.review import load_run, state_from_record
    out = run(lb=DyingLb(dies={("enable", "A"): ("A", "gateways/node-a DOWN (check L4CON)")}))
    run_id = "20261204-020000-000001"
    folder = write_run(tmp_path, run_id, out.events)
    record = json.loads((folder / "run.json").read_text())
    assert record["status"] == {"name": "DEGRADED", "code": 85}
    assert record["nodes"]["A"]["not_serving"] == "gateways/node-a DOWN (check L4CON)"
    assert state_from_record(record).nodes["A"].not_serving == "gateways/node-a DOWN (check L4CON)"
    loaded = load_run(tmp_path, run_id)
    assert not loaded.problem and loaded.state is not None
    html = render_html(loaded)
    assert "NOT SERVING when last checked (gateways/node-a DOWN (check L4CON))" in html
    code, shown, _ = cli("show", run_id, "--log_dir", str(tmp_path))
    assert code == 0 and "but NOT SERVING when last checked (gateways/node-a DOWN (check L4CON))" in shown
    assert "!!! A is NOT SERVING before wave 2" in shown
    # a run.json of before this field (no "not_serving") still reads
    del record["nodes"]["A"]["not_serving"]
    assert state_from_record(record).nodes["A"].not_serving is None


# ---------------------------------------------------------------------------- soak

class Clock:
    """A clock that moves only when the run sleeps; ``at`` is called at each sleep."""

    def __init__(self, at: Any = None) -> None:
        self.now = 1000.0
        self.slept = 0.0
        self.at = at

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept += seconds
        if self.at is not None:
            self.at(self)


def soaked(soak: float, lb: DyingLb, clock: Clock, stop: threading.Event | None = None,
           nodes: str = "ABC", previous: list[ev.Event] | None = None) -> Any:
    from tests.support.fakes import FakeFleet, Outcome as Out, make_plan, opened
    from zdu.run.conductor import Conductor
    from zdu.run.state import Recorder, RunState
    plan = make_plan(nodes=nodes, topology={"soak": soak})
    events: list[ev.Event] = list(previous or [])
    recorder = Recorder(replay(events) if previous else RunState.opened(opened(plan)))
    recorder.subscribe(lambda event, view: events.append(event))
    if not previous:
        recorder.emit(opened(plan))
    fleet = FakeFleet()
    status = Conductor(plan, recorder, handlers=fleet, lb=lb, clock=clock, sleep=clock.sleep,
                       stop_event=stop, resume=bool(previous)).execute()
    return Out(status, recorder.snapshot(), fleet.log, lb, events)


def test_soak_watches_the_nodes_put_back_before_each_later_wave_and_the_end() -> None:
    lb, clock = DyingLb(), Clock()
    out = soaked(12, lb, clock)
    assert out.status is Status.SUCCESS
    assert clock.slept == pytest.approx(36)        # before wave 2, before wave 3, at the end
    # asked at 5 s and 10 s of each soak (not recorded: all served), then at its end (recorded)
    assert lb.asked == [("A",)] * 3 + [("A", "B")] * 3 + [("A", "B", "C")] * 3
    assert [(c.wave, c.checked) for c in checks(out.events)] == [(2, ("A",)), (3, ("A", "B")), (None, ("A", "B", "C"))]
    soaks = [e.message for e in out.events if isinstance(e, ev.Noted) and e.message.startswith("soak:")]
    assert soaks == ["soak: watching the nodes put back for 12s before wave 2",
                     "soak: watching the nodes put back for 12s before wave 3",
                     "soak: watching the nodes put back for 12s before the end of the run"]


def test_a_node_lost_during_a_soak_ends_it_at_once_and_stops_the_run() -> None:
    lb = DyingLb()

    def at(clock: Clock) -> None:
        if clock.slept >= 7:
            lb.health["A"] = "gateways/node-a DOWN (check L7STS)"
    clock = Clock(at)
    out = soaked(600, lb, clock)
    assert out.status is Status.DEGRADED
    assert clock.slept == pytest.approx(10)         # found at the second look, 10 s in; not 600 s
    assert lb.calls == [("disable", "A"), ("enable", "A")]
    assert out.node("A").not_serving == "gateways/node-a DOWN (check L7STS)"
    assert [(c.wave, c.not_serving) for c in checks(out.events)] == [(2, ("A",))]


def test_an_interrupt_during_a_soak_before_a_wave_stops_the_run_there() -> None:
    stop = threading.Event()
    lb, clock = DyingLb(), Clock(lambda c: stop.set() if c.slept >= 3 else None)
    out = soaked(600, lb, clock, stop)
    assert out.status is Status.INTERRUPTED
    assert clock.slept < 5 and lb.calls == [("disable", "A"), ("enable", "A")]
    assert out.node("B").version is Version.OLD


def test_an_interrupt_during_the_soak_at_the_end_still_asks_once() -> None:
    stop = threading.Event()
    lb = DyingLb()
    clock = Clock(lambda c: stop.set() if lb.calls[-1:] == [("enable", "B")] and c.slept >= 603 else None)
    out = soaked(600, lb, clock, stop, nodes="AB")
    assert clock.slept == pytest.approx(603.5, abs=0.6)
    assert lb.asked[-1] == ("A", "B") and checks(out.events)[-1].wave is None
    assert out.status is Status.SUCCESS


def test_a_resume_soaks_only_before_the_waves_it_still_has_to_do() -> None:
    first = soaked(12, DyingLb(), Clock())
    cut = next(i for i, e in enumerate(first.events)
               if isinstance(e, ev.LbFinished) and e.node == "B" and e.action.value == "enable")
    clock = Clock()
    again = soaked(12, DyingLb(), clock, previous=first.events[:cut + 1])
    assert again.status is Status.SUCCESS
    assert clock.slept == pytest.approx(24)          # before wave 3 and at the end; wave 2 was done
    assert again.log == ["pre-apply C", "apply C", "post-apply C"]


def test_no_soak_when_no_node_was_put_back() -> None:
    lb, clock = DyingLb(always_fail={("disable", "A")}), Clock()
    out = soaked(30, lb, clock, nodes="A")
    assert out.status is Status.APPLY_FAILED and clock.slept == 0 and lb.asked == []


@pytest.mark.parametrize("value,needle", [("30s", "expected a number, got a string"), (-1, "between 0 and 86400"),
                                          (86401, "between 0 and 86400"), (True, "expected a number"),
                                          (float("nan"), "between 0 and 86400")])
def test_a_bad_soak_is_refused_naming_the_field(value: Any, needle: str) -> None:
    from zdu.config.topology import parse_topology
    from zdu.errors import ConfigError
    with pytest.raises(ConfigError, match="soak") as info:
        parse_topology({"nodes": [{"name": "A", "host": "127.0.0.1"}], "soak": value}, source="t.yaml")
    assert needle in str(info.value) and "t.yaml" in str(info.value)


def test_the_dry_run_says_how_long_the_soak_is() -> None:
    from tests.support.fakes import make_plan
    from zdu.planning.plan import format_plan
    assert "soak 45s: the nodes put back are watched that long before each later wave and the end" in \
        format_plan(make_plan(topology={"soak": 45}))
    assert "soak" not in format_plan(make_plan())
