"""Preflight with the fleet lock on real sshd nodes: while the first node's check-and-lock round
trip is under way the others are connected (real SSH logins), and none of them is sent a
command before the first node's answer is in; then every node is locked for real.

One machine stands in for the fleet, so each node's lock path is pointed at a directory of its
own (the nodes share this file system); everything else is the real SSH handler."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Callable

import pytest

from tests.support.sshd import SshdServer, sshd_server  # noqa: F401 (fixture)
from zdu.config.profile import parse_profile
from zdu.config.topology import parse_topology
from zdu.lb.none import NoLoadBalancer
from zdu.model import CommandResult, Node, SshSettings
from zdu.planning.plan import build_plan
from zdu.run.lock import FleetLock, LockOwner
from zdu.run.preflight import preflight
from zdu.transport.base import CommandHandler
from zdu.transport.ssh import SshHandler, SshPool

LOCK = "/zdu-ahead-test/lock"


class Recorded(CommandHandler):
    """The real SSH handler of a node, its lock path made the node's own, its calls recorded;
    the first node's command waits (up to 20 s) until every other node is connected."""

    def __init__(self, real: SshHandler, root: Path, fleet: "Fleet") -> None:
        super().__init__(real.node)
        self.real, self.dir, self.fleet = real, root / real.node.name, fleet

    def open(self) -> None:
        self.real.open()

    def close(self) -> None:
        self.real.close()

    def run(self, command: str, *, timeout: float | None = None,
            env: dict[str, str] | None = None) -> CommandResult:
        self.fleet.note("sent", self.node.name)
        if self.node.name == "n0":
            self.fleet.others_connected = self.fleet.wait_connected(20)
        result = self.real.run(command.replace(LOCK.rsplit("/", 1)[0], str(self.dir)), timeout=timeout, env=env)
        self.fleet.note("answered", self.node.name)
        return result


class Fleet:
    def __init__(self) -> None:
        self.handlers: dict[str, Recorded] = {}
        self.log: list[tuple[str, str]] = []
        self.mutex = threading.Lock()
        self.others_connected = False

    def note(self, what: str, name: str) -> None:
        with self.mutex:
            self.log.append((what, name))

    def wait_connected(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if all(h.real.connected for n, h in self.handlers.items() if n != "n0"):
                return True
            time.sleep(0.02)
        return False

    def __call__(self, node: Node) -> CommandHandler:
        return self.handlers[node.name]


@pytest.fixture
def fleet(sshd_server: Callable[..., SshdServer], tmp_path: Path):  # type: ignore[no-untyped-def]
    servers = [sshd_server(f"127.0.0.{161 + i}") for i in range(4)]
    known = tmp_path / "known_hosts"
    known.write_text("".join(s.known_hosts_line() for s in servers))
    topology = parse_topology({
        "profile": "p", "load_balancer": {"type": "none"},
        "ssh": {"user": "root", "known_hosts": str(known), "config_file": None, "connect_timeout": 5},
        "nodes": [{"name": f"n{i}", "host": s.host, "port": s.port, "key_file": str(s.client_key)}
                  for i, s in enumerate(servers)]}, source="t.yaml")
    plan = build_plan(topology, parse_profile({"name": "p", "phases": {"APPLY": ["true"]}, "rollback": ["true"]},
                                              source="p.yaml"),
                      old_install_dir=str(tmp_path), new_install_dir=str(tmp_path), run_id="ahead-1")
    pool = SshPool()
    settings: SshSettings = topology.ssh
    fleet = Fleet()
    fleet.handlers = {p.node.name: Recorded(SshHandler(p.node, settings, pool=pool), tmp_path, fleet)
                      for p in plan.nodes}
    yield plan, fleet, tmp_path
    for handler in fleet.handlers.values():
        handler.close()


def test_the_others_log_in_while_the_first_node_decides_and_are_locked_after(fleet) -> None:  # type: ignore[no-untyped-def]
    plan, nodes, root = fleet
    lock = FleetLock([p.node for p in plan.nodes], nodes, LockOwner.current("ahead-1"), lock_dir=LOCK, parallel=4)
    problems = preflight(plan, nodes, NoLoadBalancer(), parallel=4, lock=lock)
    assert problems == []
    assert nodes.others_connected, "the other nodes were not connected while the first one answered"
    first_answer = nodes.log.index(("answered", "n0"))
    assert all(nodes.log.index(("sent", f"n{i}")) > first_answer for i in (1, 2, 3)), nodes.log
    for i in range(4):
        owner = json.loads((root / f"n{i}" / "lock" / "owner.json").read_text())
        assert owner["run_id"] == "ahead-1"
    assert lock.release() == []
    assert not any((root / f"n{i}" / "lock").exists() for i in range(4))


def test_losing_the_first_node_to_another_run_locks_no_other(fleet) -> None:  # type: ignore[no-untyped-def]
    plan, nodes, root = fleet
    (root / "n0" / "lock").mkdir(parents=True)
    (root / "n0" / "lock" / "owner.json").write_text(json.dumps(
        {"run_id": "other-run", "user": "alice", "host": "laptop", "pid": 4242, "started": "2026-01-01T00:00:00+00:00"}))
    lock = FleetLock([p.node for p in plan.nodes], nodes, LockOwner.current("ahead-2"), lock_dir=LOCK, parallel=4)
    problems = preflight(plan, nodes, NoLoadBalancer(), parallel=4, lock=lock)
    assert [p.kind for p in problems] == ["locked"] and "other-run" in problems[0].message
    assert nodes.others_connected
    assert lock.held == []
    assert not any((root / f"n{i}" / "lock").exists() for i in (1, 2, 3))
    assert json.loads((root / "n0" / "lock" / "owner.json").read_text())["run_id"] == "other-run"
