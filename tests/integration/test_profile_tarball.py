"""The built-in ``tarball`` profile, unmodified, on a 3-node lab of tarball-installed systemd services.

Follows the Apinizer upgrade runbook, "Virtual Server" tab (2.1 Quick Reference, 2.3 Per-Module,
3.2/3.3 rollback): the lab's nodes run ``apinizer-worker`` 1.0 from ``/opt/apinizer-worker``
(conf/application.env 600 and conf/master.key 400, owned by apinizer), a systemd unit registered by
``bin/worker-install.sh``, with the 2.0 tarball extracted next to it (``zdu/lab/products.py``).
Traffic goes through the lab's HAProxy for the whole run.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from tests.conftest import UpgradeRun, assert_fleet_settled, assert_rolled_back, shorten_deadlines
from zdu.config.profile import BUILTIN_DIR
from zdu.lab.fleet import Lab
from zdu.status import Status

LAB_PRODUCT = "tarball"
LIVE, NEW = "/opt/apinizer-worker", "/opt/apinizer-worker-2.0"


def sh(lab: Lab, node: str, cmd: str) -> str:
    code, out = lab.exec(node, cmd)
    assert code == 0, f"{cmd!r} on {node}: exit {code}\n{out}"
    return out.strip()


def test_upgrade_under_traffic(fresh_product_lab: Lab, upgrade_cli: Callable[..., UpgradeRun]) -> None:
    lab = fresh_product_lab
    keys = {n.name: sh(lab, n.name, f"cat {LIVE}/conf/master.key") for n in lab.nodes}
    run = upgrade_cli(lab)                              # the built-in profile, as it ships
    assert run.status is Status.SUCCESS, run.out
    assert_fleet_settled(lab, run, "2.0")
    for node in lab.nodes:
        n = node.name
        assert sh(lab, n, f"cat {LIVE}/VERSION {LIVE}.bak/VERSION").split() == ["2.0", "1.0"]
        assert sh(lab, n, f"test ! -e {NEW} && echo gone") == "gone"
        # config and key carried over: same content, owner apinizer, modes 600 / 400
        assert sh(lab, n, f"stat -c '%U:%G %a' {LIVE}/conf/application.env {LIVE}/conf/master.key").splitlines() \
            == ["apinizer:apinizer 600", "apinizer:apinizer 400"]
        assert sh(lab, n, f"cat {LIVE}/conf/master.key") == keys[n]
        assert f"SERVER_HOST={node.host}" in sh(lab, n, f"cat {LIVE}/conf/application.env")
        # the unit was re-registered and runs the new files as apinizer
        assert sh(lab, n, "systemctl show -p ExecStart --value apinizer-worker").startswith(
            f"{{ path={LIVE}/bin/worker ")
        assert sh(lab, n, "ps -o user= -p $(systemctl show -p MainPID --value apinizer-worker)") == "apinizer"
        journal = sh(lab, n, "journalctl -u apinizer-worker -o cat --no-pager")
        assert f"Started ApinizerWorkerApp on {node.host}:{node.service_port} (version 2.0)" in journal
    log = (run.run_dir / "Node-B.log").read_text()
    for command in (f"mv -T {LIVE} {LIVE}.bak", f"mv -T {NEW} {LIVE}", f"{LIVE}/bin/worker-install.sh",
                    "systemctl start apinizer-worker", f"chmod 400 {NEW}/conf/master.key"):
        assert command in log, command


def test_start_failure_in_apply_rolls_every_switched_node_back(
        fresh_product_lab: Lab, upgrade_cli: Callable[..., UpgradeRun], tmp_path: Path) -> None:
    lab = fresh_product_lab
    lab.inject_fault("Node-B", "start")               # 2.0 exits at start on Node-B
    profile = shorten_deadlines(BUILTIN_DIR / "tarball.yaml", tmp_path / "tarball-fast.yaml")
    run = upgrade_cli(lab, profile=profile)
    assert_rolled_back(lab, run, Status.APPLY_FAILED, "APPLY")
    for node in lab.nodes:     # swapped back: the live dir is 1.0 again, the new release where it was
        assert sh(lab, node.name, f"cat {LIVE}/VERSION {NEW}/VERSION").split() == ["1.0", "2.0"]
        assert sh(lab, node.name, f"test ! -e {LIVE}.bak && echo none") == "none"
        assert sh(lab, node.name, "systemctl show -p ExecStart --value apinizer-worker").startswith(
            f"{{ path={LIVE}/bin/worker ")
    journal = sh(lab, "Node-B", "journalctl -u apinizer-worker -o cat --no-pager")
    assert "injected fault: start" in journal
