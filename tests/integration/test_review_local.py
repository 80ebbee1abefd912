"""The review commands, CI outputs and the live view on real run folders left by real zdupgrade
processes on ``transport: local`` fleets (real shells, a real script hook, real signals):

- a success (with --junit and --events), a ROLLBACK_FAILED run, a run interrupted with SIGINT and
  one killed with SIGKILL, made once for the module under one log dir;
- ``runs``, ``show``, ``logs``, ``report`` on them; the report opened in headless Chromium;
- the JUnit file validated against the schema, the events file the same as the journal;
- ``lock status`` while a run holds the lock and after;
- the live view driven in a real terminal (tmux): its screen read back while a node is held in
  APPLY, at a pause (the prompt answered by typing), with NO_COLOR; plain lines on a pipe.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
import xmlschema

from tests.support.browser import Chromium
from tests.support.localfleet import ROOT, LocalFleet, profile
from zdu.status import Status

SCHEMA = xmlschema.XMLSchema(str(ROOT / "tests" / "data" / "junit" / "junit.xsd"))
#: printed by a step of the success run: what a hostile node could answer
HOSTILE = "<img src=x onerror=\"document.title='pwned'\"><script>document.title='pwned'</script>"


def zdupgrade(*argv: str, env: dict[str, str] | None = None, cwd: Path | None = None,
              timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "zdupgrade"), *argv], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, cwd=cwd)


def failing_profile(root: Path) -> dict[str, Any]:
    """B fails its POST-APPLY check, and its rollback fails too: ROLLBACK_FAILED."""
    data = profile(root)
    node = "{{ fleet_root }}/{{ node.name }}"
    data["phases"]["POST-APPLY"] = [{"name": "new runs",
                                     "run": f"grep -qx 2.0 {node}/running && "
                                            "{ test {{ node.name }} != B || { echo 'B answers 500' >&2; exit 4; }; }"}]
    data["rollback"] = {"APPLY": [{"name": "start old",
                                   "run": "test {{ node.name }} != B || { echo 'old will not start' >&2; exit 9; }; "
                                          f"echo 1.0 > {node}/running"}]}
    return {"phases": data["phases"], "rollback": data["rollback"]}


@dataclass
class Runs:
    log_dir: Path
    ids: dict[str, str]          # success | rollback_failed | interrupted | killed -> run id
    junit: Path
    events: Path
    fleets: dict[str, LocalFleet]


def _only_new_run(log_dir: Path, before: set[str]) -> str:
    new = sorted(p.name for p in log_dir.iterdir() if p.name not in before)
    assert len(new) == 1, new
    return new[0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    base = tmp_path_factory.mktemp("review")
    log_dir = base / "logs"
    log_dir.mkdir(mode=0o700)
    ids: dict[str, str] = {}
    fleets: dict[str, LocalFleet] = {}

    def seen() -> set[str]:
        return {p.name for p in log_dir.iterdir()}

    # a success, one of whose steps prints hostile HTML
    fleet = LocalFleet(base / "ok")
    data = profile(fleet.root)
    data["phases"]["PRE-APPLY"] = [{"name": "check", "run": f"printf '%s\\n' {json.dumps(HOSTILE)}"}]
    fleet = LocalFleet(base / "ok", profile_overrides={"phases": data["phases"]})
    junit, events = base / "junit.xml", base / "events.jsonl"
    before = seen()
    proc = fleet.start("--log_dir", str(log_dir), "--junit", str(junit), "--events", str(events))
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    ids["success"], fleets["success"] = _only_new_run(log_dir, before), fleet
    # B fails and cannot be rolled back
    fleet = LocalFleet(base / "rbf", profile_overrides=failing_profile(base / "rbf"))
    before = seen()
    proc = fleet.start("--log_dir", str(log_dir), "--junit", str(base / "junit-rbf.xml"))
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == int(Status.ROLLBACK_FAILED), out
    ids["rollback_failed"], fleets["rollback_failed"] = _only_new_run(log_dir, before), fleet
    # SIGINT while A is held in APPLY; SIGKILL there (the run never finishes)
    for which, stop in (("interrupted", lambda p: p.send_signal(signal.SIGINT)),
                        ("killed", lambda p: os.killpg(p.pid, signal.SIGKILL))):
        fleet = LocalFleet(base / which, hold=True)
        before = seen()
        proc = fleet.start("--log_dir", str(log_dir))
        fleet.wait_for(lambda: fleet.in_apply("A"), "A held inside APPLY", proc)
        stop(proc)
        fleet.release()
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == (int(Status.INTERRUPTED) if which == "interrupted" else -signal.SIGKILL), out
        ids[which], fleets[which] = _only_new_run(log_dir, before), fleet
    return Runs(log_dir, ids, junit, events, fleets)


def record(runs: Runs, which: str) -> dict[str, Any]:
    """The run's state as its journal has it (run.json of a SIGKILLed run may be 0.25 s behind)."""
    from zdu.report.review import load_run
    state = load_run(runs.log_dir, runs.ids[which]).state
    assert state is not None
    return state.to_dict()


