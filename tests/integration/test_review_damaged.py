"""Run folders left torn or cut short by real zdupgrade processes on a ``transport: local`` fleet:
a resume after a torn journal line, followed by another resume, and the review of a SUCCESS
run whose journal lost its second half (what a power loss leaves: run.json is fsynced, the journal
is not)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.support.localfleet import ROOT, LocalFleet


def zdupgrade(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "zdupgrade"), *argv], capture_output=True, text=True,
                          timeout=120)


def kill_in_apply(fleet: LocalFleet, proc: subprocess.Popen[str]) -> None:
    fleet.wait_for(lambda: fleet.in_apply("A"), "A held inside APPLY", proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    (fleet.root / "A" / "in-apply").unlink()


def every_line_whole(journal: Path) -> list[dict[str, object]]:
    text = journal.read_text()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def test_resume_after_a_torn_journal_line_and_resume_again(tmp_path: Path) -> None:
    fleet = LocalFleet(tmp_path, hold=True)
    kill_in_apply(fleet, fleet.start("--plain"))
    journal = fleet.run_dir() / "journal.jsonl"
    whole = journal.read_bytes()
    with open(journal, "a") as handle:              # the kill cut this write short
        handle.write('{"type": "StepStarted", "at": 179622')
    # the first resume cuts the fragment off and appends after the last whole line; killed again
    proc = subprocess.Popen([sys.executable, str(ROOT / "zdupgrade"), "--resume", "--log_dir", str(fleet.log_dir),
                             "--plain"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, cwd=fleet.root)
    kill_in_apply(fleet, proc)
    data = journal.read_bytes()
    # the whole lines as they were, then the resume's events, each on a line of its own
    assert data.startswith(whole) and len(data) > len(whole)
    appended = [json.loads(line) for line in data[len(whole):].decode().splitlines()]
    assert "RunStarted" in [e["type"] for e in appended]
    every_line_whole(journal)
    assert "journal.jsonl ended in an unfinished line (36 bytes" in (fleet.run_dir() / "run.log").read_text()
    warned = [e["message"] for e in appended if e["type"] == "Warned"]   # in the record and the summary too
    assert any("unfinished line (36 bytes" in m for m in warned), warned
    # the next resume reads that journal (it used to be refused: "the run record is damaged")
    fleet.release()
    done = fleet.resume("--plain")
    assert done.returncode == 0, done.stdout + done.stderr
    assert all(fleet.running(n) == "2.0" and fleet.lb(n) == "in" for n in "ABC")
    events = every_line_whole(journal)
    assert [e["type"] for e in events].count("RunStarted") == 3 and "RunFinished" in [e["type"] for e in events[-3:]]
    shown = zdupgrade("show", "--log_dir", str(fleet.log_dir))
    assert shown.returncode == 0 and "SUCCESS (0)" in shown.stdout and "\n  warning    " not in shown.stdout, shown.stderr


def test_a_success_run_whose_journal_lost_its_second_half(tmp_path: Path) -> None:
    fleet = LocalFleet(tmp_path)
    proc = fleet.start("--plain")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    journal = fleet.run_dir() / "journal.jsonl"
    data = journal.read_bytes()
    journal.write_bytes(data[:len(data) // 2])
    log_dir = str(fleet.log_dir)
    shown = zdupgrade("show", "--log_dir", log_dir)
    assert shown.returncode == 0, shown.stderr
    assert "SUCCESS (0)" in shown.stdout and "journal.jsonl is behind run.json" in shown.stdout
    assert "--resume" not in shown.stdout and "UNFINISHED" not in shown.stdout and "on old" not in shown.stdout
    listed = zdupgrade("runs", "--log_dir", log_dir)
    assert "SUCCESS (0) [from run.json]" in listed.stdout and "--resume" not in listed.stdout
    report = zdupgrade("report", "-o", str(tmp_path / "r.html"), "--log_dir", log_dir)
    assert report.returncode == 0 and "journal.jsonl is behind run.json" in (tmp_path / "r.html").read_text()
