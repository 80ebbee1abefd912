"""The run folder: run log, node logs, journal and run.json — listeners of the recorder.

One folder per run, ``<log_dir>/<run_id>/`` (mode 0700), holds:
  - ``run.log``: progress lines (ISO time with time zone) and the summary table;
  - ``<node>.log``: every command of that node between ``ZDU_EXEC_CMD`` markers, under its
    phase, with its output and exit code;
  - ``journal.jsonl``: every event, one JSON object per line, appended as it happens -- the
    source of truth ``--resume`` replays;
  - ``run.json``: the state of the run (docs/run-json.md), rewritten atomically whenever it
    changed, at most every :data:`RUN_JSON_INTERVAL` seconds, and at the end.
Files are created 0600 and never through a symlink.  Secrets are masked before anything
reaches them (events carry masked text).
"""
from __future__ import annotations

import datetime as _dt
import os
import json
import re
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, TextIO

from ..run import events as ev
from ..run.state import PhaseResult, Recorder, RunView
from .rundir import RunDir, new_run_id  # noqa: F401 - new_run_id: also imported from here
from .text import one_line_text
from ..status import StepKind

MARK = "------------- ZDU_EXEC_CMD -------------"
#: run.json is rewritten at most this often (the journal has every event at once)
RUN_JSON_INTERVAL = 0.25
#: ... and at least this often, however large the state
RUN_JSON_MAX_INTERVAL = 2.0
JOURNAL = "journal.jsonl"
RUN_JSON = "run.json"
RUN_LOG = "run.log"
#: how much of the journal's end is read at a time, looking for its last newline
_TAIL_CHUNK = 64 * 1024


def iso(at: float) -> str:
    """``at`` as an ISO 8601 time with milliseconds and the local time zone."""
    return _dt.datetime.fromtimestamp(at).astimezone().isoformat(timespec="milliseconds")


def short(at: float) -> str:
    return _dt.datetime.fromtimestamp(at).strftime("%H:%M:%S")


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


# --------------------------------------------------------------------------- progress lines

def progress_line(event: ev.Event, stamp: Callable[[float], str] = short) -> str | None:
    """The one-line console / run-log rendering of an event (None: not shown).  What came from a
    node, a hook or an exception is shown with its control characters and newlines escaped: it
    can neither drive the operator's terminal nor forge or overwrite a line."""
    if isinstance(event, ev.PreflightFailed):
        return "\n".join(f"{stamp(event.at)} PREFLIGHT: {one_line_text(p)}" for p in event.problems)
    line = _progress_text(event, stamp)
    return None if line is None else one_line_text(line)


