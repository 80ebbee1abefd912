"""Run folders that are damaged or cut short, read back by the review commands and reopened by the
writer: a torn last journal line cut off before a resume appends, bad values inside run.json and
the journal (a clear error naming the file and the field, never a traceback; ``runs`` still lists
the good folders), a journal behind run.json (run.json's state, not a confident stale one), and
``report -o`` / ``--junit`` into a FIFO or a descriptor (written in place, never replaced)."""
from __future__ import annotations

import fcntl
import json
import math
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.unit.test_review import cli, opened, phase, rollback_run, write_run
from zdu.errors import ConfigError
from zdu.report import output
from zdu.report.review import load_run
from zdu.report.rundir import RunDir
from zdu.report.runfolder import JOURNAL, RunFolder, read_journal
from zdu.run import events as ev
from zdu.run.state import Recorder, RunState, replay
from zdu.status import Phase, Status

RUN = "20260101-000000-000001"
GOOD = "20260101-000000-000002"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A finished APPLY_FAILED run (decisions, rollbacks, load-balancer actions) and a SUCCESS run."""
    log_dir = tmp_path / "logs"
    t = time.time() - 3600
    write_run(log_dir, RUN, rollback_run(RUN, t))
    write_run(log_dir, GOOD, success_run(GOOD, t + 100))
    return log_dir / RUN


def success_run(run_id: str, t: float) -> list[ev.Event]:
    events: list[ev.Event] = [opened(run_id, t), ev.RunStarted(at=t, message="go")]
    for node in "AB":
        for i, ph in enumerate((Phase.EXPORT, Phase.UPGRADE, Phase.PRE_APPLY, Phase.APPLY, Phase.POST_APPLY)):
            events += phase(node, ph, t + 1 + i)
    return events + [ev.RunFinished(at=t + 10, status=Status.SUCCESS)]


def journal_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (path / JOURNAL).read_text().splitlines()]


def write_lines(path: Path, lines: list[dict[str, Any]]) -> None:
    (path / JOURNAL).write_text("".join(json.dumps(line) + "\n" for line in lines))


# --------------------------------------------------------------------------- 1. a torn journal line

def reopen_and_emit(log_dir: Path, run_id: str, *events: ev.Event) -> RunFolder:
    """Open the folder for appending as ``--resume`` does, and emit ``events``."""
    run_dir = RunDir.open_existing(log_dir, run_id)
    state = replay(read_journal(run_dir.read_text(JOURNAL)))
    folder = RunFolder(run_dir)
    recorder = Recorder(state)
    for listener in folder.listeners(recorder):
        recorder.subscribe(listener)
    for event in events:
        recorder.emit(event)
    folder.close()
    run_dir.close()
    return folder


@pytest.mark.parametrize("fragment", ['{"type": "StepStarted", "at": 179622', '{"type": "StepFinished", "stdout": "'
                                      + "x" * 200_000], ids=["short", "longer than a read"])
def test_a_torn_last_line_is_cut_off_before_events_are_appended(tmp_path: Path, fragment: str) -> None:
    log_dir = tmp_path / "logs"
    t = time.time() - 100
    path = write_run(log_dir, RUN, [opened(RUN, t), *phase("A", Phase.EXPORT, t + 1)], finish=False)
    whole = (path / JOURNAL).read_bytes()
    with open(path / JOURNAL, "a") as handle:      # the run was killed in the middle of this write
        handle.write(fragment)
    folder = reopen_and_emit(log_dir, RUN, ev.RunStarted(at=t + 5, message="resumed", resumed=True),
                             ev.Warned(at=t + 6, message="after the resume"))
    assert folder.torn == len(fragment.encode())
    data = (path / JOURNAL).read_bytes()
    # the fragment is gone: the events appended start right where the whole lines ended
    assert data.startswith(whole) and data[len(whole):].startswith(b'{"type": "RunStarted"') and data.endswith(b"\n")
    lines = [json.loads(line) for line in data.decode().splitlines()]          # every line whole
    assert [line["type"] for line in lines[-2:]] == ["RunStarted", "Warned"]
    assert "journal.jsonl ended in an unfinished line" in (path / "run.log").read_text()
    # and the next resume reads it (it used to be refused: "the run record is damaged")
    state = replay(read_journal((path / JOURNAL).read_text()))
    assert state.resumed == [t + 5] and state.warnings == ["after the resume"]
    assert reopen_and_emit(log_dir, RUN, ev.Noted(at=t + 7, message="again")).torn == 0


def test_a_journal_that_is_one_fragment_or_whole_is_left_as_it_should_be(tmp_path: Path) -> None:
    run_dir = RunDir.create(tmp_path / "logs", RUN)
    (tmp_path / "logs" / RUN / JOURNAL).write_text('{"type": "RunOp')
    assert RunFolder(run_dir).torn == 15
    assert (tmp_path / "logs" / RUN / JOURNAL).read_bytes() == b""
    assert RunFolder(run_dir).torn == 0                                   # empty: nothing to cut
    run_dir.close()


# --------------------------------------------------------------------------- 2. bad values

def _set(path: list[Any], value: Any) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        for key in path[:-1]:
            data = data[key]
        data[path[-1]] = value
    return change


# run.json changes (the journal removed): what each breaks, and the field the error must name
RUN_JSON_CASES: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "started out of range": (_set(["started"], 1e20), "run.json.started"),
    "started negative": (_set(["started"], -1e15), "run.json.started"),
    "started NaN": (_set(["started"], math.nan), "run.json.started"),
    "ended infinite": (_set(["ended"], math.inf), "run.json.ended"),
    "resumed NaN": (_set(["resumed"], [math.nan]), "run.json.resumed[0]"),
    "decision time huge": (lambda d: d["decisions"][0].update(time=1e300), "run.json.decisions[0].time"),
    "lb_actions [{}]": (_set(["lb_actions"], [{}]), "run.json.lb_actions[0]: no 'node'"),
    "lb_actions no started": (lambda d: d["lb_actions"][0].pop("started"), "run.json.lb_actions[0]: no 'started'"),
    "lb_actions bad types": (lambda d: d["lb_actions"][0].update(started="x"), "run.json.lb_actions[0].started"),
    "pauses wave x": (_set(["pauses"], [{"wave": "x"}]), "run.json.pauses[0]"),
    "pauses wrong type": (_set(["pauses"], [{"wave": "x", "started": 1.0, "timeout": 1.0, "on_timeout": "abort",
                                             "ended": None, "answer": None, "by": None}]), "run.json.pauses[0].wave"),
    "capacity [{}]": (_set(["capacity"], [{}]), "run.json.capacity[0]: no 'wave'"),
    "out_windows [{}]": (_set(["nodes", "A", "out_windows"], [{}]), "run.json.nodes.A.out_windows[0]: no 'out'"),
    "out_windows NaN": (_set(["nodes", "A", "out_windows"], [{"out": 1.0, "in": 2.0, "seconds": math.nan}]),
                        "run.json.nodes.A.out_windows[0].seconds"),
    "tiers unknown node": (_set(["tiers"], {"t": ["nope"]}), "run.json.tiers.t: 'nope' is not a node"),
    "traffic windows 5": (_set(["traffic"], {"windows": 5}), "run.json.traffic.windows: expected a list"),
    "traffic series point": (_set(["traffic"], {"series": [{"t": "x", "sent": 1, "failed": 0, "p99_ms": None}]}),
                             "run.json.traffic.series[0].t"),
    "traffic target_rate": (_set(["traffic"], {"target_rate": None}), "run.json.traffic.target_rate"),
}


@pytest.mark.parametrize("case", sorted(RUN_JSON_CASES))
def test_a_bad_value_in_run_json_is_a_damaged_run_naming_the_field(folder: Path, case: str) -> None:
    change, field = RUN_JSON_CASES[case]
    data = json.loads((folder / "run.json").read_text())
    change(data)
    (folder / "run.json").write_text(json.dumps(data))
    (folder / JOURNAL).unlink()
    log_dir = folder.parent
    for command in (["show"], ["logs"], ["report", "-o", str(log_dir / "r.html")]):
        code, out, err = cli(*command, RUN, "--log_dir", str(log_dir))
        assert code == 78, (command, out, err)
        assert "is damaged" in err and field in err and "Traceback" not in err, (command, err)
        assert len(err.strip().splitlines()) == 1, err
    assert not (log_dir / "r.html").exists()
    # `runs` lists it as damaged, with why, and still lists the good run
    code, out, err = cli("runs", "--log_dir", str(log_dir))
    assert code == 0 and "Traceback" not in out + err, err
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("2026")}
    assert "DAMAGED" in rows[RUN] and field.split(":")[0] in rows[RUN]
    assert "SUCCESS (0)" in rows[GOOD]


def _event(kind: str, change: Callable[[dict[str, Any]], None]) -> Callable[[list[dict[str, Any]]], None]:
    def mutate(lines: list[dict[str, Any]]) -> None:
        change(next(line for line in lines if line["type"] == kind))
    return mutate


def _last(change: Callable[[dict[str, Any]], None]) -> Callable[[list[dict[str, Any]]], None]:
    return lambda lines: change(lines[-1])


def _traffic(report: dict[str, Any]) -> Callable[[list[dict[str, Any]]], None]:
    return lambda lines: lines.insert(-1, {"type": "TrafficMeasured", "at": lines[-1]["at"], "node": None,
                                           "report": report})


# journal changes (run.json removed, so nothing to fall back on)
JOURNAL_CASES: dict[str, tuple[Callable[[list[dict[str, Any]]], None], str]] = {
    "StepFinished duration NaN": (_event("StepFinished", lambda e: e.update(duration=math.nan)),
                                  "StepFinished.duration: nan"),
    "StepFinished duration 1e308": (_event("StepFinished", lambda e: e.update(duration=1e308)),
                                    "StepFinished.duration"),
    "StepFinished duration before the epoch": (_event("StepFinished", lambda e: e.update(duration=e["at"] + 5)),
                                               "StepFinished.duration"),
    "LbFinished duration -1": (_event("LbFinished", lambda e: e.update(duration=-1.0)), "LbFinished.duration"),
    "RunOpened at 1e20": (lambda lines: lines[0].update(at=1e20), "line 1: RunOpened.at"),
    "last at NaN": (_last(lambda e: e.update(at=math.nan)), "RunFinished.at: nan"),
    "last at negative": (_last(lambda e: e.update(at=-1e15)), "RunFinished.at"),
    "tiers unknown node": (lambda lines: lines[0].update(tiers={"t": ["nope"]}),
                           "line 1: RunOpened.tiers.t: 'nope' is not a node"),
    "tiers not a list": (lambda lines: lines[0].update(tiers={"t": "AB"}), "line 1: RunOpened.tiers.t"),
    "traffic windows 5": (_traffic({"windows": 5}), "TrafficMeasured.report.windows: expected a list"),
    "traffic window without label": (_traffic({"windows": [{"sent": 1, "failed": 0}]}),
                                     "TrafficMeasured.report.windows[0]: no 'label'"),
}


@pytest.mark.parametrize("case", sorted(JOURNAL_CASES))
def test_a_bad_value_in_the_journal_is_a_damaged_run_naming_the_field(folder: Path, case: str) -> None:
    mutate, field = JOURNAL_CASES[case]
    lines = journal_lines(folder)
    mutate(lines)
    write_lines(folder, lines)
    record = (folder / "run.json").read_text()
    (folder / "run.json").unlink()
    log_dir = folder.parent
    for command in (["show"], ["logs"], ["logs", "--failed"], ["report", "-o", str(log_dir / "r.html")]):
        code, out, err = cli(*command, RUN, "--log_dir", str(log_dir))
        assert code == 78, (command, out, err)
        assert "journal.jsonl: line " in err and field in err and "Traceback" not in err, (command, err)
    code, out, err = cli("runs", "--log_dir", str(log_dir))
    assert code == 0 and "Traceback" not in out + err
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("2026")}
    assert "DAMAGED" in rows[RUN] and "SUCCESS (0)" in rows[GOOD]
    # with run.json beside it, the run is shown from run.json, saying why
    (folder / "run.json").write_text(record)
    code, out, err = cli("show", RUN, "--log_dir", str(log_dir))
    assert code == 0 and "from run.json: journal.jsonl: line " in out and field in out, err
    assert "APPLY_FAILED (73)" in out


def test_runs_lists_good_and_bad_folders_together(folder: Path) -> None:
    log_dir = folder.parent
    for i, (change, _field) in enumerate(RUN_JSON_CASES.values()):
        bad = log_dir / f"20250101-000000-{i:06d}"
        bad.mkdir(mode=0o700)
        data = json.loads((folder / "run.json").read_text())
        change(data)
        (bad / "run.json").write_text(json.dumps(data))
    code, out, err = cli("runs", "--log_dir", str(log_dir))
    assert code == 0 and "Traceback" not in out + err, err
    rows = {line.split()[0]: line for line in out.splitlines() if line[:4] in ("2025", "2026")}
    assert len(rows) == 2 + len(RUN_JSON_CASES)
    assert "APPLY_FAILED (73)" in rows[RUN] and "SUCCESS (0)" in rows[GOOD]
    assert all("DAMAGED: no journal.jsonl; run.json: run.json." in row for run_id, row in rows.items()
               if run_id.startswith("2025"))


def test_an_unexpected_error_is_a_damaged_folder_not_a_traceback(folder: Path, monkeypatch: pytest.MonkeyPatch
                                                                 ) -> None:
    """The last resort, for a value the checks missed: the rendering raising anything."""
    from zdu.report import views
    log_dir = folder.parent
    original = views.runs_rows

    def rows(runs: Any) -> list[list[str]]:
        runs = list(runs)
        if any(r.run_id == RUN and r.state is not None for r in runs):
            raise RuntimeError("boom")
        return original(runs)
    monkeypatch.setattr(views, "runs_rows", rows)
    monkeypatch.setattr(views, "render_show", lambda run: 1 / 0)
    code, out, err = cli("runs", "--log_dir", str(log_dir))
    assert code == 0 and "Traceback" not in out + err
    listed = {line.split()[0]: line for line in out.splitlines() if line.startswith("2026")}
    assert "DAMAGED: unreadable (RuntimeError: boom)" in listed[RUN] and "SUCCESS (0)" in listed[GOOD]
    code, out, err = cli("show", RUN, "--log_dir", str(log_dir))
    assert code == 78 and "Traceback" not in err
    assert f"run folder {folder} is damaged or unreadable (ZeroDivisionError: division by zero)" in err


# --------------------------------------------------------------------------- 3. a journal behind run.json

def test_a_journal_cut_in_half_is_not_trusted_over_run_json(folder: Path) -> None:
    log_dir, path = folder.parent, log_dir_of(folder, GOOD)
    data = (path / JOURNAL).read_bytes()
    (path / JOURNAL).write_bytes(data[:len(data) // 2])        # a power loss: the journal was not fsynced
    run = load_run(log_dir, GOOD)
    assert run.source == "run.json" and run.state is not None and run.state.status is Status.SUCCESS
    assert "journal.jsonl is behind run.json" in run.problem and run.events and run.has_output
    code, out, err = cli("show", GOOD, "--log_dir", str(log_dir))
    assert code == 0, err
    assert "SUCCESS (0)" in out and "--resume" not in out and "UNFINISHED" not in out
    assert "journal.jsonl is behind run.json" in out
    code, out, err = cli("runs", "--log_dir", str(log_dir))
    row = next(line for line in out.splitlines() if line.startswith(GOOD))
    assert "SUCCESS (0) [from run.json]" in row and "--resume" not in row
    # the commands as far as the journal goes, with a warning
    code, out, err = cli("logs", GOOD, "--log_dir", str(log_dir))
    assert code == 0 and "==> A EXPORT" in out and "journal.jsonl is behind run.json" in err
    # cut at a line boundary: the same
    lines = data.decode().splitlines(keepends=True)
    (path / JOURNAL).write_text("".join(lines[:len(lines) // 2]))
    code, out, err = cli("show", GOOD, "--log_dir", str(log_dir))
    assert code == 0 and "SUCCESS (0)" in out and "--resume" not in out and "behind run.json" in out


def log_dir_of(folder: Path, run_id: str) -> Path:
    return folder.parent / run_id


def test_a_torn_last_line_is_said_when_run_json_has_no_more(tmp_path: Path) -> None:
    log_dir = tmp_path / "logs"
    t = time.time() - 100
    path = write_run(log_dir, RUN, [opened(RUN, t), *phase("A", Phase.EXPORT, t + 1),
                                    ev.PhaseStarted(at=t + 3, node="A", phase=Phase.APPLY, steps=2)])
    with open(path / JOURNAL, "a") as handle:
        handle.write('{"type": "StepStarted", "at": 17')
    run = load_run(log_dir, RUN)
    assert run.source == "journal" and "ends in an unfinished line (32 bytes" in run.problem
    code, out, err = cli("show", RUN, "--log_dir", str(log_dir))
    assert code == 0 and "warning    journal.jsonl ends in an unfinished line" in out
    assert "the state shown may be incomplete" in out and "UNFINISHED" in out
    code, out, err = cli("runs", "--log_dir", str(log_dir))
    assert "[journal cut short]" in out


def test_a_live_run_is_read_from_its_journal(folder: Path) -> None:
    """While a process drives the run, its journal is ahead of run.json (and may be read in the
    middle of a line): never the behind check."""
    path = log_dir_of(folder, GOOD)
    data = (path / JOURNAL).read_bytes()
    (path / JOURNAL).write_bytes(data[:len(data) // 2])
    fd = os.open(path / "control.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        run = load_run(folder.parent, GOOD)
        assert run.alive and run.source == "journal" and not run.problem
        assert run.status_text() == "RUNNING"
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- 4. -o into a stream

def read_fifo(path: Path, into: list[bytes]) -> threading.Thread:
    thread = threading.Thread(target=lambda: into.append(path.read_bytes()), daemon=True)
    thread.start()
    return thread


def test_a_symlink_to_a_fifo_is_written_through_not_replaced(tmp_path: Path) -> None:
    fifo, link = tmp_path / "fifo", tmp_path / "report.html"
    os.mkfifo(fifo)
    link.symlink_to(fifo)
    got: list[bytes] = []
    reader = read_fifo(fifo, got)
    assert output.write_private(link, b"<html>report</html>", option="-o") == link
    reader.join(10)
    assert got == [b"<html>report</html>"]
    assert link.is_symlink() and os.readlink(link) == str(fifo) and fifo.is_fifo()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []      # no temporary file


def test_a_descriptor_behind_a_symlink_is_written_through(tmp_path: Path) -> None:
    """/dev/stdout is such a link (to /proc/self/fd/1); this one points at a pipe's write end."""
    read_end, write_end = os.pipe()
    link = tmp_path / "stdout"
    link.symlink_to(f"/proc/self/fd/{write_end}")
    try:
        assert output.in_place(link, option="--junit")
        output.write_private(link, b"<testsuites/>", option="--junit")
        os.close(write_end)
        write_end = -1
        with os.fdopen(read_end, "rb") as handle:
            read_end = -1
            assert handle.read() == b"<testsuites/>"
        assert link.is_symlink() and os.readlink(link).startswith("/proc/self/fd/")
    finally:
        for fd in (read_end, write_end):
            if fd >= 0:
                os.close(fd)


