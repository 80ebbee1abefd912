"""Run folder, run log, node logs and run.json — all event listeners.

One folder per run, ``<log_dir>/<run_id>/`` (mode 0700), holds:
  - ``run.log``: progress lines and the summary table;
  - ``<node>.log``: every command of that node between ``ZDU_EXEC_CMD`` markers,
    under its phase, with its output and exit code;
  - ``run.json``: the machine-readable record, rewritten atomically after each step.
Files are created 0600.  Secrets are masked before anything reaches them.
"""
from __future__ import annotations

import datetime as _dt
import os
import re
import threading
from pathlib import Path
from typing import Callable, TextIO

from zdu.run import events as ev
from zdu.errors import ConfigError
from zdu.run.events import Event
from zdu.run.state import RunState, write_json_atomic

MARK = "------------- ZDU_EXEC_CMD -------------"


def new_run_id(now: _dt.datetime | None = None) -> str:
    """A sortable, unique-enough run id: 20261122-021500-123456."""
    now = now or _dt.datetime.now()
    return now.strftime("%Y%m%d-%H%M%S-%f")


def make_run_dir(log_dir: Path, run_id: str) -> Path:
    """Create ``log_dir/run_id`` with mode 0700; ConfigError if the log dir cannot hold it."""
    run_dir = log_dir / run_id
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        run_dir.mkdir(mode=0o700)
        os.chmod(run_dir, 0o700)
    except OSError as exc:
        raise ConfigError(f"--log_dir {log_dir}: cannot create the run folder {run_dir}: "
                          f"{exc.strerror or exc}") from None
    return run_dir


def _open_private(path: Path) -> TextIO:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    return os.fdopen(fd, "a", encoding="utf-8", errors="replace", buffering=1)


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def progress_line(event: Event) -> str | None:
    """The one-line console / run-log rendering of an event (None: not shown)."""
    stamp = _dt.datetime.fromtimestamp(event.time).strftime("%H:%M:%S")
    who = f"[{event.node}]" if event.node else ""
    phase = f" {event.phase}" if event.phase else ""
    if event.kind == ev.RUN_STARTED:
        return f"{stamp} {event.message}"
    if event.kind == ev.PHASE_STARTED:
        return f"{stamp} {who}{phase} started ({event.message})"
    if event.kind in (ev.PHASE_FINISHED, ev.ROLLBACK_FINISHED):
        detail = event.data.get("message") or ""
        return f"{stamp} {who}{phase} {event.message}" + (f" - {detail}" if detail else "")
    if event.kind == ev.STEP_FINISHED:
        d = event.data
        status = "ok" if not d.get("error") else d["error"].upper()
        extra = f" - {d['message']}" if d.get("message") else ""
        return f"{stamp} {who}{phase}   {event.message}: {status} ({d.get('duration', 0):.2f}s){extra}"
    if event.kind == ev.LB_ACTION:
        return f"{stamp} {who} load balancer {event.message}"
    if event.kind == ev.DECISION:
        return f"{stamp} {who}{phase} rollback policy: {event.message}"
    if event.kind == ev.ROLLBACK_STARTED:
        return f"{stamp} {who} ROLLBACK started ({event.message})"
    if event.kind == ev.WARNING:
        return f"{stamp} WARNING: {event.message}"
    if event.kind in (ev.INFO, ev.RUN_FINISHED):
        return f"{stamp} {event.message}"
    return None


class LineWriter:
    """Listener that writes progress lines to a callable (the console) or a file."""

    def __init__(self, write: Callable[[str], None]) -> None:
        self.write = write

    def __call__(self, event: Event) -> None:
        line = progress_line(event)
        if line is not None:
            self.write(line)


class RunFolder:
    """The run's folder: run.log, node logs and run.json."""

    def __init__(self, run_dir: Path, state: RunState) -> None:
        self.dir = run_dir
        self.state = state
        self.run_log_path = run_dir / "run.log"
        self.json_path = run_dir / "run.json"
        self._run_log = _open_private(self.run_log_path)
        self._node_logs: dict[str, TextIO] = {}
        self._lock = threading.Lock()
        self.write_json()

    def node_log_path(self, node: str) -> Path:
        return self.dir / f"{_safe_name(node)}.log"

    def log(self, line: str) -> None:
        """Append a line to run.log."""
        with self._lock:
            self._run_log.write(line.rstrip("\n") + "\n")

    def write_json(self) -> None:
        write_json_atomic(self.json_path, self.state.to_dict())

    def __call__(self, event: Event) -> None:
        line = progress_line(event)
        if line is not None:
            self.log(line)
        if event.node:
            self._node_event(event)
        if event.kind != ev.INFO:  # every change of state, so that --resume knows where it stopped
            self.write_json()

    def _node(self, node: str) -> TextIO:
        handle = self._node_logs.get(node)
        if handle is None:
            handle = self._node_logs[node] = _open_private(self.node_log_path(node))
        return handle

    def _node_event(self, event: Event) -> None:
        assert event.node is not None
        out = self._node(event.node)
        banner = f"########## {event.phase} ##########" if event.phase else ""
        stamp = _dt.datetime.fromtimestamp(event.time).isoformat(timespec="milliseconds")
        if event.kind in (ev.PHASE_STARTED, ev.ROLLBACK_STARTED):
            out.write(f"{banner}\n# {stamp} started: {event.message}\n")
        elif event.kind in (ev.PHASE_FINISHED, ev.ROLLBACK_FINISHED):
            out.write(f"# {stamp} result: {event.message}\n{banner}\n\n")
        elif event.kind == ev.STEP_FINISHED:
            d = event.data
            out.write(f"{MARK}\n# step: {event.message} ({d.get('kind')}), ended {stamp}\ncommand [\n"
                      f"{d.get('command') or ''}\n]\n")
            if "stdout" in d:
                out.write(f"stdout [\n{_block(d['stdout'])}]\nstderr [\n{_block(d['stderr'])}]\n")
            code = d.get("exit_code")
            out.write(f"exit code: {code if code is not None else 'none'}"
                      f"{' (' + d['error'] + ')' if d.get('error') else ''}; "
                      f"duration {d.get('duration', 0):.3f}s")
            if d.get("message"):
                out.write(f"; {d['message']}")
            out.write(f"\n{MARK}\n")
        elif event.kind == ev.LB_ACTION:
            out.write(f"# {stamp} load balancer {event.message}\n")
        elif event.kind == ev.DECISION:
            out.write(f"# {stamp} rollback policy: {event.message}\n")

    def close(self) -> None:
        with self._lock:
            for handle in [self._run_log, *self._node_logs.values()]:
                try:
                    handle.close()
                except OSError:
                    pass
            self._node_logs.clear()


def _block(text: str) -> str:
    if not text:
        return ""
    return text if text.endswith("\n") else text + "\n"
