"""The summary's rerun hint: only for a run that ended with its nodes on two versions."""
from __future__ import annotations

import pytest

from zdu.report.summary import render_summary, rerun_hint
from zdu.run.state import PhaseResult, RunState
from zdu.status import Outcome, Status, Version


def state(versions: dict[str, Version], status: Status | None = Status.INTERRUPTED, *,
          rolled_back: tuple[str, ...] = (), skipped: tuple[str, ...] = (), limit: str | None = None) -> RunState:
    s = RunState(run_id="r", old_install_dir="/opt/a", new_install_dir="/opt/b", profile="p",
                 topology="t", node_names=list(versions), invocation={"limit": limit})
    for name, version in versions.items():
        s.nodes[name].version = version
        s.nodes[name].skipped = name in skipped
        if name in rolled_back:
            s.nodes[name].rollback = PhaseResult(Outcome.PASSED, 0)
    s.status = status
    s.started, s.ended = 1.0, (2.0 if status is not None else None)
    return s


OLD, NEW, UNKNOWN = Version.OLD, Version.NEW, Version.UNKNOWN


def test_mixed_fleet_names_the_old_nodes_and_why() -> None:
    s = state({"A": NEW, "B": OLD, "C": OLD}, Status.PARTIAL, rolled_back=("B",))
    hint = rerun_hint(s)
    assert hint == ("Still on the old version: B (rolled back), C (not upgraded). To upgrade them, run the "
                    "same command again with --limit B,C")
    assert hint in render_summary(s)


def test_the_runs_own_limit_is_named_and_quoted() -> None:
    hint = rerun_hint(state({"A": NEW, "B": OLD}, limit="gw*,!db"))
    assert hint is not None and hint.endswith("--limit B (in place of its --limit 'gw*,!db')")


@pytest.mark.parametrize("case", [
    state({"A": NEW, "B": NEW}, Status.SUCCESS),                 # done
    state({"A": NEW, "B": NEW}, Status.AFTER_FAILED),            # every node new: --resume, not a rerun
    state({"A": OLD, "B": OLD}, Status.ABORTED, rolled_back=("A",)),  # one version (old) everywhere
    state({"A": NEW, "B": OLD}, None),                           # not ended: --resume goes on with it
    state({"A": NEW, "B": UNKNOWN}),                             # unknown: reported, not a rerun
    state({"A": NEW, "B": OLD}, skipped=("B",)),                # --limit left B out
])
def test_no_hint_when_the_fleet_is_on_one_version_or_the_run_goes_on(case: RunState) -> None:
    assert rerun_hint(case) is None
    assert "Still on the old version" not in render_summary(case)


def test_skipped_and_unknown_nodes_are_not_in_the_limit() -> None:
    hint = rerun_hint(state({"A": NEW, "B": OLD, "C": UNKNOWN, "D": OLD}, Status.APPLY_FAILED, skipped=("D",)))
    assert hint is not None and hint.endswith("--limit B")
