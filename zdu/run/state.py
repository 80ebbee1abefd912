"""The state of a run: what every node went through, as the summary and run.json show it."""
from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from zdu.status import UPGRADE_PHASES, Phase, Status

Outcome = Literal["PASSED", "FAILED", "RUNNING"]


@dataclass
class StepRecord:
    """One step as it ran (command or wait)."""

    key: str
    node: str
    phase: str
    name: str
    kind: str
    command: str | None          # masked
    started: float
    ended: float | None = None
    exit_code: int | None = None
    error: str | None = None     # None | "timeout" | "unreachable" | "failed"
    polls: int = 0               # waits: how many checks were made
    message: str = ""            # masked; waits: why the last check failed

    @property
    def duration(self) -> float:
        return (self.ended or time.time()) - self.started


@dataclass
class PhaseOutcome:
    """A node's result in one phase (a cell of the summary table)."""

    outcome: Outcome
    code: int | None = None      # exit code of the failing command, 0 when passed
    classification: str | None = None
    message: str = ""
    started: float = field(default_factory=time.time)
    ended: float | None = None

    def cell(self) -> str:
        if self.outcome == "PASSED":
            return "PASSED (0)"
        if self.outcome == "RUNNING":
            return "RUNNING"
        code = self.code if self.code is not None else (self.classification or "error")
        return f"FAILED ({code})"


@dataclass
class NodeState:
    """Where one node stands."""

    name: str
    phases: dict[str, PhaseOutcome] = field(default_factory=dict)
    rollback: PhaseOutcome | None = None
    in_lb: bool = True
    version: Literal["old", "new", "unknown"] = "old"
    furthest: str | None = None              # furthest upgrade phase entered
    lb_calls: dict[str, int] = field(default_factory=lambda: {"disable": 0, "enable": 0})
    out_since: float | None = None
    out_windows: list[dict[str, float]] = field(default_factory=list)

    def outcome(self, phase: Phase) -> PhaseOutcome | None:
        return self.phases.get(phase.value)


@dataclass
class DecisionRecord:
    node: str
    phase: str
    action: str
    reason: str
    time: float = field(default_factory=time.time)


@dataclass
class RunState:
    """Mutable record of a run; the conductor writes it, listeners read it."""

    run_id: str
    old_install_dir: str
    new_install_dir: str
    profile: str
    topology: str
    node_names: list[str]
    started: float = field(default_factory=time.time)
    ended: float | None = None
    status: Status | None = None
    nodes: dict[str, NodeState] = field(default_factory=dict)
    steps: list[StepRecord] = field(default_factory=list)
    decisions: list[DecisionRecord] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    traffic: dict[str, Any] | None = None
    host_keys_accepted: list[dict[str, str]] = field(default_factory=list)
    lb: str = "none"
    invocation: dict[str, Any] = field(default_factory=dict)   # what --resume needs to rebuild the plan
    plan_fingerprint: str = ""                                 # sha256 of the rendered plan
    switched: list[str] = field(default_factory=list)          # nodes whose APPLY started, in order
    rollback_queue: list[str] = field(default_factory=list)    # nodes still to roll back, in order
    resumed: list[float] = field(default_factory=list)         # times the run was resumed
    lock: dict[str, Any] | None = None                         # the fleet lock this run holds
    lb_actions: list[dict[str, Any]] = field(default_factory=list)  # every load-balancer call and its answer

    def __post_init__(self) -> None:
        for name in self.node_names:
            self.nodes.setdefault(name, NodeState(name))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunState":
        """Rebuild a state from its run.json (for --resume)."""
        data = dict(data)
        data.pop("phases", None)
        status = data.pop("status", None)
        nodes = data.pop("nodes", {})
        steps = data.pop("steps", [])
        decisions = data.pop("decisions", [])
        state = cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
        state.status = Status[status["name"]] if status else None
        state.steps = [StepRecord(**s) for s in steps]
        state.decisions = [DecisionRecord(**d) for d in decisions]
        for name, raw in nodes.items():
            raw = dict(raw)
            phases = {k: PhaseOutcome(**v) for k, v in raw.pop("phases", {}).items()}
            rollback = raw.pop("rollback", None)
            state.nodes[name] = NodeState(**raw, phases=phases,
                                          rollback=PhaseOutcome(**rollback) if rollback else None)
        return state

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = None if self.status is None else {"name": self.status.name, "code": int(self.status)}
        data["phases"] = [p.value for p in UPGRADE_PHASES]
        return data


def write_json_atomic(path: Path, data: Any, *, mode: int = 0o600) -> None:
    """Write ``data`` as JSON to ``path`` so that a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, sort_keys=False, default=str)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
