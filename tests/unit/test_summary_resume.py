"""The summary of a resumed run: warnings given before the resume are history, not news."""
from __future__ import annotations

from tests.support.fakes import lost, run
from zdu.report.summary import render_summary
from zdu.run.state import replay
from zdu.status import Status


def test_a_repaired_node_is_not_still_reported_out_of_the_load_balancer() -> None:
    first = run({"apply B": lost, "undo B": lost})
    assert first.status is Status.ROLLBACK_FAILED
    before = render_summary(first.state)
    assert "WARNING: B: !!! B is OUT OF THE LOAD BALANCER" in before      # true then: said loudly
    repaired = run(previous=first.events, repair=("B",))
    text = render_summary(repaired.state)
    assert "  B: on old (/o), in the load balancer" in text
    # the warning of the first attempt is kept, as what was true before the resume
    assert "WARNING: B: !!! B is OUT OF THE LOAD BALANCER" not in text, text
    history = text.split("Before the latest --resume (", 1)[1].splitlines()
    assert any(line.startswith("  was: B: !!! B is OUT OF THE LOAD BALANCER") for line in history), text
    # the same from the journal: replay gives the same summary
    assert render_summary(replay(repaired.events)) == text


def test_a_repair_that_still_cannot_reach_the_node_warns_again() -> None:
    first = run({"apply B": lost, "undo B": lost})
    again = run({"undo B": lost}, previous=first.events, repair=("B",))
    assert again.status is Status.ROLLBACK_FAILED
    current = [line for line in render_summary(again.state).splitlines() if line.startswith("WARNING: ")]
    assert any("B is OUT OF THE LOAD BALANCER" in line for line in current), current
