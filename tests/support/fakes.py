"""In-memory nodes, load balancer and run harness for fast logic tests of the conductor.

These stand in for SSH nodes and a balancer only in logic tests (many cases in seconds); the
same behaviours are proven against real sshd, real HAProxy and the Docker lab elsewhere.

Profile commands are ``"<phase> <node>"`` (``"apply B"``); a node's behaviour for a command is
looked up in ``FakeFleet.script``: an exit code, or a callable getting the command.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from zdu.config.profile import parse_profile
from zdu.lb.base import LbResult, LoadBalancer
from zdu.model import CommandResult, Node, Topology
from zdu.planning.plan import Plan, build_plan
from zdu.run import events as ev
from zdu.run.conductor import Conductor
from zdu.run.policy import Policy, default_policy
from zdu.run.state import Recorder, RunState, RunView, replay
from zdu.status import Status
from zdu.transport.base import CommandHandler

PHASES = ("EXPORT", "UPGRADE", "PRE-APPLY", "APPLY", "POST-APPLY")

PROFILE: dict[str, Any] = {
    "name": "fake",
    "phases": {p: [f"{p.lower()} {{{{ node.name }}}}"] for p in PHASES},
    "rollback": {"APPLY": ["undo {{ node.name }}"], "PRE-APPLY": ["cleanup {{ node.name }}"]},
}

Behaviour = int | Callable[[str], CommandResult]


def lost(command: str) -> CommandResult:
    """The connection dropped while the command ran."""
    return CommandResult(command, None, error="unreachable")


def timed_out(command: str) -> CommandResult:
    return CommandResult(command, None, error="timeout")


class FakeHandler(CommandHandler):
    def __init__(self, node: Node, fleet: "FakeFleet") -> None:
        super().__init__(node)
        self.fleet = fleet

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def run(self, command: str, *, timeout: float | None = None,  # type: ignore[override]
            env: dict[str, str] | None = None) -> CommandResult:
        with self.fleet.lock:
            self.fleet.log.append(command)
            behaviour = self.fleet.script.get(command, 0)
        if callable(behaviour):
            return behaviour(command)
        return CommandResult(command, behaviour, stdout=f"ran {command}\n")


class FakeFleet:
    """Handlers for every node, sharing one command log (in the order commands ran)."""

    def __init__(self, script: Mapping[str, Behaviour] | None = None) -> None:
        self.script: dict[str, Behaviour] = dict(script or {})
        self.log: list[str] = []
        self.lock = threading.Lock()
        self._handlers: dict[str, FakeHandler] = {}

    def __call__(self, node: Node) -> CommandHandler:
        with self.lock:
            if node.name not in self._handlers:
                self._handlers[node.name] = FakeHandler(node, self)
            return self._handlers[node.name]


class FakeLb(LoadBalancer):
    """Records every call; ``fail`` holds (action, node) pairs that answer ok=False once,
    ``always_fail`` every time, ``raises`` pairs that raise; ``during`` is called inside
    each action (to interrupt a run mid-action)."""

    name = "fake"

    def __init__(self, *, fail: Iterable[tuple[str, str]] = (), always_fail: Iterable[tuple[str, str]] = (),
                 raises: Iterable[tuple[str, str]] = (),
                 during: Callable[[str, str], None] | None = None) -> None:
        self.calls: list[tuple[str, str]] = []
        self.fail = set(fail)
        self.always_fail = set(always_fail)
        self.raises = set(raises)
        self.during = during
        self.lock = threading.Lock()

    def _act(self, action: str, node: Node) -> LbResult:
        with self.lock:
            self.calls.append((action, node.name))
        if self.during is not None:
            self.during(action, node.name)
        key = (action, node.name)
        if key in self.raises:
            raise RuntimeError(f"hook bug on {action} {node.name}")
        if key in self.always_fail:
            return LbResult(False, f"refused {action} {node.name}")
        if key in self.fail:
            self.fail.discard(key)
            return LbResult(False, f"refused {action} {node.name}")
        return LbResult(True, f"{action} {node.name}")

    def disable(self, node: Node) -> LbResult:
        return self._act("disable", node)

    def enable(self, node: Node) -> LbResult:
        return self._act("enable", node)


@dataclass
class Outcome:
    status: Status
    state: RunState
    log: list[str]
    lb: FakeLb
    events: list[ev.Event] = field(default_factory=list)

    def node(self, name: str) -> Any:
        return self.state.nodes[name]


def make_plan(profile: Mapping[str, Any] | None = None, nodes: str = "ABC", serial: Any = 1) -> Plan:
    topo = Topology(nodes=tuple(Node(name=n, host=f"127.0.0.{i + 1}") for i, n in enumerate(nodes)))
    return build_plan(topo, parse_profile(dict(profile or PROFILE), source="p"), old_install_dir="/o",
                      new_install_dir="/n", run_id="r", serial=serial)


def opened(plan: Plan) -> ev.RunOpened:
    return ev.RunOpened(run_id=plan.run_id, old_install_dir=plan.old_install_dir,
                        new_install_dir=plan.new_install_dir, profile=plan.profile, topology=plan.topology,
                        node_names=plan.node_names, lb="fake", invocation={}, plan_fingerprint="f",
                        tool_version="test", user="u", host="h", argv=())


def run(script: Mapping[str, Behaviour] | None = None, *, profile: Mapping[str, Any] | None = None,
        nodes: str = "ABC", serial: Any = 1, policy: Policy = default_policy, lb: FakeLb | None = None,
        stop: threading.Event | None = None, fleet: FakeFleet | None = None,
        previous: list[ev.Event] | None = None) -> Outcome:
    """Run a plan against fake nodes; ``previous`` (events of an earlier, killed attempt) makes it
    a resume."""
    plan = make_plan(profile, nodes, serial)
    events: list[ev.Event] = list(previous or [])
    first = opened(plan)
    state = replay(events) if previous else RunState.opened(first)
    recorder = Recorder(state)

    def keep(event: ev.Event, view: RunView) -> None:
        events.append(event)
    recorder.subscribe(keep)
    if not previous:
        recorder.emit(first)
    fleet = fleet or FakeFleet(script)
    balancer = lb or FakeLb()
    status = Conductor(plan, recorder, handlers=fleet, lb=balancer, policy=policy, stop_event=stop,
                       sleep=lambda s: None, resume=bool(previous)).execute()
    return Outcome(status, recorder.snapshot(), fleet.log, balancer, events)
