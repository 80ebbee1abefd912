"""A tier's capacity guard counts the tier's nodes that ``--limit`` leaves out: they serve all the
same.  It counted only the selected ones, so on a tier ``wrk`` of B, C, D (all serving) with
``min_in_service: 2``, ``--limit B,C`` was refused (84, "would leave 1 of 2 node(s)") though D
keeps serving and 2 of 3 stay in.  zdupgrade as a process on ``transport: local`` nodes behind the
script hook (whose state files say who serves)."""
from __future__ import annotations

from pathlib import Path

from tests.integration.test_pause import zdupgrade
from tests.support.localfleet import LocalFleet
from zdu.status import Status

TIERS = {"tiers": [{"name": "mgr", "nodes": ["A"]},
                   {"name": "wrk", "nodes": ["B", "C", "D"], "min_in_service": 2}]}


def test_limit_within_a_guarded_tier_counts_the_nodes_it_leaves_out(tmp_path: Path) -> None:
    fleet = LocalFleet(tmp_path, names="ABCD", extra=TIERS)
    dry = zdupgrade(*fleet.argv("--dry-run", "--limit", "B,C"), cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert "tier wrk: B, C (--limit leaves out D); at least 2 in service" in dry.stdout
    assert "WARNING: the capacity guard" not in dry.stdout
    run = zdupgrade(*fleet.argv("--limit", "B,C"), cwd=tmp_path)
    assert run.returncode == int(Status.SUCCESS), run.stdout + run.stderr
    assert [fleet.running(n) for n in "ABCD"] == ["1.0", "2.0", "2.0", "1.0"]
    assert all(fleet.lb(n) == "in" for n in "ABCD")


def test_the_guard_still_refuses_what_the_whole_tier_cannot_spare(tmp_path: Path) -> None:
    # min_in_service 3 of a 3-node tier: no wave can start, --limit or not (the script hook cannot
    # say who serves, so every node counts as serving)
    tiers = {"tiers": [TIERS["tiers"][0], {**TIERS["tiers"][1], "min_in_service": 3}]}
    fleet = LocalFleet(tmp_path, names="ABCD", extra=tiers)
    dry = zdupgrade(*fleet.argv("--dry-run", "--limit", "B"), cwd=tmp_path)
    assert ("WARNING: the capacity guard can never start wave 1 (B): tier wrk has 3 node(s), at least 3 must "
            "stay in service") in dry.stdout, dry.stdout
    run = zdupgrade(*fleet.argv("--limit", "B"), cwd=tmp_path)
    assert run.returncode == int(Status.CAPACITY_REFUSED), run.stdout + run.stderr
    assert ("wave 1 (B) would leave 2 of 3 node(s) in service, at least 3 must (assuming every node serves: "
            "the hook cannot tell)") in run.stderr
    assert all(fleet.running(n) == "1.0" for n in "ABCD") and fleet.lb_log("B") == []
