"""Typed events: everything a run does is one of these, emitted to the :class:`~zdu.run.state.Recorder`.

The recorder is the only writer of the run's state: it applies each event to the state, then
hands the event to its listeners (run log, node logs, journal, run.json, console, traffic
windows).  Events are frozen; their text fields are already masked (secrets replaced by
``******``) by whoever creates them.

Every event serialises to one JSON object (``to_json``) and back (``from_json``): the run
folder's ``journal.jsonl`` holds them, ``--resume`` replays it, ``--events`` streams them.
"""
from __future__ import annotations

import collections.abc
import dataclasses
import enum
import time
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

from ..status import FailureKind, LbAction, Outcome, Phase, Status, StepKind, Version
from .policy import Action

#: bumped when an event's fields change incompatibly
EVENTS_SCHEMA = 1


@dataclass(frozen=True, kw_only=True)
class Event:
    """Base of every event: ``at`` is the wall-clock time it happened."""

    at: float = field(default_factory=time.time)
    #: the node it concerns (None: the run as a whole)
    node: str | None = None

    registry: ClassVar[dict[str, type["Event"]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        Event.registry[cls.__name__] = cls

    @property
    def type_name(self) -> str:
        return type(self).__name__

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: ``{"type": "StepFinished", "at": ..., ...}``."""
        data: dict[str, Any] = {"type": self.type_name}
        for f in dataclasses.fields(self):
            data[f.name] = jsonable(getattr(self, f.name))
        return data

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> "Event":
        """Rebuild an event; ValueError naming the field for anything that does not fit."""
        if not isinstance(data, Mapping):
            raise ValueError("an event must be a JSON object")
        kind = data.get("type")
        cls = Event.registry.get(kind) if isinstance(kind, str) else None
        if cls is None:
            raise ValueError(f"unknown event type {str(kind)[:40]!r}")
        hints, names = _fields_of(cls)
        unknown = sorted(set(data) - names - {"type"})
        if unknown:
            raise ValueError(f"{kind}: unknown field {unknown[0][:40]!r}")
        values = {}
        for name in names:
            if name in data:
                values[name] = _convert(data[name], hints[name], f"{kind}.{name}")
        try:
            return cls(**values)
        except TypeError as exc:
            raise ValueError(f"{kind}: {exc}") from None


# --------------------------------------------------------------------------- the run

@dataclass(frozen=True, kw_only=True)
class RunOpened(Event):
    """First event of a run folder: everything needed to rebuild the state by replay."""

    run_id: str
    old_install_dir: str
    new_install_dir: str
    profile: str
    topology: str
    node_names: tuple[str, ...]
    lb: str
    invocation: Mapping[str, Any]
    tiers: Mapping[str, Any] = field(default_factory=dict)        # tier name -> its nodes (in order)
    targets: Mapping[str, Any] = field(default_factory=dict)      # node -> how it is reached (address, jumps)
    plan_fingerprint: str
    tool_version: str
    user: str
    host: str
    argv: tuple[str, ...]
    skipped: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class RunStarted(Event):
    """The conductor starts (again, when ``resumed``)."""

    message: str
    resumed: bool = False


@dataclass(frozen=True, kw_only=True)
class RunFinished(Event):
    status: Status
    message: str = ""


@dataclass(frozen=True, kw_only=True)
class Warned(Event):
    """Something the operator must read; kept in the summary."""

    message: str


@dataclass(frozen=True, kw_only=True)
class Noted(Event):
    """Progress information (not kept in the summary)."""

    message: str


@dataclass(frozen=True, kw_only=True)
class PreflightFailed(Event):
    """Preflight found problems: nothing was changed."""

    problems: tuple[str, ...]
    status: Status


@dataclass(frozen=True, kw_only=True)
class HostKeyAccepted(Event):
    key_type: str
    fingerprint: str


@dataclass(frozen=True, kw_only=True)
class LockTaken(Event):
    owner: Mapping[str, Any]
    broken: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class LockReleased(Event):
    problems: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class TrafficMeasured(Event):
    report: Mapping[str, Any]


# --------------------------------------------------------------------------- nodes

@dataclass(frozen=True, kw_only=True)
class PhaseStarted(Event):
    phase: Phase
    steps: int


@dataclass(frozen=True, kw_only=True)
class PhaseFinished(Event):
    phase: Phase
    outcome: Outcome
    code: int | None = None
    failure: FailureKind | None = None
    message: str = ""


@dataclass(frozen=True, kw_only=True)
class RunPhaseStarted(Event):
    """A run-level phase: ``before``, ``after``, or ``gate TIER``."""

    phase: Phase
    label: str
    steps: int


@dataclass(frozen=True, kw_only=True)
class RunPhaseFinished(Event):
    phase: Phase
    label: str
    outcome: Outcome
    code: int | None = None
    failure: FailureKind | None = None
    message: str = ""


@dataclass(frozen=True, kw_only=True)
class Paused(Event):
    """The run waits for the operator after wave ``wave`` (1-based)."""

    wave: int
    timeout: float
    on_timeout: str               # abort | continue
    message: str = ""


@dataclass(frozen=True, kw_only=True)
class PauseEnded(Event):
    wave: int
    answer: str                   # continue | abort | abort-keep
    by: str = ""                  # who answered: the terminal, user@host of `zdupgrade continue`, timeout
    message: str = ""


@dataclass(frozen=True, kw_only=True)
class CapacityChecked(Event):
    """The capacity guard before a wave: how many nodes serve, how many must."""

    wave: int
    serving: tuple[str, ...]      # nodes in service before the wave
    leaving: tuple[str, ...]      # nodes the wave takes out
    needed: int
    ok: bool
    source: str                   # where ``serving`` came from: the load balancer, or the run's own record
    message: str = ""


@dataclass(frozen=True, kw_only=True)
class AlreadyUpgraded(Event):
    """Preflight found ``node`` already on the new version (the profile's ``upgraded`` check
    exits 0 there): this run leaves it out and does not touch it."""

    message: str = ""


@dataclass(frozen=True, kw_only=True)
class ServingChecked(Event):
    """Whether the nodes this run put back are still in rotation and healthy, as the load
    balancer shows them: before a wave (``wave``) and at the end of the run (``wave`` None)."""

    wave: int | None
    checked: tuple[str, ...]
    not_serving: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()   # what the balancer shows, one per node of ``not_serving``
    message: str = ""


@dataclass(frozen=True, kw_only=True)
class StepStarted(Event):
    phase: Phase
    key: str
    name: str
    kind: StepKind
    command: str                  # as shown (masked)
    target: str = ""              # where it runs when that is not a node of the run (control, a host)


@dataclass(frozen=True, kw_only=True)
class StepFinished(Event):
    phase: Phase
    key: str
    name: str
    kind: StepKind
    command: str
    exit_code: int | None = None
    failure: FailureKind | None = None
    duration: float = 0.0
    message: str = ""
    polls: int = 0
    stdout: str = ""
    stderr: str = ""
    target: str = ""


@dataclass(frozen=True, kw_only=True)
class LbStarted(Event):
    """Recorded before the hook is called: a run killed mid-action knows the state is uncertain."""

    action: LbAction


@dataclass(frozen=True, kw_only=True)
class LbFinished(Event):
    action: LbAction
    ok: bool
    message: str = ""
    duration: float = 0.0
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class LbRefused(Event):
    """The run refused to put a node back (not on a known, health-checked version)."""

    message: str


@dataclass(frozen=True, kw_only=True)
class Decided(Event):
    """The rollback policy's decision about one failure."""

    phase: Phase
    action: Action
    reason: str
    failure: FailureKind
    message: str = ""
    targets: tuple[str, ...] = ()
    within_budget: bool = False   # decided by the failure budget (the run goes on)


@dataclass(frozen=True, kw_only=True)
class RollbacksPlanned(Event):
    """The nodes the decisions of one failure (or one wave's failures) roll back, in order."""

    order: tuple[str, ...]
    stop: bool = True              # the run ends after them (False: every decision was CONTINUE)


@dataclass(frozen=True, kw_only=True)
class RollbackStarted(Event):
    undoing: Phase
    steps: int


@dataclass(frozen=True, kw_only=True)
class RollbackFinished(Event):
    outcome: Outcome
    version: Version
    code: int | None = None
    failure: FailureKind | None = None
    message: str = ""


# --------------------------------------------------------------------------- JSON

_FIELDS: dict[str, tuple[dict[str, Any], frozenset[str]]] = {}


def _fields_of(cls: type[Event]) -> tuple[dict[str, Any], frozenset[str]]:
    """An event class's field types and names (computed once: replaying a journal reads many)."""
    found = _FIELDS.get(cls.__name__)
    if found is None:
        found = _FIELDS[cls.__name__] = (typing.get_type_hints(cls), frozenset(f.name for f in dataclasses.fields(cls)))
    return found


def jsonable(value: Any) -> Any:
    """``value`` as JSON can hold it: enums by value, mappings and sequences recursively, the rest as text."""
    if isinstance(value, enum.Enum):
        return value.value if not isinstance(value, Status) else value.name
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _convert(value: Any, hint: Any, where: str) -> Any:
    """``value`` (from JSON) as the declared type ``hint``; ValueError naming ``where``."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, where)
            except ValueError as exc:
                errors.append(str(exc))
        raise ValueError(errors[0] if errors else f"{where}: unexpected value")
    if hint is Any:
        return value
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint[value] if hint is Status else hint(value)
        except (KeyError, ValueError, TypeError):
            raise ValueError(f"{where}: {str(value)[:40]!r} is not a {hint.__name__}") from None
    if origin is tuple:
        if not isinstance(value, list):
            raise ValueError(f"{where}: expected a list")
        item = args[0] if args else Any
        return tuple(_convert(v, item, where) for v in value)
    if origin in (collections.abc.Mapping, dict) or hint is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected an object")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where}: expected a number")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where}: expected an integer")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where}: expected true or false")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ValueError(f"{where}: expected a string")
        return value
    raise ValueError(f"{where}: cannot read a {hint!r}")
