"""Ansible inventories: the corpus in data/inventory/ parsed by us and by ansible-inventory.

ansible-core (the ``test`` extra) is the oracle: for every inventory the same hosts, the
same hosts in every group, and the same merged variables per host.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from zdu.config.inventory import (Inventory, expand_hosts, load_inventory, parse_ini,
                                  parse_yaml)
from zdu.errors import ConfigError

DATA = Path(__file__).parent / "data" / "inventory"
CORPUS = sorted(p.name for p in DATA.iterdir() if p.is_file())


@functools.lru_cache(maxsize=None)
def ansible_list(name: str) -> dict[str, Any]:
    exe = shutil.which("ansible-inventory")
    if exe is None:
        pytest.fail("ansible-inventory not found: pip install -e '.[test]' (ansible-core)")
    env = {**os.environ, "ANSIBLE_HOST_PATTERN_MISMATCH": "ignore", "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_INVENTORY_UNPARSED_FAILED": "1", "ANSIBLE_LOCAL_TEMP": "/tmp",
           "ANSIBLE_DEPRECATION_WARNINGS": "0"}
    out = subprocess.run([exe, "-i", str(DATA / name), "--list"], capture_output=True,
                         text=True, env=env, check=True, stdin=subprocess.DEVNULL)
    return json.loads(out.stdout)


def ansible_members(listing: dict[str, Any], group: str) -> list[str]:
    """A group's hosts as Ansible orders them: its own, then its descendants' breadth first
    (Group.get_hosts), each once."""
    order, level = [group], [group]
    while level:
        level = list(dict.fromkeys(c for g in level for c in listing.get(g, {}).get("children", [])
                                   if c not in order))
        order += level
    out: list[str] = []
    for name in order:
        out += [h for h in listing.get(name, {}).get("hosts", []) if h not in out]
    return out


def test_corpus_is_big_enough() -> None:
    assert len(CORPUS) >= 8
    assert {Path(n).suffix for n in CORPUS} >= {".ini", ".yml", ".yaml"}


@pytest.mark.parametrize("name", CORPUS)
def test_same_hosts_groups_and_vars_as_ansible(name: str) -> None:
    listing = ansible_list(name)
    inv = load_inventory(DATA / name)
    hostvars = listing["_meta"]["hostvars"]                  # hosts without vars are left out
    assert sorted(inv.hosts) == sorted(ansible_members(listing, "all"))
    groups = [g for g in listing if g != "_meta"]
    for group in groups:
        assert list(inv.groups[group]) == ansible_members(listing, group), group
    # a group Ansible does not list has no hosts in ours either (empty groups are omitted)
    for group, members in inv.groups.items():
        if group not in listing:
            assert members == (), group
    for host in inv.hosts:
        assert dict(inv.host_vars[host]) == hostvars.get(host, {}), host


def test_node_dicts_from_connection_vars() -> None:
    inv = load_inventory(DATA / "04_connection.ini")
    nodes = {n["name"]: n for n in inv.nodes}
    assert nodes["gw1"] == {
        "name": "gw1", "host": "10.0.0.1", "user": "gwadmin", "key_file": "~/.ssh/gw_ed25519",
        "proxy_jump": ["bastion.example.com"], "group": "behind_bastion",
        "roles": ["behind_bastion"], "vars": {"gateway_version": 7.7}}
    assert nodes["gw2"]["proxy_jump"] == ["ops@bastion.example.com:2200"]
    assert nodes["gw3"]["proxy_jump"] == ["jump1", "ops@jump2:2222"]
    assert nodes["gw4"]["proxy_jump"] == ["admin@old-bastion"]
    assert nodes["controller"]["transport"] == "local" and "proxy_jump" not in nodes["controller"]
    # ansible_become & co never reach the template vars; ssh options we do not use are noted
    assert all(not k.startswith("ansible_") for n in inv.nodes for k in n["vars"])
    assert any("ServerAliveInterval" in note for note in inv.notes)


def test_node_dicts_group_roles_ports() -> None:
    inv = load_inventory(DATA / "06_nested.yaml")
    gw1 = next(n for n in inv.nodes if n["name"] == "gw1")
    # precedence order: depth first, then priority, then name; the last is the group
    assert gw1["roles"] == ["prod", "gateways", "managers", "gw_a", "gw_b"]
    assert gw1["group"] == "gw_b" and gw1["vars"]["zone"] == "b"
    assert gw1["vars"]["packages"] == ["curl", "jq"]
    simple = {n["name"]: n for n in load_inventory(DATA / "01_simple.ini").nodes}
    assert simple["web1.example.com"]["port"] == 2222 and simple["db1.example.com"]["port"] == 5522
    assert simple["lonely.example.com"]["group"] == "ungrouped"
    assert "port" not in simple["lonely.example.com"]           # not given: the topology decides
    exported = {n["name"]: n for n in load_inventory(DATA / "10_export.yaml").nodes}
    assert exported["web-2"]["port"] == 2202                   # "2202" in YAML


@pytest.mark.parametrize("pattern, hosts, port", [
    ("web[01:03].example.com", ["web01.example.com", "web02.example.com", "web03.example.com"], None),
    ("db[1:10:4]:2200", ["db1", "db5", "db9"], 2200),
    ("x-[a:c]-[0:1]", ["x-a-0", "x-a-1", "x-b-0", "x-b-1", "x-c-0", "x-c-1"], None),
    ("[fd00::1]:2222", ["fd00::1"], 2222),
    ("fd00::1", ["fd00::1"], None),
    ("10.0.0.[1:2]", ["10.0.0.1", "10.0.0.2"], None),
    ("host:22", ["host"], 22),
])
def test_expand_hosts(pattern: str, hosts: list[str], port: int | None) -> None:
    assert expand_hosts(pattern) == (hosts, port)


@pytest.mark.parametrize("pattern", ["web[1:", "web[01:100]", "web[3:a]", "web[1:2:0]", "a:b:c",
                                     "host:", "db[c:a]", "x[0:999999]"])
def test_expand_hosts_errors(pattern: str) -> None:
    with pytest.raises(ValueError):
        expand_hosts(pattern)


@pytest.mark.parametrize("text, message", [
    ("[web]\nweb1 http_port\n", "line 2: expected key=value after the host, got 'http_port'"),
    ("[web:vars]\nx=1\n", "line 1: section [web:vars] is for group 'web', which is never declared"),
    ("[all:children]\nnope\n", "line 2: section [all:children] names group 'nope', which is never declared"),
    ("[web:weird]\n", "line 1: section [web:weird] has unknown type 'weird'"),
    ("[web group]\n", "line 1: invalid section '[web group]'"),
    ("[web]\nweb[1:\n", "line 2: host 'web[1:'"),
    ("[web]\nweb[1:3\n", "line 2: unbalanced"),
    ("[web]\nweb1 'unclosed\n", "line 2: cannot parse host line"),
    ("[web:vars]\njust words\n[web]\n", "line 2: expected key=value in [web:vars]"),
    ("[web]\nw1 conf=\"{'a': 1}\"\n", "line 2 (w1): conf: a variable is a string, number, boolean or a list of those, got a mapping"),
    ("[web]\nw1 bad-name=1\n", "line 2 (w1): invalid variable name 'bad-name'"),
    ("[a:children]\nb\n[b:children]\na\n", "groups form a loop"),
    ("[web]\nw1 ansible_port=http\n", "host w1: ansible_port: expected a port 1-65535, got 'http'"),
    ("[web]\nw1 ansible_connection=winrm\n", "host w1: ansible_connection: 'winrm' is not supported"),
    ("[web]\nw1 ansible_ssh_common_args='-o ProxyCommand=\"nc -X 5 %h %p\"'\n", "ProxyCommand 'nc -X 5 %h %p' is not supported"),
    ("[web]\nw1 ansible_host='{{ lookup(\"env\", \"X\") }}'\n", "templated values are not supported"),
])
def test_ini_errors_name_file_and_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_ini(text, "inv.ini")
    assert str(info.value).startswith("inv.ini: ")
    assert message in str(info.value)


@pytest.mark.parametrize("data, message", [
    (None, "the inventory is empty"),
    (["a"], "expected a mapping of groups"),
    ({"plugin": "aws_ec2"}, "inventory plugin configuration"),
    ({"all": {"host": {"a": None}}}, "group all: unknown key 'host' (hosts, vars or children)"),
    ({"all": ["a"]}, "group all: a group is a mapping"),
    ({"all": {"hosts": ["a", "b"]}}, "group all: hosts: expected a mapping"),
    ({"all": {"hosts": {1: None}}}, "host 1 must be a string"),
    ({"all": {"vars": {"x": {"nested": 1}}}}, "group all: vars: x: a variable is a string"),
    ({"all": {"hosts": {"a": {"l": [1, {"b": 2}]}}}}, "group all: host a: l: a variable is"),
    ({"all": {"hosts": {"a": "not-a-mapping"}}}, "host variables must be a mapping"),
    ({"all": {"children": {"g g": None}}}, "invalid group name 'g g'"),
    ({"web": {"vars": {"ansible_group_priority": "high"}}}, "ansible_group_priority must be an integer"),
])
def test_yaml_errors_name_group_and_host(data: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_yaml(data, "inv.yml")
    assert str(info.value).startswith("inv.yml: ") and message in str(info.value)


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="inventory file not found"):
        load_inventory(tmp_path / "missing")
    bad = tmp_path / "bad.yml"
    bad.write_text("all:\n  hosts: [\n")
    with pytest.raises(ConfigError, match="bad.yml: YAML syntax error at line"):
        load_inventory(bad)
    binary = tmp_path / "inv"
    binary.write_bytes(b"[web]\n\xff\n")
    with pytest.raises(ConfigError, match="not valid UTF-8"):
        load_inventory(binary)


def test_inventory_result_helpers() -> None:
    inv: Inventory = load_inventory(DATA / "02_children.ini")
    assert inv.host_groups("gw-eu-1") == ("admin", "all", "gateways", "gw_eu", "prod")
    assert inv.children["prod"] == ("gateways", "admin")
