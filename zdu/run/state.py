"""The state of a run, and the one writer that changes it.

:class:`RunState` is what the summary, run.json, ``zdupgrade show`` and ``--resume`` read: what
every node went through, where it stands in the load balancer, which version it runs.  Nothing
assigns to it directly: every change is an :mod:`event <zdu.run.events>` given to
:class:`Recorder.emit`, which applies it (:func:`apply`, under one lock) and then hands the event to
the listeners.  A listener that raises is reported (``state.listener_failures``, the summary and
the exit status), never allowed to stop the upgrade.

Because the state is a pure reduction of the events, ``journal.jsonl`` (every event, one per
line) is enough to rebuild it: :func:`replay` is what ``--resume`` uses.
"""
from __future__ import annotations

import copy
import dataclasses
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from ..status import UPGRADE_PHASES, FailureKind, LbAction, LbState, Outcome, Phase, Status, StepKind, Version
from . import events as ev

#: run.json's format version (documented in docs/run-json.md)
RUN_SCHEMA = 2


@dataclass
class PhaseResult:
    """A node's result in one phase or its rollback (a cell of the summary table)."""

    outcome: Outcome
    code: int | None = None                 # exit code of the failing command, 0 when passed
    classification: FailureKind | None = None
    message: str = ""
    started: float = 0.0
    ended: float | None = None

    def cell(self) -> str:
        if self.outcome is Outcome.PASSED:
            return "PASSED (0)"
        if self.outcome in (Outcome.RUNNING, Outcome.SKIPPED):
            return self.outcome.value
        code = self.code if self.code is not None else (self.classification or "error")
        return f"FAILED ({code})"


@dataclass
class StepRecord:
    """One step as it ran (command, wait or request)."""

    key: str
    node: str
    phase: Phase
    name: str
    kind: StepKind
    command: str                  # as shown (masked)
    started: float
    target: str = ""              # where a run-level step ran (control, a host), when not a node
    ended: float | None = None
    exit_code: int | None = None
    error: FailureKind | None = None
    polls: int = 0
    message: str = ""

    @property
    def duration(self) -> float:
        return (self.ended or self.started) - self.started


@dataclass
class NodeState:
    """Where one node stands."""

    name: str
    phases: dict[Phase, PhaseResult] = field(default_factory=dict)
    rollback: PhaseResult | None = None
    lb: LbState = LbState.IN
    version: Version = Version.OLD
    furthest: Phase | None = None             # furthest upgrade phase entered
    last_failure: FailureKind | None = None   # of the latest phase or rollback that failed
    lb_calls: dict[str, int] = field(default_factory=lambda: {"disable": 0, "enable": 0})
    out_since: float | None = None
    out_windows: list[dict[str, float]] = field(default_factory=list)
    skipped: bool = False                     # left out of this run (--limit)
    #: what the load balancer showed when the run last checked this node after putting it back,
    #: if it was not serving then (None: serving, or not checked)
    not_serving: str | None = None
    #: preflight found it on the new version already (the profile's ``upgraded`` check): left out
    already_upgraded: bool = False

    @property
    def in_lb(self) -> bool:
        return self.lb is LbState.IN

    def outcome(self, phase: Phase) -> PhaseResult | None:
        return self.phases.get(phase)

    def passed(self, phase: Phase) -> bool:
        result = self.phases.get(phase)
        return result is not None and result.outcome is Outcome.PASSED


@dataclass
class DecisionRecord:
    node: str
    phase: Phase
    action: str
    reason: str
    classification: FailureKind
    targets: tuple[str, ...] = ()
    time: float = 0.0
    within_budget: bool = False


