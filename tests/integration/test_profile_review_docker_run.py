"""The built-in ``docker`` profile keeps the container's environment values out of the logs and its
work files private: the lab's module container is given a database URI with a password (as
Apinizer's are), which no profile ``secrets`` entry declares."""
from __future__ import annotations

from typing import Callable

from tests.conftest import UpgradeRun, assert_fleet_settled
from tests.integration.test_profile_docker import containers
from zdu.lab.fleet import Lab
from zdu.lab.products import DOCKER_DB_URI
from zdu.status import Status

LAB_PRODUCT = "docker"


def test_environment_values_not_logged_and_work_files_private(
        fresh_product_lab: Lab, upgrade_cli: Callable[..., UpgradeRun]) -> None:
    lab = fresh_product_lab
    run = upgrade_cli(lab)
    assert run.status is Status.SUCCESS, run.out
    assert_fleet_settled(lab, run, "2.0")
    password = "lab-Mongo-s3cret"
    assert password in DOCKER_DB_URI
    assert password not in run.out
    for path in run.run_dir.rglob("*"):
        if path.is_file():
            assert password not in path.read_text(errors="replace"), path
    log = (run.run_dir / "Node-B.log").read_text()
    assert "-e 'SPRING_DATA_MONGODB_URI=***'" in log and "run-new.sh: docker run -d --name" in log
    work_dir = f"/var/tmp/zdupgrade/{run.run_dir.name}"
    code, out = lab.exec("Node-B", f"stat -c '%a %n' {work_dir} {work_dir}/*")
    assert code == 0, out
    modes = dict(reversed(line.split(" ", 1)) for line in out.strip().splitlines())
    assert modes.pop(work_dir) == "700", modes
    assert {f"{work_dir}/{f}" for f in ("container.json", "old-image.json", "run-new.sh", "run-old.sh")} <= set(modes)
    assert set(modes.values()) == {"600"}, modes
    # the new container got the value itself
    code, out = lab.exec("Node-B", f"docker container inspect -f '{{{{json .Config.Env}}}}' {containers(lab)['Node-B']}")
    assert f"SPRING_DATA_MONGODB_URI={DOCKER_DB_URI}" in out
