"""webMethods API Gateway: the lab stand-in's REST interface, and the two profiles run on it.

The stand-in (``zdu/lab/webmethods/apigateway.py``) implements the interface of two documents in
``../shared/seeds/``; each test below names the document and the step it follows:

* 001 "Upgrade Standalone Deployment" (blue-green): step 1 ``PUT /rest/apigateway/quiescemode``
  ``{"enable": true, "block": "designtime"}`` -> 200, then 503 for design-time calls except all
  GET requests, ``quiescemode``, ``search``, ``searchApis``; ``GET rest/apigateway/quiescemode``
  "success"; step 3 both versions serve; step 4 ``POST /rest/apigateway/shutdown`` with
  ``option: drain``.  (The document lists the calls allowed during the design-time quiesce and
  shutdown is not among them, yet step 4 calls it on that instance: the stand-in allows it.)
* 004 "Zero downtime upgrade of minor versions for cluster": the quiesce-port prerequisite
  (``POST /rest/apigateway/ports``, ``PUT rest/apigateway/ports/enable``, ``PUT
  invoke/wm.server.quiesce/setQuiescePort``), step 1 quiesce mode for all with flush -> 200 at
  once, ``GET /rest/apigateway/health`` through the quiesce port 200 while in progress and
  anything else once complete; steps 2-3 shutdown and start of the fixed node.

The profile runs (``webmethods-cluster``, ``webmethods-bluegreen``) need the profile ``http``
step; until zdupgrade has it they are expected to fail at loading the profile (strict xfail).
"""
from __future__ import annotations

import base64
import http.client
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.conftest import UpgradeRun, assert_fleet_settled, assert_rolled_back, shorten_deadlines
from zdu.config.profile import BUILTIN_DIR, load_profile
from zdu.errors import ConfigError
from zdu.lab.fleet import Lab, wait_until
from zdu.lab.products import WM_PASSWORD
from zdu.status import Status

LAB_PRODUCT = "webmethods"
OLD_PORT, NEW_PORT, QUIESCE_PORT = 5555, 5556, 4444
AUTH = {"Authorization": "Basic " + base64.b64encode(f"Administrator:{WM_PASSWORD}".encode()).decode()}


def call(host: str, port: int, method: str, path: str, body: Any = None, *,
         auth: bool = True, timeout: float = 10) -> tuple[int, dict[str, Any]]:
    """One HTTP request to the stand-in (loopback only); (status, JSON answer)."""
    assert host.startswith("127.")
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        headers = {"Accept": "application/json", **(AUTH if auth else {})}
        data = None if body is None else json.dumps(body).encode()
        if data is not None:
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, (json.loads(raw) if raw.strip() else {})
    finally:
        conn.close()


def refused(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=0.5).close()
        return False
    except ConnectionRefusedError:
        return True


def create_quiesce_port(host: str) -> None:
    """004, prerequisite: create, enable and set the quiesce port (4444, QuiescePort)."""
    assert call(host, OLD_PORT, "POST", "/rest/apigateway/ports",
                {"factoryKey": "webMethods/HTTP", "pkg": "WmRoot", "port": "4444", "portAlias": "QuiescePort"})[0] == 200
    assert call(host, OLD_PORT, "PUT", "/rest/apigateway/ports/enable",
                {"listenerKey": "HTTPListener@4444", "pkg": "WmRoot", "requestServiceStatus": ""})[0] == 200
    assert call(host, OLD_PORT, "PUT", "/invoke/wm.server.quiesce/setQuiescePort", {"portAlias": "QuiescePort"})[0] == 200


# ---------------------------------------------------------------------------- the stand-in itself

def test_rest_needs_the_administrator_except_health(product_lab: Lab) -> None:
    host = product_lab.nodes[0].host
    assert call(host, OLD_PORT, "GET", "/rest/apigateway/quiescemode", auth=False)[0] == 401
    assert call(host, OLD_PORT, "GET", "/rest/apigateway/health", auth=False) == \
        (200, {"status": "green", "version": "1.0"})
    assert call(host, OLD_PORT, "PUT", "/rest/apigateway/quiescemode", {"enable": "maybe"})[0] == 400
    assert refused(host, NEW_PORT)                      # 2.0 is installed, not running


