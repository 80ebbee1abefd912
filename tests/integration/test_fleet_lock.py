"""The fleet lock's round trips and all-or-nothing rule, with real shell commands.

Every "node" is a local handler whose lock directory is its own (the lock path in each command
is pointed at ``<tmp>/<node>/lock``), so one machine stands in for a fleet.
"""
from __future__ import annotations

import json
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import pytest

from zdu.errors import LockError
from zdu.model import CommandResult, Node
from zdu.run.lock import FleetLock, LockOwner
from zdu.transport.base import CommandHandler
from zdu.transport.local import LocalHandler

LOCK = "/zdu-test-lock-dir/lock"


class NodeDir(CommandHandler):
    """A local handler whose lock directory lives under ``root/<node name>``; counts commands."""

    def __init__(self, node: Node, root: Path, log: list[str], mutex: threading.Lock) -> None:
        super().__init__(node)
        self.local = LocalHandler(node)
        self.dir = root / node.name
        self.log, self.mutex = log, mutex

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def run(self, command: str, *, timeout: float | None = None,
            env: dict[str, str] | None = None) -> CommandResult:
        with self.mutex:
            self.log.append(self.node.name)
        return self.local.run(command.replace(LOCK.rsplit("/", 1)[0], str(self.dir)), timeout=timeout, env=env)


@pytest.fixture
def fleet(tmp_path: Path) -> tuple[list[Node], Callable[[Node], CommandHandler], list[str]]:
    nodes = [Node(f"n{i:02d}", "127.0.0.1", transport="local") for i in range(12)]
    log: list[str] = []
    mutex = threading.Lock()
    handlers = {n.name: NodeDir(n, tmp_path, log, mutex) for n in nodes}
    return nodes, lambda node: handlers[node.name], log


def lock_of(tmp_path: Path, name: str) -> Path:
    return tmp_path / name / "lock"


def foreign(tmp_path: Path, name: str, run_id: str = "other-run") -> None:
    owner = LockOwner(run_id=run_id, user="alice", host="laptop", pid=4242, started="2026-01-01T00:00:00+00:00")
    lock_of(tmp_path, name).mkdir(parents=True)
    (lock_of(tmp_path, name) / "owner.json").write_text(json.dumps(owner.__dict__))


