"""SIGKILL anywhere: the control machine dies after the N-th event of its journal, and
``--resume`` finishes the job.

A real zdupgrade process drives a 3-node ``transport: local`` fleet (real shells, a real script
hook).  A small wrapper starts it with its journal writer patched to SIGKILL the whole process
group (``os.killpg``, as a control machine that dies) the moment line N of ``journal.jsonl`` is
written -- an exact kill point, which polling the file from outside cannot give on a run that
takes half a second.  After each kill ``--resume`` runs (twice at most), then:

- its exit status is the status the same run has uninterrupted;
- every node runs exactly the version the uninterrupted run leaves it on ("2.0", or "1.0" after
  a rollback) -- never "stopped" -- and is back in the load balancer;
- the load balancer saw no node taken out again after it was put back: each ``lb.log`` is
  disables then enables (an action in flight at the kill may be made twice), and a node the
  uninterrupted run never touches is never touched;
- the fleet lock is given back, and the run log and the summary say what happened.

Scenarios: every node upgraded (serial 1 and 2); B failing POST-APPLY (the default policy rolls
back B and A, C is never touched); B failing within the failure budget (serial 2: B rolled back,
the run goes on, PARTIAL); a canary pause (serial 1, pause, 2) whose timeout answers continue, or
abort (the canary rolled back, 83) -- a kill at the pause comes back to it on resume.

Kill points: by default the events where something changes or is decided (the lock, each LB
action's start and end, the end of "stop old" -- the node runs nothing --, of APPLY and of
POST-APPLY, the first node done with EXPORT and UPGRADE, decisions, rollbacks, the run's end);
``ZDU_KILL_SWEEP=full`` takes every event index of the run.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.localfleet import ROOT, LocalFleet
from zdu.status import Status

WRAPPER = r'''
import os, signal, sys
sys.path.insert(0, sys.argv.pop(1))
kill_at = int(os.environ["ZDU_TEST_KILL_AT"])
from zdu.report import runfolder
journal = runfolder.RunFolder.journal
def killing_journal(self, event, state):
    journal(self, event, state)
    with open(self.journal_path, "rb") as handle:
        if handle.read().count(b"\n") >= kill_at:
            os.killpg(os.getpgrp(), signal.SIGKILL)      # the control machine dies here
runfolder.RunFolder.journal = killing_journal
from zdu.__main__ import launch
sys.argv[0] = "zdupgrade"
launch()
'''

#: events after which a kill leaves the most to repair (the default kill points)
CHANGES = {"LockTaken", "LbStarted", "LbFinished", "Decided", "RollbacksPlanned", "RollbackStarted",
           "RollbackFinished", "RunFinished", "LockReleased", "Paused", "PauseEnded"}
FULL = os.environ.get("ZDU_KILL_SWEEP") == "full"
WORKERS = 3


def _fleet(root: Path, scenario: str, serial: int) -> LocalFleet:
    if scenario.startswith("pause-"):            # a canary pause whose 1 s timeout answers for nobody
        return LocalFleet(root, serial=[1, "pause", 2],
                          extra={"pause_timeout": 1, "pause_timeout_action": scenario[len("pause-"):]})
    budget = {"max_fail_percentage": 50} if scenario == "B-fails-within-budget" else {}
    fleet = LocalFleet(root, serial=serial, extra=budget)
    if scenario in ("post-apply-fails-on-B", "B-fails-within-budget"):
        node = "{{ fleet_root }}/{{ node.name }}"
        data = yaml.safe_load(fleet.profile.read_text())
        data["phases"]["POST-APPLY"][0]["run"] = f"[ {{{{ node.name }}}} != B ] && grep -qx 2.0 {node}/running"
        fleet.profile.write_text(yaml.safe_dump(data, sort_keys=False))
    return fleet


def _journal(fleet: LocalFleet) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (fleet.run_dir() / "journal.jsonl").read_text().splitlines()]


def _reference(root: Path, scenario: str, serial: int) -> tuple[int, dict[str, tuple[str, str]], list[dict[str, Any]], dict[str, list[str]]]:
    """The same run, not interrupted: its status, the nodes it leaves, its journal, its LB actions."""
    fleet = _fleet(root, scenario, serial)
    done = subprocess.run([sys.executable, str(ROOT / "zdupgrade"), *fleet.argv()], capture_output=True,
                          text=True, cwd=root, timeout=120)
    nodes = {n: (fleet.running(n), fleet.lb(n)) for n in fleet.names}
    return done.returncode, nodes, _journal(fleet), {n: fleet.lb_log(n) for n in fleet.names}


def _kill_points(journal: list[dict[str, Any]]) -> list[int]:
    if FULL:
        return list(range(1, len(journal) + 1))
    points, offline = [1], set()
    for i, event in enumerate(journal, 1):
        kind, phase = event["type"], event.get("phase")
        if kind == "PhaseFinished" and phase in ("EXPORT", "UPGRADE") and phase not in offline:
            offline.add(phase)                       # one node done, the others not
            points.append(i)
        elif kind in CHANGES or (kind == "PhaseFinished" and phase in ("APPLY", "POST-APPLY")) or (
                kind == "StepFinished" and event.get("name") == "stop old"):   # the node runs "stopped"
            points.append(i)
    return points


def _killed_at(fleet: LocalFleet, kill_at: int) -> None:
    wrapper = fleet.root / "kill-wrapper.py"
    wrapper.write_text(WRAPPER)
    dead = subprocess.run([sys.executable, str(wrapper), str(ROOT), *fleet.argv()], capture_output=True, text=True,
                          cwd=fleet.root, timeout=120, start_new_session=True,
                          env={**os.environ, "ZDU_TEST_KILL_AT": str(kill_at)})
    assert dead.returncode == -9, f"not killed at event {kill_at}: {dead.returncode}\n{dead.stdout[-2000:]}"


def _check_one(root: Path, scenario: str, serial: int, kill_at: int, reference: tuple[Any, ...]) -> str:
    """Kill at ``kill_at``, resume, check; '' when all held, else what broke."""
    status, nodes, journal, lb_logs = reference
    fleet = _fleet(root, scenario, serial)
    _killed_at(fleet, kill_at)
    kind = journal[kill_at - 1]["type"]
    where = f"killed after event {kill_at} ({kind} {journal[kill_at - 1].get('node') or ''})"
    resumed = fleet.resume()
    if resumed.returncode == int(Status.CONFIG_ERROR) and "nothing to resume" not in resumed.stderr \
            and "never started" not in resumed.stderr:
        resumed = fleet.resume()          # a lock or a step to repair first: once more
    said = resumed.stdout + resumed.stderr
    problems = []
    if kill_at == 1:                      # only RunOpened: preflight had not taken the lock
        if resumed.returncode != int(Status.CONFIG_ERROR) or "never started changing nodes" not in resumed.stderr:
            problems.append(f"resume after RunOpened: {resumed.returncode} {resumed.stderr[-300:]}")
        if any(fleet.running(n) != "1.0" or fleet.lb_log(n) for n in fleet.names):
            problems.append("a node was touched before the lock")
        return "; ".join(problems)
    if kill_at == len(journal):           # after LockReleased: the run was over
        if resumed.returncode != int(Status.CONFIG_ERROR) or "nothing to resume" not in resumed.stderr:
            problems.append(f"resume of a finished run: {resumed.returncode} {resumed.stderr[-300:]}")
    elif resumed.returncode != status:
        problems.append(f"resume ended {resumed.returncode}, the uninterrupted run {status}")
    if "Traceback" in said or "internal error" in said:
        problems.append("a traceback or an internal error")
    for name in fleet.names:
        got = (fleet.running(name), fleet.lb(name))
        if got != nodes[name]:
            problems.append(f"{name} runs {got[0]!r}, lb {got[1]!r}; the uninterrupted run leaves {nodes[name]}")
        actions = fleet.lb_log(name)
        if not lb_logs[name] and actions:
            problems.append(f"{name} was never touched by the uninterrupted run, but its LB saw {actions}")
        # each disable/enable pair of the reference run, an action in flight at the kill made twice at most
        pairs = re.sub(r"(disable )+(enable )+", "P ", " ".join(actions) + " ").split()
        want = re.sub(r"(disable )+(enable )+", "P ", " ".join(lb_logs[name]) + " ").split()
        if pairs != want:
            problems.append(f"{name}'s load balancer saw {actions}, the uninterrupted run {lb_logs[name]}")
    if (fleet.root / "fleet-lock").exists():
        problems.append("the fleet lock was not given back")
    if kill_at < len(journal) - 1:        # the resume did the work: its summary says how it ended
        if f"Status {status} (" not in resumed.stdout:
            problems.append(f"the summary does not give status {status}")
        run_log = (fleet.run_dir() / "run.log").read_text()
        if "Summary table" not in run_log.split("resum", 1)[-1]:
            problems.append("run.log has no summary after the resume")
    return "; ".join(f"{where}: {p}" for p in problems)


@pytest.mark.parametrize("scenario,serial", [("success", 1), ("success", 2), ("post-apply-fails-on-B", 1),
                                             ("B-fails-within-budget", 2), ("pause-continue", 0),
                                             ("pause-abort", 0)])
def test_a_kill_anywhere_then_resume_finishes_the_job(tmp_path: Path, scenario: str, serial: int) -> None:
    reference = _reference(tmp_path / "reference", scenario, serial)
    status, nodes, journal, _ = reference
    assert status == {"success": 0, "post-apply-fails-on-B": int(Status.POST_APPLY_FAILED),
                      "B-fails-within-budget": int(Status.PARTIAL), "pause-continue": 0,
                      "pause-abort": int(Status.ABORTED)}[scenario], status
    assert all(running in ("1.0", "2.0") and lb == "in" for running, lb in nodes.values()), nodes
    points = _kill_points(journal)
    assert len(points) >= 20, points
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:     # each kill point has a fleet of its own
        found = pool.map(lambda n: _check_one(tmp_path / f"kill-{n}", scenario, serial, n, reference), points)
        broken = [problem for problem in found if problem]
    assert not broken, f"{len(broken)} of {len(points)} kill points broke the promise:\n" + "\n".join(broken)


def test_a_kill_between_a_decision_and_its_rollbacks_carries_the_decision_out(tmp_path: Path) -> None:
    """B fails POST-APPLY, the policy decides ROLLBACK_ALL (the Decided event is fsynced), and the
    control machine dies before RollbacksPlanned.  The resume must roll back B and A and leave C
    alone -- it used to take the decision as settled, skip B, upgrade C and leave B out of the
    load balancer on the failed new version."""
    fleet = _fleet(tmp_path / "run", "post-apply-fails-on-B", 1)
    done = subprocess.run([sys.executable, str(ROOT / "zdupgrade"), *fleet.argv()], capture_output=True,
                          text=True, cwd=fleet.root, timeout=120)
    decided = [i for i, e in enumerate(_journal(fleet), 1) if e["type"] == "Decided"]
    assert done.returncode == int(Status.POST_APPLY_FAILED) and len(decided) == 1
    fleet = _fleet(tmp_path / "killed", "post-apply-fails-on-B", 1)
    _killed_at(fleet, decided[0])
    assert _journal(fleet)[-1]["type"] == "Decided"
    resumed = fleet.resume()
    assert resumed.returncode == int(Status.POST_APPLY_FAILED), resumed.stdout[-2000:] + resumed.stderr
    assert all(fleet.running(n) == "1.0" and fleet.lb(n) == "in" for n in "ABC"), resumed.stdout[-2000:]
    assert fleet.lb_log("C") == [], "C was upgraded after the run had decided to roll everything back"
    assert "before carrying it out: carrying it out now" in (fleet.run_dir() / "run.log").read_text()
    rolled_back = [e["node"] for e in _journal(fleet) if e["type"] == "RollbackFinished"]
    assert rolled_back == ["B", "A"]
