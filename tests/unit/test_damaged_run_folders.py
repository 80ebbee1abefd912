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

