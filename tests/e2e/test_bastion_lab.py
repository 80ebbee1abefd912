"""Reaching a fleet through a real bastion, on the lab, under traffic (issue 8, "How it is proven").

A lab of its own for this module (``Lab(bastion_subnet=...)``, see ``Lab._link_bastion``): three
nodes booting systemd with the sample gateway behind a real HAProxy, and a fourth container, the
bastion, in a network namespace of its own.  The nodes' sshd let in only logins that come from
the bastion's address (``AllowUsers *@BASTION``): from this machine every connection to a node's
loopback address comes from 127.0.0.1, from the bastion from its own address, so a direct login
is refused by the node itself while HAProxy and the traffic probe still reach the gateways.

* direct: refused, nothing touched;
* a full upgrade under traffic through the bastion, set by ``ssh.proxy_jump``, and once by
  ``~/.ssh/config`` alone (a test HOME: Host pattern, alias of the bastion, User, Port,
  IdentityFile, ProxyJump);
* a bastion whose host key is refused, a dead bastion, an alias ssh_config does not know: one
  clear error each, before any node is touched;
* ``--inventory`` (an Ansible inventory of the lab, its ProxyJump in ``ansible_ssh_common_args``)
  with ``--limit``.
"""
from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from tests.conftest import UpgradeRun, assert_fleet_settled
from tests.support.dns import NxdomainServer, resolv_conf_wrapper
from tests.support.labruns import (accepted_logins, assert_all_in_haproxy, assert_traffic_clean, assert_unlocked,
                                   assert_untouched, finish, module_lab, node_versions, reset_around, start_upgrade)
from zdu.lab.fleet import Lab
from zdu.status import Status

pytestmark = pytest.mark.lab

NODES = ["Node-A", "Node-B", "Node-C"]
#: no ssh_config of this machine (or of its root) plays a part unless a test gives one
FAST: dict[str, Any] = {"ssh": {"connect_timeout": 3, "connect_retries": 1, "config_file": "none"}}


@pytest.fixture(scope="module")
def bastion_lab() -> Iterator[Lab]:
    yield from module_lab("bastion")


@pytest.fixture
def lab(bastion_lab: Lab) -> Iterator[Lab]:
    yield from reset_around(bastion_lab)


