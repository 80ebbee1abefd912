"""The built-in ``docker`` profile, unmodified, on a 3-node lab whose nodes drive a real Docker engine.

Follows the Apinizer upgrade runbook, "Docker" tab (2.1 Quick Reference, 2.3 Worker: ``docker
stop -t 60 && docker rm``, ``docker run ... :${NEW}``; offline images 2.2.1.1: ``docker save`` /
``docker load -i``) and webMethods API Gateway's "a new container from an image already built
with the fix".  Each node (systemd, the docker CLI, the host engine's socket) runs its module
container ``<node container>-worker`` of ``<lab>/apinizer-worker:1.0``, started by the lab with a
typical ``docker run`` (restart policy, labels, env with spaces and quotes, a bind mount, log
options, stop timeout, host network on the node's address); 2.0 is only on the node as a ``docker
save`` tar in ``--new_install_dir`` (``zdu/lab/products.py``).
"""
from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path
from typing import Any, Callable

from tests.conftest import UpgradeRun, assert_fleet_settled, assert_rolled_back, shorten_deadlines
from zdu.config.profile import BUILTIN_DIR
from zdu.lab.fleet import Lab
from zdu.lab.products import DockerProduct
from zdu.status import Status

LAB_PRODUCT = "docker"
CARRIED = (("Config", "Env"), ("Config", "Labels"), ("Config", "StopTimeout"), ("Config", "Cmd"),
           ("HostConfig", "Binds"), ("HostConfig", "NetworkMode"), ("HostConfig", "RestartPolicy"),
           ("HostConfig", "LogConfig"), ("Name",))


def inspect(name: str) -> dict[str, Any]:
    proc = subprocess.run(["docker", "container", "inspect", name], capture_output=True, text=True, check=True)
    return dict(json.loads(proc.stdout)[0])


def carried(data: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for path in CARRIED:
        value: Any = data
        for key in path:
            value = value[key]
        out[".".join(path)] = sorted(value) if path == ("Config", "Env") else value   # docker merges env in its own order
    return out


def containers(lab: Lab) -> dict[str, str]:
    product = lab.product
    assert isinstance(product, DockerProduct)
    return {n.name: product.container(n) for n in lab.nodes}


def image_present(tag: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode == 0


def test_upgrade_under_traffic_keeps_every_run_argument(fresh_product_lab: Lab,
                                                        upgrade_cli: Callable[..., UpgradeRun]) -> None:
    lab = fresh_product_lab
    product = lab.product
    assert isinstance(product, DockerProduct)
    names = containers(lab)
    before = {n: carried(inspect(c)) for n, c in names.items()}
    assert "JAVA_OPTS=-Xms256m -Xmx512m -Dspring.profiles.active=prod -Dlog.file='$HOME/x y.log'" in \
        before["Node-A"]["Config.Env"]
    new_tag = product.image(lab, "2.0")
    assert not image_present(new_tag)                  # only the saved tar is on the nodes
    run = upgrade_cli(lab)
    assert run.status is Status.SUCCESS, run.out
    assert_fleet_settled(lab, run, "2.0")
    assert image_present(new_tag)                      # docker load brought it
    for node, name in names.items():
        after = inspect(name)
        assert after["Config"]["Image"] == new_tag and after["State"]["Running"] is True
        assert carried(after) == before[node], node    # the same docker run arguments, not retyped
        logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True).stdout
        assert "Started ApinizerWorkerApp" in logs and "(version 2.0)" in logs
    log = (run.run_dir / "Node-B.log").read_text()
    assert f"docker load -i {product.new_install_dir}/{product.image_tar('2.0')}" in log
    assert f"docker stop -t 5 {names['Node-B']}" in log and f"docker rm {names['Node-B']}" in log
    assert f"sh /var/tmp/zdupgrade/{run.record['run_id']}/run-new.sh" in log


def test_start_failure_in_apply_runs_the_old_tag_again(fresh_product_lab: Lab, tmp_path: Path,
                                                       upgrade_cli: Callable[..., UpgradeRun]) -> None:
    lab = fresh_product_lab
    names = containers(lab)
    before = {n: carried(inspect(c)) for n, c in names.items()}
    lab.inject_fault("Node-B", "start")                # the 2.0 container exits at start on Node-B
    profile = shorten_deadlines(BUILTIN_DIR / "docker.yaml", tmp_path / "docker-fast.yaml")
    run = upgrade_cli(lab, profile=profile)
    assert_rolled_back(lab, run, Status.APPLY_FAILED, "APPLY")
    old_tag = lab.product.image(lab, "1.0")  # type: ignore[attr-defined]
    for node, name in names.items():
        after = inspect(name)
        assert after["Config"]["Image"] == old_tag and after["State"]["Running"] is True, node
        assert carried(after) == before[node], node


def test_a_setting_it_cannot_carry_is_refused_before_anything_changes(
        fresh_product_lab: Lab, upgrade_cli: Callable[..., UpgradeRun]) -> None:
    lab = fresh_product_lab
    product = lab.product
    assert isinstance(product, DockerProduct)
    node = lab.node("Node-C")
    argv = product.run_argv(lab, node)
    argv[-1:-1] = ["--device", "/dev/null:/dev/zdu-null"]      # something `docker run` args must not lose
    code, out = lab.exec(node.name, f"docker rm -f {product.container(node)} && {shlex.join(argv)}")
    assert code == 0, out
    run = upgrade_cli(lab)
    assert run.status is Status.EXPORT_FAILED, run.out
    assert "cannot carry these settings of the container to the new one: Devices=" in \
        (run.run_dir / "Node-C.log").read_text()
    assert all(run.record["nodes"][n.name]["lb_calls"]["disable"] == 0 for n in lab.nodes)
    for n in lab.nodes:
        assert lab.running_versions(n.name) == ["1.0"]
