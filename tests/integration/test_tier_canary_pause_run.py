"""A pause after a tier's last wave: a one-node canary tier with ``serial: [1, pause, 100%]``
pauses before the next tier (after its gate), as the plan says; the journal of the real run
(zdupgrade as a process on ``transport: local`` nodes) follows the plan wave by wave.

Before, a pause that fell on a tier's last wave was dropped as if it were the run's last: the
usual canary (one node, then wait for the operator) could not be written with tiers."""
from __future__ import annotations

import json
import re
from pathlib import Path

from tests.integration.test_pause import paused, zdupgrade
from tests.support.fakes import make_plan
from tests.support.localfleet import LocalFleet
from zdu.planning.plan import format_plan
from zdu.status import Status

TIERS = {"serial": [1, "pause", "100%"],
         "tiers": [{"name": "canary", "nodes": ["A"], "gate": [{"name": "settled", "run": "true"}]},
                   {"name": "rest", "nodes": ["B", "C", "D"]}]}


def test_the_plan_keeps_a_pause_after_a_tiers_last_wave_but_never_after_the_runs() -> None:
    plan = make_plan(nodes="ABCD", topology=TIERS)
    assert plan.waves == (("A",), ("B",), ("C", "D")) and plan.pauses == frozenset({0, 1})
    text = format_plan(plan)
    assert text.index("gate of tier canary") < text.index("PAUSE after wave 1") < text.index("wave 2: B")
    # the last tier's last wave ends the run: no pause after it
    last = make_plan(nodes="ABCD", topology={**TIERS, "serial": [1, "pause", 5, "pause", 1]})
    assert last.waves == (("A",), ("B",), ("C", "D")) and last.pauses == frozenset({0, 1})
    # a tier's serial of its own: a pause after its one wave, then the next tier
    own = make_plan(nodes="ABCD", topology={"tiers": [{"name": "canary", "nodes": ["A"], "serial": [1, "pause", 1]},
                                                      {"name": "rest", "nodes": ["B", "C", "D"], "serial": 3}]})
    assert own.pauses == frozenset({0})


def test_the_run_pauses_before_the_next_tier_as_planned(tmp_path: Path) -> None:
    fleet = LocalFleet(tmp_path, names="ABCD", extra=TIERS)
    dry = zdupgrade(*fleet.argv("--dry-run"), cwd=tmp_path)
    planned = [line.strip() for line in dry.stdout.splitlines()
               if re.match(r"\s+(wave \d+:|PAUSE after|gate of tier)", line)]
    assert planned == ["wave 1: A", "gate of tier canary: must hold before the next tier starts:",
                       "PAUSE after wave 1: wait for the operator (zdupgrade continue | abort)", "wave 2: B",
                       "PAUSE after wave 2: wait for the operator (zdupgrade continue | abort)", "wave 3: C, D"]
    proc = fleet.start()
    seen = []
    for wave in (1, 2):
        fleet.wait_for(lambda: paused(fleet), f"the pause after wave {wave}", proc)
        seen.append({n: fleet.running(n) for n in "ABCD"})
        assert zdupgrade("continue", "--log_dir", str(fleet.log_dir), cwd=tmp_path).returncode == 0
        fleet.wait_for(lambda: not paused(fleet), f"the end of the pause after wave {wave}", proc)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == int(Status.SUCCESS), out
    assert seen == [{"A": "2.0", "B": "1.0", "C": "1.0", "D": "1.0"}, {"A": "2.0", "B": "2.0", "C": "1.0", "D": "1.0"}]
    done = []
    for line in (fleet.run_dir() / "journal.jsonl").read_text().splitlines():
        event = json.loads(line)
        if event["type"] == "PhaseStarted" and event["phase"] == "APPLY":
            done.append(f"apply {event['node']}")
        elif event["type"] == "RunPhaseStarted" and event["phase"] == "GATE":
            done.append("gate")
        elif event["type"] == "Paused":
            done.append(f"pause {event['wave']}")
    assert done[:4] == ["apply A", "gate", "pause 1", "apply B"] and done[4] == "pause 2"
    assert sorted(done[5:]) == ["apply C", "apply D"]
    assert all(fleet.running(n) == "2.0" and fleet.lb(n) == "in" for n in "ABCD")
