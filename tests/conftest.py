"""Shared fixtures.

``lab`` (session): a running :class:`zdu.lab.Lab` (3 real OpenSSH nodes + HAProxy), placed by
``ZDU_LAB_SLOT`` (see :func:`zdu.lab.fleet.placement_from_env`).  Tests that
use it are marked ``lab``; without Docker or HAProxy they are skipped, unless
``ZDU_LAB_REQUIRED=1`` (CI), where a missing lab is an error.

``fresh_lab`` (function): the same lab, reset before and after the test (gateway 1.0 only, no
faults, 2.0 config removed, HAProxy servers ready and UP).

``product_lab`` (module): a lab of the product the test module names in ``LAB_PRODUCT`` (see
:mod:`zdu.lab.products`), placed beside the session's lab in the same slot;
``fresh_product_lab`` resets it around the test.  ``upgrade_cli`` runs ``zdupgrade`` in-process
on such a lab with traffic through its HAProxy and returns what the run left behind.
"""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import pytest

if TYPE_CHECKING:
    from zdu.lab.fleet import Lab


def _terminal_signals() -> None:
    """The tests send SIGINT and SIGHUP to zdupgrade processes as a terminal would, and zdupgrade
    leaves a signal alone that was ignored when it started (nohup, a background job of a script).
    A test run started that way (``nohup pytest``, ``pytest &`` in a CI script) would hand those
    dispositions to every zdupgrade it starts: give its children a terminal's defaults.  A Python
    handler is reset to the default in an exec'd child, so pytest itself still outlives a
    hang-up it was told to ignore."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if signal.getsignal(signal.SIGHUP) is signal.SIG_IGN:
        signal.signal(signal.SIGHUP, lambda signum, frame: None)


_terminal_signals()


def _lab_missing() -> str | None:
    """Why the lab cannot run here, or None."""
    if shutil.which("docker") is None:
        return "docker CLI not installed"
    if subprocess.run(["docker", "info"], capture_output=True, check=False).returncode != 0:
        return "no Docker engine running"
    if shutil.which("haproxy") is None and not os.path.exists("/usr/sbin/haproxy"):
        return "haproxy not installed"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that uses the lab with ``lab`` (select with ``-m lab`` / ``-m 'not lab'``)."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        defs = info.name2fixturedefs if info is not None else {}
        # a module may define its own fixture called "lab"; mark only users of this one
        if any(defs.get(name) and getattr(defs[name][-1].func, "__module__", None) == __name__
               for name in ("lab", "fresh_lab", "product_lab", "fresh_product_lab")):
            item.add_marker(pytest.mark.lab)


def _require_lab() -> None:
    reason = _lab_missing()
    if reason:
        if os.environ.get("ZDU_LAB_REQUIRED") == "1":
            pytest.fail(f"lab required but unavailable: {reason} (run scripts/setup.sh)")
        pytest.skip(f"lab unavailable: {reason} (run scripts/setup.sh)")


@pytest.fixture(scope="session")
def lab() -> Iterator["Lab"]:
    """The session's lab fleet (started once, removed at the end even after failures)."""
    _require_lab()
    from zdu.lab.fleet import Lab, placement_from_env

    with Lab(**placement_from_env()) as running:
        yield running


@pytest.fixture
def fresh_lab(lab: "Lab") -> Iterator["Lab"]:
    """The lab, put back to its start state before the test and again after it.

    Tests that change a node use this; read-only tests may use ``lab`` directly.
    """
    lab.reset()
    yield lab
    lab.reset()


@pytest.fixture(scope="module")
def product_lab(request: pytest.FixtureRequest) -> Iterator["Lab"]:
    """A lab running the product named by the module's ``LAB_PRODUCT``, for the whole module."""
    _require_lab()
    from zdu.lab.fleet import Lab, placement_from_env

    with Lab(**placement_from_env(product=request.module.LAB_PRODUCT)) as running:
        yield running


@pytest.fixture
def fresh_product_lab(product_lab: "Lab") -> Iterator["Lab"]:
    """The module's product lab, put back to its start state before and after the test."""
    product_lab.reset()
    yield product_lab
    product_lab.reset()


@dataclass
class UpgradeRun:
    """What one ``zdupgrade`` run on a lab left behind."""

    status: Any             # zdu.status.Status
    out: str                # console, stdout and stderr
    record: dict[str, Any]  # run.json
    run_dir: Path

    def rollback_order(self) -> list[str]:
        """Nodes in the order their ROLLBACK started (run.log)."""
        lines = (self.run_dir / "run.log").read_text().splitlines()
        return [line.split("[", 1)[1].split("]", 1)[0] for line in lines if "ROLLBACK started" in line]


