"""Topology validation: every bad input is one clear ConfigError naming file, node and field."""
from __future__ import annotations

from pathlib import Path

import pytest

from zdu.errors import ConfigError
from zdu.config.topology import load_topology, reference_topology
from zdu.planning.serial import Serial

GOOD = """\
profile: lab-gateway
ssh: {user: root, connect_timeout: 5, host_key_policy: accept-new}
load_balancer: {type: script, path: /bin/true}
vars: {region: eu}
serial: 2
nodes:
  - {name: Node-A, host: 127.0.0.11, port: 2222, group: Gateway, roles: [gateway], vars: {x: 1}}
  - {name: Node-B, host: gw-b.example.net, user: deploy, lb_server: b}
"""


def write(tmp_path: Path, text: str, name: str = "topology.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_good_topology(tmp_path: Path) -> None:
    topo = load_topology(write(tmp_path, GOOD))
    assert [n.name for n in topo.nodes] == ["Node-A", "Node-B"]
    assert topo.nodes[0].port == 2222 and topo.nodes[1].port == 22
    assert topo.nodes[1].user == "deploy" and topo.nodes[1].lb_name == "b"
    assert topo.nodes[0].lb_name == "Node-A"
    assert topo.ssh.host_key_policy == "accept-new" and topo.ssh.connect_timeout == 5.0
    assert topo.load_balancer.type == "script" and topo.load_balancer.options["path"] == "/bin/true"
    assert topo.serial == Serial((2,)) and topo.vars["region"] == "eu"


def test_json_topology(tmp_path: Path) -> None:
    path = write(tmp_path, '{"nodes": [{"name": "a", "host": "127.0.0.1"}]}', "t.json")
    assert load_topology(path).nodes[0].name == "a"


def test_reference_topology_is_node_a_b_c() -> None:
    topo = reference_topology()
    assert [n.name for n in topo.nodes] == ["Node-A", "Node-B", "Node-C"]
    assert {n.group for n in topo.nodes} == {"Gateway", "GatewayManager"}


BAD = [
    ("nodes: [\n  {name: a, host: 1.2.3.4\n", ["YAML syntax error", "line"]),
    ("", ["empty"]),
    ("- a\n- b\n", ["top level", "expected a mapping"]),
    ("ssh: {}\n", ["missing required field 'nodes'"]),
    ("nodes: []\n", ["nodes", "non-empty list"]),
    ("nodes:\n  - {host: 1.2.3.4}\n", ["nodes[0]", "missing required field 'name'"]),
    ("nodes:\n  - {name: a}\n", ["nodes[0] (a)", "missing required field 'host'"]),
    ("nodes:\n  - {name: a, host: 1.2.3.4, colour: red}\n", ["nodes[0] (a)", "unknown field 'colour'"]),
    ("nodes:\n  - {name: a, host: 1.2.3.4, port: abc}\n", ["nodes[0] (a).port", "expected an integer 1-65535", "'abc'"]),
    ("nodes:\n  - {name: a, host: 1.2.3.4, port: 70000}\n", ["nodes[0] (a).port", "70000"]),
    ("nodes:\n  - {name: a, host: 1.2.3.4, port: true}\n", ["nodes[0] (a).port", "boolean"]),
    ("nodes:\n  - {name: a, host: 1.2.3.4}\n  - {name: a, host: 1.2.3.5}\n", ["nodes[1] (a)", "duplicate node name 'a'", "nodes[0]"]),
    ("nodes:\n  - {name: a, host: 1.2.3.4}\n  - {name: b, host: 1.2.3.4}\n", ["nodes[1] (b)", "duplicate host:port 1.2.3.4:22", "node a"]),
    ("nodes:\n  - {name: 'a b', host: 1.2.3.4}\n", ["nodes[0] (a b).name", "invalid value"]),
    ("nodes:\n  - {name: a, host: 'x;rm -rf /'}\n", ["nodes[0] (a).host", "invalid host"]),
    ("nodes:\n  - {name: a, host: 1.2.3.4, roles: gateway}\n", ["nodes[0] (a).roles", "list of strings"]),
    ("nodes:\n  - {name: a, host: 1.2.3.4, vars: {'bad-name': 1}}\n", ["nodes[0] (a).vars.bad-name", "identifiers"]),
    ("nodes:\n  - {name: a, host: 1.2.3.4, host_key: 'MD5:aa'}\n", ["nodes[0] (a).host_key", "SHA256"]),
    ("nodes:\n  - {name: a, host: 1.2.3.4, transport: telnet}\n", ["nodes[0] (a).transport", "ssh, local"]),
    ("ssh: {host_key_policy: yes-please}\nnodes:\n  - {name: a, host: 1.2.3.4}\n", ["ssh.host_key_policy", "strict, accept-new"]),
    ("ssh: {connect_timeout: fast}\nnodes:\n  - {name: a, host: 1.2.3.4}\n", ["ssh.connect_timeout", "expected a number"]),
    ("ssh: {retries: 3}\nnodes:\n  - {name: a, host: 1.2.3.4}\n", ["ssh", "unknown field 'retries'"]),
    ("load_balancer: {path: x}\nnodes:\n  - {name: a, host: 1.2.3.4}\n", ["load_balancer", "missing required field 'type'"]),
    ("load_balancer: {type: 'f5 big-ip'}\nnodes:\n  - {name: a, host: 1.2.3.4}\n", ["load_balancer.type", "unknown load balancer"]),
    ("serial: 0\nnodes:\n  - {name: a, host: 1.2.3.4}\n", ["serial", "got 0"]),
    ("serial: [1, 'lots']\nnodes:\n  - {name: a, host: 1.2.3.4}\n", ["serial[1]", "'lots'"]),
    ("nodes:\n  - {name: a, host: 1.2.3.4, lb_server: s}\n  - {name: b, host: 1.2.3.5, lb_server: s}\n", ["nodes[1] (b).lb_server", "also used by node a"]),
]


@pytest.mark.parametrize("text,needles", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_topology_names_file_node_and_field(tmp_path: Path, text: str, needles: list[str]) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_topology(path)
    message = str(info.value)
    assert message.startswith(str(path)), message
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    assert "Traceback" not in message


def test_bad_json_names_line(tmp_path: Path) -> None:
    path = write(tmp_path, '{"nodes": [}', "t.json")
    with pytest.raises(ConfigError, match=r"t\.json: JSON syntax error at line 1"):
        load_topology(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="topology file not found"):
        load_topology(tmp_path / "nope.yaml")


def test_invalid_utf8(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_bytes(b"nodes:\n  - {name: \xff, host: 1.2.3.4}\n")
    with pytest.raises(ConfigError, match="not valid UTF-8"):
        load_topology(path)