def test_report_into_a_fifo_and_its_line_on_stderr(folder: Path, tmp_path: Path) -> None:
    fifo, link = tmp_path / "pipe", tmp_path / "out.html"
    os.mkfifo(fifo)
    link.symlink_to(fifo)
    got: list[bytes] = []
    reader = read_fifo(fifo, got)
    code, out, err = cli("report", RUN, "-o", str(link), "--log_dir", str(folder.parent))
    reader.join(10)
    assert code == 0, err
    assert got and got[0].startswith(b"<!DOCTYPE html>") and got[0].rstrip().endswith(b"</html>")
    assert link.is_symlink() and fifo.is_fifo()
    assert out == "" and f"report of run {RUN}: {link}" in err


def test_regular_files_are_still_replaced_privately(tmp_path: Path) -> None:
    target, other = tmp_path / "r.html", tmp_path / "elsewhere"
    other.write_text("keep")
    target.symlink_to(other)                         # a link to a regular file: replaced, not followed
    assert not output.in_place(target, option="-o")
    output.write_private(target, b"new", option="-o")
    assert not target.is_symlink() and target.read_bytes() == b"new" and other.read_text() == "keep"
    assert (target.stat().st_mode & 0o777) == 0o600
    output.write_private(tmp_path / "fresh.html", b"x", option="-o")
    assert (tmp_path / "fresh.html").read_bytes() == b"x"


def test_a_socket_or_a_closed_descriptor_is_refused(tmp_path: Path) -> None:
    import socket
    path = tmp_path / "sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    try:
        with pytest.raises(ConfigError, match="is a socket"):
            output.write_private(path, b"x", option="-o")
    finally:
        server.close()
    read_end, write_end = os.pipe()
    os.close(read_end)
    os.close(write_end)
    link = tmp_path / "gone"
    link.symlink_to(f"/proc/self/fd/{write_end}")
    with pytest.raises(ConfigError, match="cannot write it"):
        output.write_private(link, b"x", option="-o")
    assert link.is_symlink()