def test_001_step_1_design_time_quiesce_blocks_changes_with_503(fresh_product_lab: Lab) -> None:
    """001 step 1: design-time calls answer 503 except all GETs, quiescemode, search, searchApis."""
    lab = fresh_product_lab
    host = lab.nodes[0].host
    assert call(host, OLD_PORT, "POST", "/rest/apigateway/apis", {"apiName": "before"})[0] == 201
    status, answer = call(host, OLD_PORT, "PUT", "/rest/apigateway/quiescemode", {"enable": True, "block": "designtime"})
    assert status == 200 and answer["block"] == "designtime"
    assert call(host, OLD_PORT, "POST", "/rest/apigateway/apis", {"apiName": "during"})[0] == 503
    assert call(host, OLD_PORT, "PUT", "/rest/apigateway/ports/enable", {"listenerKey": "x"})[0] == 503
    assert call(host, OLD_PORT, "GET", "/rest/apigateway/apis")[0] == 200
    assert call(host, OLD_PORT, "POST", "/rest/apigateway/search", {})[0] == 200
    assert call(host, OLD_PORT, "POST", "/rest/facade/apigateway/searchApis", {})[0] == 200
    wait_until(lambda: call(host, OLD_PORT, "GET", "/rest/apigateway/quiescemode")[1]["status"] == "success",
               timeout=10, what="design-time quiesce complete")
    assert lab.served_version(lab.nodes[0].name) == "1.0"        # runtime traffic is not blocked
    assert call(host, OLD_PORT, "PUT", "/rest/apigateway/quiescemode", {"enable": False})[0] == 200
    assert call(host, OLD_PORT, "POST", "/rest/apigateway/apis", {"apiName": "after"})[0] == 201


def test_004_quiesce_port_and_quiesce_for_all_with_flush(fresh_product_lab: Lab) -> None:
    """004 prerequisite and step 1: health through the quiesce port is 200 until the quiesce completes."""
    lab = fresh_product_lab
    node = lab.nodes[1]
    assert call(node.host, OLD_PORT, "PUT", "/rest/apigateway/ports/enable",
                {"listenerKey": "HTTPListener@4444", "pkg": "WmRoot", "requestServiceStatus": ""})[0] == 404
    assert call(node.host, OLD_PORT, "PUT", "/invoke/wm.server.quiesce/setQuiescePort",
                {"portAlias": "QuiescePort"})[0] == 404
    assert call(node.host, OLD_PORT, "POST", "/rest/apigateway/ports",
                {"factoryKey": "webMethods/HTTP", "pkg": "WmRoot", "port": "4444", "portAlias": "QuiescePort"})[0] == 200
    assert refused(node.host, QUIESCE_PORT)              # created, not enabled yet
    create_quiesce_port(node.host)                       # the same again: still 200
    assert call(node.host, QUIESCE_PORT, "GET", "/rest/apigateway/health", auth=False)[0] == 200
    status, _ = call(node.host, OLD_PORT, "PUT", "/rest/apigateway/quiescemode",
                     {"block": "all", "flush": ["license_metrics", "performance_metrics", "subscription_quota"],
                      "enable": True})
    assert status == 200                                 # answered while the operation goes on (next line)
    assert call(node.host, QUIESCE_PORT, "GET", "/rest/apigateway/health", auth=False)[0] == 200   # in progress
    wait_until(lambda: refused(node.host, node.service_port), timeout=5, what="runtime port closed")
    wait_until(lambda: call(node.host, QUIESCE_PORT, "GET", "/rest/apigateway/health", auth=False)[0] != 200,
               timeout=30, what="quiesce for all complete")
    assert call(node.host, OLD_PORT, "POST", "/rest/apigateway/apis", {"apiName": "x"})[0] == 503


