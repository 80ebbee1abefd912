"""Reading past runs back: what ``zdupgrade runs``, ``show``, ``logs`` and ``report`` work on.

A run is read from its folder through :class:`~zdu.report.rundir.RunDir` (never through a
symlink): its ``journal.jsonl`` is replayed (:func:`zdu.run.state.replay`), which gives the state
*and* every event (commands with their output are only in the journal's ``StepFinished``
events).  If the journal is missing or does not replay, ``run.json`` is read instead (state
only, no command output).  A folder where neither works is a *damaged* run: it is listed as
such, with the reason, and never raises.

Everything read here was written by zdupgrade, but a run folder is a file anyone with access
may have edited: the text is shown escaped by whoever renders it (the HTML report), and a
value of the wrong type is a damaged run, not a crash.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import errno
import fcntl
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ..errors import ConfigError
from ..run import events as ev
from ..run.state import RunState, replay
from ..status import Outcome, Phase, Status
from .rundir import RunDir
from .runfolder import JOURNAL, RUN_JSON, read_journal

from ..run.resume import CONTROL_LOCK


@dataclass
class LoadedRun:
    """One run folder, read back."""

    run_id: str
    path: Path
    state: RunState | None                   # None: damaged
    events: list[ev.Event] = field(default_factory=list)   # [] when read from run.json
    source: str = ""                         # "journal", "run.json" or "" (damaged)
    problem: str = ""                        # why it is damaged, or what could not be read
    alive: bool = False                      # a live process drives it (holds control.lock)

    @property
    def damaged(self) -> bool:
        return self.state is None

    @property
    def has_output(self) -> bool:
        """Whether commands' output is available (only the journal has it)."""
        return self.source == "journal"

    def status_text(self) -> str:
        """SUCCESS (0), RUNNING, UNFINISHED (...), or DAMAGED (...)."""
        state = self.state
        if state is None:
            return f"DAMAGED: {self.problem}"
        if state.status is not None and state.ended is not None:
            return f"{state.status.name} ({int(state.status)})"
        if self.alive:
            return "RUNNING"
        return "UNFINISHED (its process is gone: zdupgrade --resume " + self.run_id + ")"

    def steps(self) -> list[ev.StepFinished]:
        """Every finished step, in order (with command and output)."""
        return [e for e in self.events if isinstance(e, ev.StepFinished)]


# --------------------------------------------------------------------------- finding runs

def run_ids(log_dir: Path) -> list[str]:
    """The names of the entries of ``log_dir`` that may be run folders, oldest first (run ids
    sort by time).  Hidden entries are left out; a missing log dir has none."""
    try:
        with os.scandir(log_dir) as entries:
            names = [e.name for e in entries if not e.name.startswith(".")
                     and (e.is_dir(follow_symlinks=False) or e.is_symlink())]
    except FileNotFoundError:
        return []
    except NotADirectoryError:
        raise ConfigError(f"--log_dir {log_dir}: is not a directory") from None
    except OSError as exc:
        raise ConfigError(f"--log_dir {log_dir}: cannot read it: {exc.strerror or exc}") from None
    return sorted(names)


def list_runs(log_dir: Path) -> list[LoadedRun]:
    """Every run under ``log_dir``, newest first (damaged ones included, with their reason)."""
    runs = [load_run(log_dir, name) for name in run_ids(log_dir)]
    return sorted(runs, key=lambda r: (r.state.started if r.state else 0.0, r.run_id), reverse=True)


def latest_run_id(log_dir: Path, option: str) -> str:
    """The newest run id under ``log_dir``; ConfigError if there is none."""
    runs = list_runs(log_dir)
    if not runs:
        raise ConfigError(f"{option}: no run under {log_dir}/")
    return runs[0].run_id


def load_run(log_dir: Path, run_id: str) -> LoadedRun:
    """Read one run folder; never raises for what is inside it (a damaged run says why).
    ConfigError only for a run id that is not a plain name."""
    path = log_dir / run_id
    try:
        run_dir = RunDir.open_existing(log_dir, run_id)
    except ConfigError as exc:
        if "invalid run id" in str(exc):
            raise
        return LoadedRun(run_id, path, None, problem=_short(str(exc).split(": ", 2)[-1]))
    try:
        return _read(run_dir, run_id, path)
    finally:
        run_dir.close()


