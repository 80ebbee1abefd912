"""The ``webmethods-bluegreen`` rollback after APPLY asked the old instance to shut down with
option drain (001 step 4) while it is still draining a client session: the rollback must wait for
that shutdown to end before it starts the old instance and awaits its health -- else the draining
instance answers the health check, the rollback "passes", and once the drain ends the node runs
no instance at all.  The failure here is "the old instance is gone" giving up while the drain
goes on (the profile's deadline, made short in a copy; the shipped one follows ``drain_timeout``).
The plan side: tests/unit/test_profile_review_webmethods_bluegreen.py."""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable

import yaml

from tests.conftest import UpgradeRun, assert_rolled_back
from tests.integration.test_profile_webmethods import OLD_PORT, call, needs_http_steps
from zdu.config.profile import BUILTIN_DIR
from zdu.lab.fleet import Lab, wait_until
from zdu.status import Status

LAB_PRODUCT = "webmethods"
SLOW_MS = 25000          # a client session on Node-A's old instance, longer than the run's APPLY


def gone_gives_up_after(seconds: float, target: Path) -> Path:
    """The built-in profile with only the deadline of APPLY's "the old instance is gone" changed."""
    doc = yaml.safe_load((BUILTIN_DIR / "webmethods-bluegreen.yaml").read_text())
    [gone] = [s for s in doc["phases"]["APPLY"] if s["name"] == "the old instance is gone"]
    gone["wait"]["deadline"] = seconds
    target.write_text(yaml.safe_dump(doc, sort_keys=False))
    return target


@needs_http_steps
def test_apply_rollback_waits_for_the_drain_before_starting_the_old_instance(
        fresh_product_lab: Lab, upgrade_cli: Callable[..., UpgradeRun], tmp_path: Path) -> None:
    lab = fresh_product_lab
    node = lab.nodes[0]
    result: dict[str, Any] = {}

    def session() -> None:           # on the old instance (the only one yet), held through the drain
        result["answer"] = call(node.host, node.service_port, "GET", f"/slow?ms={SLOW_MS}", auth=False, timeout=60)
    thread = threading.Thread(target=session)
    thread.start()
    time.sleep(0.3)
    started = time.monotonic()
    run = upgrade_cli(lab, profile=gone_gives_up_after(3, tmp_path / "bluegreen-short-gone.yaml"))
    thread.join(60)
    assert result["answer"][0] == 200 and result["answer"][1]["version"] == "1.0"    # drained, not cut
    # the rollback ended after the drain did (it waited for the old instance to stop)
    assert time.monotonic() - started >= SLOW_MS / 1000 - 1, run.out
    assert_rolled_back(lab, run, Status.APPLY_FAILED, "APPLY", failed="Node-A", rolled_back=("Node-A",))
    time.sleep(2)                     # nothing still under way takes the old instance down afterwards
    assert lab.running_versions(node.name) == ["1.0"]
    assert call(node.host, OLD_PORT, "GET", "/rest/apigateway/health", auth=False)[1]["version"] == "1.0"
    wait_until(lambda: lab.served_version(node.name) == "1.0", timeout=5, what="Node-A serves 1.0")
    assert call(node.host, OLD_PORT, "POST", "/rest/apigateway/apis", {"apiName": "after"})[0] == 201
