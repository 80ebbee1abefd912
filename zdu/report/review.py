"""Reading past runs back: what ``zdupgrade runs``, ``show``, ``logs`` and ``report`` work on.

A run is read from its folder through :class:`~zdu.report.rundir.RunDir` (never through a
symlink): its ``journal.jsonl`` is replayed (:func:`zdu.run.state.replay`), which gives the state
*and* every event (commands with their output are only in the journal's ``StepFinished``
events).  If the journal is missing or does not replay, ``run.json`` is read instead (state
only, no command output).  A folder where neither works is a *damaged* run: it is listed as
such, with the reason, and never raises.  When the journal is behind run.json (it holds fewer
events than run.json counts: the journal is not fsynced after every event, run.json is, so a
power loss can cut the journal short), run.json's state is shown, with the journal's commands as
far as they go; a journal that ends in an unfinished line says so.

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
import re
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
from .runfolder import JOURNAL, RUN_JSON, journal_lines, torn_tail

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
        """Whether commands' output is available (only the journal has it: all of it, or as far
        as a journal behind run.json goes)."""
        return self.source == "journal" or bool(self.events)

    def status_text(self) -> str:
        """SUCCESS (0), RUNNING, PAUSED (...), UNFINISHED (...), or DAMAGED (...)."""
        state = self.state
        if state is None:
            return f"DAMAGED: {self.problem}"
        if state.status is not None and state.ended is not None:
            return f"{state.status.name} ({int(state.status)})"
        if self.alive:
            open_pause = next((p for p in reversed(state.pauses) if p.get("ended") is None), None)
            if open_pause is not None:      # waiting for the operator, not working
                return (f"PAUSED after wave {open_pause['wave']} (zdupgrade continue {self.run_id} | "
                        f"zdupgrade abort {self.run_id})")
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


#: how zdupgrade names a run folder (``--run-id`` aside): 20261203-072002-019923
_RUN_ID_SHAPE = re.compile(r"\d{8}-\d{6}-\d{6}")


def latest_run_id(log_dir: Path, option: str) -> str:
    """The newest run id under ``log_dir``: the newest run that can be read, else the newest
    damaged folder named like a run; ConfigError if there is none (a --log_dir that holds
    other folders, /etc say, has no latest run)."""
    runs = list_runs(log_dir)
    readable = [r for r in runs if r.state is not None]
    if readable:
        return readable[0].run_id
    shaped = [r for r in runs if _RUN_ID_SHAPE.fullmatch(r.run_id)]
    if shaped:
        return shaped[0].run_id
    others = f" ({len(runs)} other folder(s) there, none a run of zdupgrade)" if runs else ""
    raise ConfigError(f"{option}: no run under {log_dir}/{others}")


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
    except Exception as exc:  # noqa: BLE001 - the last resort: what the checks missed is damage, not a crash
        return LoadedRun(run_id, path, None, problem=unreadable(exc))
    finally:
        run_dir.close()


def unreadable(exc: BaseException) -> str:
    """The reason given for a run folder an unexpected error came out of."""
    return _short(f"unreadable ({type(exc).__name__}: {exc})")


def _read(run_dir: RunDir, run_id: str, path: Path) -> LoadedRun:
    alive = driven(run_dir)
    problems = []
    journal: tuple[RunState, list[ev.Event], str] | None = None
    if run_dir.exists(JOURNAL):
        try:
            journal = _read_journal(run_dir.read_text(JOURNAL))
        except (ConfigError, OSError, ValueError, KeyError, TypeError, AssertionError) as exc:
            problems.append(f"{JOURNAL}: {_short(_unplaced(str(exc), run_dir, JOURNAL))}")
    else:
        problems.append(f"no {JOURNAL}")
    if journal is not None and alive:
        # a live run: its journal is written first and may be read in the middle of a line
        return LoadedRun(run_id, path, journal[0], journal[1], "journal", alive=alive)
    record: RunState | None = None
    if run_dir.exists(RUN_JSON):
        try:
            record = state_from_record(json.loads(run_dir.read_text(RUN_JSON)))
        except (ConfigError, OSError, ValueError, KeyError, TypeError) as exc:
            problems.append(f"{RUN_JSON}: {_short(_unplaced(str(exc), run_dir, RUN_JSON))}")
    else:
        problems.append(f"no {RUN_JSON}")
    if journal is not None:
        state, events, torn = journal
        torn_note = (f"{JOURNAL} ends in an unfinished line ({len(torn.encode())} bytes: a write cut short "
                     "by a kill or a crash), left out") if torn.strip() else ""
        if record is not None and record.run_id == state.run_id and record.events > state.events:
            # the journal lost events run.json has (a power loss: run.json is fsynced, the journal not)
            behind = (f"{JOURNAL} is behind {RUN_JSON} ({state.events} of its {record.events} events"
                      + (f"; it ends in an unfinished line of {len(torn.encode())} bytes" if torn.strip() else "")
                      + f"): the state is {RUN_JSON}'s, commands' output only as far as the journal goes")
            return LoadedRun(run_id, path, record, events, "run.json", problem=behind, alive=alive)
        return LoadedRun(run_id, path, state, events, "journal", problem=torn_note, alive=alive)
    if record is not None:
        return LoadedRun(run_id, path, record, [], "run.json", problem="; ".join(problems), alive=alive)
    return LoadedRun(run_id, path, None, problem="; ".join(problems), alive=alive)


def _read_journal(text: str) -> tuple[RunState, list[ev.Event], str]:
    """The state, the events and the unfinished last line ("" if none) of a journal's text;
    ValueError naming the line and the field for an event that does not parse or holds a value
    the views cannot show (a time out of range, NaN)."""
    events = []
    for number, event in journal_lines(text):
        check_event(event, f"line {number}: {event.type_name}")
        events.append(event)
    return replay(events), events, torn_tail(text)


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
    _check_records(state, "run.json")
    return state


#: times and durations a run folder may hold: finite numbers of seconds from 0 to the end of the
#: year 9999 (less a day: every time zone can show it), what ``datetime`` can show
LATEST = 253402214400.0

# the shapes of the records RunState keeps as plain dicts (key -> type; what the views read)
_LB_ACTION = {"node": str, "action": str, "ok": bool, "message": str, "started": float, "duration": float,
              "details": dict[str, Any]}
_PAUSE = {"wave": int, "started": float, "timeout": float, "on_timeout": str, "ended": float | None,
          "answer": str | None, "by": str | None}
_CAPACITY = {"wave": int, "serving": list[str], "leaving": list[str], "needed": int, "ok": bool, "source": str}
_CAPACITY_MAY = {"at": float, "message": str}
_OUT_WINDOW = {"out": float, "in": float, "seconds": float}
_TRAFFIC_MAY = {"url": str | None, "summary_line": str | None, "target_rate": float, "duration": float | None,
                "sent": int, "failed": int, "late": int, "p50_ms": float | None, "p99_ms": float | None,
                "max_ms": float | None, "achieved_rate": float, "started_at": float | None,
                "series_interval": float | None, "first_failures": list[str], "windows": list[dict[str, Any]],
                "series": list[dict[str, Any]]}
_TRAFFIC_WINDOW = {"label": str, "sent": int, "failed": int}
_TRAFFIC_WINDOW_MAY = {"start": float, "end": float | None, "p50_ms": float | None, "p99_ms": float | None,
                       "max_ms": float | None}
_SERIES_POINT = {"t": float, "sent": int, "failed": int, "p99_ms": float | None}
_SERIES_POINT_MAY = {"p50_ms": float | None}


def check_event(event: ev.Event, where: str) -> None:
    """ValueError naming ``where`` and the field if ``event`` holds a value the views cannot
    show: a time or duration that is not a finite number from 0 to :data:`LATEST` (a duration
    longer than the time it ended at), tiers naming a node the run does not have, a traffic report
    of the wrong shape.  The events' own types are checked when they are read (``from_json``)."""
    for f in dataclasses.fields(event):
        value = getattr(event, f.name)
        if isinstance(value, float):
            _time(value, f"{where}.{f.name}")
    duration = getattr(event, "duration", None)
    if isinstance(duration, float) and duration > event.at:
        raise ValueError(f"{where}.duration: {duration:g}s is longer than the time it ended at ({event.at:g})")
    if isinstance(event, ev.RunOpened):
        tiers = _value(dict(event.tiers), dict[str, list[str]], f"{where}.tiers")
        _check_tiers(tiers, event.node_names, f"{where}.tiers")
    elif isinstance(event, ev.TrafficMeasured):
        _check_traffic(dict(event.report), f"{where}.report")


