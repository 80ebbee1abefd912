"""A capacity guard no wave can pass (a tier's ``min_in_service`` larger than the tier, or a
serial that takes more nodes out than it leaves): ``--dry-run`` says so, naming the wave and
the tier, and the real run (zdupgrade as a process on ``transport: local`` nodes) is refused at
preflight (84) with nothing changed, as the dry run said."""
from __future__ import annotations

from pathlib import Path

import yaml

from tests.integration.test_pause import zdupgrade
from tests.support.localfleet import LocalFleet
from zdu.status import Status

TIERS = {"tiers": [{"name": "mgr", "nodes": ["A", "B"], "min_in_service": 3},
                   {"name": "wrk", "nodes": ["C", "D", "E"], "min_in_service": "50%"}]}


def test_the_dry_run_names_the_waves_the_guard_never_starts_and_the_run_is_refused(tmp_path: Path) -> None:
    fleet = LocalFleet(tmp_path, names="ABCDE", extra=TIERS)
    dry = zdupgrade(*fleet.argv("--dry-run"), cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    warnings = [line.strip() for line in dry.stdout.splitlines() if "WARNING: the capacity guard" in line]
    assert warnings == [
        f"WARNING: the capacity guard can never start wave {n} ({node}): tier mgr has 2 node(s), at least 3 must "
        "stay in service, and the wave takes 1 out; the run would be refused (84). Lower min_in_service or the serial"
        for n, node in ((1, "A"), (2, "B"))]
    run = zdupgrade(*fleet.argv(), cwd=tmp_path)
    assert run.returncode == int(Status.CAPACITY_REFUSED), run.stdout + run.stderr
    assert "wave 1 (A) would leave 1 of 2 node(s) in service, at least 3 must" in run.stderr
    assert all(fleet.running(n) == "1.0" and fleet.lb(n) == "in" and fleet.lb_log(n) == [] for n in "ABCDE")


def test_a_serial_too_wide_for_the_guard_is_named_and_a_fitting_plan_has_no_warning(tmp_path: Path) -> None:
    fleet = LocalFleet(tmp_path, names="ABCDE", extra={"min_in_service": 3})
    wide = zdupgrade(*fleet.argv("--dry-run", "--serial", "1,3"), cwd=tmp_path)
    assert ("WARNING: the capacity guard can never start wave 2 (B, C, D): the backend has 5 node(s), at least 3 "
            "must stay in service, and the wave takes 3 out") in wide.stdout
    assert "wave 1 (A)" not in wide.stdout.split("WARNING")[1]
    fitting = zdupgrade(*fleet.argv("--dry-run", "--serial", "2"), cwd=tmp_path)
    assert fitting.returncode == 0 and "WARNING: the capacity guard" not in fitting.stdout
    # --limit: the backend guard still counts the nodes left out (they serve)
    data = yaml.safe_load(fleet.topology.read_text())
    data["min_in_service"] = 4
    fleet.topology.write_text(yaml.safe_dump(data))
    limited = zdupgrade(*fleet.argv("--dry-run", "--limit", "A"), cwd=tmp_path)
    assert limited.returncode == 0 and "WARNING: the capacity guard" not in limited.stdout, limited.stdout