def _read(run_dir: RunDir, run_id: str, path: Path) -> LoadedRun:
    alive = driven(run_dir)
    problems = []
    if run_dir.exists(JOURNAL):
        try:
            events = list(read_journal(run_dir.read_text(JOURNAL)))
            state = replay(events)
            return LoadedRun(run_id, path, state, events, "journal", alive=alive)
        except (ConfigError, OSError, ValueError, KeyError, TypeError, AssertionError) as exc:
            problems.append(f"{JOURNAL}: {_short(_unplaced(str(exc), run_dir, JOURNAL))}")
    else:
        problems.append(f"no {JOURNAL}")
    if run_dir.exists(RUN_JSON):
        try:
            state = state_from_record(json.loads(run_dir.read_text(RUN_JSON)))
            return LoadedRun(run_id, path, state, [], "run.json", problem="; ".join(problems), alive=alive)
        except (ConfigError, OSError, ValueError, KeyError, TypeError) as exc:
            problems.append(f"{RUN_JSON}: {_short(_unplaced(str(exc), run_dir, RUN_JSON))}")
    else:
        problems.append(f"no {RUN_JSON}")
    return LoadedRun(run_id, path, None, problem="; ".join(problems), alive=alive)


def _unplaced(text: str, run_dir: RunDir, name: str) -> str:
    """A message about ``name`` without its path (the run is named where it is shown)."""
    return text.replace(f"{run_dir.path(name)}: ", "")


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def driven(run_dir: RunDir) -> bool:
    """Whether a process holds the folder's control lock (without creating the file)."""
    if not run_dir.exists(CONTROL_LOCK):
        return False
    try:
        fd = run_dir.open_fd(CONTROL_LOCK)
    except (OSError, ConfigError):
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        return exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- run.json back to a state

_EXTRA_KEYS = {"schema", "phases"}          # run.json keys that are not RunState fields


def state_from_record(data: Any) -> RunState:
    """A :class:`RunState` from run.json's content (the inverse of ``RunState.to_dict``);
    ValueError naming the field for anything that does not fit."""
    if not isinstance(data, dict):
        raise ValueError("run.json is not a JSON object")
    values = {k: v for k, v in data.items() if k not in _EXTRA_KEYS}
    status = values.get("status")
    if isinstance(status, dict):
        values["status"] = status.get("name")
    for node in (values.get("nodes") or {}).values():
        if isinstance(node, dict):
            node.pop("in_lb", None)
    state = _build(RunState, values, "run.json")
    assert isinstance(state, RunState)
    return state


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected an object")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{where}: unknown field {unknown[0][:40]!r}")
    values = {name: _value(data[name], hints[name], f"{where}.{name}") for name in names if name in data}
    try:
        return cls(**values)
    except TypeError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _value(value: Any, hint: Any, where: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _value(value, inner[0], where) if len(inner) == 1 else value
    if hint is Any:
        return value
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return _build(hint, value, where)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint[value] if hint is Status else hint(value)
        except (KeyError, ValueError, TypeError):
            raise ValueError(f"{where}: {str(value)[:40]!r} is not a {hint.__name__}") from None
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise ValueError(f"{where}: expected a list")
        item = args[0] if args else Any
        items = [_value(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected an object")
        key_hint, item = args if args else (Any, Any)
        return {_value(k, key_hint, where): _value(v, item, f"{where}.{k}") for k, v in value.items()}
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where}: expected a number")
        return float(value)
    if hint in (int, str, bool):
        if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
            raise ValueError(f"{where}: expected a {hint.__name__}")
    return value


# --------------------------------------------------------------------------- helpers for the views

def stamp(at: float | None, *, date: bool = True) -> str:
    """``2026-11-22 02:15:00 +0100`` (local time zone), or ``-``."""
    if not at:
        return "-"
    moment = _dt.datetime.fromtimestamp(at).astimezone()
    return moment.strftime("%Y-%m-%d %H:%M:%S %z" if date else "%H:%M:%S")


def seconds(value: float | None) -> str:
    """A duration: ``0.52s``, ``3m 05s``, ``1h 02m``."""
    if value is None:
        return "-"
    if value < 60:
        return f"{value:.2f}s"
    minutes, secs = divmod(int(round(value)), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def last_time(run: LoadedRun) -> float:
    """When the run ended, or the time of its last event (a run that did not finish)."""
    state = run.state
    assert state is not None
    if state.ended:
        return state.ended
    times = [e.at for e in run.events] or [state.started]
    times += [s.ended or s.started for s in state.steps]
    return max(times)


def failed_nodes(state: RunState) -> list[str]:
    """Nodes with a failed phase (in node order)."""
    return [n for n in state.node_names
            if any(r.outcome is Outcome.FAILED for r in state.nodes[n].phases.values())]


def rolled_back(state: RunState) -> list[str]:
    """Nodes a rollback ran on, ``NODE (FAILED)`` when it failed (in node order)."""
    out = []
    for name in state.node_names:
        rollback = state.nodes[name].rollback
        if rollback is not None:
            out.append(name if rollback.outcome is Outcome.PASSED else f"{name} ({rollback.outcome.value})")
    return out


def node_steps(run: LoadedRun, node: str | None = None, phase: Phase | None = None) -> Iterator[ev.StepFinished]:
    """The run's finished steps of ``node`` (a node, or a run-level target) and ``phase``."""
    for step in run.steps():
        if node is not None and node not in (step.node, step.target):
            continue
        if phase is not None and step.phase is not phase:
            continue
        yield step