def _progress_text(event: ev.Event, stamp: Callable[[float], str]) -> str | None:
    at = stamp(event.at)
    who = f"[{event.node}]" if event.node else ""
    phase = getattr(event, "phase", None)
    ph = f" {phase}" if phase else ""
    if isinstance(event, (ev.RunStarted, ev.Noted, ev.RunFinished)):
        return f"{at} {event.message}"
    if isinstance(event, ev.PhaseStarted):
        return f"{at} {who}{ph} started ({event.steps} step(s))"
    if isinstance(event, ev.PhaseFinished):
        return f"{at} {who}{ph} {_cell(event)}" + (f" - {event.message}" if event.message else "")
    if isinstance(event, ev.StepFinished):
        status = "ok" if event.failure is None else event.failure.value.upper()
        extra = f" - {event.message}" if event.message else ""
        return f"{at} {who}{ph}   {event.name}: {status} ({event.duration:.2f}s){extra}"
    if isinstance(event, ev.LbFinished):
        return (f"{at} {who} load balancer {event.action}: {'ok' if event.ok else 'FAILED'}"
                f"{(' - ' + event.message) if event.message else ''}")
    if isinstance(event, ev.LbRefused):
        return f"{at} {who} load balancer: {event.message}"
    if isinstance(event, ev.Decided):
        return f"{at} {who}{ph} rollback policy: {event.action}: {event.reason}"
    if isinstance(event, ev.RollbackStarted):
        return f"{at} {who} ROLLBACK started (undoing {event.undoing}: {event.steps} step(s))"
    if isinstance(event, ev.RollbackFinished):
        return f"{at} {who} ROLLBACK {_cell(event)}" + (f" - {event.message}" if event.message else "")
    if isinstance(event, ev.Warned):
        return f"{at} WARNING: {event.message}"
    if isinstance(event, ev.HostKeyAccepted):
        return f"{at} {who} host key accepted (accept-new): {event.key_type} {event.fingerprint}"
    if isinstance(event, ev.LockTaken):
        return f"{at} fleet lock taken ({event.owner.get('run_id')})"
    if isinstance(event, ev.RunPhaseStarted):
        return f"{at} {event.label}: started ({event.steps} step(s))"
    if isinstance(event, ev.RunPhaseFinished):
        return f"{at} {event.label}: {_cell(event)}" + (f" - {event.message}" if event.message else "")
    if isinstance(event, ev.Paused):
        return (f"{at} PAUSED after wave {event.wave}: waiting for `zdupgrade continue` / `abort` "
                f"(in {event.timeout:g}s: {event.on_timeout})")
    if isinstance(event, ev.PauseEnded):
        return f"{at} pause after wave {event.wave}: {event.answer} (by {event.by or 'unknown'})"
    if isinstance(event, ev.CapacityChecked):
        return f"{at} {event.message}"
    return None


def _cell(event: ev.PhaseFinished | ev.RollbackFinished | ev.RunPhaseFinished) -> str:
    """The summary cell of a finished phase: ``PASSED (0)``, ``FAILED (3)``, ``FAILED (timeout)``."""
    return PhaseResult(event.outcome, event.code, event.failure).cell()


class LineWriter:
    """Listener that writes progress lines to a callable (the console)."""

    name = "console"

    def __init__(self, write: Callable[[str], None], stamp: Callable[[float], str] = short) -> None:
        self.write = write
        self.stamp = stamp

    def __call__(self, event: ev.Event, state: RunView) -> None:
        line = progress_line(event, self.stamp)
        if line is not None:
            self.write(line)


# --------------------------------------------------------------------------- the folder