def shorten_deadlines(profile: Path, target: Path, *, deadline: float = 15, timeout: float = 60) -> Path:
    """A copy of ``profile`` whose wait deadlines and step timeouts are at most ``deadline`` /
    ``timeout`` (steps and commands unchanged), so that a failing gate fails in seconds."""
    import yaml

    doc = yaml.safe_load(profile.read_text())

    def shorten(steps: Any) -> None:
        for step in steps or []:
            if isinstance(step, dict):
                if isinstance(step.get("wait"), dict) and isinstance(step["wait"].get("deadline", 0), (int, float)) \
                        and step["wait"].get("deadline", 0) > deadline:
                    step["wait"]["deadline"] = deadline
                if isinstance(step.get("timeout", 0), (int, float)) and step.get("timeout", 0) > timeout:
                    step["timeout"] = timeout
    for steps in doc.get("phases", {}).values():
        shorten(steps)
    shorten(doc.get("smoke"))
    rollback = doc.get("rollback")
    for steps in (rollback.values() if isinstance(rollback, dict) else [rollback]):
        shorten(steps)
    target.write_text(yaml.safe_dump(doc, sort_keys=False))
    return target


@pytest.fixture
def upgrade_cli(tmp_path: Path) -> Callable[..., UpgradeRun]:
    """``upgrade_cli(lab, profile=..., extra=..., rate=100, args=())``: run the CLI in-process on
    ``lab`` (haproxy hook, traffic through the lab's HAProxy at ``rate`` req/s)."""
    from zdu.cli.main import main

    def run(lab: "Lab", *, profile: str | Path | None = None, extra: dict[str, Any] | None = None,
            rate: float = 100, args: tuple[str, ...] = (), name: str = "run") -> UpgradeRun:
        work = tmp_path / name
        config = lab.write_topology(work / "topology.yaml", lb="haproxy", extra=extra)
        out, err = io.StringIO(), io.StringIO()
        argv = ["--old_install_dir", lab.product.old_install_dir, "--new_install_dir", lab.product.new_install_dir,
                "--config", str(config), "--log_dir", str(work / "logs"),
                "--traffic", f"{lab.frontend_url}/", "--traffic-rate", str(rate), *args]
        if profile is not None:
            argv += ["--profile", str(profile)]
        status = main(argv, out=out, err=err)
        runs = sorted((work / "logs").glob("*/run.json"))
        text = out.getvalue() + err.getvalue()
        assert runs, text
        return UpgradeRun(status, text, json.loads(runs[-1].read_text()), runs[-1].parent)
    return run


def assert_fleet_settled(lab: "Lab", run: UpgradeRun, version: str) -> None:
    """Every node runs ``version`` only and serves it, is back in the load balancer (balanced calls),
    and HAProxy sees every server ready and UP; the traffic probe saw no failed request."""
    for node in lab.nodes:
        assert lab.running_versions(node.name) == [version], (node.name, lab.running_versions(node.name))
        assert lab.served_version(node.name) == version, node.name
        assert run.record["nodes"][node.name]["in_lb"] is True, node.name
        calls = run.record["nodes"][node.name]["lb_calls"]
        assert calls["disable"] == calls["enable"], (node.name, calls)
    lab.wait_servers_up()
    states = lab.server_states()
    assert all(s["srv_admin_state"] == "0" and s["srv_op_state"] == "2" for s in states.values()), states
    traffic = run.record["traffic"]
    assert traffic["failed"] == 0, (traffic["by_outcome"], traffic["first_failures"])
    assert traffic["sent"] > 0 and traffic["by_outcome"]["ok"] == traffic["sent"], traffic
    assert re.search(r"traffic: \d+ sent, 0 failed", run.out), run.out[-2000:]


def assert_rolled_back(lab: "Lab", run: UpgradeRun, status: Any, phase: str, *, failed: str = "Node-B",
                       rolled_back: tuple[str, ...] = ("Node-B", "Node-A")) -> None:
    """``failed`` failed in ``phase`` with ``status``; the default policy rolled back ``rolled_back``
    in that order (each PASSED); the node after ``failed`` was never touched; then the fleet is
    settled on 1.0 (:func:`assert_fleet_settled`)."""
    assert run.status is status, run.out
    assert run.record["nodes"][failed]["phases"][phase]["outcome"] == "FAILED"
    assert run.rollback_order() == list(rolled_back)
    for name in rolled_back:
        assert run.record["nodes"][name]["rollback"]["outcome"] == "PASSED", run.record["nodes"][name]
    names = [n.name for n in lab.nodes]
    for later in names[names.index(failed) + 1:]:
        assert "APPLY" not in run.record["nodes"][later]["phases"], later
    assert_fleet_settled(lab, run, "1.0")
