"""Running ``zdupgrade`` as a process of its own on a lab, and what a test checks afterwards.

Used by the lab modules that need runs they can answer, resume or give another HOME
(``tests/e2e/test_steering_lab.py``, ``tests/e2e/test_bastion_lab.py``).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator

from tests.conftest import UpgradeRun, _require_lab
from tests.support.runs import CliRun, start_cli
from zdu.lab.fleet import Lab, extra_placement, wait_until
from zdu.status import Status

LOCK = "/var/tmp/zdupgrade/lock"


def module_lab(purpose: str, **kwargs: Any) -> Iterator[Lab]:
    """Body of a module-scoped fixture: a lab of ``purpose`` (see
    :func:`zdu.lab.fleet.extra_placement`) for the whole module, removed at its end."""
    _require_lab()
    with Lab(**extra_placement(purpose), **kwargs) as running:
        yield running


def reset_around(lab: Lab) -> Iterator[Lab]:
    """Body of a test's fixture: ``lab`` put back to its start state before the test and after."""
    lab.reset()
    yield lab
    lab.reset()


def upgrade_args(lab: Lab, config: Path, *, profile: Path | None = None, rate: float = 100) -> list[str]:
    """The arguments of an upgrade of ``lab`` by topology ``config`` with traffic through its HAProxy."""
    args = ["--old_install_dir", lab.product.old_install_dir, "--new_install_dir", lab.product.new_install_dir,
            "--config", str(config), "--traffic", f"{lab.frontend_url}/", "--traffic-rate", str(rate)]
    return args + (["--profile", str(profile)] if profile is not None else [])


def start_upgrade(lab: Lab, workdir: Path, config: Path, *args: str, profile: Path | None = None,
                  env: dict[str, str] | None = None, name: str = "run",
                  prefix: list[str] | tuple[str, ...] = ()) -> CliRun:
    """Start the upgrade as a process of its own in ``workdir`` (run folders in ``workdir/logs``)."""
    return start_cli(workdir, *upgrade_args(lab, config, profile=profile), *args, log_dir=workdir / "logs",
                     name=name, env=env, prefix=prefix)


def finish(run: CliRun, timeout: float = 150) -> UpgradeRun:
    """Wait for the run's end: its status, output and run.json (which must agree on the status)."""
    code = run.wait(timeout)
    record = run.record()
    assert record, run.text()
    assert record["status"]["code"] == code, (code, record["status"], run.text()[-3000:])
    return UpgradeRun(Status(code), run.text(), record, run.log_dir / record["run_id"])


def node_versions(lab: Lab) -> dict[str, list[str]]:
    """What really runs on each node."""
    return {node.name: lab.running_versions(node.name) for node in lab.nodes}


def assert_untouched(lab: Lab, run: UpgradeRun) -> None:
    """Nothing changed: no step ran, no load-balancer call, 1.0 only everywhere, no lock left."""
    assert run.record["steps"] == [], run.record["steps"]
    assert all(n["lb_calls"] == {"disable": 0, "enable": 0} for n in run.record["nodes"].values())
    assert node_versions(lab) == {node.name: ["1.0"] for node in lab.nodes}, node_versions(lab)
    assert_all_in_haproxy(lab)
    assert_unlocked(lab)


def assert_traffic_clean(run: UpgradeRun) -> None:
    """The probe sent traffic through HAProxy for the run and not one request failed."""
    traffic = run.record["traffic"]
    assert traffic and traffic["sent"] >= 10, traffic
    assert traffic["failed"] == 0, (traffic["by_outcome"], traffic["first_failures"])
    assert re.search(r"traffic: \d+ sent, 0 failed", run.out), run.out[-2000:]


def assert_all_in_haproxy(lab: Lab, names: list[str] | None = None) -> None:
    """The named nodes' servers (default: all) READY (admin state 0) and UP (operational state 2)."""
    servers = [lab.node(n).lb_server for n in (names or [node.name for node in lab.nodes])]

    def settled() -> bool:
        states = lab.server_states()
        return all(states[s]["srv_admin_state"] == "0" and states[s]["srv_op_state"] == "2" for s in servers)
    try:
        wait_until(settled, timeout=10, interval=0.1, what="servers ready and UP")
    except Exception:
        raise AssertionError(f"not every one of {servers} is ready and UP in HAProxy: {lab.server_states()}")


def assert_unlocked(lab: Lab) -> None:
    """No node holds the fleet lock."""
    for node in lab.nodes:
        assert lab.exec(node.name, f"test -e {LOCK}")[0] != 0, f"{node.name} is still locked"


def accepted_logins(lab: Lab, name: str) -> list[str]:
    """The client address of every login the node's (or the bastion's) sshd accepted, in order."""
    code, out = lab.exec(name, "journalctl -q -u zdu-sshd.service --no-pager -o cat")
    assert code == 0, out
    return re.findall(r"Accepted publickey for \S+ from (\S+) port", out)

