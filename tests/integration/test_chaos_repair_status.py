"""A finished run that left a node behind, repaired with ``--resume``: the repair keeps the run's status.

Found by a chaos probe on the lab (a CONTINUE policy, the new version failing to start on one
node, then ``--resume`` once the fault was gone): the repair rolled the node back to the old
version and put it back, and the run then ended SUCCESS (0) -- with that node on the old
version and its APPLY ``FAILED`` in the table.  The run had ended APPLY_FAILED (73); repairing the
node it left behind makes the fleet whole, not the upgrade successful.  The same for a run
aborted at a pause whose rollback failed (75): once repaired it ended SUCCESS with no node
upgraded; it is ABORTED (83).

Real zdupgrade processes on a ``transport: local`` fleet (real shells, a real script hook).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.support.localfleet import ROOT, LocalFleet
from zdu.status import Status

POLICY = '''
from zdu.run.policy import Action, Decision


def keep_going(ctx):
    return Decision(Action.CONTINUE, "operator accepts: go on with the others")
'''


def test_repairing_a_continued_node_does_not_turn_the_run_into_a_success(tmp_path: Path) -> None:
    fleet = LocalFleet(tmp_path)
    broken = tmp_path / "B" / "broken"
    data = yaml.safe_load(fleet.profile.read_text())
    # B's new version does not start while B/broken exists (stop old has run: B runs nothing)
    node = "{{ fleet_root }}/{{ node.name }}"
    data["phases"]["APPLY"][-1]["run"] = f"test ! -e {node}/broken && echo 2.0 > {node}/running"
    fleet.profile.write_text(yaml.safe_dump(data, sort_keys=False))
    broken.touch()
    (tmp_path / "chaos_continue_policy.py").write_text(POLICY)
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}

    first = subprocess.run([sys.executable, str(ROOT / "zdupgrade"), *fleet.argv(
        "--rollback-policy", "chaos_continue_policy:keep_going")], capture_output=True, text=True,
        cwd=tmp_path, env=env, timeout=120)
    assert first.returncode == int(Status.APPLY_FAILED), first.stdout[-3000:] + first.stderr[-3000:]
    assert "Traceback" not in first.stdout + first.stderr
    assert (fleet.running("A"), fleet.running("B"), fleet.running("C")) == ("2.0", "stopped", "2.0")
    assert fleet.lb("B") == "out" and "B is OUT OF THE LOAD BALANCER" in first.stdout

    broken.unlink()                      # the operator fixed B; the repair rolls it back and puts it back
    repaired = subprocess.run([sys.executable, str(ROOT / "zdupgrade"), "--resume", "--log_dir", str(fleet.log_dir)],
                              capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    out = repaired.stdout + repaired.stderr
    assert "repairing: B" in out, out[-3000:]
    assert "Traceback" not in out
    assert (fleet.running("A"), fleet.running("B"), fleet.running("C")) == ("2.0", "1.0", "2.0")
    assert [fleet.lb(n) for n in fleet.names] == ["in", "in", "in"]
    record = fleet.record()
    assert record["nodes"]["B"]["version"] == "old" and record["nodes"]["B"]["in_lb"] is True
    assert record["nodes"]["B"]["phases"]["APPLY"]["outcome"] == "FAILED"
    # B's upgrade failed and B runs the old version: not SUCCESS -- the status the run ended with
    assert repaired.returncode == int(Status.APPLY_FAILED), out[-3000:]
    assert record["status"] == {"name": "APPLY_FAILED", "code": int(Status.APPLY_FAILED)}
    assert "Status 73 (APPLY_FAILED)" in repaired.stdout
    assert "Still on the old version: B (rolled back)" in repaired.stdout


def test_repairing_an_aborted_run_keeps_it_aborted(tmp_path: Path) -> None:
    # the canary A, then a pause whose 1 s timeout aborts: A is rolled back -- and its rollback
    # fails while A/broken exists
    fleet = LocalFleet(tmp_path, serial=[1, "pause", 2],
                       extra={"pause_timeout": 1, "pause_timeout_action": "abort"})
    data = yaml.safe_load(fleet.profile.read_text())
    node = "{{ fleet_root }}/{{ node.name }}"
    data["rollback"]["APPLY"][0]["run"] = f"test ! -e {node}/broken && echo 1.0 > {node}/running"
    fleet.profile.write_text(yaml.safe_dump(data, sort_keys=False))
    broken = tmp_path / "A" / "broken"
    broken.touch()
    first = subprocess.run([sys.executable, str(ROOT / "zdupgrade"), *fleet.argv()], capture_output=True, text=True,
                           cwd=tmp_path, timeout=120)
    assert first.returncode == int(Status.ROLLBACK_FAILED), first.stdout[-3000:] + first.stderr[-3000:]
    assert fleet.lb("A") == "out" and "A is OUT OF THE LOAD BALANCER" in first.stdout

    broken.unlink()
    repaired = fleet.resume()
    out = repaired.stdout + repaired.stderr
    assert "repairing: A" in out and "Traceback" not in out, out[-3000:]
    assert [fleet.running(n) for n in fleet.names] == ["1.0", "1.0", "1.0"]
    assert [fleet.lb(n) for n in fleet.names] == ["in", "in", "in"]
    # nothing was upgraded: the run was aborted, not a success
    assert repaired.returncode == int(Status.ABORTED), out[-3000:]
    assert fleet.record()["status"] == {"name": "ABORTED", "code": int(Status.ABORTED)}
    assert "Status 83 (ABORTED)" in repaired.stdout
