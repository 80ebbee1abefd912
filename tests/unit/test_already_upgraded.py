"""A profile's ``upgraded:`` check: preflight runs it on every node of a new run, and a node where
it exits 0 already runs the new version and is left out, untouched (a rerun redoes no node).
Fast logic here (the profile field, the plan, the preflight script with a real shell, the
conductor with in-memory nodes); the lab proof is tests/e2e/test_steering_lab.py."""
from __future__ import annotations

import subprocess
from typing import Any

import pytest

from tests.support.fakes import PROFILE, FakeLb, make_plan, opened, run
from zdu.config.profile import parse_profile
from zdu.errors import ConfigError
from zdu.planning.plan import format_plan
from zdu.report.summary import render_summary
from zdu.run import events as ev
from zdu.run.preflight import check_script
from zdu.run.state import replay
from zdu.status import LbState, Status, Version

WITH_CHECK = dict(PROFILE, upgraded="test -e /opt/new/{{ node.name }}.on")


def test_the_check_is_rendered_for_each_node_and_shown_by_the_dry_run() -> None:
    plan = make_plan(WITH_CHECK)
    assert [p.upgraded for p in plan.nodes] == [(f"test -e /opt/new/{n}.on", f"test -e /opt/new/{n}.on")
                                                 for n in "ABC"]
    text = format_plan(plan)
    assert "already upgraded? preflight runs `test -e /opt/new/A.on (per node)` on each node" in text
    assert "already upgraded?" not in format_plan(make_plan())
    assert make_plan().nodes[0].upgraded is None


def test_a_secret_in_the_check_is_masked_in_the_plan() -> None:
    profile = dict(PROFILE, secrets=["token"], vars={"token": "s3cr3t"}, upgraded="probe --token {{ token }}")
    plan = make_plan(profile)
    real, shown = plan.nodes[0].upgraded or ("", "")
    assert "s3cr3t" in real and "s3cr3t" not in shown and "******" in shown
    assert "s3cr3t" not in format_plan(plan)


@pytest.mark.parametrize("value,needle", [
    ("", "expected a non-empty string"), (7, "expected a non-empty string"),
    ("test {{ x", "upgraded"), (["a"], "expected a non-empty string"),
])
def test_a_bad_check_is_refused_naming_the_field(value: Any, needle: str) -> None:
    with pytest.raises(ConfigError, match="upgraded") as info:
        parse_profile(dict(PROFILE, upgraded=value), source="p.yaml")
    assert needle in str(info.value) and "p.yaml" in str(info.value)


def shell(script: str, cwd: Any) -> str:
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, cwd=cwd, timeout=30).stdout


def test_the_preflight_script_runs_the_check_in_a_subshell_of_its_own(tmp_path: Any) -> None:
    """With a real sh: exit 0 -> yes; any other exit, a command not found, one that reads stdin,
    one that exits the shell or ends in a comment -> no; its output never reaches the markers."""
    for check, answer in [("echo noise; true", "yes"), ("false", "no"), ("no-such-command-zdu", "no"),
                          ("exit 0 # a comment", "yes"), ("read x; test -n \"$x\"", "no"), ("exit 3", "no")]:
        plan = make_plan(dict(PROFILE, upgraded=check), nodes="A")
        out = shell(check_script(plan, "A", 0, False, probe=True), tmp_path)
        assert out.splitlines() == [f"ZDU-CHECK upgraded {answer}", "ZDU-CHECK done"], (check, out)
    plan = make_plan(WITH_CHECK, nodes="A")
    assert "upgraded" not in check_script(plan, "A", 0, False, probe=False)      # a resume: never asked
    assert "upgraded" not in check_script(make_plan(nodes="A"), "A", 0, False, probe=True)


def already(names: str) -> list[ev.Event]:
    plan = make_plan(WITH_CHECK)
    return [opened(plan), *(ev.AlreadyUpgraded(node=n, message=f"{n} already runs the new version") for n in names)]


def test_nodes_found_upgraded_are_left_out_untouched() -> None:
    out = run(profile=WITH_CHECK, previous=already("AB"))
    assert out.status is Status.SUCCESS
    assert out.lb.calls == [("disable", "C"), ("enable", "C")]
    assert not any(line.endswith((" A", " B")) for line in out.log), out.log
    for name in "AB":
        node = out.node(name)
        assert node.skipped and node.already_upgraded and node.version is Version.NEW
        assert node.lb is LbState.IN and not node.phases
    summary = render_summary(out.state)
    assert "A: already on new (/n) when the run began (the profile's upgraded check): left out, not touched" in summary
    assert "C: on new (/n), in the load balancer" in summary


def test_a_fleet_already_upgraded_everywhere_changes_nothing() -> None:
    out = run(profile=WITH_CHECK, previous=already("ABC"))
    assert out.status is Status.SUCCESS and out.lb.calls == [] and out.log == []


def test_the_capacity_guard_counts_only_the_nodes_a_wave_takes_out() -> None:
    """serial 2, min_in_service 2 of 3: wave 1 (A, B) would leave 1 serving, but A is already
    upgraded and left out, so the wave takes out B alone and 2 stay in service."""
    lb = FakeLb()
    lb.serving_now = {"A": True, "B": True, "C": True}
    out = run(profile=WITH_CHECK, previous=already("A"), serial=2, topology={"min_in_service": 2}, lb=lb)
    assert out.status is Status.SUCCESS, out.state.warnings
    assert [c["leaving"] for c in out.state.capacity] == [["B"], ["C"]]


def test_the_record_refuses_a_node_found_upgraded_after_the_run_worked_on_it() -> None:
    events = run(profile=WITH_CHECK).events
    with pytest.raises(ValueError, match="A was already worked on by this run"):
        replay([*events, ev.AlreadyUpgraded(node="A")])
