"""run.json is rewritten at most every RUN_JSON_INTERVAL seconds, from a timer: an event that
arrives while an older snapshot is being written must still reach the file (a CI run once lost
the start of a hung step this way: run.json never showed it running)."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from zdu.report.rundir import RunDir
from zdu.report.runfolder import RUN_JSON_INTERVAL, RUN_JSON_MAX_INTERVAL, RunFolder
from zdu.run import events as ev
from zdu.run.state import Recorder, RunState
from zdu.status import Phase, StepKind


def opened(at: float) -> ev.RunOpened:
    return ev.RunOpened(at=at, run_id="r1", old_install_dir="/opt/gw-1", new_install_dir="/opt/gw-2",
                        profile="lab", topology="t.yaml", node_names=("A", "B"), lb="script",
                        invocation={}, plan_fingerprint="f", tool_version="0.1.0", user="ops", host="ctl",
                        argv=())


def started(node: str, name: str, at: float | None = None) -> ev.StepStarted:
    return ev.StepStarted(at=time.time() if at is None else at, node=node, phase=Phase.APPLY, key=f"{node}/APPLY/{name}", name=name,
                          kind=StepKind.RUN, command=f"do {name}")


def running(path: Path) -> set[str]:
    data = json.loads(path.read_text())
    return {s["name"] for s in data["steps"] if s["ended"] is None}


def open_folder(tmp_path: Path) -> tuple[RunDir, RunFolder, Recorder]:
    """A run folder whose listeners follow a recorder, after the run was opened (written at once)."""
    run_dir = RunDir.create(tmp_path, "r1")
    folder = RunFolder(run_dir)
    recorder = Recorder(RunState.opened(opened(time.time())))
    for listener in folder.listeners(recorder):
        recorder.subscribe(listener)
    recorder.emit(opened(time.time()))
    return run_dir, folder, recorder


def test_an_event_during_a_deferred_write_is_written(tmp_path: Path) -> None:
    run_dir, folder, recorder = open_folder(tmp_path)
    made = time.time()          # an event is stamped when it is made, before it waits for the lock
    write = folder._write_json
    calls: list[int] = []

    def slow_write(*args: Any) -> None:
        calls.append(1)
        if len(calls) == 1:
            # the deferred write of "first" is being encoded (outside the recorder's lock) when
            # "second" arrives: "second" schedules the next write
            recorder.emit(started("B", "second", at=made))
        write(*args)

    folder._write_json = slow_write  # type: ignore[method-assign,assignment]
    recorder.emit(started("A", "first"))               # within the interval: deferred
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and running(folder.json_path) != {"first", "second"}:
        time.sleep(0.02)
    try:
        assert running(folder.json_path) == {"first", "second"}, json.loads(folder.json_path.read_text())["steps"]
        assert len(calls) >= 2
    finally:
        folder.close()
        run_dir.close()


def test_no_write_when_nothing_changed(tmp_path: Path) -> None:
    run_dir, folder, recorder = open_folder(tmp_path)
    recorder.emit(started("A", "first"))
    deadline = time.monotonic() + 5
    # the timer's write done, not only its file renamed into place (it notes what it covered after)
    while time.monotonic() < deadline and (running(folder.json_path) != {"first"}
                                           or folder._json_covered < folder._json_events):
        time.sleep(0.02)
    assert running(folder.json_path) == {"first"}
    before = folder.json_path.stat().st_mtime_ns
    folder._deferred()                                 # a timer with nothing new: no rewrite
    assert folder.json_path.stat().st_mtime_ns == before
    folder.close()
    run_dir.close()


def test_a_descheduled_snapshot_does_not_stretch_the_interval(tmp_path: Path) -> None:
    """Wall time spent waiting (a loaded machine) is not cost: the interval stays short."""
    run_dir = RunDir.create(tmp_path, "r1")
    folder = RunFolder(run_dir)

    class Slow:
        def to_dict(self) -> dict[str, object]:
            time.sleep(0.5)                          # descheduled, not working
            return {}

    folder._snapshot(Slow())
    assert folder._json_interval == RUN_JSON_INTERVAL

    class Busy:
        def to_dict(self) -> dict[str, object]:
            end = time.thread_time() + 0.6           # a huge state: 0.6 s of CPU
            while time.thread_time() < end:
                pass
            return {}

    folder._snapshot(Busy())
    assert folder._json_interval == RUN_JSON_MAX_INTERVAL   # 8 x 0.6 s, capped
    folder.close()
    run_dir.close()
