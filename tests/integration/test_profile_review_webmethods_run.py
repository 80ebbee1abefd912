"""The ``webmethods-cluster`` rollback when the old and the fixed instance share the admin port
(5555 both, the profile's default) and the fixed instance's shutdown script returns before the
instance is down: the old instance must not be started (nor its health awaited) until the port is
free, else the still-running fixed instance answers the old one's health check and the rollback
"passes" with the fixed version serving (then nothing, once it is gone)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from tests.conftest import UpgradeRun, assert_rolled_back, shorten_deadlines
from tests.integration.test_profile_webmethods import OLD_PORT, call, needs_http_steps
from zdu.config.profile import BUILTIN_DIR
from zdu.lab.fleet import Lab, wait_until
from zdu.status import Status

LAB_PRODUCT = "webmethods"
NEW = "/opt/softwareag-2.0"


@needs_http_steps
def test_rollback_waits_for_the_shared_admin_port(fresh_product_lab: Lab, upgrade_cli: Callable[..., UpgradeRun],
                                                  tmp_path: Path) -> None:
    lab = fresh_product_lab
    dropin = "/etc/systemd/system/webmethods-apigateway@2.0.service.d"
    for node in lab.nodes:
        # 2.0 on the old one's admin port; its shutdown script only asks for the stop, which takes 6 s
        code, out = lab.exec(node.name, f"""set -e
            sed -i 's/"primary_port": 5556/"primary_port": {OLD_PORT}/' {NEW}/config/gateway.json
            grep -q '"primary_port": {OLD_PORT}' {NEW}/config/gateway.json
            mkdir -p {dropin}; printf '[Service]\\nExecStop=/bin/sleep 6\\n' > {dropin}/slow-stop.conf
            systemctl daemon-reload
            printf '#!/bin/sh\\nexec systemctl --no-block stop webmethods-apigateway@2.0.service\\n' \\
                > {NEW}/profiles/IS_default/bin/shutdown.sh""")
        assert code == 0, out
    try:
        rolled_back_on_shared_port(lab, upgrade_cli, tmp_path)
    finally:
        for node in lab.nodes:
            lab.exec(node.name, f"rm -rf {dropin}; systemctl daemon-reload")


def rolled_back_on_shared_port(lab: Lab, upgrade_cli: Callable[..., UpgradeRun], tmp_path: Path) -> None:
    lab.inject_fault("Node-C", "start")                  # the last node fails: A and B, on 2.0, roll back
    fast = shorten_deadlines(BUILTIN_DIR / "webmethods-cluster.yaml", tmp_path / "wm-fast.yaml", deadline=30)
    run = upgrade_cli(lab, profile=fast, extra={"vars": {"admin_port_new": OLD_PORT}})
    for node in lab.nodes:                               # any stop still pending has happened
        wait_until(lambda n=node.name: "2.0" not in lab.running_versions(n), timeout=20,
                   what=f"2.0 stopped on {node.name}")
    assert_rolled_back(lab, run, Status.APPLY_FAILED, "APPLY", failed="Node-C",
                       rolled_back=("Node-C", "Node-B", "Node-A"))
    for node in lab.nodes:
        assert call(node.host, OLD_PORT, "GET", "/rest/apigateway/health", auth=False)[1]["version"] == "1.0"


@needs_http_steps
def test_pre_apply_failure_leaves_quiesce_mode_alone(fresh_product_lab: Lab,
                                                     upgrade_cli: Callable[..., UpgradeRun]) -> None:
    """PRE-APPLY never turns quiesce mode on; its rollback has nothing to undo (it called quiesce off)."""
    lab = fresh_product_lab
    run = upgrade_cli(lab, profile="webmethods-cluster", extra={"vars": {"quiesce_port": 70000}})
    assert run.status is Status.PRE_APPLY_FAILED, run.out
    assert run.record["nodes"]["Node-A"]["phases"]["PRE-APPLY"]["outcome"] == "FAILED"
    assert "quiesce mode off" not in (run.run_dir / "Node-A.log").read_text()
    for node in lab.nodes:
        assert lab.running_versions(node.name) == ["1.0"]
        assert run.record["nodes"][node.name]["in_lb"] is True, node.name