# --------------------------------------------------------------------------- runs / show / logs

def test_runs_lists_every_run_newest_first(runs: Runs) -> None:
    done = zdupgrade("runs", "--log_dir", str(runs.log_dir))
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line for line in done.stdout.splitlines() if re.match(r"\d{8}-\d{6}", line)}
    order = [line.split()[0] for line in done.stdout.splitlines() if re.match(r"\d{8}-\d{6}", line)]
    assert order == [runs.ids[k] for k in ("killed", "interrupted", "rollback_failed", "success")]
    assert "SUCCESS (0)" in rows[runs.ids["success"]]
    rbf = rows[runs.ids["rollback_failed"]]
    assert re.search(r"ROLLBACK_FAILED \(75\)\s+B\s+A, B \(FAILED\)\s*$", rbf), rbf
    assert re.search(r"INTERRUPTED \(130\)\s+A\s+A\s*$", rows[runs.ids["interrupted"]])   # A stopped mid-APPLY, rolled back
    assert "UNFINISHED (its process is gone" in rows[runs.ids["killed"]]
    for row in rows.values():
        assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}", row) and "local-fleet" in row
        assert f"{os.environ.get('USER', 'root')}@" in row or "@" in row


def test_show_a_rollback_failed_run(runs: Runs) -> None:
    done = zdupgrade("show", runs.ids["rollback_failed"], "--log_dir", str(runs.log_dir))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "Summary table (Status.ROLLBACK_FAILED)" in out
    assert re.search(r"B POST-APPLY \(failed\): ROLLBACK_ALL -> rolls back B, A\n\s+reason: ", out), out
    assert re.search(r"ROLLBACK\s+\S+ -> \S+\s+\S+\s+FAILED \(9\) - step 'start old': exit code 9: old will not start", out)
    assert "B (now: unknown, load balancer out)" in out or "B (now: unknown, load balancer unknown)" in out
    assert re.search(r"A disable: ok", out) and "out of rotation since" in out   # B never came back


def test_logs_failed_first_shows_the_failing_output(runs: Runs) -> None:
    done = zdupgrade("logs", runs.ids["rollback_failed"], "--failed", "--log_dir", str(runs.log_dir))
    assert done.returncode == 0, done.stderr
    blocks = done.stdout.split("==> ")[1:]
    assert blocks[0].startswith("B POST-APPLY [new runs]") and "--- stderr\nB answers 500" in blocks[0]
    assert blocks[1].startswith("B ROLLBACK [start old]") and "old will not start" in blocks[1]
    lb = zdupgrade("logs", runs.ids["rollback_failed"], "A", "--phase", "lb", "--log_dir", str(runs.log_dir))
    assert "--- hook output\nhook disable A" in lb.stdout and "==> B" not in lb.stdout


