"""The failure budget (max_fail_percentage, ansible's meaning): a wave in which every node failed
ends the run whatever the budget, as a batch that failed entirely ends an ansible play; 100% with
serial 1 must not walk the whole fleet failing node after node and call it PARTIAL."""
from __future__ import annotations

from tests.support.fakes import run
from zdu.status import LbState, Status, Version


def test_a_budget_of_100_percent_does_not_carry_the_run_past_a_wave_that_failed_entirely() -> None:
    out = run({"apply A": 1, "apply B": 1, "apply C": 1}, topology={"serial": 1, "max_fail_percentage": 100})
    assert out.status is Status.APPLY_FAILED
    assert not any(c.startswith("pre-apply B") for c in out.log), out.log
    assert all(out.node(n).version is Version.OLD and out.node(n).lb is LbState.IN for n in "ABC")
    assert any("failure budget (100%) does not carry the run past a whole wave" in n for n in out.state.warnings)


def test_two_nodes_of_a_wave_of_two_failing_at_once_stop_the_run_and_are_both_rolled_back() -> None:
    out = run({"apply A": 1, "apply B": 1}, nodes="ABCD", topology={"serial": 2, "max_fail_percentage": 100})
    assert out.status is Status.APPLY_FAILED
    assert sorted(c for c in out.log if c.startswith("undo")) == ["undo A", "undo B"]
    assert not any(c.startswith("pre-apply C") for c in out.log)
    assert all(out.node(n).version is Version.OLD and out.node(n).lb is LbState.IN for n in "ABCD")
    assert not any(d.within_budget for d in out.state.decisions)