def _check_records(state: RunState, where: str) -> None:
    """ValueError naming the field for a record of run.json's plain-dict fields (load-balancer
    actions, pauses, capacity checks, out-of-rotation windows, traffic, tiers) the views cannot show."""
    for i, action in enumerate(state.lb_actions):
        _record(action, _LB_ACTION, {}, f"{where}.lb_actions[{i}]")
    for i, pause in enumerate(state.pauses):
        _record(pause, _PAUSE, {}, f"{where}.pauses[{i}]")
    for i, check in enumerate(state.capacity):
        _record(check, _CAPACITY, _CAPACITY_MAY, f"{where}.capacity[{i}]")
    for name, node in state.nodes.items():
        for i, window in enumerate(node.out_windows):
            _record(window, _OUT_WINDOW, {}, f"{where}.nodes.{name}.out_windows[{i}]")
    if state.traffic is not None:
        _check_traffic(state.traffic, f"{where}.traffic")
    _check_tiers(state.tiers, state.node_names, f"{where}.tiers")


def _check_tiers(tiers: dict[str, list[str]], node_names: typing.Iterable[str], where: str) -> None:
    nodes = set(node_names)
    for tier, members in tiers.items():
        for member in members:
            if member not in nodes:
                raise ValueError(f"{where}.{tier}: {member[:40]!r} is not a node of this run")


def _check_traffic(report: dict[str, Any], where: str) -> None:
    _record(report, {}, _TRAFFIC_MAY, where)
    for i, window in enumerate(report.get("windows") or []):
        _record(window, _TRAFFIC_WINDOW, _TRAFFIC_WINDOW_MAY, f"{where}.windows[{i}]")
    for i, point in enumerate(report.get("series") or []):
        _record(point, _SERIES_POINT, _SERIES_POINT_MAY, f"{where}.series[{i}]")


def _record(value: Any, must: dict[str, Any], may: dict[str, Any], where: str) -> None:
    """ValueError unless ``value`` is an object with every key of ``must`` and each key of
    ``must`` and ``may`` it has of its type (other keys are left alone: added fields)."""
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected an object")
    for key in must:
        if key not in value:
            raise ValueError(f"{where}: no {key!r}")
    for key, hint in {**must, **may}.items():
        if key in value:
            _value(value[key], hint, f"{where}.{key}")


def _time(value: float, where: str) -> float:
    """``value`` if it is a time or duration the views can show; ValueError naming ``where``."""
    if not 0.0 <= value <= LATEST:          # NaN is not either
        raise ValueError(f"{where}: {value!r} is not a time or a duration "
                         f"(a finite number of seconds from 0 to {LATEST:.0f})")
    return value


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
        try:
            number = float(value)
        except OverflowError:               # an integer too large for a float
            raise ValueError(f"{where}: {str(value)[:40]} is too large") from None
        return _time(number, where)
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

