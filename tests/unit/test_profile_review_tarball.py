"""The ``tarball`` profile's install-dir swap and its rollback, run for real in a local shell.

The rendered commands of the built-in profile (``sudo`` empty) are run with ``/bin/sh`` on
directories under ``tmp_path``: a ``<old_install_dir>.bak`` left by an earlier upgrade is refused
in EXPORT, the swap never moves a directory into an existing one, and the rollback is idempotent
(a resume may run it again) after the first move of the swap and after both.
"""
from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from zdu.config.profile import load_profile
from zdu.config.topology import load_topology
from zdu.planning.plan import build_plan
from zdu.status import Phase


class Node:
    def __init__(self, root: Path) -> None:
        self.old, self.new = root / "apinizer-worker", root / "apinizer-worker-2.0"
        self.bak = Path(f"{self.old}.bak")
        topology = root / "topology.yaml"
        topology.write_text("profile: tarball\nload_balancer: {type: none}\nvars: {sudo: ''}\n"
                            "nodes:\n  - {name: n1, host: n1.example.net}\n")
        self.run_id = f"review-tarball-{uuid.uuid4().hex[:8]}"
        plan = build_plan(load_topology(topology), load_profile("tarball"), old_install_dir=str(self.old),
                          new_install_dir=str(self.new), run_id=self.run_id)
        node_plan = plan.node_plan("n1")
        self.steps = {(phase, s.name): s.command for phase, steps in node_plan.phases.items() for s in steps}
        self.undo = {s.name: s.command for s in node_plan.rollback_for(Phase.APPLY)}
        self.work_dir = Path("/var/tmp/zdupgrade") / self.run_id
        for d, version in ((self.old, "1.0"), (self.new, "2.0")):
            (d / "conf").mkdir(parents=True)
            (d / "VERSION").write_text(version + "\n")
            (d / "conf" / "application.env").write_text("A=1\n")
            (d / "conf" / "master.key").write_text("k\n")

    def sh(self, command: str | None) -> subprocess.CompletedProcess[str]:
        assert command
        return subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True, timeout=30)

    def export(self) -> subprocess.CompletedProcess[str]:
        result = subprocess.CompletedProcess([], 0, "", "")
        for (phase, _name), command in self.steps.items():
            if phase is Phase.EXPORT:
                result = self.sh(command)
                if result.returncode:
                    break
        return result

    def swap(self) -> subprocess.CompletedProcess[str]:
        return self.sh(self.steps[(Phase.APPLY, "swap install dirs")])

    def swap_back(self) -> subprocess.CompletedProcess[str]:
        return self.sh(self.undo["swap install dirs back"])

    def version(self, d: Path) -> str:
        return (d / "VERSION").read_text().strip()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(tmp_path)
    yield n
    shutil.rmtree(n.work_dir, ignore_errors=True)


def stale_bak(node: Node) -> None:
    (node.bak / "conf").mkdir(parents=True)
    (node.bak / "VERSION").write_text("0.9\n")


def test_a_bak_left_by_an_earlier_upgrade_is_refused_in_export(node: Node) -> None:
    stale_bak(node)
    result = node.export()
    assert result.returncode != 0
    assert f"{node.bak} exists" in result.stderr and f"remove it first (rm -rf {node.bak})" in result.stderr
    assert not (node.work_dir / "backup").exists()        # refused before anything else


def test_the_swap_never_moves_the_live_install_into_an_existing_bak(node: Node) -> None:
    stale_bak(node)                                      # EXPORT skipped (or the .bak made after it)
    node.work_dir.mkdir(parents=True)
    result = node.swap()
    assert result.returncode != 0 and "not moving the live install into it" in result.stderr
    assert (node.version(node.old), node.version(node.new), node.version(node.bak)) == ("1.0", "2.0", "0.9")
    assert sorted(p.name for p in node.bak.iterdir()) == ["VERSION", "conf"]       # nothing nested
    # the rollback of that failure leaves everything where it is: the stale .bak is not this run's
    assert node.swap_back().returncode == 0
    assert (node.version(node.old), node.version(node.new), node.version(node.bak)) == ("1.0", "2.0", "0.9")
    assert sorted(p.name for p in node.old.iterdir()) == ["VERSION", "conf"]


def settled_on_old(node: Node) -> None:
    assert (node.version(node.old), node.version(node.new)) == ("1.0", "2.0")
    assert not node.bak.exists()
    assert sorted(p.name for p in node.old.iterdir()) == ["VERSION", "conf"]
    assert sorted(p.name for p in node.new.iterdir()) == ["VERSION", "conf"]


def test_swap_and_rollback_are_idempotent(node: Node) -> None:
    assert node.export().returncode == 0
    assert node.swap().returncode == 0
    assert node.swap().returncode == 0                   # a resume runs it again: nothing moves twice
    assert (node.version(node.old), node.version(node.bak)) == ("2.0", "1.0") and not node.new.exists()
    for _ in range(2):                                   # failure after both moves; a resume rolls back again
        assert node.swap_back().returncode == 0, node.swap_back().stderr
        settled_on_old(node)


def fail_after_the_first_move(node: Node) -> None:
    """Run the swap with the new release briefly out of its place: its second move fails."""
    aside = node.new.with_name("aside")
    node.new.rename(aside)
    assert node.swap().returncode != 0
    aside.rename(node.new)
    assert not node.old.exists() and node.version(node.bak) == "1.0" and node.version(node.new) == "2.0"


def test_rollback_after_the_first_move_only(node: Node) -> None:
    assert node.export().returncode == 0
    fail_after_the_first_move(node)
    for _ in range(2):
        assert node.swap_back().returncode == 0
        settled_on_old(node)
    # and a resume that runs the swap again from that state completes it
    fail_after_the_first_move(node)
    assert node.swap().returncode == 0
    assert (node.version(node.old), node.version(node.bak)) == ("2.0", "1.0") and not node.new.exists()