def fingerprint(public_key: str) -> str:
    """``SHA256:...`` of an OpenSSH public key line, as ssh-keygen -l prints it."""
    blob = base64.b64decode(public_key.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def logins(lab: Lab) -> dict[str, int]:
    """How many logins each node's and the bastion's sshd accepted so far."""
    return {name: len(accepted_logins(lab, name)) for name in [*NODES, "Bastion"]}


def topology(lab: Lab, path: Path, **extra: Any) -> Path:
    return lab.write_topology(path, lb="haproxy", extra={**FAST, **extra,
                                                         "ssh": {**FAST["ssh"], **extra.get("ssh", {})}})


def upgrade(lab: Lab, tmp_path: Path, config: Path, *args: str, env: dict[str, str] | None = None,
            prefix: list[str] | tuple[str, ...] = ()) -> UpgradeRun:
    return finish(start_upgrade(lab, tmp_path, config, *args, env=env, prefix=prefix))


def assert_logins_from_the_bastion(lab: Lab, before: dict[str, int]) -> None:
    """Every node was logged into since ``before``, and only ever from the bastion's address."""
    assert lab.bastion is not None
    for name in NODES:
        sources = accepted_logins(lab, name)
        assert len(sources) > before[name], (name, sources)
        assert set(sources) == {lab.bastion.host}, (name, sources)


# --------------------------------------------------------------------------- the only way in

def refusals(lab: Lab) -> dict[str, int]:
    """How many logins from this machine (127.0.0.1) each node's sshd refused so far."""
    def count(name: str) -> int:
        code, journal = lab.exec(name, "journalctl -q -u zdu-sshd.service --no-pager -o cat")
        assert code == 0, journal
        return journal.count("User root from 127.0.0.1 not allowed because not listed in AllowUsers")
    return {name: count(name) for name in NODES}


def test_direct_logins_are_refused_and_nothing_is_touched(lab: Lab, tmp_path: Path) -> None:
    before, refused = logins(lab), refusals(lab)
    run = upgrade(lab, tmp_path, topology(lab, tmp_path / "topology.yaml"))
    assert run.status is Status.NODE_UNREACHABLE, run.out
    # each node's own sshd said no, to the right key: the bastion is the only way in
    assert run.record["preflight_problems"] == [
        f"{node.name}: authentication as root@{node.host}:{node.ssh_port} with key {lab.key_file} was refused"
        for node in lab.nodes], run.out
    assert all(refusals(lab)[n] > refused[n] for n in NODES), (refusals(lab), refused)
    assert logins(lab) == before
    assert_untouched(lab, run)


def test_upgrade_through_the_bastion_by_proxy_jump(lab: Lab, tmp_path: Path) -> None:
    assert lab.bastion is not None
    before = logins(lab)
    run = upgrade(lab, tmp_path, topology(lab, tmp_path / "topology.yaml", ssh={"proxy_jump": lab.bastion_jump}))
    assert run.status is Status.SUCCESS, run.out
    assert_fleet_settled(lab, run, "2.0")
    assert_unlocked(lab)
    assert_logins_from_the_bastion(lab, before)
    for name in NODES:                # run.json says how each node was reached
        target = run.record["targets"][name]
        assert [(j["address"], j["port"], j["user"]) for j in target["jumps"]] == [
            (lab.bastion.host, lab.bastion.ssh_port, "root")], target
    # the nodes behind the bastion shared one connection to it (preflight and run alike)
    assert logins(lab)["Bastion"] == before["Bastion"] + 1


def ssh_home(lab: Lab, home: Path) -> dict[str, str]:
    """A HOME whose ~/.ssh/config says how to reach the lab: the nodes by a Host pattern, through
    the bastion by its alias; the lab's host keys in ~/.ssh/known_hosts.  Returns the environment."""
    assert lab.bastion is not None
    ssh = home / ".ssh"
    ssh.mkdir(parents=True, mode=0o700)
    network = lab.nodes[0].host.rsplit(".", 1)[0]
    (ssh / "config").write_text(f"""\
Host jumpbox
    HostName {lab.bastion.host}
    Port {lab.bastion.ssh_port}
    User root
    IdentityFile {lab.key_file}

Host {network}.*
    Port {lab.nodes[0].ssh_port}
    User root
    IdentityFile {lab.key_file}
    ProxyJump jumpbox

Host *
    ConnectTimeout 3
""")
    (ssh / "known_hosts").write_text(lab.known_hosts.read_text())
    # no agent: the key must be the one ssh_config names
    return {**{k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}, "HOME": str(home)}


def bare_topology(lab: Lab, path: Path, nodes: list[dict[str, Any]] | None = None) -> Path:
    """The lab's topology with nothing about ssh but the host-key policy: user, key, known_hosts,
    ports and jump hosts come from ssh_config."""
    doc = yaml.safe_load(lab.write_topology(path, lb="haproxy").read_text())
    doc["ssh"] = {"host_key_policy": "strict", "connect_retries": 1}
    for node in doc["nodes"]:
        del node["port"]
    if nodes is not None:
        doc["nodes"] = nodes
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_upgrade_through_the_bastion_by_ssh_config(lab: Lab, tmp_path: Path) -> None:
    assert lab.bastion is not None
    env = ssh_home(lab, tmp_path / "home")
    config = bare_topology(lab, tmp_path / "topology.yaml")
    before = logins(lab)
    run = upgrade(lab, tmp_path, config, env=env)
    assert run.status is Status.SUCCESS, run.out
    assert_fleet_settled(lab, run, "2.0")
    assert_unlocked(lab)
    assert_logins_from_the_bastion(lab, before)
    # what each node resolved to, and where each value came from
    for node in lab.nodes:
        target = run.record["targets"][node.name]
        assert (target["address"], target["port"], target["user"], target["key_files"]) == (
            node.host, node.ssh_port, "root", [str(lab.key_file)]), target
        assert [(j["alias"], j["address"], j["port"]) for j in target["jumps"]] == [
            ("jumpbox", lab.bastion.host, lab.bastion.ssh_port)], target
        assert {k: target["sources"][k] for k in ("port", "user", "key_files", "jumps")} == dict.fromkeys(
            ("port", "user", "key_files", "jumps"), "ssh_config"), target["sources"]
        assert target["config_files"][0] == str(tmp_path / "home" / ".ssh" / "config")


# --------------------------------------------------------------------------- refused before anything is touched

def test_a_refused_bastion_host_key(lab: Lab, tmp_path: Path) -> None:
    assert lab.bastion is not None
    # known_hosts holds another key for the bastion: a changed host key, as a man in the middle shows
    known = tmp_path / "known_hosts"
    known.write_text("".join(line if not line.startswith(f"[{lab.bastion.host}]") else
                             f"[{lab.bastion.host}]:{lab.bastion.ssh_port} {lab.host_public_key('Node-A')}\n"
                             for line in lab.known_hosts.read_text().splitlines(keepends=True)))
    before = logins(lab)
    run = upgrade(lab, tmp_path, topology(lab, tmp_path / "topology.yaml",
                                          ssh={"proxy_jump": lab.bastion_jump, "known_hosts": str(known)}))
    assert run.status is Status.NODE_UNREACHABLE, run.out
    # one problem, naming the bastion, both fingerprints and the nodes behind it; nothing else tried
    assert run.record["preflight_problems"] == [next(
        line[4:] for line in run.out.splitlines() if line.startswith(f"  - bastion {lab.bastion_jump}: "))]
    problem = run.record["preflight_problems"][0]
    assert f"HOST KEY CHANGED for {lab.bastion.host}:{lab.bastion.ssh_port}" in problem, problem
    assert fingerprint(lab.host_public_key("Node-A")) in problem and fingerprint(
        lab.host_public_key("Bastion")) in problem, problem
    assert problem.endswith("known_hosts); nodes behind it: Node-A, Node-B, Node-C"), problem
    assert logins(lab) == before
    assert_untouched(lab, run)


def test_a_dead_bastion(lab: Lab, tmp_path: Path) -> None:
    assert lab.bastion is not None
    lab.kill_sshd("Bastion")
    before = logins(lab)
    run = upgrade(lab, tmp_path, topology(lab, tmp_path / "topology.yaml", ssh={"proxy_jump": lab.bastion_jump}))
    assert run.status is Status.NODE_UNREACHABLE, run.out
    assert run.record["preflight_problems"] == [
        f"bastion {lab.bastion_jump}: cannot connect to {lab.bastion.host}:{lab.bastion.ssh_port}: connection "
        "refused (tried 2 times); nodes behind it: Node-A, Node-B, Node-C"], run.out
    assert logins(lab) == before
    assert_untouched(lab, run)


def test_an_alias_ssh_config_does_not_know(lab: Lab, tmp_path: Path) -> None:
    env = ssh_home(lab, tmp_path / "home")
    nodes = yaml.safe_load(bare_topology(lab, tmp_path / "t.yaml").read_text())["nodes"]
    nodes[2]["host"] = "gw-unknown"          # a typo: neither ssh_config nor DNS knows it
    config = bare_topology(lab, tmp_path / "topology.yaml", nodes=nodes)
    # the name is looked up in "DNS": a server on loopback that knows no name, as a real one would
    # answer, so that the lookup never leaves this machine
    dns = NxdomainServer(lab.nodes[0].host.rsplit(".", 1)[0] + ".53")
    before = logins(lab)
    try:
        run = start_upgrade(lab, tmp_path, config, env=env,
                            prefix=resolv_conf_wrapper(tmp_path / "resolv.conf", dns.address))
        code = run.wait(60)
    finally:
        dns.close()
    assert code == Status.CONFIG_ERROR, run.text()
    assert run.text().strip() == (
        f"zdupgrade: error: node Node-C: cannot resolve host 'gw-unknown': it is not a Host alias in ssh_config "
        f"({tmp_path / 'home' / '.ssh' / 'config'}, /etc/ssh/ssh_config) and does not resolve in DNS "
        "(Name or service not known)"), run.text()
    assert "gw-unknown" in dns.queries
    # refused before anything was contacted: not the bastion, not the nodes it could have reached
    assert logins(lab) == before and not (tmp_path / "logs").exists()
    assert node_versions(lab) == {n: ["1.0"] for n in NODES}
    assert_all_in_haproxy(lab)
    assert_unlocked(lab)


# --------------------------------------------------------------------------- --inventory and --limit

def test_inventory_and_limit_through_the_bastion(lab: Lab, tmp_path: Path) -> None:
    assert lab.bastion is not None
    a, b, c = lab.nodes
    inventory = tmp_path / "hosts.ini"
    inventory.write_text(f"""\
[edge]
node-a ansible_host={a.host}
node-b ansible_host={b.host}

[core]
node-c ansible_host={c.host}

[gateways:children]
edge
core

[gateways:vars]
ansible_port={a.ssh_port}
ansible_user=root
ansible_ssh_private_key_file={lab.key_file}
ansible_ssh_common_args='-o ProxyJump={lab.bastion_jump}'
""")
    # the other settings (profile, load balancer, known_hosts, the key for the bastion) from a
    # topology without nodes
    doc = yaml.safe_load(topology(lab, tmp_path / "full.yaml").read_text())
    del doc["nodes"]
    del doc["ssh"]["user"]
    config = tmp_path / "topology.yaml"
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    before = logins(lab)
    run = upgrade(lab, tmp_path, config, "--inventory", str(inventory), "--limit", "gateways:!core")
    assert run.status is Status.SUCCESS, run.out
    # node-c, left out by --limit, was not touched (not even logged into) and still serves 1.0
    assert node_versions(lab) == {"Node-A": ["2.0"], "Node-B": ["2.0"], "Node-C": ["1.0"]}
    assert lab.served_version("Node-A") == lab.served_version("Node-B") == "2.0"
    c_state = run.record["nodes"]["node-c"]
    assert c_state["skipped"] and c_state["lb_calls"] == {"disable": 0, "enable": 0} and c_state["in_lb"], c_state
    assert "node-c: skipped (--limit), not touched" in run.out
    row = next(line for line in run.out.splitlines() if line.startswith("| node-c "))
    assert [cell.strip() for cell in row.strip(" |").split("|")][1:6] == ["SKIPPED"] * 5, row
    now = logins(lab)
    assert now["Node-C"] == before["Node-C"], "node-c was logged into"
    for name in ("Node-A", "Node-B"):
        assert now[name] > before[name] and set(accepted_logins(lab, name)) == {lab.bastion.host}
    # each host's address, port, user, key and jump host came from the inventory
    for name, node in (("node-a", a), ("node-b", b)):
        target = run.record["targets"][name]
        assert (target["address"], target["port"], target["user"], target["key_files"]) == (
            node.host, node.ssh_port, "root", [str(lab.key_file)]), target
        assert [(j["address"], j["port"], j["user"]) for j in target["jumps"]] == [
            (lab.bastion.host, lab.bastion.ssh_port, "root")], target
        assert {k: target["sources"][k] for k in ("address", "port", "user", "key_files", "jumps")} == dict.fromkeys(
            ("address", "port", "user", "key_files", "jumps"), "node"), target["sources"]
    assert_all_in_haproxy(lab)
    assert_traffic_clean(run)
    assert_unlocked(lab)
