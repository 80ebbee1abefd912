"""Preflight with the fleet lock: the first node's round trip decides the lock alone, and the
other nodes are connected meanwhile (connecting changes nothing); no other node is sent a
command, and so none is locked, before the first node's answer is in.  Fake handlers: the
ordering is what is checked here; tests/integration/test_preflight_connects_ahead.py checks it
on real sshd nodes."""
from __future__ import annotations

import json
import threading
import time

import pytest

from zdu.config.profile import parse_profile
from zdu.config.topology import parse_topology
from zdu.errors import TransportError
from zdu.lb.none import NoLoadBalancer
from zdu.model import CommandResult
from zdu.planning.plan import build_plan
from zdu.run.lock import FleetLock, LockOwner
from zdu.run.preflight import preflight
from tests.support.fakes import FakeFleet, FakeHandler

NAMES = [f"n{i}" for i in range(6)]
CHECKS = "ZDU-CHECK dir-old ok\nZDU-CHECK dir-new ok\nZDU-CHECK done\n"


class OrderedHandler(FakeHandler):
    fleet: "Fleet"
    connected = False

    def open(self) -> None:
        if self.connected:
            return
        self.fleet.note("open", self.node.name)
        if self.node.name in self.fleet.unreachable:
            raise TransportError(self.node.name, "connection refused")
        self.connected = True

    def run(self, command: str, *, timeout: float | None = None,  # type: ignore[override]
            env: dict[str, str] | None = None) -> CommandResult:
        self.open()
        self.fleet.note("lock" if "ZDU-CHECK-LOCK" in command else "run", self.node.name)
        if self.node.name == NAMES[0]:
            # the first node answers only once the others are connected (or after 5 s)
            self.fleet.others_opened.wait(5)
        out = CHECKS
        if "ZDU-CHECK-LOCK" in command:
            holder = self.fleet.held_by
            out += "ZDU-CHECK-LOCK\n" + (json.dumps({"run_id": holder, "user": "bob", "host": "elsewhere",
                                                     "pid": 1, "started": "2026-12-01T00:00:00+00:00"})
                                         if holder else "ZDU-LOCK-ACQUIRED") + "\n"
        self.fleet.note("answered", self.node.name)
        return CommandResult(command, 0, out, "", time.time(), 0.001)


class Fleet(FakeFleet):
    """The fake fleet, recording each node's connect, command and answer in ``events``."""

    handler_class = OrderedHandler

    def __init__(self, *, unreachable: frozenset[str] = frozenset(), held_by: str | None = None,
                 expect: int = len(NAMES) - 1) -> None:
        super().__init__()
        self.expect = expect            # other nodes that can connect while the first one answers
        self.events: list[tuple[str, str]] = []
        self.others_opened = threading.Event()
        self.unreachable = unreachable
        self.held_by = held_by

    def note(self, what: str, node: str) -> None:
        with self.lock:
            self.events.append((what, node))
            opened = {n for w, n in self.events if w == "open"} - {NAMES[0]}
            if len(opened) >= self.expect:
                self.others_opened.set()


def _plan():  # type: ignore[no-untyped-def]
    topology = parse_topology({"profile": "p", "load_balancer": {"type": "none"},
                               "nodes": [{"name": n, "host": f"10.0.0.{i + 1}"} for i, n in enumerate(NAMES)]},
                              source="t.yaml")
    profile = parse_profile({"name": "p", "phases": {"APPLY": ["true"]}, "rollback": ["true"]}, source="p.yaml")
    return build_plan(topology, profile, old_install_dir="/opt/a", new_install_dir="/opt/b", run_id="r1")


def _run(fleet: Fleet, parallel: int) -> tuple[list, FleetLock]:  # type: ignore[type-arg]
    plan = _plan()
    lock = FleetLock([p.node for p in plan.nodes], fleet, LockOwner.current("r1"), parallel=parallel)
    problems = preflight(plan, fleet, NoLoadBalancer(), parallel=parallel, lock=lock)
    return problems, lock


def _index(events: list[tuple[str, str]], what: str, node: str) -> int:
    return events.index((what, node))


def test_the_others_connect_while_the_first_node_decides_the_lock() -> None:
    fleet = Fleet()
    problems, lock = _run(fleet, parallel=8)
    assert problems == []
    assert fleet.others_opened.is_set()
    first_answer = _index(fleet.events, "answered", "n0")
    for name in NAMES[1:]:
        assert _index(fleet.events, "open", name) < first_answer, fleet.events     # connected meanwhile
        assert _index(fleet.events, "lock", name) > first_answer, fleet.events     # locked only after
    assert sorted(n.name for n in lock.held) == NAMES


def test_when_another_run_holds_the_first_node_the_others_are_only_checked() -> None:
    fleet = Fleet(held_by="other-run")
    problems, lock = _run(fleet, parallel=8)
    assert [p.kind for p in problems] == ["locked"] and "other-run" in problems[0].message
    assert all(("lock", n) not in fleet.events for n in NAMES[1:]), fleet.events
    assert all(("run", n) in fleet.events for n in NAMES[1:])
    assert lock.held == []


def test_a_node_that_cannot_be_connected_is_reported_once_without_a_second_attempt() -> None:
    fleet = Fleet(unreachable=frozenset({"n3"}))
    problems, lock = _run(fleet, parallel=8)
    assert [(p.node, p.kind) for p in problems] == [("n3", "unreachable")]
    assert "connection refused" in problems[0].message
    assert fleet.events.count(("open", "n3")) == 1
    assert ("lock", "n3") not in fleet.events and ("run", "n3") not in fleet.events
    assert "n3" not in {n.name for n in lock.held}


@pytest.mark.parametrize("parallel", [1, 2])
def test_ssh_parallel_bounds_the_connections_made_at_once(parallel: int) -> None:
    fleet = Fleet(expect=parallel - 1)
    problems, _ = _run(fleet, parallel=parallel)
    assert problems == []
    first_answer = _index(fleet.events, "answered", "n0")
    early = [n for n in NAMES[1:] if _index(fleet.events, "open", n) < first_answer]
    # the first node's connection counts: at most parallel - 1 others connect alongside it
    assert len(early) == parallel - 1, fleet.events
