"""Pauses with zdupgrade as a real process on a fleet of ``transport: local`` nodes: answered
by `zdupgrade continue` / `abort` from another process, typed on a real pseudo-terminal, timed
out, interrupted, and brought back by --resume after the paused process died."""
from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support.localfleet import ROOT, LocalFleet
from zdu.status import Status

CANARY = {"serial": [1, "pause", "100%"]}


def zdupgrade(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "zdupgrade"), *args], capture_output=True, text=True,
                          cwd=cwd, timeout=60)


def paused(fleet: LocalFleet) -> bool:
    try:
        return any(p["ended"] is None for p in fleet.record().get("pauses", []))
    except (AssertionError, ValueError, OSError):
        return False


def killed_at_the_pause(tmp_path: Path) -> LocalFleet:
    """A canary run paused after its first wave, then SIGKILLed: the pause left open, no process."""
    fleet = LocalFleet(tmp_path, extra=CANARY)
    proc = fleet.start()
    fleet.wait_for(lambda: paused(fleet), "the pause after the canary", proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    return fleet


def test_continue_from_another_process(tmp_path: Path) -> None:
    fleet = LocalFleet(tmp_path, extra=CANARY)
    proc = fleet.start()
    fleet.wait_for(lambda: paused(fleet), "the pause after the canary", proc)
    assert fleet.running("A") == "2.0" and fleet.running("B") == "1.0"     # the canary, and nothing more
    answered = zdupgrade("continue", "--log_dir", str(fleet.log_dir), cwd=tmp_path)
    assert answered.returncode == 0, answered.stderr
    assert "paused after wave 1: told to continue" in answered.stdout
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert all(fleet.running(n) == "2.0" and fleet.lb(n) == "in" for n in "ABC")
    pause = fleet.record()["pauses"][0]
    assert pause["answer"] == "continue" and "zdupgrade continue" in pause["by"]
    again = zdupgrade("continue", "--log_dir", str(fleet.log_dir), cwd=tmp_path)
    assert again.returncode == int(Status.CONFIG_ERROR) and "is not paused" in again.stderr


def test_abort_from_another_process_rolls_the_canary_back(tmp_path: Path) -> None:
    fleet = LocalFleet(tmp_path, extra=CANARY)
    proc = fleet.start()
    fleet.wait_for(lambda: paused(fleet), "the pause after the canary", proc)
    assert zdupgrade("abort", "--log_dir", str(fleet.log_dir), cwd=tmp_path).returncode == 0
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == int(Status.ABORTED), out
    assert all(fleet.running(n) == "1.0" and fleet.lb(n) == "in" for n in "ABC")
    assert fleet.lb_log("B") == [] and fleet.lb_log("A") == ["disable", "enable", "disable", "enable"]


def test_typed_on_the_terminal(tmp_path: Path) -> None:
    fleet = LocalFleet(tmp_path, extra=CANARY)
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, str(ROOT / "zdupgrade"), *fleet.argv()], stdin=slave, stdout=slave,
                            stderr=slave, cwd=tmp_path, start_new_session=True)
    os.close(slave)
    screen = b""
    deadline = time.monotonic() + 60
    try:
        while b"type here: continue | abort" not in screen:
            assert time.monotonic() < deadline, screen.decode(errors="replace")[-2000:]
            if select.select([master], [], [], 0.2)[0]:
                screen += os.read(master, 65536)
        os.write(master, b"continue\n")
        while proc.poll() is None:
            assert time.monotonic() < deadline, screen.decode(errors="replace")[-2000:]
            if select.select([master], [], [], 0.2)[0]:
                try:
                    screen += os.read(master, 65536)
                except OSError:
                    break
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    text = screen.decode(errors="replace")
    assert proc.returncode == 0, text[-3000:]
    assert "PAUSED after wave 1 of 2 (upgraded so far: A)" in text
    assert all(fleet.running(n) == "2.0" for n in "ABC")
    assert "(terminal)" in fleet.record()["pauses"][0]["by"]


def test_a_pause_times_out_with_its_stated_action(tmp_path: Path) -> None:
    fleet = LocalFleet(tmp_path, extra={**CANARY, "pause_timeout": 1, "pause_timeout_action": "continue"})
    proc = fleet.start()
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    pause = fleet.record()["pauses"][0]
    assert pause["answer"] == "continue" and "pause timeout" in pause["by"]
    assert all(fleet.running(n) == "2.0" for n in "ABC")


def test_ctrl_c_at_a_pause_stops_without_touching_a_node(tmp_path: Path) -> None:
    fleet = LocalFleet(tmp_path, extra=CANARY)
    proc = fleet.start()
    fleet.wait_for(lambda: paused(fleet), "the pause after the canary", proc)
    os.killpg(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == int(Status.INTERRUPTED), out
    assert fleet.running("A") == "2.0" and fleet.running("B") == "1.0" and fleet.lb_log("B") == []
    assert all(fleet.lb(n) == "in" for n in "ABC")


def test_a_paused_run_that_died_comes_back_to_the_pause(tmp_path: Path) -> None:
    fleet = killed_at_the_pause(tmp_path)
    # the operator decides while no process runs: the answer waits for the resume
    answered = zdupgrade("continue", "--log_dir", str(fleet.log_dir), cwd=tmp_path)
    assert answered.returncode == 0 and "its process is gone" in answered.stdout
    done = fleet.resume()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PAUSED after wave 1" in done.stdout
    assert all(fleet.running(n) == "2.0" and fleet.lb(n) == "in" for n in "ABC")
    assert fleet.lb_log("A") == ["disable", "enable"]            # the canary was not done twice


def test_show_and_runs_say_a_waiting_run_is_paused(tmp_path: Path) -> None:
    fleet = LocalFleet(tmp_path, extra=CANARY)
    proc = fleet.start()
    fleet.wait_for(lambda: paused(fleet), "the pause after the canary", proc)
    run_id = fleet.run_dir().name
    waiting = f"PAUSED after wave 1 (zdupgrade continue {run_id} | zdupgrade abort {run_id})"
    show = zdupgrade("show", "--log_dir", str(fleet.log_dir), cwd=tmp_path)
    assert show.returncode == 0 and waiting in show.stdout, show.stdout + show.stderr
    runs = zdupgrade("runs", "--log_dir", str(fleet.log_dir), cwd=tmp_path)
    assert runs.returncode == 0 and "PAUSED after wave 1" in runs.stdout, runs.stdout + runs.stderr
    assert zdupgrade("continue", "--log_dir", str(fleet.log_dir), cwd=tmp_path).returncode == 0
    proc.communicate(timeout=60)
    done = zdupgrade("show", "--log_dir", str(fleet.log_dir), cwd=tmp_path)
    assert "SUCCESS (0)" in done.stdout and "PAUSED" not in done.stdout, done.stdout
