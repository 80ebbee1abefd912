"""Interrupts and resume with zdupgrade as a real process, on a fleet of ``transport: local`` nodes
(real shells, a real script hook, real signals; the Docker lab proves the same over SSH).

- SIGHUP (the operator's SSH session drops) mid-APPLY stops at a safe point like SIGTERM;
- an interrupt during preflight or with two nodes of a wave in flight;
- ``--resume`` of a run whose process is still alive is refused;
- a kill while the load-balancer hook is taking a node out: the resumed run takes it out again
  before APPLY;
- ``--resume`` from another working directory, after a run started with relative paths;
- a damaged or edited run record is refused with a clear error.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.localfleet import ROOT, LocalFleet
from zdu.status import Status


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM, signal.SIGINT])
def test_a_signal_mid_apply_stops_safely(tmp_path: Path, sig: signal.Signals) -> None:
    fleet = LocalFleet(tmp_path, hold=True)
    proc = fleet.start()
    fleet.wait_for(lambda: fleet.in_apply("A"), "A held inside APPLY", proc)
    proc.send_signal(sig)
    fleet.release()                      # the held step ends; the next step boundary is the safe point
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == int(Status.INTERRUPTED), out
    assert "Traceback" not in out
    assert f"{sig.name}: stopping at the next safe point" in out
    # A was being changed: rolled back to the old version and put back; B and C untouched
    assert fleet.running("A") == "1.0" and fleet.lb("A") == "in"
    assert fleet.lb_log("A") == ["disable", "enable"]
    for name in "BC":
        assert fleet.running(name) == "1.0" and fleet.lb_log(name) == []
    data = fleet.record()
    assert data["status"]["name"] == "INTERRUPTED"
    assert data["decisions"][0]["action"] == "ROLLBACK_NODE"
    assert not (fleet.run_dir() / "control.lock").read_text().strip() == ""  # it was written
    resumed = fleet.resume()
    assert resumed.returncode == int(Status.CONFIG_ERROR) and "already finished with INTERRUPTED" in resumed.stderr


def test_two_nodes_in_flight_are_both_rolled_back(tmp_path: Path) -> None:
    fleet = LocalFleet(tmp_path, hold=True, serial=2)
    proc = fleet.start()
    fleet.wait_for(lambda: fleet.in_apply("A") and fleet.in_apply("B"), "A and B inside APPLY", proc)
    proc.send_signal(signal.SIGINT)
    fleet.release()
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == int(Status.INTERRUPTED), out
    for name in "AB":
        assert fleet.running(name) == "1.0" and fleet.lb(name) == "in", (name, out)
    assert fleet.running("C") == "1.0" and fleet.lb_log("C") == []
    decisions = {(d["node"], d["action"]) for d in fleet.record()["decisions"]}
    assert decisions == {("A", "ROLLBACK_NODE"), ("B", "ROLLBACK_NODE")}


def test_an_interrupt_while_the_hook_drains_lets_the_hook_finish(tmp_path: Path) -> None:
    fleet = LocalFleet(tmp_path)
    fleet.hold_hook("disable", "A")
    proc = fleet.start()
    fleet.wait_for(lambda: (tmp_path / "in-disable-A").exists(), "the disable hook of A running", proc)
    os.killpg(proc.pid, signal.SIGINT)   # Ctrl-C goes to the whole foreground process group
    fleet.release()
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == int(Status.INTERRUPTED), out
    # the hook was not killed mid-action: it completed, then the untouched node was put back
    assert fleet.lb_log("A") == ["disable", "enable"] and fleet.lb("A") == "in"
    assert fleet.running("A") == "1.0"


def test_resume_of_a_live_run_is_refused(tmp_path: Path) -> None:
    fleet = LocalFleet(tmp_path, hold=True)
    proc = fleet.start()
    try:
        fleet.wait_for(lambda: fleet.in_apply("A"), "A held inside APPLY", proc)
        second = fleet.resume()
        assert second.returncode == int(Status.LOCKED), second.stdout + second.stderr
        assert "still being driven by a live zdupgrade process" in second.stderr
        assert fleet.lb_log("A") == ["disable"]     # the second process touched nothing
    finally:
        fleet.release()
        proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert all(fleet.running(n) == "2.0" for n in "ABC")


def test_kill_during_disable_then_resume_takes_the_node_out_again(tmp_path: Path) -> None:
    fleet = LocalFleet(tmp_path)
    fleet.hold_hook("disable", "B")
    proc = fleet.start()
    fleet.wait_for(lambda: (tmp_path / "in-disable-B").exists(), "the disable hook of B running", proc)
    os.killpg(proc.pid, signal.SIGKILL)   # the control process and its hook die: B was never taken out
    proc.wait(timeout=10)
    # the hook runs in a session of its own (so that its timeout kills all of it): killed too, or it
    # would wait for ever after the test
    subprocess.run(["pkill", "-KILL", "-f", f"{tmp_path}/hook.sh disable B"], check=False)
    assert fleet.lb("B") == "in" and fleet.running("B") == "1.0"
    (tmp_path / "hold-disable-B").unlink()
    done = fleet.resume()
    assert done.returncode == 0, done.stdout + done.stderr
    # disable again before APPLY, then enable; nothing was applied while B could take traffic
    assert fleet.lb_log("B") == ["disable", "disable", "enable"]
    assert all(fleet.running(n) == "2.0" and fleet.lb(n) == "in" for n in "ABC")
    journal = [json.loads(line) for line in (fleet.run_dir() / "journal.jsonl").read_text().splitlines()]
    of_b = [(e["type"], e.get("phase") or e.get("action")) for e in journal if e.get("node") == "B"]
    assert of_b.index(("LbFinished", "disable")) < of_b.index(("PhaseStarted", "APPLY"))


def test_a_refused_resume_keeps_the_dead_runs_lock(tmp_path: Path) -> None:
    """A resume that preflight refuses leaves the run resumable -- and the fleet it left
    half-done its own: a new run is refused until the resume finishes it."""
    fleet = LocalFleet(tmp_path, hold=True)
    proc = fleet.start()
    fleet.wait_for(lambda: fleet.in_apply("A"), "A held inside APPLY", proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    fleet.release()
    run_id = fleet.run_dir().name
    lock = tmp_path / "fleet-lock"
    assert lock.is_dir() and fleet.lb("A") == "out"
    fleet.hook.chmod(0o644)                      # preflight finds a problem now
    refused = fleet.resume()
    assert refused.returncode == int(Status.CONFIG_ERROR), refused.stdout + refused.stderr
    assert "fleet lock stays in place" in refused.stdout, refused.stdout
    assert lock.is_dir(), "a refused resume gave back the dead run's lock"
    fleet.hook.chmod(0o755)
    other = subprocess.run([sys.executable, str(ROOT / "zdupgrade"), *fleet.argv("--limit", "A,B")],
                           capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert other.returncode == int(Status.LOCKED), other.stdout + other.stderr
    assert fleet.lb("A") == "out" and fleet.running("A") == "stopped", "the other run touched A"
    done = subprocess.run([sys.executable, str(ROOT / "zdupgrade"), "--resume", run_id, "--log_dir",
                           str(fleet.log_dir)], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert all(fleet.running(n) == "2.0" and fleet.lb(n) == "in" for n in "ABC")
    assert not lock.exists()


def test_a_refused_repair_does_not_lock_a_fleet_its_run_had_given_back(tmp_path: Path) -> None:
    """A finished run that left B broken (its rollback failed) had given its lock back; a repair
    (--resume) that preflight refuses must leave the fleet unlocked, as it found it."""
    node, flag = "{{ fleet_root }}/{{ node.name }}", "{{ fleet_root }}/rollback-fails"
    fleet = LocalFleet(tmp_path, profile_overrides={
        "rollback": {"APPLY": [{"name": "start old", "run": f"[ ! -e {flag} ] && echo 1.0 > {node}/running"}]}})
    (tmp_path / "rollback-fails").touch()
    data = yaml.safe_load(fleet.profile.read_text())
    data["phases"]["APPLY"][-1]["run"] = f"[ {{{{ node.name }}}} != B ] && echo 2.0 > {node}/running"
    fleet.profile.write_text(json.dumps(data))
    first = subprocess.run([sys.executable, str(ROOT / "zdupgrade"), *fleet.argv()], capture_output=True,
                           text=True, cwd=tmp_path, timeout=120)
    lock = tmp_path / "fleet-lock"
    assert first.returncode == int(Status.ROLLBACK_FAILED) and not lock.exists(), first.stdout[-1500:]
    (tmp_path / "rollback-fails").unlink()
    fleet.hook.chmod(0o644)
    refused = fleet.resume()
    assert refused.returncode == int(Status.CONFIG_ERROR), refused.stdout + refused.stderr
    assert not lock.exists() and "stays in place" not in refused.stdout


def _a_finished_run(tmp_path: Path) -> tuple[LocalFleet, Path, list[str]]:
    """A local fleet upgraded by a whole run: the fleet, its journal and the journal's lines."""
    fleet = LocalFleet(tmp_path)
    done = subprocess.run([sys.executable, str(ROOT / "zdupgrade"), *fleet.argv()], capture_output=True,
                          text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stdout
    journal = fleet.run_dir() / "journal.jsonl"
    return fleet, journal, journal.read_text().splitlines(keepends=True)


def test_resume_gives_back_the_lock_of_a_run_that_died_after_it_finished(tmp_path: Path) -> None:
    """Killed after RunFinished, before the lock's release (a node slow to answer it): every node
    is fine, and --resume gives the lock back instead of "nothing to resume" -- which left every
    later run refused LOCKED until someone broke the lock.  The kill's window is made by taking
    the release out of a finished run's record and putting its lock back as it was."""
    import socket
    fleet, journal, lines = _a_finished_run(tmp_path)
    released = [i for i, line in enumerate(lines) if json.loads(line)["type"] == "LockReleased"]
    assert len(released) == 1
    journal.write_text("".join(lines[: released[0]]))
    record = fleet.run_dir() / "run.json"          # as the kill left it: written at RunFinished
    record.write_text(json.dumps({**json.loads(record.read_text()), "events": released[0]}))
    lock = tmp_path / "fleet-lock"
    lock.mkdir()
    (lock / "owner.json").write_text(json.dumps({"run_id": fleet.run_dir().name, "user": "root",
                                                 "host": socket.gethostname(), "pid": 2 ** 22 + 7,
                                                 "started": "2026-12-02T00:00:00+00:00", "message": ""}))
    again = fleet.resume()
    assert again.returncode == 0, again.stdout + again.stderr
    assert "died before it gave the fleet lock back; given back now" in again.stdout
    assert not lock.exists()
    assert json.loads(journal.read_text().splitlines()[-1])["type"] == "LockReleased"
    assert all(fleet.running(n) == "2.0" and fleet.lb(n) == "in" for n in "ABC")
    assert fleet.lb_log("A") == ["disable", "enable"], "nothing ran again"
    refused = fleet.resume()
    assert refused.returncode == 78 and "nothing to resume" in refused.stderr


def test_resume_refuses_a_journal_that_lost_its_end(tmp_path: Path) -> None:
    """After a power loss the journal (not fsynced at every event) can end earlier than run.json
    (fsynced at every write): resuming from it would run again steps that were done."""
    fleet, journal, lines = _a_finished_run(tmp_path)
    journal.write_text("".join(lines[: len(lines) // 2]))
    refused = fleet.resume()
    assert refused.returncode == 78, refused.stdout + refused.stderr
    assert "lost its end" in refused.stderr and "not resuming" in refused.stderr, refused.stderr
    assert fleet.lb_log("A") == ["disable", "enable"], "nothing ran again"


def test_resume_from_another_directory_after_relative_paths(tmp_path: Path) -> None:
    fleet = LocalFleet(tmp_path, hold=True)
    proc = fleet.start("--config", "topology.yaml", "--log_dir", "logs", cwd=tmp_path)
    fleet.wait_for(lambda: fleet.in_apply("A"), "A held inside APPLY", proc)
    proc.kill()
    proc.wait(timeout=10)
    fleet.release()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = fleet.resume(cwd=elsewhere)
    assert done.returncode == 0, done.stdout + done.stderr
    assert all(fleet.running(n) == "2.0" and fleet.lb(n) == "in" for n in "ABC")


def test_an_interrupt_before_the_lock_changes_nothing(tmp_path: Path) -> None:
    import io
    import threading

    from zdu.cli import main
    fleet = LocalFleet(tmp_path)
    stop = threading.Event()
    stop.set()                           # the operator pressed Ctrl-C while preflight ran
    out, err = io.StringIO(), io.StringIO()
    status = main(fleet.argv(), out=out, err=err, stop_event=stop)
    assert status is Status.INTERRUPTED, err.getvalue()
    assert "interrupted during preflight: nothing was changed" in err.getvalue()
    for name in "ABC":
        assert fleet.running(name) == "1.0" and fleet.lb_log(name) == []
        assert not (tmp_path / name / "export").exists()
    assert fleet.record()["status"]["name"] == "INTERRUPTED"


def test_an_interrupt_once_preflight_took_the_lock_gives_it_back(tmp_path: Path) -> None:
    """Preflight takes the fleet lock with its checks, the first node alone; Ctrl-C right after
    that: the lock is given back and nothing else happens."""
    import io
    import threading

    from zdu.cli import main
    fleet = LocalFleet(tmp_path)
    lock_dir = tmp_path / "fleet-lock"

    class CtrlCOnceLocked(threading.Event):
        def is_set(self) -> bool:
            if not super().is_set() and lock_dir.exists():
                self.set()                   # pressed the moment the first node's lock exists
            return super().is_set()

    out, err = io.StringIO(), io.StringIO()
    status = main(fleet.argv(), out=out, err=err, stop_event=CtrlCOnceLocked())
    assert status is Status.INTERRUPTED, err.getvalue()
    assert "interrupted during preflight: nothing was changed" in err.getvalue()
    assert not lock_dir.exists()
    for name in "ABC":
        assert fleet.running(name) == "1.0" and fleet.lb_log(name) == []
        assert not (tmp_path / name / "export").exists()
    assert fleet.record()["status"]["name"] == "INTERRUPTED"


# --------------------------------------------------------------------------- a damaged run record

def _killed_run(tmp_path: Path) -> LocalFleet:
    fleet = LocalFleet(tmp_path, hold=True)
    proc = fleet.start()
    fleet.wait_for(lambda: fleet.in_apply("A"), "A held inside APPLY", proc)
    proc.kill()
    proc.wait(timeout=10)
    fleet.release()
    return fleet


@pytest.mark.parametrize("edit,message", [
    (lambda lines: lines[:1] + ['{"type": "PhaseStarted", "node": "ghost", "phase": "APPLY", "steps": 1}'] + lines[1:],
     "'ghost' is not a node of this run"),
    (lambda lines: [lines[0].replace('"invocation": {', '"invocation": {"break_lock": true, ')] + lines[1:],
     "unexpected invocation field 'break_lock'"),
    (lambda lines: lines[:2] + ["this is not json"] + lines[2:], "line 3: not JSON"),
    (lambda lines: [lines[0].replace('"type": "RunOpened"', '"type": "RunStarted"')] + lines[1:],
     "unknown field|does not start with RunOpened"),
])
def test_a_damaged_run_record_is_refused(tmp_path: Path, edit, message: str) -> None:  # type: ignore[no-untyped-def]
    fleet = _killed_run(tmp_path)
    journal = fleet.run_dir() / "journal.jsonl"
    lines = journal.read_text().splitlines()
    journal.write_text("\n".join(edit(lines)) + "\n")
    done = fleet.resume()
    assert done.returncode == int(Status.CONFIG_ERROR), done.stdout + done.stderr
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr
    import re
    assert re.search(message, done.stderr), done.stderr
    assert fleet.lb_log("B") == []        # nothing was touched


def test_an_interrupt_after_the_last_node_leaves_the_after_steps_to_the_resume(tmp_path: Path) -> None:
    """SIGTERM while the last node is put back: every node is upgraded and in, the after: steps
    have not run; the run ends 130 saying so, and --resume runs them (and nothing else)."""
    node = "{{ fleet_root }}/{{ node.name }}"
    fleet = LocalFleet(tmp_path, profile_overrides={
        "after": [{"name": "clean up", "on": "all", "run": f"echo done >> {node}/after"}]})
    fleet.hold_hook("enable", "C")
    proc = fleet.start("--plain")
    fleet.wait_for(lambda: (tmp_path / "in-enable-C").exists(), "the enable hook of C running", proc)
    proc.send_signal(signal.SIGTERM)
    fleet.release()
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == int(Status.INTERRUPTED), out
    assert "before the after: steps: none of them ran" in out
    assert all(fleet.running(n) == "2.0" and fleet.lb(n) == "in" for n in "ABC"), out
    assert not any((tmp_path / n / "after").exists() for n in "ABC")
    resumed = fleet.resume()
    assert resumed.returncode == int(Status.SUCCESS), resumed.stdout[-3000:] + resumed.stderr[-2000:]
    assert all((tmp_path / n / "after").read_text() == "done\n" for n in "ABC")
    assert all(fleet.running(n) == "2.0" and fleet.lb(n) == "in" for n in "ABC")
    assert all(fleet.lb_log(n) == ["disable", "enable"] for n in "ABC")      # no node walked again
    again = fleet.resume()
    assert again.returncode == int(Status.CONFIG_ERROR) and "already finished with SUCCESS" in again.stderr


def test_a_failed_after_step_is_run_again_by_the_resume_once_fixed(tmp_path: Path) -> None:
    """AFTER_FAILED (81): every node upgraded and in, a clean-up failed. Once its cause is fixed,
    --resume runs the failed step and those after it, not those that passed, and no node again."""
    node = "{{ fleet_root }}/{{ node.name }}"
    fleet = LocalFleet(tmp_path, profile_overrides={"after": [
        {"name": "clean up", "on": "all", "run": f"{{ test {{{{ node.name }}}} != B || test -e {{{{ fleet_root }}}}/fixed; }} "
                                                 f"&& echo done >> {node}/after"}]})
    proc = fleet.start("--plain")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == int(Status.AFTER_FAILED), out
    assert (tmp_path / "A" / "after").read_text() == "done\n" and not (tmp_path / "B" / "after").exists()
    (tmp_path / "fixed").touch()
    resumed = fleet.resume()
    assert resumed.returncode == int(Status.SUCCESS), resumed.stdout[-3000:] + resumed.stderr[-2000:]
    assert all((tmp_path / n / "after").read_text() == "done\n" for n in "ABC")     # A not twice
    assert all(fleet.running(n) == "2.0" and fleet.lb(n) == "in" for n in "ABC")
    assert all(fleet.lb_log(n) == ["disable", "enable"] for n in "ABC")