@dataclass
class RunState:
    """The record of a run.  Change it only through :class:`Recorder`."""

    run_id: str
    old_install_dir: str
    new_install_dir: str
    profile: str
    topology: str
    node_names: list[str]
    started: float = 0.0
    ended: float | None = None
    status: Status | None = None
    nodes: dict[str, NodeState] = field(default_factory=dict)
    steps: list[StepRecord] = field(default_factory=list)
    decisions: list[DecisionRecord] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    earlier_warnings: int = 0            # warnings[:n] were given before the latest --resume
    traffic: dict[str, Any] | None = None
    host_keys_accepted: list[dict[str, str]] = field(default_factory=list)
    lb: str = "none"
    invocation: dict[str, Any] = field(default_factory=dict)
    plan_fingerprint: str = ""
    switched: list[str] = field(default_factory=list)          # nodes whose APPLY started, in order
    rollback_queue: list[str] = field(default_factory=list)    # nodes still to roll back, in order
    stopping: bool = False                                     # a decision ended the run (rollbacks may remain)
    resumed: list[float] = field(default_factory=list)
    lock: dict[str, Any] | None = None
    lb_actions: list[dict[str, Any]] = field(default_factory=list)
    preflight_problems: list[str] = field(default_factory=list)
    listener_failures: dict[str, str] = field(default_factory=dict)
    tiers: dict[str, list[str]] = field(default_factory=dict)         # tier -> nodes, in order
    targets: dict[str, Any] = field(default_factory=dict)             # node -> address, user, key, jumps
    run_phases: dict[str, PhaseResult] = field(default_factory=dict)  # before, after, gate TIER
    pauses: list[dict[str, Any]] = field(default_factory=list)        # wave, started, ended, answer, by
    capacity: list[dict[str, Any]] = field(default_factory=list)      # the guard's checks
    tool_version: str = ""
    user: str = ""
    host: str = ""
    argv: list[str] = field(default_factory=list)
    events: int = 0                                            # events applied so far

    def __post_init__(self) -> None:
        for name in self.node_names:
            self.nodes.setdefault(name, NodeState(name))

    @classmethod
    def opened(cls, event: ev.RunOpened) -> "RunState":
        """The state of a new run folder, from its first event."""
        state = cls(run_id=event.run_id, old_install_dir=event.old_install_dir,
                    new_install_dir=event.new_install_dir, profile=event.profile,
                    topology=event.topology, node_names=list(event.node_names), started=event.at,
                    lb=event.lb, invocation=dict(event.invocation), plan_fingerprint=event.plan_fingerprint,
                    tool_version=event.tool_version, user=event.user, host=event.host, argv=list(event.argv),
                    tiers={str(k): list(v) for k, v in event.tiers.items()}, targets=dict(event.targets))
        for name in event.skipped:
            state.nodes[name].skipped = True
        return state

    @property
    def active_nodes(self) -> list[str]:
        """The nodes this run works on (all but those --limit left out)."""
        return [n for n in self.node_names if not self.nodes[n].skipped]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (run.json)."""
        data = _plain(self)
        data["schema"] = RUN_SCHEMA
        data["status"] = None if self.status is None else {"name": self.status.name, "code": int(self.status)}
        data["phases"] = [p.value for p in UPGRADE_PHASES]
        for name, node in self.nodes.items():
            data["nodes"][name]["in_lb"] = node.in_lb
        return data


_ATOMS = (str, int, float, bool, type(None))
_VALUED = (Phase, Outcome, FailureKind, LbState, Version, StepKind, LbAction)
_FIELDS: dict[type, tuple[str, ...]] = {}


def _plain(value: Any) -> Any:
    """``value`` as JSON-ready data: dataclasses as dicts of their fields (what
    ``dataclasses.asdict`` gives, without its deep copies: a 1,000-node state in a fifth of the
    time, under the recorder's lock), enums by value (Status by name), tuples as lists."""
    if isinstance(value, Status):
        return value.name
    if isinstance(value, _VALUED):
        return value.value
    if isinstance(value, _ATOMS):
        return value
    if isinstance(value, dict):
        return {(k.value if isinstance(k, Phase) else k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    names = _FIELDS.get(type(value))
    if names is None and dataclasses.is_dataclass(value) and not isinstance(value, type):
        names = _FIELDS[type(value)] = tuple(f.name for f in dataclasses.fields(value))
    if names is not None:
        return {name: _plain(getattr(value, name)) for name in names}
    return copy.deepcopy(value)


# --------------------------------------------------------------------------- the reducer

def apply(state: RunState, event: ev.Event) -> None:
    """Apply one event to ``state`` (the only code that changes a RunState)."""
    handler = _HANDLERS.get(type(event))
    if handler is not None:
        handler(state, event)
    state.events += 1


def _node(state: RunState, event: ev.Event) -> NodeState:
    assert event.node is not None, f"{event.type_name} needs a node"
    node = state.nodes.get(event.node)
    if node is None:
        raise ValueError(f"{event.type_name}: {event.node!r} is not a node of this run")
    return node


def _run_started(state: RunState, event: ev.RunStarted) -> None:
    if event.resumed:
        state.resumed.append(event.at)
        state.status, state.ended = None, None
        state.earlier_warnings = len(state.warnings)


def _run_finished(state: RunState, event: ev.RunFinished) -> None:
    state.status, state.ended = event.status, event.at


def _warned(state: RunState, event: ev.Warned) -> None:
    state.warnings.append(f"{event.node}: {event.message}" if event.node and not
                          event.message.startswith(event.node) else event.message)


def _preflight(state: RunState, event: ev.PreflightFailed) -> None:
    state.preflight_problems.extend(event.problems)
    state.warnings.extend(f"preflight: {p}" for p in event.problems)


def _host_key(state: RunState, event: ev.HostKeyAccepted) -> None:
    state.host_keys_accepted.append({"node": event.node or "", "key_type": event.key_type,
                                     "fingerprint": event.fingerprint})


def _lock_taken(state: RunState, event: ev.LockTaken) -> None:
    state.lock = dict(event.owner)
    state.warnings.extend(f"lock broken with --break-lock: {b}" for b in event.broken)


def _lock_released(state: RunState, event: ev.LockReleased) -> None:
    state.warnings.extend(event.problems)
    if state.lock is not None:
        state.lock = dict(state.lock, released=event.at)


def _traffic(state: RunState, event: ev.TrafficMeasured) -> None:
    state.traffic = dict(event.report)


_ORDER = {p: i for i, p in enumerate(UPGRADE_PHASES)}


def _phase_started(state: RunState, event: ev.PhaseStarted) -> None:
    node = _node(state, event)
    if node.furthest is None or _ORDER[event.phase] > _ORDER[node.furthest]:
        node.furthest = event.phase
    node.phases[event.phase] = PhaseResult(Outcome.RUNNING, started=event.at)
    if event.phase is Phase.APPLY:
        if node.name not in state.switched:
            state.switched.append(node.name)
        node.version = Version.UNKNOWN


def _phase_finished(state: RunState, event: ev.PhaseFinished) -> None:
    node = _node(state, event)
    result = node.phases.get(event.phase) or PhaseResult(Outcome.RUNNING, started=event.at)
    node.phases[event.phase] = dataclasses.replace(result, outcome=event.outcome, code=event.code,
                                                   classification=event.failure, message=event.message,
                                                   ended=event.at)
    if event.outcome is Outcome.FAILED:
        node.last_failure = event.failure
    if event.phase is Phase.APPLY and event.outcome is Outcome.PASSED:
        node.version = Version.NEW


def _step_started(state: RunState, event: ev.StepStarted) -> None:
    if event.node is not None or not event.target:
        _node(state, event)
    state.steps.append(StepRecord(key=event.key, node=event.node or "", phase=event.phase, name=event.name,
                                  kind=event.kind, command=event.command, started=event.at, target=event.target))


def _step_finished(state: RunState, event: ev.StepFinished) -> None:
    if event.node is not None or not event.target:
        _node(state, event)
    for record in reversed(state.steps):
        if record.key == event.key and record.ended is None:
            break
    else:
        record = StepRecord(key=event.key, node=event.node or "", phase=event.phase, name=event.name,
                            kind=event.kind, command=event.command, started=event.at - event.duration,
                            target=event.target)
        state.steps.append(record)
    record.ended = event.at
    record.exit_code = event.exit_code
    record.error = event.failure
    record.polls = event.polls
    record.message = event.message


def _lb_started(state: RunState, event: ev.LbStarted) -> None:
    node = _node(state, event)
    node.lb_calls[event.action.value] += 1
    if event.action is LbAction.DISABLE:
        if node.lb is LbState.IN:
            node.out_since = event.at
        node.lb = LbState.TAKING_OUT
    else:
        node.lb = LbState.PUTTING_BACK


def _lb_finished(state: RunState, event: ev.LbFinished) -> None:
    node = _node(state, event)
    state.lb_actions.append({"node": node.name, "action": event.action.value, "ok": event.ok,
                             "message": event.message, "started": event.at - event.duration,
                             "duration": event.duration, "details": dict(event.details)})
    if event.action is LbAction.DISABLE:
        node.lb = LbState.OUT if event.ok else LbState.UNKNOWN
        return
    if event.ok:
        node.lb = LbState.IN
        if node.out_since is not None:
            node.out_windows.append({"out": node.out_since, "in": event.at,
                                     "seconds": event.at - node.out_since})
            node.out_since = None
    else:
        node.lb = LbState.UNKNOWN


def _lb_refused(state: RunState, event: ev.LbRefused) -> None:
    state.warnings.append(event.message)


def _decided(state: RunState, event: ev.Decided) -> None:
    _node(state, event)
    for target in event.targets:
        if target not in state.nodes:
            raise ValueError(f"Decided: rollback target {target!r} is not a node of this run")
    state.decisions.append(DecisionRecord(node=event.node or "", phase=event.phase, action=event.action.value,
                                          reason=event.reason, classification=event.failure,
                                          targets=tuple(event.targets), time=event.at,
                                          within_budget=event.within_budget))


def _rollbacks_planned(state: RunState, event: ev.RollbacksPlanned) -> None:
    for target in event.order:
        if target not in state.nodes:
            raise ValueError(f"RollbacksPlanned: {target!r} is not a node of this run")
    state.rollback_queue.extend(t for t in event.order if t not in state.rollback_queue)
    state.stopping = state.stopping or event.stop


def _rollback_started(state: RunState, event: ev.RollbackStarted) -> None:
    _node(state, event).rollback = PhaseResult(Outcome.RUNNING, started=event.at)


def _rollback_finished(state: RunState, event: ev.RollbackFinished) -> None:
    node = _node(state, event)
    started = node.rollback.started if node.rollback else event.at
    node.rollback = PhaseResult(event.outcome, event.code, event.failure, event.message, started, event.at)
    node.version = event.version
    if event.outcome is Outcome.FAILED:
        node.last_failure = event.failure
    if node.name in state.rollback_queue:
        state.rollback_queue.remove(node.name)


def _run_phase_started(state: RunState, event: ev.RunPhaseStarted) -> None:
    state.run_phases[event.label] = PhaseResult(Outcome.RUNNING, started=event.at)


def _run_phase_finished(state: RunState, event: ev.RunPhaseFinished) -> None:
    started = state.run_phases[event.label].started if event.label in state.run_phases else event.at
    state.run_phases[event.label] = PhaseResult(event.outcome, event.code, event.failure, event.message,
                                                started, event.at)


def _paused(state: RunState, event: ev.Paused) -> None:
    state.pauses.append({"wave": event.wave, "started": event.at, "timeout": event.timeout,
                         "on_timeout": event.on_timeout, "ended": None, "answer": None, "by": None})


def _pause_ended(state: RunState, event: ev.PauseEnded) -> None:
    for pause in reversed(state.pauses):
        if pause["wave"] == event.wave and pause["ended"] is None:
            pause.update(ended=event.at, answer=event.answer, by=event.by)
            return
    raise ValueError(f"PauseEnded: no pause after wave {event.wave} is open")


def _capacity(state: RunState, event: ev.CapacityChecked) -> None:
    state.capacity.append({"wave": event.wave, "serving": list(event.serving), "leaving": list(event.leaving),
                           "needed": event.needed, "ok": event.ok, "source": event.source, "at": event.at})
    if not event.ok:
        state.warnings.append(event.message)


def _already_upgraded(state: RunState, event: ev.AlreadyUpgraded) -> None:
    node = _node(state, event)
    if node.phases or node.rollback or node.lb_calls.get("disable", 0) or node.lb_calls.get("enable", 0):
        raise ValueError(f"AlreadyUpgraded: {node.name} was already worked on by this run")
    node.skipped, node.already_upgraded, node.version = True, True, Version.NEW


def _serving_checked(state: RunState, event: ev.ServingChecked) -> None:
    if len(event.reasons) != len(event.not_serving) or not set(event.not_serving) <= set(event.checked):
        raise ValueError("ServingChecked: not_serving and reasons do not match the nodes checked")
    strangers = [n for n in event.checked if n not in state.nodes]
    if strangers:
        raise ValueError(f"ServingChecked: {strangers[0][:40]!r} is not a node of this run")
    for name in event.checked:
        state.nodes[name].not_serving = None
    for name, reason in zip(event.not_serving, event.reasons):
        state.nodes[name].not_serving = reason      # (the warning for each is a Warned of its own)


_HANDLERS: dict[type, Callable[[RunState, Any], None]] = {
    ev.RunPhaseStarted: _run_phase_started, ev.RunPhaseFinished: _run_phase_finished, ev.Paused: _paused,
    ev.PauseEnded: _pause_ended, ev.CapacityChecked: _capacity, ev.ServingChecked: _serving_checked,
    ev.AlreadyUpgraded: _already_upgraded,
    ev.RunStarted: _run_started, ev.RunFinished: _run_finished, ev.Warned: _warned,
    ev.PreflightFailed: _preflight, ev.HostKeyAccepted: _host_key, ev.LockTaken: _lock_taken,
    ev.LockReleased: _lock_released, ev.TrafficMeasured: _traffic, ev.PhaseStarted: _phase_started,
    ev.PhaseFinished: _phase_finished, ev.StepStarted: _step_started, ev.StepFinished: _step_finished,
    ev.LbStarted: _lb_started, ev.LbFinished: _lb_finished, ev.LbRefused: _lb_refused,
    ev.Decided: _decided, ev.RollbacksPlanned: _rollbacks_planned, ev.RollbackStarted: _rollback_started, ev.RollbackFinished: _rollback_finished,
}


def replay(events: Iterable[ev.Event]) -> RunState:
    """Rebuild a state from a run's events (the first must be RunOpened); ValueError if they
    do not make a run."""
    iterator = iter(events)
    first = next(iterator, None)
    if not isinstance(first, ev.RunOpened):
        raise ValueError("the journal does not start with RunOpened")
    state = RunState.opened(first)
    state.events = 1
    for event in iterator:
        if isinstance(event, ev.RunOpened):
            raise ValueError("the journal holds a second RunOpened")
        apply(state, event)
    return state


# --------------------------------------------------------------------------- the writer

#: Follows a run: called with every event after it was applied, under the recorder's lock, with
#: a read-only view of the state.  It must not keep the view or change it.
Listener = Callable[[ev.Event, "RunView"], None]


class RunView:
    """Read-only access to the state for listeners (valid during the call only)."""

    def __init__(self, state: RunState) -> None:
        self._state = state
        self._dict: dict[str, Any] | None = None

    @property
    def run_id(self) -> str:
        return self._state.run_id

    def node(self, name: str) -> NodeState:
        """A copy of one node's state."""
        return copy.deepcopy(self._state.nodes[name])

    def to_dict(self) -> dict[str, Any]:
        """run.json's content now (computed once per event, a fresh copy for each caller)."""
        if self._dict is None:
            self._dict = self._state.to_dict()
        return copy.deepcopy(self._dict)


def listener_name(listener: Any) -> str:
    return str(getattr(listener, "name", None) or getattr(listener, "__name__", None)
               or type(listener).__name__)


class Recorder:
    """The one writer of a run's state.

    ``emit`` is thread-safe: nodes of a wave work in parallel, and each event is applied and
    delivered to every listener before the next one is.
    """

    def __init__(self, state: RunState, listeners: Iterable[Listener] = ()) -> None:
        self._state = state
        self._listeners: list[Listener] = list(listeners)
        self._lock = threading.RLock()

    def subscribe(self, listener: Listener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def emit(self, event: ev.Event) -> None:
        """Apply ``event`` and tell every listener."""
        with self._lock:
            apply(self._state, event)
            view = RunView(self._state)
            for listener in list(self._listeners):
                try:
                    listener(event, view)
                except Exception as exc:  # a full disk must not abandon a half-upgraded fleet
                    name = listener_name(listener)
                    if name not in self._state.listener_failures:
                        self._state.listener_failures[name] = f"{type(exc).__name__}: {exc}"[:500]

    # -- reads (copies: the state keeps changing under other threads)

    def node(self, name: str) -> NodeState:
        with self._lock:
            return copy.deepcopy(self._state.nodes[name])

    def snapshot(self) -> RunState:
        """A deep copy of the whole state."""
        with self._lock:
            return copy.deepcopy(self._state)

    def query(self, read: Callable[[RunState], Any]) -> Any:
        """``read(state)`` under the lock; ``read`` must not change the state or keep it."""
        with self._lock:
            return read(self._state)

    @property
    def listener_failures(self) -> Mapping[str, str]:
        with self._lock:
            return dict(self._state.listener_failures)