def test_001_steps_3_4_both_serve_then_shutdown_drains(fresh_product_lab: Lab) -> None:
    """001 step 3 (both versions serve the transactions) and step 4 (shutdown, option drain)."""
    lab = fresh_product_lab
    node = lab.nodes[2]
    result: dict[str, Any] = {}

    def slow() -> None:   # in flight on the old instance (the only one yet) when it is shut down
        result["answer"] = call(node.host, node.service_port, "GET", "/slow?ms=5000", auth=False, timeout=30)
    thread = threading.Thread(target=slow)
    thread.start()
    time.sleep(0.3)                                      # connected to 1.0 before 2.0 binds the port
    code, out = lab.exec(node.name, "/opt/softwareag-2.0/profiles/IS_default/bin/startup.sh")
    assert code == 0, out
    wait_until(lambda: call(node.host, NEW_PORT, "GET", "/rest/apigateway/health", auth=False)[0] == 200,
               timeout=10, what="2.0 healthy")
    seen = {call(node.host, node.service_port, "GET", "/", auth=False)[1]["version"] for _ in range(40)}
    assert seen == {"1.0", "2.0"}
    assert thread.is_alive()
    status, _ = call(node.host, OLD_PORT, "POST", "/rest/apigateway/shutdown",
                     {"bounce": "false", "option": "drain", "timeout": 20, "quiesce": "false"})
    assert status == 200
    thread.join(40)
    assert result["answer"][0] == 200 and result["answer"][1]["version"] == "1.0"   # drained, not cut
    wait_until(lambda: refused(node.host, OLD_PORT), timeout=15, what="the old instance gone")
    assert lab.running_versions(node.name) == ["2.0"]
    assert {call(node.host, node.service_port, "GET", "/", auth=False)[1]["version"] for _ in range(10)} == {"2.0"}


# ---------------------------------------------------------------------------- the profiles

def _http_steps_supported() -> bool:
    try:
        load_profile("webmethods-cluster")
        return True
    except ConfigError:
        return False


needs_http_steps = pytest.mark.xfail(not _http_steps_supported(), strict=True, raises=ConfigError,
                                     reason="zdupgrade has no profile 'http' step yet")


@needs_http_steps
@pytest.mark.parametrize("profile", ["webmethods-cluster", "webmethods-bluegreen"])
def test_upgrade_under_traffic(fresh_product_lab: Lab, upgrade_cli: Callable[..., UpgradeRun], profile: str) -> None:
    lab = fresh_product_lab
    load_profile(profile)
    run = upgrade_cli(lab, profile=profile)
    assert run.status is Status.SUCCESS, run.out
    assert_fleet_settled(lab, run, "2.0")
    for node in lab.nodes:
        assert refused(node.host, OLD_PORT)
        assert call(node.host, NEW_PORT, "GET", "/rest/apigateway/health", auth=False)[0] == 200
    logs = "".join(p.read_text() for p in run.run_dir.iterdir() if p.is_file())
    assert WM_PASSWORD not in logs                       # the admin password is a profile secret


@needs_http_steps
@pytest.mark.parametrize("profile,phase", [("webmethods-cluster", "APPLY"), ("webmethods-bluegreen", "PRE-APPLY")])
def test_unhealthy_new_instance_rolls_back(fresh_product_lab: Lab, upgrade_cli: Callable[..., UpgradeRun],
                                           tmp_path: Path, profile: str, phase: str) -> None:
    lab = fresh_product_lab
    load_profile(profile)
    lab.inject_fault("Node-B", "health")                 # 2.0's health resource answers 503 on Node-B
    fast = shorten_deadlines(BUILTIN_DIR / f"{profile}.yaml", tmp_path / f"{profile}-fast.yaml")
    run = upgrade_cli(lab, profile=fast)
    expected = Status.APPLY_FAILED if phase == "APPLY" else Status.PRE_APPLY_FAILED
    assert_rolled_back(lab, run, expected, phase)
    for node in lab.nodes:      # the old instance serves, out of quiesce mode
        assert call(node.host, OLD_PORT, "POST", "/rest/apigateway/apis", {"apiName": "after"})[0] == 201