def test_one_round_trip_per_node_to_take_and_to_release(fleet, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    nodes, handlers, log = fleet
    lock = FleetLock(nodes, handlers, LockOwner.current("run-1"), lock_dir=LOCK, parallel=4)
    assert lock.acquire()
    assert sorted(log) == sorted(n.name for n in nodes) and log[0] == "n00"    # n00 first, alone
    assert all(json.loads((lock_of(tmp_path, n.name) / "owner.json").read_text())["run_id"] == "run-1"
               for n in nodes)
    log.clear()
    assert lock.release() == [] and lock.held == []
    assert sorted(log) == sorted(n.name for n in nodes)
    assert not any(lock_of(tmp_path, n.name).exists() for n in nodes)


def test_locked_nodes_are_all_named_and_nothing_stays_taken(fleet, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    nodes, handlers, _ = fleet
    foreign(tmp_path, "n05")
    foreign(tmp_path, "n09", "third-run")
    lock = FleetLock(nodes, handlers, LockOwner.current("run-1"), lock_dir=LOCK)
    with pytest.raises(LockError) as info:
        lock.acquire()
    text = str(info.value)
    assert "n05: locked by run other-run by alice@laptop (pid 4242)" in text
    assert "n09: locked by run third-run" in text and "--break-lock" in text
    assert lock.held == []
    assert {n.name for n in nodes if lock_of(tmp_path, n.name).exists()} == {"n05", "n09"}   # theirs only


def test_a_run_that_loses_the_first_node_touches_no_other(fleet, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    nodes, handlers, log = fleet
    foreign(tmp_path, "n00")
    with pytest.raises(LockError, match="n00: locked by run other-run"):
        FleetLock(nodes, handlers, LockOwner.current("run-2"), lock_dir=LOCK).acquire()
    assert log == ["n00"]


def test_break_lock_and_interrupt(fleet, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    nodes, handlers, _ = fleet
    foreign(tmp_path, "n03")
    lock = FleetLock(nodes, handlers, LockOwner.current("run-3"), lock_dir=LOCK, break_lock=True)
    assert lock.acquire() and [b.split(":")[0] for b in lock.broken] == ["n03"]
    assert json.loads((lock_of(tmp_path, "n03") / "owner.json").read_text())["run_id"] == "run-3"
    lock.release()
    stopped = FleetLock(nodes, handlers, LockOwner.current("run-4"), lock_dir=LOCK)
    assert stopped.acquire(stop=lambda: True) is False and stopped.held == []
    assert not any(lock_of(tmp_path, n.name).exists() for n in nodes)


def test_a_lock_dir_that_is_not_a_lock_is_named_and_never_removed(fleet, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """lock_dir naming a directory of the operator's (no owner.json in it): not "locked by
    another run" with an empty reason, and not removed even with --break-lock."""
    nodes, handlers, _ = fleet
    precious = lock_of(tmp_path, "n05")
    precious.mkdir(parents=True)
    (precious / "keep.txt").write_text("mine")
    for break_lock in (False, True):
        lock = FleetLock(nodes, handlers, LockOwner.current("run-5"), lock_dir=LOCK, break_lock=break_lock)
        with pytest.raises(LockError) as caught:
            lock.acquire()
        assert "n05: " in str(caught.value) and "holds no owner.json" in str(caught.value), caught.value
        assert "it was not touched" in str(caught.value)
        assert (precious / "keep.txt").read_text() == "mine"
        assert not any(lock_of(tmp_path, n.name).exists() for n in nodes if n.name != "n05")


def test_release_removes_only_a_lock_whose_owner_is_this_run(fleet, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Not a lock whose owner.json merely holds this run's id as a value (here another run's
    host name): the id must be the owner's run_id."""
    nodes, handlers, _ = fleet
    lock = FleetLock(nodes[:1], handlers, LockOwner.current("run-7"), lock_dir=LOCK)
    lock.held = list(nodes[:1])
    other = LockOwner(run_id="run-8", user="bob", host="run-7", pid=1, started="s", message="")
    lock_of(tmp_path, "n00").mkdir(parents=True)
    (lock_of(tmp_path, "n00") / "owner.json").write_text(json.dumps(asdict(other)))
    assert lock.release() == [] and lock_of(tmp_path, "n00").is_dir()
    mine = FleetLock(nodes[:1], handlers, LockOwner.current("run-8"), lock_dir=LOCK)
    mine.held = list(nodes[:1])
    assert mine.release() == [] and not lock_of(tmp_path, "n00").exists()


# --------------------------------------------------------------------------- taken by preflight

@pytest.fixture
def planned(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A six-node plan whose nodes are NodeDir handlers (lock under ``tmp_path/<node>``)."""
    from tests.support.fakes import make_plan
    plan = make_plan(nodes="ABCDEF")
    log: list[str] = []
    mutex = threading.Lock()
    handlers = {p.node.name: NodeDir(p.node, tmp_path, log, mutex) for p in plan.nodes}
    nodes = [p.node for p in plan.nodes]
    return plan, nodes, (lambda node: handlers[node.name]), log


def test_preflight_takes_the_lock_in_the_same_round_trip(planned, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.support.fakes import FakeLb
    from zdu.run.preflight import preflight
    plan, nodes, handlers, log = planned
    lock = FleetLock(nodes, handlers, LockOwner.current("run-p"), lock_dir=LOCK, parallel=3)
    assert preflight(plan, handlers, FakeLb(), parallel=3, check_dirs=False, lock=lock) == []
    assert sorted(log) == sorted(n.name for n in nodes) and log[0] == "A"    # one each, A first, alone
    assert sorted(n.name for n in lock.held) == [n.name for n in nodes]
    assert all(json.loads((lock_of(tmp_path, n.name) / "owner.json").read_text())["run_id"] == "run-p"
               for n in nodes)
    assert lock.release() == [] and not any(lock_of(tmp_path, n.name).exists() for n in nodes)


def test_preflight_with_the_first_node_locked_locks_nothing_else(planned, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.support.fakes import FakeLb
    from zdu.run.preflight import preflight
    plan, nodes, handlers, log = planned
    foreign(tmp_path, "A")
    lock = FleetLock(nodes, handlers, LockOwner.current("run-q"), lock_dir=LOCK)
    problems = preflight(plan, handlers, FakeLb(), check_dirs=False, lock=lock)
    assert [p.kind for p in problems] == ["locked"]
    assert str(problems[0]).startswith("A: locked by run other-run by alice@laptop (pid 4242)"), problems
    assert sorted(log) == sorted(n.name for n in nodes)            # every node still checked, once
    assert lock.held == [] and not any(lock_of(tmp_path, n).exists() for n in "BCDEF")


def test_preflight_problems_and_a_lock_elsewhere_are_all_reported(planned, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Missing install dirs everywhere (the plan's /o and /n) and node D held by another run: every
    problem comes back; what this run took is given back by release and D's lock is untouched."""
    from tests.support.fakes import FakeLb
    from zdu.run.preflight import preflight
    plan, nodes, handlers, _ = planned
    foreign(tmp_path, "D")
    lock = FleetLock(nodes, handlers, LockOwner.current("run-r"), lock_dir=LOCK)
    problems = preflight(plan, handlers, FakeLb(), lock=lock)
    assert sorted(p.kind for p in problems) == ["locked"] + ["missing-dir"] * 12, problems
    assert sorted(n.name for n in lock.held) == ["A", "B", "C", "E", "F"]
    assert lock.release() == []
    assert [n for n in "ABCDEF" if lock_of(tmp_path, n).exists()] == ["D"]


def test_a_node_lost_before_the_release_keeps_its_lock_and_says_so(fleet, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The others are released; the lost node's lock stays, and release names it and the path."""
    from zdu.errors import UnreachableError
    nodes, handlers, _ = fleet
    lock = FleetLock(nodes, handlers, LockOwner.current("run-l"), lock_dir=LOCK)
    assert lock.acquire() is True
    lost = handlers(nodes[3])

    def gone(command: str, **kw: object) -> CommandResult:
        raise UnreachableError(lost.node.name, "connection reset by peer")
    lost.run = gone  # type: ignore[method-assign,assignment]
    problems = lock.release()
    assert problems == [f"{nodes[3].name}: lock not released (connection reset by peer); remove {LOCK} there "
                        "once the node is back"]
    assert [n.name for n in nodes if lock_of(tmp_path, n.name).exists()] == [nodes[3].name]
    assert lock.held == []


@pytest.mark.parametrize("left_by_a_dead_run", [False, True], ids=["fresh", "resume"])
def test_nodes_that_share_one_machine_share_its_lock(tmp_path: Path, left_by_a_dead_run: bool) -> None:
    """Twelve nodes on one machine (local handlers, one lock directory): the first takes it, the
    others find this run's lock and hold it too; on a resume the first replaces the dead
    process's owner.json.  Each read the file while others wrote it: a rewrite that truncated
    it first made them see an empty owner.json ("an unknown owner") and refuse the run, in
    17-20 of 20 tries.  Released once, by whichever node is first."""
    nodes = [Node(f"n{i:02d}", "127.0.0.1", transport="local") for i in range(12)]
    handlers = {n.name: LocalHandler(n) for n in nodes}
    for attempt in range(5):
        lock_dir = tmp_path / f"lock{attempt}"
        owner = LockOwner.current(f"run-{attempt}", "")
        if left_by_a_dead_run:
            lock_dir.mkdir()
            (lock_dir / "owner.json").write_text(json.dumps({**asdict(owner), "pid": 999999999}))
        lock = FleetLock(nodes, lambda node: handlers[node.name], owner, lock_dir=str(lock_dir), parallel=12)
        assert lock.acquire()
        assert sorted(n.name for n in lock.held) == [n.name for n in nodes]
        assert json.loads((lock_dir / "owner.json").read_text())["pid"] == owner.pid
        assert [p.name for p in lock_dir.iterdir()] == ["owner.json"]      # no temporary file left
        assert lock.release() == []
        assert not lock_dir.exists()


def test_a_resume_that_cannot_take_its_lock_back_refuses_the_node(tmp_path: Path) -> None:
    """The resume's rewrite of owner.json fails (here its temporary file's name is a directory):
    the node is refused, not held under the dead process's name, which the next resume of this
    run would take for a stale lock and drive the node alongside this one."""
    node = Node("n00", "127.0.0.1", transport="local")
    owner = LockOwner.current("run-x", "")
    lock_dir = tmp_path / "lock"
    lock_dir.mkdir()
    dead = json.dumps({**asdict(owner), "pid": 999999999})
    (lock_dir / "owner.json").write_text(dead)
    (lock_dir / f".owner.json.{owner.pid}").mkdir()
    lock = FleetLock([node], lambda n: LocalHandler(n), owner, lock_dir=str(lock_dir))
    with pytest.raises(LockError, match=r"n00: cannot take this run's lock back .*exit 1: .*Is a directory"):
        lock.acquire()
    assert lock.held == []
    assert (lock_dir / "owner.json").read_text() == dead


def test_the_lock_is_writable_by_its_owner_alone_whatever_the_umask(fleet, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A local node's commands inherit the control process's umask: under 000 the lock's
    directories and owner.json were world-writable (any user could replace the owner or remove
    the lock).  Taken, and taken back by a resume of the same run, they are 0755 / 0644."""
    import os
    import socket
    import stat
    import subprocess
    nodes, handlers, _ = fleet
    gone = subprocess.Popen(["true"])
    gone.wait()                              # a run that died holding its lock
    old = os.umask(0)
    try:
        lock = FleetLock(nodes[:2], handlers, LockOwner("run-umask", "op", socket.gethostname(), gone.pid,
                                                        "2026-01-01T00:00:00+00:00"), lock_dir=LOCK)
        assert lock.acquire()
        for node in nodes[:2]:
            where = lock_of(tmp_path, node.name)
            assert stat.S_IMODE(where.parent.stat().st_mode) == 0o755
            assert stat.S_IMODE(where.stat().st_mode) == 0o755
            assert stat.S_IMODE((where / "owner.json").stat().st_mode) == 0o644
        # the same run, another process (a --resume): owner.json is rewritten, not widened
        again = FleetLock(nodes[:2], handlers, LockOwner.current("run-umask"), lock_dir=LOCK)
        assert again.acquire()
        assert json.loads((lock_of(tmp_path, "n00") / "owner.json").read_text())["pid"] == os.getpid()
        assert stat.S_IMODE((lock_of(tmp_path, "n00") / "owner.json").stat().st_mode) == 0o644
    finally:
        os.umask(old)