def test_show_and_logs_of_killed_and_interrupted_runs(runs: Runs) -> None:
    done = zdupgrade("show", runs.ids["killed"], "--log_dir", str(runs.log_dir))
    assert done.returncode == 0 and "Summary table (not finished)" in done.stdout
    assert "UNFINISHED" in done.stdout and re.search(r"APPLY\s+\S+ -> running", done.stdout)
    done = zdupgrade("show", "--log_dir", str(runs.log_dir), runs.ids["interrupted"])
    assert "INTERRUPTED (130)" in done.stdout and "ROLLBACK_NODE" in done.stdout
    done = zdupgrade("logs", runs.ids["killed"], "A", "--phase", "APPLY", "--log_dir", str(runs.log_dir))
    assert "[stop old]" in done.stdout and "[held]" not in done.stdout     # the held step never finished


def test_a_damaged_folder_is_listed_not_a_traceback(runs: Runs, tmp_path: Path) -> None:
    log_dir = tmp_path / "logs"
    shutil.copytree(runs.log_dir / runs.ids["success"], log_dir / runs.ids["success"])
    os.chmod(log_dir, 0o700)
    broken = log_dir / "20990101-000000-000000"
    broken.mkdir(mode=0o700)
    (broken / "journal.jsonl").write_bytes(b"\xff\xfe garbage\n")
    (broken / "run.json").write_text("[1, 2]")
    (log_dir / "20990101-000000-000001").symlink_to(runs.log_dir / runs.ids["success"])
    done = zdupgrade("runs", "--log_dir", str(log_dir))
    assert done.returncode == 0 and "Traceback" not in done.stdout + done.stderr
    assert re.search(r"20990101-000000-000000 .*DAMAGED: journal.jsonl: .*not valid UTF-8.*run.json: run.json is "
                     r"not a JSON object", done.stdout)
    assert re.search(r"20990101-000000-000001 .*DAMAGED: is a symbolic link", done.stdout)
    shown = zdupgrade("show", "20990101-000000-000000", "--log_dir", str(log_dir))
    assert shown.returncode == 78 and "is damaged" in shown.stderr and "Traceback" not in shown.stderr


# --------------------------------------------------------------------------- CI outputs

def test_junit_files_validate_and_say_what_failed(runs: Runs) -> None:
    SCHEMA.validate(str(runs.junit))
    ok = ET.parse(runs.junit).getroot()
    cases = list(ok.iter("testcase"))
    assert len(cases) == 3 * 5 + 1                      # node x phase, and the run's status
    assert not [c for c in cases if len(c.findall("failure")) or len(c.findall("error"))]
    assert oct(runs.junit.stat().st_mode & 0o777) == "0o600"
    rbf = runs.junit.parent / "junit-rbf.xml"
    SCHEMA.validate(str(rbf))
    failures = {(c.get("classname"), c.get("name")): c.find("failure") for c in ET.parse(rbf).getroot().iter("testcase")
                if c.find("failure") is not None}
    assert set(failures) == {("zdupgrade.B", "POST-APPLY"), ("zdupgrade.B", "ROLLBACK"), ("zdupgrade.run", "status")}
    post = failures[("zdupgrade.B", "POST-APPLY")]
    assert post is not None and post.get("type") == "failed" and "B answers 500" in (post.text or "")
    assert "exit code 4" in (post.get("message") or "")


def test_events_file_is_the_journal(runs: Runs) -> None:
    journal = (runs.log_dir / runs.ids["success"] / "journal.jsonl").read_text().splitlines()
    events = runs.events.read_text().splitlines()
    assert [json.loads(x) for x in events] == [json.loads(x) for x in journal]
    assert json.loads(events[0])["type"] == "RunOpened" and json.loads(events[-1])["type"] == "LockReleased"


