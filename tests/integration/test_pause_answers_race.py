"""Answers to a pause given twice, at once, to the wrong run or with an empty --log_dir, with
zdupgrade as a real process on a fleet of ``transport: local`` nodes.

Two shells answering one pause must not both be told they were obeyed: the run takes one
answer, so the other is refused (or, when it is the same answer, said to be given already)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.integration.test_pause import CANARY, killed_at_the_pause, paused, zdupgrade
from tests.support.localfleet import ROOT, LocalFleet
from zdu.status import Status


def test_a_second_different_answer_to_a_live_pause_is_refused_not_claimed(tmp_path: Path) -> None:
    fleet = LocalFleet(tmp_path, extra=CANARY)
    proc = fleet.start()
    fleet.wait_for(lambda: paused(fleet), "the pause after the canary", proc)
    # the run is stopped (it holds its folder, it does not read answers): both shells answer
    # before it can take either -- the moment two operators answer at once
    os.killpg(proc.pid, signal.SIGSTOP)
    try:
        # the first operator gives up waiting for the (stopped) run to take the answer: Ctrl-C
        first = subprocess.Popen([sys.executable, str(ROOT / "zdupgrade"), "continue", "--log_dir",
                                  str(fleet.log_dir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 cwd=tmp_path)
        fleet.wait_for(lambda: (fleet.run_dir() / "pause.answer").exists(), "the answer left", first)
        time.sleep(0.3)
        first.send_signal(signal.SIGINT)
        first_out, first_err = first.communicate(timeout=30)
        second = zdupgrade("abort", "--log_dir", str(fleet.log_dir), cwd=tmp_path)
        same = zdupgrade("continue", "--log_dir", str(fleet.log_dir), cwd=tmp_path)
    finally:
        os.killpg(proc.pid, signal.SIGCONT)
    assert first.returncode == int(Status.INTERRUPTED), first_err
    assert "told to continue (left in its folder; interrupted before the run took it)" in first_out
    assert second.returncode == int(Status.CONFIG_ERROR), second.stdout
    assert "has an answer waiting already: continue" in second.stderr and "yours (abort) was not left" in \
        second.stderr and "Traceback" not in second.stderr
    assert same.returncode == 0 and "already told to continue" in same.stdout, same.stderr
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out                       # the run did what the first answer said
    assert all(fleet.running(n) == "2.0" and fleet.lb(n) == "in" for n in "ABC")
    pause = fleet.record()["pauses"][0]
    assert pause["answer"] == "continue"
    late = zdupgrade("abort", "--log_dir", str(fleet.log_dir), cwd=tmp_path)
    assert late.returncode == int(Status.CONFIG_ERROR)
    assert "is not paused (it ended with SUCCESS); its pause after wave 1 was answered: continue" in late.stderr


def test_a_dead_runs_answer_can_be_changed_before_the_resume(tmp_path: Path) -> None:
    fleet = killed_at_the_pause(tmp_path)
    first = zdupgrade("continue", "--log_dir", str(fleet.log_dir), cwd=tmp_path)
    changed = zdupgrade("abort", "--log_dir", str(fleet.log_dir), cwd=tmp_path)
    assert first.returncode == 0 and changed.returncode == 0, changed.stderr
    assert "replacing the one left earlier (continue by" in changed.stdout
    done = fleet.resume()
    assert done.returncode == int(Status.ABORTED), done.stdout + done.stderr
    assert all(fleet.running(n) == "1.0" and fleet.lb(n) == "in" for n in "ABC")


def test_the_latest_run_not_paused_names_the_run_that_is(tmp_path: Path) -> None:
    fleet = LocalFleet(tmp_path, extra=CANARY)
    proc = fleet.start()
    fleet.wait_for(lambda: paused(fleet), "the pause after the canary", proc)
    try:
        # a second run of the same fleet is refused by the fleet lock, and is now the latest run
        other = fleet.start()
        out, _ = other.communicate(timeout=60)
        assert other.returncode == int(Status.LOCKED), out
        paused_run = sorted(p.parent.name for p in fleet.log_dir.glob("*/journal.jsonl"))[0]
        answered = zdupgrade("continue", "--log_dir", str(fleet.log_dir), cwd=tmp_path)
        assert answered.returncode == int(Status.CONFIG_ERROR)
        assert "is not paused (it ended with LOCKED)" in answered.stderr
        assert f"{paused_run} (after wave 1): name the run (`zdupgrade continue RUN_ID`)" in answered.stderr
        empty = zdupgrade("continue", "--log_dir", "", cwd=tmp_path)
        assert empty.returncode == int(Status.CONFIG_ERROR) and "--log_dir: empty" in empty.stderr
        named = zdupgrade("continue", paused_run, "--log_dir", str(fleet.log_dir), cwd=tmp_path)
        assert named.returncode == 0, named.stderr
    finally:
        if proc.poll() is None:
            out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert all(fleet.running(n) == "2.0" and fleet.lb(n) == "in" for n in "ABC")