class RunFolder:
    """The run's folder; subscribe its listeners (``listeners()``) to the recorder."""

    def __init__(self, run_dir: RunDir) -> None:
        self.rundir = run_dir
        self.dir = run_dir.dir
        self.run_log_path = run_dir.path(RUN_LOG)
        self.json_path = run_dir.path(RUN_JSON)
        self.journal_path = run_dir.path(JOURNAL)
        self._run_log = run_dir.append(RUN_LOG)
        #: bytes of an unfinished last journal line cut off on opening (a write cut short by a kill)
        self.torn = cut_torn_line(run_dir, JOURNAL)
        self._journal = run_dir.append(JOURNAL)
        self._node_logs: dict[str, TextIO] = {}
        self._lock = threading.Lock()
        if self.torn:
            self.log(f"{iso(time.time())} WARNING: {JOURNAL} ended in an unfinished line ({self.torn} bytes, "
                     "a write cut short when the run was stopped): cut off, the journal goes on from its last "
                     "whole line")
        self._recorder: Recorder | None = None
        # events seen (counted under the recorder's lock) and how many of them the run.json on
        # disk includes: this orders snapshots too, so an older one never replaces a newer
        self._json_events = 0
        self._json_covered = 0
        self._json_written = 0.0
        self._json_interval = RUN_JSON_INTERVAL   # grows with the state: see _snapshot
        self._json_lock = threading.Lock()
        self._timer: threading.Timer | None = None

    def node_log_path(self, node: str) -> Path:
        return self.rundir.path(f"{safe_name(node)}.log")

    # -- listeners

    def listeners(self, recorder: Recorder) -> list[Callable[[ev.Event, RunView], None]]:
        """The folder's listeners, in the order they must see events (journal first)."""
        self._recorder = recorder
        return [self.journal, self.run_log, self.node_logs, self.run_json]

    def journal(self, event: ev.Event, state: RunView) -> None:
        self._journal.write(json.dumps(event.to_json(), ensure_ascii=False, default=str) + "\n")
        if isinstance(event, (ev.RunFinished, ev.LbStarted, ev.Decided)):
            self._journal.flush()
            os.fsync(self._journal.fileno())

    def run_log(self, event: ev.Event, state: RunView) -> None:
        line = progress_line(event, iso)
        if line is not None:
            self.log(line)

    def log(self, line: str) -> None:
        """Append a line to run.log."""
        with self._lock:
            self._run_log.write(line.rstrip("\n") + "\n")

    def run_json(self, event: ev.Event, state: RunView) -> None:
        now = event.at
        final = isinstance(event, (ev.RunFinished, ev.RunOpened, ev.PreflightFailed))
        self._json_events += 1
        if final or now - self._json_written >= self._json_interval:
            self._write_json(*self._snapshot(state))
        else:
            self._schedule()

    def _snapshot(self, state: RunView | Any) -> tuple[dict[str, Any], int]:
        """The state's JSON form and the number of events it includes; called under the recorder's lock, which
        every node's next event waits for.  The interval between writes grows to 8x the CPU time
        a snapshot costs (1,000 nodes: ~0.2 s, so every 1.6 s), up to RUN_JSON_MAX_INTERVAL: the
        lock is held at most a ninth of the time.  CPU time of this thread, not wall time: on a
        loaded machine one descheduled snapshot must not stretch the interval past the length
        of a step (a CI run once wrote run.json only every 5 s)."""
        started = time.thread_time()
        data = state.to_dict()
        cost = time.thread_time() - started
        self._json_interval = min(RUN_JSON_MAX_INTERVAL, max(RUN_JSON_INTERVAL, 8 * cost))
        return data, self._json_events

    def _schedule(self) -> None:
        with self._lock:
            if self._timer is not None:
                return
            self._timer = threading.Timer(self._json_interval, self._deferred)
            self._timer.daemon = True
            self._timer.start()

    def _deferred(self) -> None:
        with self._lock:
            self._timer = None
        recorder = self._recorder
        # not a flag cleared after the write: an event that arrives while an older snapshot is
        # being written schedules this timer, and must not find itself marked written
        if recorder is None or self._json_covered >= self._json_events:
            return
        try:
            # the snapshot under the recorder's lock; encoding and writing it outside
            self._write_json(*recorder.query(self._snapshot))
        except Exception:  # noqa: BLE001 - reported by the next synchronous write
            pass

    def _write_json(self, data: dict[str, Any], covered: int) -> None:
        body = (json.dumps(data, indent=1, default=str) + "\n").encode()
        with self._json_lock:
            if covered < self._json_covered:
                return              # a newer snapshot is on disk already (the final one, say)
            self.rundir.write_atomic(RUN_JSON, body)
            self._json_covered = covered
            self._json_written = time.time()

    def write_json(self, data: dict[str, Any]) -> None:
        """Write run.json now (the CLI, at the end of a run: ``data`` has every event)."""
        self._write_json(data, self._json_events)

    def node_logs(self, event: ev.Event, state: RunView) -> None:
        target = event.node or getattr(event, "target", "")   # run-level steps: control.log, <host>.log
        if not target or isinstance(event, (ev.Warned, ev.Noted, ev.HostKeyAccepted)):
            return
        out = self._node(target)
        phase = getattr(event, "phase", None)
        if isinstance(event, (ev.RollbackStarted, ev.RollbackFinished)):
            phase = "ROLLBACK"
        banner = f"########## {phase} ##########" if phase else ""
        stamp = iso(event.at)
        if isinstance(event, ev.PhaseStarted):
            out.write(f"{banner}\n# {stamp} started: {event.steps} step(s)\n")
        elif isinstance(event, ev.RollbackStarted):
            out.write(f"{banner}\n# {stamp} started: undoing {event.undoing}: {event.steps} step(s)\n")
        elif isinstance(event, (ev.PhaseFinished, ev.RollbackFinished)):
            line = progress_line(event, lambda _: "").strip()  # type: ignore[union-attr]
            out.write(f"# {stamp} result: {line.split(' ', 1)[1] if ' ' in line else line}\n{banner}\n\n")
        elif isinstance(event, ev.StepFinished):
            out.write(f"{MARK}\n# step: {event.name} ({event.kind}), ended {stamp}\ncommand [\n"
                      f"{event.command}\n]\n")
            if event.kind is StepKind.RUN or event.stdout or event.stderr:
                out.write(f"stdout [\n{_block(event.stdout)}]\nstderr [\n{_block(event.stderr)}]\n")
            code = event.exit_code
            out.write(f"exit code: {code if code is not None else 'none'}"
                      f"{' (' + event.failure.value + ')' if event.failure else ''}; "
                      f"duration {event.duration:.3f}s")
            if event.message:
                out.write(f"; {event.message}")
            out.write(f"\n{MARK}\n")
        elif isinstance(event, ev.LbFinished):
            out.write(f"# {stamp} load balancer {event.action}: {'ok' if event.ok else 'FAILED'}"
                      f"{(' - ' + event.message) if event.message else ''}\n")
            output = event.details.get("output") if isinstance(event.details, dict) else None
            if output:
                out.write(f"hook output [\n{_block(str(output))}]\n")
        elif isinstance(event, ev.LbRefused):
            out.write(f"# {stamp} load balancer: {event.message}\n")
        elif isinstance(event, ev.Decided):
            out.write(f"# {stamp} rollback policy: {event.action}: {event.reason}\n")

    def _node(self, node: str) -> TextIO:
        handle = self._node_logs.get(node)
        if handle is None:
            handle = self._node_logs[node] = self.rundir.append(f"{safe_name(node)}.log")
        return handle

    def close(self) -> None:
        with self._lock:
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        with self._lock:
            for handle in [self._run_log, self._journal, *self._node_logs.values()]:
                try:
                    handle.close()
                except OSError:
                    pass
            self._node_logs.clear()