def test_events_on_stdout_move_the_console_to_stderr(tmp_path: Path) -> None:
    fleet = LocalFleet(tmp_path)
    done = subprocess.run([sys.executable, str(ROOT / "zdupgrade"), *fleet.argv("--events", "-")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    types = [json.loads(line)["type"] for line in lines]        # every line of stdout is an event
    assert types[0] == "RunOpened" and "RunFinished" in types
    assert "Summary table (Status.SUCCESS)" in done.stderr


# --------------------------------------------------------------------------- the HTML report in Chromium

TIMELINE = """Array.from(document.querySelectorAll('#gantt g.node-row')).map(g => ({
  node: g.dataset.node,
  phases: Array.from(g.querySelectorAll('rect.phase')).map(r => [r.dataset.phase, r.dataset.outcome,
          r.getBoundingClientRect().width > 0, r.getBoundingClientRect().left]),
  out: g.querySelectorAll('rect.out-window').length,
  label: g.querySelector('text.row-label').textContent}))"""


def expected_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name in data["node_names"]:
        node = data["nodes"][name]
        phases = [[p, node["phases"][p]["outcome"]] for p in data["phases"] if p in node["phases"]]
        if node["rollback"]:
            phases.append(["ROLLBACK", node["rollback"]["outcome"]])
        rows.append({"node": name, "phases": phases, "out": len(node["out_windows"]) + (node["out_since"] is not None)})
    return rows


def test_reports_render_in_chromium(runs: Runs, tmp_path: Path) -> None:
    reports = {}
    for which in ("success", "rollback_failed", "killed"):
        target = tmp_path / f"{which}.html"
        done = zdupgrade("report", runs.ids[which], "-o", str(target), "--log_dir", str(runs.log_dir))
        assert done.returncode == 0, done.stderr
        reports[which] = target
    with Chromium(tmp_path) as browser:
        for which, path in reports.items():
            page = browser.open(path)
            assert page.evaluate("window.__violations") == [], which       # our CSS and script ran, nothing else
            assert page.evaluate("performance.getEntriesByType('resource').length") == 0
            rows = page.evaluate(TIMELINE)
            data = record(runs, which)
            assert [{"node": r["node"], "phases": [p[:2] for p in r["phases"]], "out": r["out"]} for r in rows] == \
                expected_rows(data), which
            assert all(r["label"] == r["node"] for r in rows)
            for row in rows:                                          # drawn, left to right in time
                assert all(visible for _, _, visible, _ in row["phases"])
                lefts = [left for *_, left in row["phases"][:5]]
                assert lefts == sorted(lefts)
            status = page.evaluate("document.getElementById('run-status').textContent")
            assert status == {"success": "SUCCESS (0)", "rollback_failed": "ROLLBACK_FAILED (75)"}.get(which, status)
        page = browser.open(reports["success"])
        # the hostile output is text: no element was made of it, no script of it ran
        assert page.evaluate("document.title").startswith("zdupgrade run ")
        assert page.evaluate("document.querySelectorAll('#commands img, #commands script').length") == 0
        texts = page.evaluate("Array.from(document.querySelectorAll('pre.stdout')).map(p => p.textContent)")
        assert any(HOSTILE in t for t in texts)
        # the steps are folded; "expand all" (our script) opens them
        assert page.evaluate("document.querySelectorAll('details.step[open]').length") == 0
        page.evaluate("document.getElementById('expand-all').click()")
        assert page.evaluate("document.querySelectorAll('details.step[open]').length") == \
            page.evaluate("document.querySelectorAll('details.step').length") > 15
        page = browser.open(reports["rollback_failed"])
        failed = page.evaluate("Array.from(document.querySelectorAll('#failed-steps a')).map(a => a.textContent)")
        assert failed[0].startswith("B POST-APPLY new runs") and any("ROLLBACK start old" in f for f in failed)
        decisions = page.evaluate("document.querySelector('#decisions tbody').textContent")
        assert "ROLLBACK_ALL" in decisions and "B, A" in decisions


# --------------------------------------------------------------------------- lock status

def test_lock_status_while_a_run_holds_it_and_after(tmp_path: Path) -> None:
    fleet = LocalFleet(tmp_path, hold=True)
    proc = fleet.start("--lock-message", "night change CHG-42")
    try:
        fleet.wait_for(lambda: fleet.in_apply("A"), "A held inside APPLY", proc)
        held = zdupgrade("lock", "status", "--config", str(fleet.topology))
        assert held.returncode == int(Status.LOCKED), held.stdout + held.stderr
        run_id = fleet.run_dir().name
        for name in "ABC":
            row = next(line for line in held.stdout.splitlines() if line.startswith(f"{name} "))
            assert "locked" in row and run_id in row and str(proc.pid) in row and "night change CHG-42" in row
        assert f"0 of 3 node(s) free; held by run(s) {run_id}" in held.stdout
        assert (tmp_path / "fleet-lock" / "owner.json").exists()        # read, not touched
    finally:
        fleet.release()
        proc.communicate(timeout=60)
    free = zdupgrade("lock", "status", "--config", str(fleet.topology))
    assert free.returncode == 0, free.stdout + free.stderr
    assert "3 of 3 node(s) free" in free.stdout
    # a lock left by a killed run on this machine: stale
    (tmp_path / "fleet-lock").mkdir()
    (tmp_path / "fleet-lock" / "owner.json").write_text(json.dumps(
        {"run_id": "20200101-000000-000000", "user": "ops", "host": os.uname().nodename, "pid": 2 ** 22 + 7,
         "started": "2020-01-01T00:00:00+00:00", "message": "<b>hi</b>\x1b[2J"}))
    stale = zdupgrade("lock", "status", "--config", str(fleet.topology))
    assert stale.returncode == int(Status.LOCKED)
    assert "locked (STALE: its process is gone)" in stale.stdout and "\x1b" not in stale.stdout
    bad = zdupgrade("lock", "status", "--config", str(tmp_path / "nope.yaml"))
    assert bad.returncode == 78 and "nope.yaml" in bad.stderr and "Traceback" not in bad.stderr


# --------------------------------------------------------------------------- the live view in a terminal

class Tmux:
    """A real terminal: a detached tmux session of a given size running one command."""

    def __init__(self, name: str, command: str, *, env: dict[str, str], width: int = 140, height: int = 45) -> None:
        self.name = name
        exports = " ".join(f"{k}={json.dumps(v)}" for k, v in env.items())
        subprocess.run(["tmux", "kill-session", "-t", name], capture_output=True)
        subprocess.run(["tmux", "new-session", "-d", "-s", name, "-x", str(width), "-y", str(height),
                        f"env {exports} {command}; echo ZDU-EXIT=$?; sleep 600"], check=True)

    def screen(self, *, escapes: bool = False) -> str:
        args = ["tmux", "capture-pane", "-p", "-t", self.name] + (["-e"] if escapes else [])
        return subprocess.run(args, capture_output=True, text=True, check=True).stdout

    def wait(self, pattern: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if re.search(pattern, screen):
                return screen
            time.sleep(0.1)
        raise AssertionError(f"{pattern!r} never appeared on the screen:\n{self.screen()}")

    def type(self, text: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, text, "Enter"], check=True)

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True)


@pytest.fixture
def terminal() -> Iterator[list[Tmux]]:
    if shutil.which("tmux") is None:
        pytest.fail("tmux is not installed (scripts/setup.sh installs it)")
    opened: list[Tmux] = []
    yield opened
    for t in opened:
        t.close()


def _command(fleet: LocalFleet, *extra: str) -> str:
    return " ".join(json.dumps(a) for a in [sys.executable, str(ROOT / "zdupgrade"), *fleet.argv(*extra)])


def test_live_view_in_a_terminal(tmp_path: Path, terminal: list[Tmux]) -> None:
    fleet = LocalFleet(tmp_path, hold=True, serial=2)
    tty = Tmux(f"zdu-live-{os.getpid()}", _command(fleet), env={"TERM": "xterm-256color"})
    terminal.append(tty)
    fleet.wait_for(lambda: fleet.in_apply("A") and fleet.in_apply("B"), "A and B held inside APPLY")
    # both rows: B's file can exist a refresh before the view shows B held (CI once read it then)
    screen = tty.wait(r"│ A\s+│ 1\s+│ APPLY\s+│ held[^\n]*\n│ B\s+│ 1\s+│ APPLY\s+│ held")
    rows = {m.group(1): [c.strip() for c in m.group(0).strip("│ ").split("│")]
            for m in re.finditer(r"^│ ([ABC]) .*│$", screen, re.M)}
    assert rows["A"][:4] == ["A", "1", "APPLY", "held"] and rows["B"][:4] == ["B", "1", "APPLY", "held"], screen
    assert rows["A"][5] == "out" and rows["A"][6] == "running"
    assert rows["C"][:3] == ["C", "2", "UPGRADE"] and rows["C"][5] == "in", screen
    assert re.search(r"zdupgrade run \d{8}-\d{6}-\d+ - \d+\.\ds - wave 1/2", screen)
    first = re.search(r"│ A .*?(\d+\.\d)s \(step", screen)
    assert first is not None
    time.sleep(1.0)
    later = re.search(r"│ A .*?(\d+\.\d)s \(step", tty.screen())
    assert later is not None and float(later.group(1)) > float(first.group(1))      # the clock ticks
    fleet.release()
    screen = tty.wait(r"ZDU-EXIT=0")
    assert "Summary table (Status.SUCCESS)" in screen and "SUCCESS (0)" in screen
    assert re.search(r"│ C\s+│ 2\s+│ POST-APPLY │", screen)


def test_pause_prompt_is_readable_and_answered_under_the_live_view(tmp_path: Path, terminal: list[Tmux]) -> None:
    fleet = LocalFleet(tmp_path)
    tty = Tmux(f"zdu-pause-{os.getpid()}", _command(fleet, "--pause-after-wave", "1"),
               env={"TERM": "xterm-256color", "NO_COLOR": "1"})
    terminal.append(tty)
    screen = tty.wait(r"or type here: continue \| abort \| abort --keep")
    assert "=== PAUSED after wave 1 of 3 (upgraded so far: A) ===" in screen
    colours = tty.screen(escapes=True)
    assert not re.search(r"\x1b\[[0-9;]*3[0-7]m|\x1b\[[0-9;]*38;", colours), "NO_COLOR: no colour escapes"
    tty.type("continue")
    screen = tty.wait(r"ZDU-EXIT=0")
    assert "Summary table (Status.SUCCESS)" in screen
    assert all(fleet.running(n) == "2.0" for n in "ABC")
    record = fleet.record()
    assert record["pauses"][0]["answer"] == "continue" and "(terminal)" in record["pauses"][0]["by"]


def test_colour_without_no_color_and_plain_lines_on_a_pipe(tmp_path: Path, terminal: list[Tmux]) -> None:
    fleet = LocalFleet(tmp_path / "tty")
    tty = Tmux(f"zdu-colour-{os.getpid()}", _command(fleet), env={"TERM": "xterm-256color"})
    terminal.append(tty)
    tty.wait(r"ZDU-EXIT=0")
    assert re.search(r"\x1b\[[0-9;]*3[0-7]m", tty.screen(escapes=True)), "PASSED is green on a terminal"
    piped = LocalFleet(tmp_path / "pipe")
    done = subprocess.run([sys.executable, str(ROOT / "zdupgrade"), *piped.argv()], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "\x1b" not in done.stdout and "┃" not in done.stdout
    assert re.search(r"^\d\d:\d\d:\d\d \[A\] APPLY   start new: ok", done.stdout, re.M)
    quiet = LocalFleet(tmp_path / "quiet")
    done = subprocess.run([sys.executable, str(ROOT / "zdupgrade"), *quiet.argv("-q")], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "start new: ok" not in done.stdout and "Summary table (Status.SUCCESS)" in done.stdout
    verbose = LocalFleet(tmp_path / "verbose")
    done = subprocess.run([sys.executable, str(ROOT / "zdupgrade"), *verbose.argv("-v")], capture_output=True,
                          text=True, timeout=120)
    assert re.search(r"\[A\] APPLY   start new \(run\): \$ echo 2\.0 > ", done.stdout), done.stdout[-2000:]


def test_run_log_lines_carry_iso_dates_with_a_time_zone(runs: Runs) -> None:
    lines = (runs.log_dir / runs.ids["success"] / "run.log").read_text().splitlines()
    stamped = [line for line in lines if re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d ", line)]
    assert len(stamped) > 20 and any("[A] APPLY PASSED (0)" in line for line in stamped)
