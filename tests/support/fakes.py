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
from zdu.config.topology import parse_topology
from zdu.lb.base import LbResult, LoadBalancer
from zdu.model import CommandResult, Node, Topology
from zdu.planning.plan import Plan, build_plan
from zdu.run import events as ev
from zdu.run.conductor import Conductor
from zdu.run.policy import Policy, default_policy
from zdu.run.state import Recorder, RunState, RunView, replay
from zdu.run.waits import unwrap_node_loop
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
        loop = unwrap_node_loop(command)
        if loop is not None:        # a node-side gate: poll the check as the node would
            check, polls, until = loop
            for count in range(1, polls + 1):
                result = self.run(check, timeout=timeout, env=env)
                if result.error or until == "any" or (result.exit_code == 0) == (until == "ok"):
                    break
            return result.replace(stderr=f"{result.stderr}\n\x1ezdu-wait:{count}\n")
        with self.fleet.lock:
            self.fleet.log.append(command)
            behaviour = self.fleet.script.get(command, 0)
        if callable(behaviour):
            return behaviour(command)
        return CommandResult(command, behaviour, stdout=f"ran {command}\n")


class FakeFleet:
    """Handlers for every node, sharing one command log (in the order commands ran); a test may
    give its own ``handler_class`` (a FakeHandler with other behaviours)."""

    handler_class: type[FakeHandler] = FakeHandler

    def __init__(self, script: Mapping[str, Behaviour] | None = None) -> None:
        self.script: dict[str, Behaviour] = dict(script or {})
        self.log: list[str] = []
        self.lock = threading.Lock()
        self._handlers: dict[str, FakeHandler] = {}

    def __call__(self, node: Node) -> CommandHandler:
        with self.lock:
            if node.name not in self._handlers:
                self._handlers[node.name] = self.handler_class(node, self)
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
        self.serving_now: dict[str, bool] | None = None   # what serving() answers (None: cannot tell)
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

    def serving(self, nodes: Any) -> Any:
        return None if self.serving_now is None else {n.name: self.serving_now.get(n.name, True) for n in nodes}

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


def make_plan(profile: Mapping[str, Any] | None = None, nodes: str = "ABC", serial: Any = None,
              topology: Mapping[str, Any] | None = None, pause_after: frozenset[int] = frozenset()) -> Plan:
    """A plan for nodes A, B, C... on 127.0.0.x; ``topology`` adds fields (tiers, hosts, before,
    max_fail_percentage ...) and may give the nodes' group/roles as ``groups: {A: cache}``."""
    extra = dict(topology or {})
    groups = extra.pop("groups", {})
    doc = {"nodes": [{"name": n, "host": f"127.0.0.{i + 1}", **({"group": groups[n]} if n in groups else {})}
                     for i, n in enumerate(nodes)], **extra}
    topo = parse_topology(doc, source="t")
    return build_plan(topo, parse_profile(dict(profile or PROFILE), source="p"), old_install_dir="/o",
                      new_install_dir="/n", run_id="r", serial=serial,
                      pause_after=pause_after)


def opened(plan: Plan) -> ev.RunOpened:
    return ev.RunOpened(run_id=plan.run_id, old_install_dir=plan.old_install_dir,
                        new_install_dir=plan.new_install_dir, profile=plan.profile, topology=plan.topology,
                        node_names=plan.node_names, lb="fake", invocation={}, plan_fingerprint="f",
                        tool_version="test", user="u", host="h", argv=(),
                        tiers={t.name: list(t.nodes) for t in plan.tiers if t.name})


def run(script: Mapping[str, Behaviour] | None = None, *, profile: Mapping[str, Any] | None = None,
        nodes: str = "ABC", serial: Any = None, policy: Policy = default_policy, lb: FakeLb | None = None,
        stop: threading.Event | None = None, fleet: FakeFleet | None = None,
        previous: list[ev.Event] | None = None, topology: Mapping[str, Any] | None = None,
        pauser: Any = None, pause_after: frozenset[int] = frozenset(), repair: tuple[str, ...] = ()) -> Outcome:
    """Run a plan against fake nodes; ``previous`` (events of an earlier, killed attempt) makes it
    a resume (``repair``: of a finished run)."""
    plan = make_plan(profile, nodes, serial, topology, pause_after)
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
    kw: dict[str, Any] = {"pauser": pauser} if pauser is not None else {}
    status = Conductor(plan, recorder, handlers=fleet, lb=balancer, policy=policy, stop_event=stop,
                       sleep=lambda s: None, resume=bool(previous), repair=repair, **kw).execute()
    return Outcome(status, recorder.snapshot(), fleet.log, balancer, events)