def _block(text: str) -> str:
    if not text:
        return ""
    return text if text.endswith("\n") else text + "\n"


def cut_torn_line(run_dir: RunDir, name: str) -> int:
    """Cut off the unfinished last line of ``name`` (the bytes after its last newline: a write
    cut short by a kill or a crash), so that what is appended next starts on a line of its own;
    how many bytes were cut (0: it ends in a newline, is empty, or does not exist yet)."""
    if not run_dir.exists(name):
        return 0
    fd = run_dir.open_fd(name)
    try:
        size = os.fstat(fd).st_size
        keep, end = 0, size
        while end > 0:              # backwards, a chunk at a time: a torn line may be megabytes
            start = max(0, end - _TAIL_CHUNK)
            newline = os.pread(fd, end - start, start).rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            end = start
        if keep < size:
            os.ftruncate(fd, keep)
            os.fsync(fd)
        return size - keep
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- reading

def read_journal(text: str) -> Iterator[ev.Event]:
    """The events of a journal's text; ValueError naming the line for one that does not parse
    (a last line cut short by a kill is ignored)."""
    for _number, event in journal_lines(text):
        yield event


def torn_tail(text: str) -> str:
    """The unfinished last line of a journal's text (after its last newline; "" if none)."""
    return text[text.rfind("\n") + 1:]


def journal_lines(text: str) -> Iterator[tuple[int, ev.Event]]:
    """The events of a journal's text with their line numbers; as :func:`read_journal`."""
    lines = text.split("\n")
    complete = lines[:-1]   # the text after the last newline is an unfinished write
    for number, line in enumerate(complete, 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except ValueError as exc:
            raise ValueError(f"line {number}: not JSON ({exc})") from None
        try:
            event = ev.Event.from_json(data)
        except ValueError as exc:
            raise ValueError(f"line {number}: {exc}") from None
        yield number, event
