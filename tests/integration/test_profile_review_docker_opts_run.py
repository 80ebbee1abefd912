"""The built-in ``docker`` profile keeps the values of the container's labels and log options out
of the logs (as it does its environment values: tests/integration/test_profile_review_docker_run.py):
the lab's module container carries a reverse proxy's basic-auth users in a label and a token-like
log tag (``zdu/lab/products.py``), which no profile ``secrets`` entry declares -- and the new
container still gets both values.  The script alone: tests/unit/test_profile_review_docker.py."""
from __future__ import annotations

import json
from typing import Callable

from tests.conftest import UpgradeRun, assert_fleet_settled
from tests.integration.test_profile_docker import containers, inspect
from zdu.lab.fleet import Lab
from zdu.lab.products import DOCKER_AUTH_LABEL, DOCKER_LOG_TAG
from zdu.status import Status

LAB_PRODUCT = "docker"


def test_label_and_log_option_values_not_logged(fresh_product_lab: Lab,
                                                upgrade_cli: Callable[..., UpgradeRun]) -> None:
    lab = fresh_product_lab
    key, value = DOCKER_AUTH_LABEL
    secrets = ("lab-Label-s3cret", DOCKER_LOG_TAG)
    assert secrets[0] in value
    run = upgrade_cli(lab)
    assert run.status is Status.SUCCESS, run.out
    assert_fleet_settled(lab, run, "2.0")
    for secret in secrets:
        assert secret not in run.out
        for path in run.run_dir.rglob("*"):
            if path.is_file():
                assert secret not in path.read_text(errors="replace"), (secret, path)
    log = (run.run_dir / "Node-B.log").read_text()
    assert f"--label '{key}=***'" in log or f"--label {key}=***" in log, log
    assert "--log-opt 'tag=***'" in log or "--log-opt tag=***" in log, log
    after = inspect(containers(lab)["Node-B"])         # the new container got the values themselves
    assert after["Config"]["Labels"][key] == value, json.dumps(after["Config"]["Labels"])
    assert after["HostConfig"]["LogConfig"]["Config"]["tag"] == DOCKER_LOG_TAG
