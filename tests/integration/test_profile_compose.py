"""The built-in ``compose`` profile, unmodified, on a 3-node lab of docker-compose data-plane gateways.

Follows API7 Enterprise "Rolling Upgrade" (DP Upgrade steps 5-8: change the api7-ee-3-gateway
image version in the docker-compose file, restart the instances with it, test, go on; rollback)
and the compose variant of the Apinizer "Docker" tab.  Each node (systemd, docker CLI and
docker-compose from Debian bookworm -- compose v1.29.2, ``docker-compose``; bookworm has no
``docker compose`` plugin -- driving the host's engine) has the project ``/opt/api7-dp`` with
service ``api7-ee-3-gateway`` of ``<lab>/api7-ee-3-gateway:1.0``; 2.0 is on the node only as a
``docker save`` tar (``zdu/lab/products.py``).
"""
from __future__ import annotations

import difflib
import subprocess
from pathlib import Path
from typing import Callable

from tests.conftest import UpgradeRun, assert_fleet_settled, assert_rolled_back, shorten_deadlines
from zdu.config.profile import BUILTIN_DIR
from zdu.lab.fleet import Lab
from zdu.lab.products import ComposeProduct
from zdu.status import Status

LAB_PRODUCT = "compose"
FILE = "/opt/api7-dp/docker-compose.yml"


def compose_file(lab: Lab, node: str) -> str:
    code, out = lab.exec(node, f"cat {FILE}")
    assert code == 0, out
    return out


def service_image(lab: Lab, node: str) -> str:
    code, out = lab.exec(node, "cd /opt/api7-dp && docker inspect -f '{{.Config.Image}}' "
                               "$(docker-compose ps -q api7-ee-3-gateway)")
    assert code == 0, out
    return out.strip()


def test_upgrade_under_traffic_changes_only_the_tag(fresh_product_lab: Lab,
                                                    upgrade_cli: Callable[..., UpgradeRun]) -> None:
    lab = fresh_product_lab
    product = lab.product
    assert isinstance(product, ComposeProduct)
    old, new = product.image(lab, "1.0"), product.image(lab, "2.0")
    before = {n.name: compose_file(lab, n.name) for n in lab.nodes}
    run = upgrade_cli(lab)
    assert run.status is Status.SUCCESS, run.out
    assert_fleet_settled(lab, run, "2.0")
    for node in lab.nodes:
        after = compose_file(lab, node.name)
        changed = [line for line in difflib.ndiff(before[node.name].splitlines(), after.splitlines())
                   if line.startswith(("- ", "+ "))]
        assert changed == [f"-     image: {old}", f"+     image: {new}"], changed
        assert service_image(lab, node.name) == new
    log = (run.run_dir / "Node-A.log").read_text()
    assert f"docker load -i {product.new_install_dir}/{product.image_tar('2.0')}" in log
    assert "docker-compose -f docker-compose.yml up -d api7-ee-3-gateway" in log
    # one gateway container per project, recreated (not a second one beside the old)
    ps = subprocess.run(["docker", "ps", "-a", "--filter", f"label=com.docker.compose.project="
                         f"{product.project(lab.node('Node-A'))}", "--format", "{{.Image}}"],
                        capture_output=True, text=True, check=True).stdout.split()
    assert ps == [new]


def test_unhealthy_new_version_restores_the_file_and_the_old_tag(
        fresh_product_lab: Lab, tmp_path: Path, upgrade_cli: Callable[..., UpgradeRun]) -> None:
    lab = fresh_product_lab
    product = lab.product
    assert isinstance(product, ComposeProduct)
    before = {n.name: compose_file(lab, n.name) for n in lab.nodes}
    lab.inject_fault("Node-B", "health")               # 2.0 on Node-B starts, but /health answers 503
    profile = shorten_deadlines(BUILTIN_DIR / "compose.yaml", tmp_path / "compose-fast.yaml")
    run = upgrade_cli(lab, profile=profile)
    assert_rolled_back(lab, run, Status.APPLY_FAILED, "APPLY")
    for node in lab.nodes:
        assert compose_file(lab, node.name) == before[node.name], node.name
        assert service_image(lab, node.name) == product.image(lab, "1.0")
