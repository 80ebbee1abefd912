"""The lab itself: real sshd nodes, the sample gateway (both versions, faults, graceful drain), HAProxy."""
from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import paramiko
import pytest
import yaml

from zdu.lab.fleet import Lab, LabError, http_get, ssh_banner, wait_until
from zdu.lab.image import node_image_tag
from zdu.config.profile import load_profile
from zdu.config.topology import load_topology

GW1 = "/opt/gateway-1.0/bin/gateway"
GW2 = "/opt/gateway-2.0/bin/gateway"
EXPORT = "/var/tmp/zdupgrade/t/export.json"


def ssh_client(lab: Lab, host: str, port: int, *, key: Path | None = None,
               known_hosts: Path | None = None) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.load_host_keys(str(known_hosts or lab.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(host, port=port, username="root", key_filename=str(key or lab.key_file),
                   look_for_keys=False, allow_agent=False, timeout=5, banner_timeout=5, auth_timeout=5)
    return client


def run(lab: Lab, node: str, cmd: str, *, expect: int | None = 0, timeout: float = 30) -> str:
    code, out = lab.exec(node, cmd, timeout=timeout)
    if expect is not None:
        assert code == expect, f"{cmd!r} on {node}: exit {code}\n{out}"
    return out


def upgrade_by_hand(lab: Lab, node: str) -> None:
    """EXPORT, UPGRADE, PRE-APPLY, APPLY of the lab profile, by docker exec."""
    host = lab.node(node).host
    run(lab, node, f"mkdir -p /var/tmp/zdupgrade/t && {GW1} export --out {EXPORT}")
    run(lab, node, f"{GW2} upgrade --from {EXPORT}")
    run(lab, node, f"{GW2} check")
    run(lab, node, f"{GW1} stop --timeout 10")
    run(lab, node, f"{GW2} start --host {host}")


def get_json(url: str) -> tuple[int, dict[str, Any]]:
    status, body = http_get(url)
    return status, json.loads(body)


# ---------------------------------------------------------------------------- ssh

def test_ssh_with_generated_key_and_strict_known_hosts(lab: Lab) -> None:
    lines = lab.known_hosts.read_text().splitlines()
    assert [line.split()[0] for line in lines] == [f"[{n.host}]:{n.ssh_port}" for n in lab.nodes]
    for node in lab.nodes:
        assert ssh_banner(node.host, node.ssh_port).startswith("SSH-2.0-OpenSSH")
        client = ssh_client(lab, node.host, node.ssh_port)
        try:
            _, stdout, _ = client.exec_command("cat /etc/gateway/node; id -u; /opt/gateway-1.0/bin/gateway status")
            out = stdout.read().decode().split("\n")
            assert stdout.channel.recv_exit_status() == 0
            assert out[0] == node.name and out[1] == "0" and out[2].startswith("gateway 1.0 running")
        finally:
            client.close()


def test_sshd_listens_only_on_its_own_address(lab: Lab) -> None:
    node = lab.nodes[0]
    assert ssh_banner("127.0.0.1", node.ssh_port, timeout=0.5) == ""
    assert ssh_banner("127.0.0.99", node.ssh_port, timeout=0.5) == ""


def test_unknown_client_key_is_refused(lab: Lab, tmp_path: Path) -> None:
    key = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    node = lab.nodes[0]
    with pytest.raises(paramiko.AuthenticationException):
        ssh_client(lab, node.host, node.ssh_port, key=key)


def test_unknown_or_wrong_host_key_is_refused(lab: Lab, tmp_path: Path) -> None:
    a, b = lab.nodes[0], lab.nodes[1]
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        ssh_client(lab, a.host, a.ssh_port, known_hosts=empty)
    # Node-B's host key filed under Node-A's address: a man in the middle
    swapped = tmp_path / "swapped_known_hosts"
    b_key = next(line for line in lab.known_hosts.read_text().splitlines() if line.startswith(f"[{b.host}]"))
    swapped.write_text(b_key.replace(f"[{b.host}]", f"[{a.host}]") + "\n")
    with pytest.raises(paramiko.BadHostKeyException):
        ssh_client(lab, a.host, a.ssh_port, known_hosts=swapped)


# ---------------------------------------------------------------------------- systemd

def test_nodes_boot_systemd_with_sshd_and_the_gateway_as_units(lab: Lab) -> None:
    for node in lab.nodes:
        assert run(lab, node.name, "cat /proc/1/comm").strip() == "systemd"
        state = run(lab, node.name, "systemctl is-system-running --wait", expect=None, timeout=30).strip()
        failed = run(lab, node.name, "systemctl list-units --failed --no-legend --plain")
        assert state == "running" and failed.strip() == "", (state, failed)
        assert run(lab, node.name, "systemctl is-active zdu-sshd.service gateway@1.0.service").split() == \
            ["active", "active"]
        sshd_pid = run(lab, node.name, "systemctl show -p MainPID --value zdu-sshd.service").strip()
        assert sshd_pid == run(lab, node.name, "cat /run/sshd-zdu.pid").strip()
        gateway_pid = run(lab, node.name, "systemctl show -p MainPID --value gateway@1.0.service").strip()
        assert gateway_pid == run(lab, node.name, "cat /opt/gateway-1.0/run/gateway.pid").strip()
        journal = run(lab, node.name, "journalctl -b -u gateway@1.0.service --no-pager -o cat")
        assert f"Started gateway 1.0 on {node.host}:{node.service_port}" in journal
        # the compat name=systemd hierarchy is the node's own, and writable (no "compat" errors)
        assert "compat systemd cgroup" not in run(lab, node.name, "journalctl -b --no-pager -o cat")


def test_gateway_start_and_stop_go_through_its_unit(fresh_lab: Lab) -> None:
    lab = fresh_lab
    node = lab.node("Node-B")
    run(lab, node.name, f"{GW1} stop --timeout 10")
    assert run(lab, node.name, "systemctl is-active gateway@1.0.service", expect=None).strip() == "inactive"
    run(lab, node.name, f"{GW1} start --host {node.host}")
    assert run(lab, node.name, "systemctl is-active gateway@1.0.service").strip() == "active"
    # systemctl itself works on it too
    run(lab, node.name, "systemctl restart gateway@1.0.service")
    wait_until(lambda: lab.served_version(node.name) == "1.0", timeout=10, what="gateway 1.0 after a restart")
    assert lab.running_versions(node.name) == ["1.0"]


def test_the_lab_waits_for_every_node_to_listen(fresh_lab: Lab) -> None:
    """A reset returns once every node listens again, not once HAProxy (which may not have seen
    the old process go) says UP: a test calling a node right after a reset found it refused."""
    lab = fresh_lab
    node = lab.node("Node-C")
    run(lab, node.name, f"{GW1} stop --timeout 10")
    with pytest.raises(LabError, match=f"Node-C to listen on port {node.service_port}"):
        lab.wait_serving(timeout=1)
    lab.reset()
    assert lab.served_version(node.name) == "1.0"          # at once, no wait of the test's own


# ---------------------------------------------------------------------------- gateway + haproxy

def test_each_gateway_answers_1_0_directly_and_through_haproxy(fresh_lab: Lab) -> None:
    lab = fresh_lab  # after other modules' runs: every server back UP before counting round-robin
    for node in lab.nodes:
        assert lab.served_version(node.name) == "1.0"
        assert lab.running_versions(node.name) == ["1.0"]
        status, body = get_json(node.url + "/health")
        assert status == 200 and body == {"version": "1.0", "node": node.name, "status": "ok"}
    lab.wait_servers_up()
    seen = set()
    for _ in range(10 * len(lab.nodes)):          # a loaded machine may fail a health check now and then
        status, body = get_json(lab.frontend_url + "/")
        assert status == 200 and body["version"] == "1.0"
        seen.add(body["node"])
        if seen == {n.name for n in lab.nodes}:
            break
    assert seen == {n.name for n in lab.nodes}     # roundrobin reaches every node


def test_haproxy_runtime_api_lists_the_servers(lab: Lab) -> None:
    states = lab.server_states()
    assert sorted(states) == ["node-a", "node-b", "node-c"]
    for node in lab.nodes:
        row = states[node.lb_server]
        assert row["srv_addr"] == node.host and row["srv_port"] == str(node.service_port)
        assert row["srv_op_state"] == "2" and row["srv_admin_state"] == "0"     # UP, ready
    assert "gateways" in lab.haproxy_cmd("show servers state")
    with socket.create_connection(lab.haproxy_tcp, timeout=5) as sock:   # the TCP runtime API
        sock.sendall(b"show servers state gateways\n")
        answer = b"".join(iter(lambda: sock.recv(65536), b"")).decode()
    assert all(name in answer for name in ("node-a", "node-b", "node-c"))


def test_manual_upgrade_serves_2_0(fresh_lab: Lab) -> None:
    lab = fresh_lab
    upgrade_by_hand(lab, "Node-A")
    assert lab.served_version("Node-A") == "2.0"
    assert lab.running_versions("Node-A") == ["2.0"]
    assert lab.served_version("Node-B") == "1.0"
    config = json.loads(run(lab, "Node-A", "cat /opt/gateway-2.0/conf/gateway.json"))
    assert config["listen"] == {"port": 8080}
    assert {r["name"] for r in config["routes"]} == {"orders", "billing"}
    assert config["secrets"]["admin_password"]
    log = run(lab, "Node-A", "cat /opt/gateway-2.0/logs/gateway.log")
    assert f"Started gateway 2.0 on {lab.node('Node-A').host}:8080" in log
    # and back: the APPLY rollback of the profile, by hand
    run(lab, "Node-A", f"{GW2} stop --timeout 10 && {GW1} start --host {lab.node('Node-A').host}")
    assert lab.served_version("Node-A") == "1.0" and lab.running_versions("Node-A") == ["1.0"]


def test_2_0_refuses_to_start_without_its_converted_config(fresh_lab: Lab) -> None:
    out = run(fresh_lab, "Node-B", f"{GW1} stop && {GW2} start --host {fresh_lab.node('Node-B').host}", expect=1)
    assert "missing config" in out
    assert fresh_lab.running_versions("Node-B") == []
    assert run(fresh_lab, "Node-B", f"{GW2} check", expect=1)


def test_sigterm_finishes_the_in_flight_request(fresh_lab: Lab) -> None:
    lab = fresh_lab
    node = lab.node("Node-A")
    result: dict[str, Any] = {}

    def slow() -> None:
        try:
            result["answer"] = http_get(node.url + "/slow?ms=1500&id=drain-test", timeout=10)
        except Exception as exc:  # noqa: BLE001
            result["error"] = exc

    thread = threading.Thread(target=slow)
    thread.start()
    wait_until(lambda: "slow request drain-test started" in run(lab, "Node-A", "cat /opt/gateway-1.0/logs/gateway.log"),
               timeout=5, interval=0.05, what="the slow request in flight")
    started = time.monotonic()
    run(lab, "Node-A", "kill -TERM $(cat /opt/gateway-1.0/run/gateway.pid)")

    def refused() -> bool:
        try:
            socket.create_connection((node.host, node.service_port), timeout=0.2).close()
            return False
        except ConnectionRefusedError:
            return True
    wait_until(refused, timeout=1, interval=0.02, what="new connections to be refused")
    assert thread.is_alive(), "the in-flight request ended before the drain"   # still draining
    thread.join(10)
    assert "error" not in result, result.get("error")
    status, body = result["answer"]
    assert status == 200 and json.loads(body)["slept_ms"] == 1500
    assert time.monotonic() - started < 3
    wait_until(lambda: lab.running_versions("Node-A") == [], timeout=5, what="gateway to exit")
    assert "Stopped gateway 1.0" in run(lab, "Node-A", "tail -n 3 /opt/gateway-1.0/logs/gateway.log")


def test_stop_kills_after_the_timeout(fresh_lab: Lab) -> None:
    lab = fresh_lab
    node = lab.node("Node-C")
    outcome: list[object] = []

    def doomed() -> None:
        try:
            outcome.append(http_get(node.url + "/slow?ms=20000", timeout=30))
        except (OSError, http.client.HTTPException) as exc:
            outcome.append(exc)

    thread = threading.Thread(target=doomed)
    thread.start()
    wait_until(lambda: "(20000 ms)" in run(lab, "Node-C", "cat /opt/gateway-1.0/logs/gateway.log"),
               timeout=5, what="the slow request in flight")
    started = time.monotonic()
    run(lab, "Node-C", f"{GW1} stop --timeout 0.5")
    assert time.monotonic() - started < 5
    thread.join(10)
    assert outcome and isinstance(outcome[0], Exception)      # the killed request was cut
    assert lab.running_versions("Node-C") == []
    assert "sending SIGKILL" in run(lab, "Node-C", "cat /opt/gateway-1.0/logs/gateway.log")


# ---------------------------------------------------------------------------- faults

def test_fault_export(fresh_lab: Lab) -> None:
    fresh_lab.inject_fault("Node-A", "export")
    out = run(fresh_lab, "Node-A", f"{GW1} export --out /tmp/e.json", expect=1)
    assert "injected fault: export" in out
    run(fresh_lab, "Node-B", f"{GW1} export --out /tmp/e.json")    # faults are per node


def test_fault_upgrade_and_check(fresh_lab: Lab) -> None:
    lab = fresh_lab
    run(lab, "Node-A", f"mkdir -p /var/tmp/zdupgrade/t && {GW1} export --out {EXPORT}")
    lab.inject_fault("Node-A", "upgrade")
    assert "injected fault: upgrade" in run(lab, "Node-A", f"{GW2} upgrade --from {EXPORT}", expect=1)
    run(lab, "Node-A", "test ! -e /opt/gateway-2.0/conf/gateway.json")
    lab.clear_faults("Node-A")
    run(lab, "Node-A", f"{GW2} upgrade --from {EXPORT}")
    lab.inject_fault("Node-A", "check")
    assert "injected fault: check" in run(lab, "Node-A", f"{GW2} check", expect=1)


def test_fault_start_never_listens_and_1_0_is_unaffected(fresh_lab: Lab) -> None:
    lab = fresh_lab
    for word in ("start", "check", "health"):
        lab.inject_fault("Node-A", word)
    run(lab, "Node-A", f"mkdir -p /var/tmp/zdupgrade/t && {GW1} export --out {EXPORT} && {GW2} upgrade --from {EXPORT}")
    run(lab, "Node-A", f"{GW1} stop")
    run(lab, "Node-A", f"{GW2} start --host {lab.node('Node-A').host}", expect=1)
    assert lab.running_versions("Node-A") == [] and lab.served_version("Node-A") is None
    assert "injected fault: start" in run(lab, "Node-A", "tail -n 5 /opt/gateway-2.0/logs/gateway.log")
    # rollback to 1.0 ignores the 2.0 faults
    run(lab, "Node-A", f"{GW1} check && {GW1} start --host {lab.node('Node-A').host}")
    status, body = get_json(lab.node("Node-A").url + "/health")
    assert status == 200 and body["version"] == "1.0"


def test_fault_health_fails_health_only_and_haproxy_sees_it(fresh_lab: Lab) -> None:
    lab = fresh_lab
    lab.inject_fault("Node-B", "health")
    upgrade_by_hand(lab, "Node-B")
    url = lab.node("Node-B").url
    assert http_get(url + "/health")[0] == 503
    assert lab.served_version("Node-B") == "2.0"
    wait_until(lambda: lab.server_states()["node-b"]["srv_op_state"] == "0", timeout=5,
               what="HAProxy to mark node-b DOWN")
    lab.clear_faults("Node-B")
    assert http_get(url + "/health")[0] == 200


def test_fault_stop_keeps_2_0_running(fresh_lab: Lab) -> None:
    lab = fresh_lab
    upgrade_by_hand(lab, "Node-C")
    lab.inject_fault("Node-C", "stop")
    run(lab, "Node-C", f"{GW2} stop", expect=1)
    assert lab.running_versions("Node-C") == ["2.0"]
    run(lab, "Node-C", f"{GW1} stop")     # 1.0 ignores it


def test_fault_hang_makes_the_command_hang(fresh_lab: Lab) -> None:
    fresh_lab.inject_fault("Node-A", "hang-export")
    started = time.monotonic()
    code, _ = fresh_lab.exec("Node-A", f"{GW1} export --out /tmp/e.json", timeout=1)
    assert code in (124, 137) and 1 <= time.monotonic() - started < 5


def test_unknown_fault_word_is_rejected(lab: Lab) -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        lab.inject_fault("Node-A", "explode")


# ---------------------------------------------------------------------------- node failures + reset

def test_kill_pause_kill_sshd_and_reset(fresh_lab: Lab) -> None:
    lab = fresh_lab
    a, b, c = lab.nodes
    lab.kill(a.name)
    lab.pause(b.name)
    lab.kill_sshd(c.name)
    assert lab.served_version(a.name) is None and ssh_banner(a.host, a.ssh_port, timeout=0.3) == ""
    assert ssh_banner(b.host, b.ssh_port, timeout=0.3) == ""          # paused: accepts, never answers
    assert ssh_banner(c.host, c.ssh_port, timeout=0.3) == "" and lab.served_version(c.name) == "1.0"
    lab.inject_fault(c.name, "check")
    run(lab, c.name, f"mkdir -p /var/tmp/zdupgrade/t && {GW1} export --out {EXPORT} && {GW2} upgrade --from {EXPORT}")
    started = time.monotonic()
    lab.reset()
    elapsed = time.monotonic() - started
    for node in lab.nodes:
        assert lab.running_versions(node.name) == ["1.0"]
        assert ssh_banner(node.host, node.ssh_port)
    run(lab, c.name, "test ! -e /etc/gateway/faults && test ! -e /opt/gateway-2.0/conf/gateway.json")
    client = ssh_client(lab, a.host, a.ssh_port)    # same host key after the crash
    client.close()
    assert all(s["srv_op_state"] == "2" and s["srv_admin_state"] == "0" for s in lab.server_states().values())
    assert elapsed < 15


def test_reset_readies_haproxy_servers(fresh_lab: Lab) -> None:
    fresh_lab.haproxy_cmd("set server gateways/node-a state maint")
    assert fresh_lab.server_states()["node-a"]["srv_admin_state"] != "0"
    fresh_lab.reset()
    assert fresh_lab.server_states()["node-a"]["srv_admin_state"] == "0"


def test_lb_hook_script_drives_haproxy(fresh_lab: Lab) -> None:
    lab = fresh_lab
    hook = str(lab.lb_script)
    subprocess.run([hook, "check", "Node-A"], check=True, timeout=10)
    assert subprocess.run([hook, "check", "Node-Z"], timeout=10).returncode != 0
    # the way zdu.lb.script calls it: node name as argument, server in the environment
    env = {**os.environ, "ZDU_LB_SERVER": "node-a", "ZDU_ACTION": "disable"}
    subprocess.run([hook, "disable", "Node-A"], check=True, timeout=40, env=env)
    assert lab.server_states()["node-a"]["srv_admin_state"] == "1"    # maint
    seen = {get_json(lab.frontend_url + "/")[1]["node"] for _ in range(6)}
    assert seen == {"Node-B", "Node-C"}
    subprocess.run([hook, "enable", "Node-A"], check=True, timeout=40)
    assert lab.server_states()["node-a"]["srv_op_state"] == "2"


# ---------------------------------------------------------------------------- topology + image

@pytest.mark.parametrize("lb", ["none", "haproxy", "script"])
def test_write_topology(lab: Lab, tmp_path: Path, lb: str) -> None:
    path = lab.write_topology(tmp_path / "topo.yaml", lb=lb, extra={"ssh": {"connect_timeout": 3}, "serial": 2})  # type: ignore[arg-type]
    doc = yaml.safe_load(path.read_text())
    assert doc["profile"] == "lab-gateway" and doc["serial"] == 2
    assert doc["ssh"] == {"user": "root", "key_file": str(lab.key_file), "known_hosts": str(lab.known_hosts),
                          "host_key_policy": "strict", "connect_timeout": 3, "command_timeout": 120}
    assert doc["nodes"][0] == {"name": "Node-A", "host": lab.node("Node-A").host, "port": 2222, "group": "Gateway",
                               "roles": ["gateway"], "lb_server": "node-a"}
    assert doc["load_balancer"]["type"] == lb
    if lb == "haproxy":
        assert doc["load_balancer"] == {"type": "haproxy", "socket": str(lab.haproxy_socket), "backend": "gateways"}
    topology = load_topology(path)          # the product reads it
    assert [n.name for n in topology.nodes] == ["Node-A", "Node-B", "Node-C"]
    assert topology.load_balancer.type == lb and topology.ssh.known_hosts == str(lab.known_hosts)
    assert [n.lb_name for n in topology.nodes] == [n.model().lb_name for n in lab.nodes]


def test_lab_gateway_profile_loads() -> None:
    profile = load_profile("lab-gateway")
    assert profile.name == "lab-gateway"
    assert [p.value for p in profile.phases] == ["EXPORT", "UPGRADE", "PRE-APPLY", "APPLY", "POST-APPLY"]
    assert [p.value for p in profile.rollback] == ["PRE-APPLY", "APPLY", "POST-APPLY"]
    assert profile.smoke


def test_image_tag_follows_the_lab_files(lab: Lab) -> None:
    assert lab.image == node_image_tag()
    assert lab.image.startswith("zdupgrade-node:") and len(lab.image.split(":")[1]) == 12


def test_lab_refuses_traffic_off_loopback() -> None:
    with pytest.raises(LabError, match="loopback"):
        http_get("http://10.0.0.1:8080/")
