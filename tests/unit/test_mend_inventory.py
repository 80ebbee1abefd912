"""A reviewer's findings on Ansible inventories (December).

Numbers and quoting in an inventory are one ConfigError naming the inventory and the line or
host; a node dict from an inventory that the topology refuses names the inventory, the host and
the Ansible variable (not the topology's ``nodes[0].user``); a chain of 1,500 child groups is no
RecursionError; a 20,000-host range parses in linear time; ``--limit 'gw[0]'`` counts a group's
hosts in Ansible's order.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.badinput import NINES, PROFILE, cli, config_error, dry_run, refused, short, write
from zdu.config.inventory import load_inventory, parse_ini, parse_yaml
from zdu.config.limit import select
from zdu.config.topology import InventoryTopology, limit_groups, load_topology, topology_from_inventory
from zdu.status import Status

INVENTORY_DATA = Path(__file__).parent / "data" / "inventory"


@pytest.mark.parametrize("text, needle", [
    ("[gw]\nweb1 ansible_port=²\n", "host web1: ansible_port: expected a port 1-65535, got '²'"),
    (f"[gw]\nweb1 ansible_port={NINES}\n", "host web1: ansible_port: expected a port 1-65535, got '999"),
    ("[gw]\nweb1 ansible_port=70000\n", "host web1: ansible_port: expected a port 1-65535, got 70000"),
    ("[gw]\nweb1\n[gw:vars]\nansible_group_priority=²\n", "line 4 ([gw:vars]): ansible_group_priority must be an "
                                                          "integer"),
    (f"[gw]\nweb1\n[gw:vars]\nansible_group_priority={NINES}\n", "ansible_group_priority must be an integer"),
    ("[gw]\nweb1:²\n", "line 2: invalid port in 'web1:²'"),
    ("[gw]\nweb[1:²]\n", "line 2: host range '[1:²]' must be numbers"),
    (f"[gw]\nweb[1:{NINES}]\n", "line 2: host range '[1:999"),
    ("[gw]\nweb[1:3:²]\n", "line 2: host range '[1:3:²]': step must be a positive integer"),
], ids=short)
def test_ini_digits_are_ascii_and_bounded(text: str, needle: str) -> None:
    message = config_error(parse_ini, text, "inv.ini")
    assert message.startswith("inv.ini: ") and needle in message, message


def test_yaml_inventory_port_of_unicode_digits(tmp_path: Path) -> None:
    message = config_error(parse_yaml, {"all": {"hosts": {"web1": {"ansible_port": "²"}}}}, "inv.yml")
    assert message == "inv.yml: host web1: ansible_port: expected a port 1-65535, got '²'"


def test_proxy_command_with_an_unclosed_quote(tmp_path: Path) -> None:
    inv = write(tmp_path / "inv.yaml", "all:\n  hosts:\n    web1:\n      ansible_ssh_common_args: "
                                       "\"-o 'ProxyCommand=ssh -W %h:%p \\\"bastion'\"\n")
    message = config_error(load_inventory, inv)
    assert message == (f"{inv}: host web1: ansible_ssh_common_args: cannot split ProxyCommand "
                       "'ssh -W %h:%p \"bastion': No closing quotation")
    refused(dry_run(tmp_path, "--inventory", str(inv), "--profile", str(write(tmp_path / "p.yaml", PROFILE))),
            f"{inv}: host web1: ansible_ssh_common_args: cannot split ProxyCommand")


def test_a_chain_of_1500_child_groups_loads_and_a_loop_of_them_is_named() -> None:
    chain = "[g0]\nweb1\n" + "".join(f"[g{i}:children]\ng{i - 1}\n" for i in range(1, 1500))
    started = time.monotonic()
    inventory = parse_ini(chain, "inv.ini")
    assert time.monotonic() - started < 5
    assert inventory.groups["g1499"] == ("web1",)
    assert inventory.nodes[0]["group"] == "g0" and len(inventory.nodes[0]["roles"]) == 1500
    loop = chain + "[g0:children]\ng1499\n"
    message = config_error(parse_ini, loop, "inv.ini")
    assert message.startswith("inv.ini: group ") and "groups form a loop (" in message


def test_min_in_service_percentage_of_unicode_digits(tmp_path: Path) -> None:
    topology = write(tmp_path / "t.yaml", "profile: p\nmin_in_service: \"٣%\"\nnodes: [{name: A, host: h1}]\n")
    assert config_error(load_topology, topology).startswith(f"{topology}: min_in_service: expected an integer")


@pytest.mark.parametrize("inventory", ["[gw]\nweb1 ansible_port=²\n", f"[gw]\nweb1 ansible_port={NINES}\n",
                                       "[gw]\nweb1\n[gw:vars]\nansible_group_priority=²\n"], ids=short)
def test_bad_inventory_numbers_through_the_cli_and_lock_status(tmp_path: Path, inventory: str) -> None:
    inv = write(tmp_path / "inv.ini", inventory)
    refused(dry_run(tmp_path, "--inventory", str(inv), "--profile", str(write(tmp_path / "p.yaml", PROFILE))),
            f"{inv}: ")
    status, out, err = cli("lock", "status", "--inventory", str(inv))
    assert status is Status.CONFIG_ERROR, (status, out, err)
    assert "Traceback" not in out + err and f"{inv}: " in err


def test_a_bad_inventory_user_names_the_inventory_not_the_topology(tmp_path: Path) -> None:
    write(tmp_path / "p.yaml", PROFILE)
    inv = write(tmp_path / "inv10.ini", "[gw]\nweb1 ansible_host=10.0.0.1 ansible_user=-oProxyCommand=x\n")
    expected = (f"{inv}: host web1: ansible_user: invalid value '-oProxyCommand=x': no whitespace, "
                "and not starting with '-'")
    topology = write(tmp_path / "t.yaml", "profile: ./p.yaml\n")
    err = refused(dry_run(tmp_path, "--config", str(topology), "--inventory", str(inv)), expected)
    assert str(topology) not in err
    inside = write(tmp_path / "t15.yaml", "profile: ./p.yaml\ninventory: inv10.ini\n")
    assert config_error(load_topology, inside) == expected
    assert config_error(topology_from_inventory, str(inv)) == expected


@pytest.mark.parametrize("line, needle", [
    ("web1 ansible_host=\"10.0.0.1 -oProxyCommand=x\"", "host web1: ansible_host: invalid host '10.0.0.1 -oPro"),
    ("run ansible_host=10.0.0.1", "host run: host name: 'run' is reserved"),
    ("web1 ansible_ssh_private_key_file=\"/k\x01\"", "host web1: ansible_ssh_private_key_file: "),
    ("web1 ansible_ssh_common_args='-J ops@bastion:²'", "host web1: ansible_ssh_common_args (ProxyJump): invalid "
                                                         "port '²'"),
])
def test_inventory_host_errors_name_the_host_and_the_variable(tmp_path: Path, line: str, needle: str) -> None:
    inv = write(tmp_path / "inv.ini", f"[gw]\n{line}\n")
    message = config_error(topology_from_inventory, str(inv))
    assert message.startswith(f"{inv}: {needle}"), message


def test_duplicate_inventory_endpoints_name_the_inventory(tmp_path: Path) -> None:
    inv = write(tmp_path / "inv.ini", "[gw]\nweb1 ansible_host=10.0.0.1\nweb2 ansible_host=10.0.0.1\n")
    assert config_error(topology_from_inventory, str(inv)) == (
        f"{inv}: host web2: duplicate host:port 10.0.0.1:22 (also node web1)")


@pytest.mark.parametrize("jump, where", [("\"ops\\n@bastion\"", "proxy_jump"),
                                         ("[\"a\", \"ops\\n@bastion\"]", "proxy_jump[1]"),
                                         ("\"bastion\\n\"", "proxy_jump")])
def test_a_newline_in_a_topology_jump_host_is_refused(tmp_path: Path, jump: str, where: str) -> None:
    topology = write(tmp_path / "t.yaml", f"profile: p\nssh: {{config_file: none}}\n"
                                          f"nodes: [{{name: A, host: gw1, proxy_jump: {jump}}}]\n")
    message = config_error(load_topology, topology)
    assert message.startswith(f"{topology}: nodes[0] (A).{where}: ") and "a newline (U+000A)" in message, message


def test_a_newline_in_an_ssh_jump_host_is_refused(tmp_path: Path) -> None:
    topology = write(tmp_path / "t.yaml", "profile: p\nssh: {proxy_jump: \"ops\\n@bastion\"}\n"
                                          "nodes: [{name: A, host: gw1}]\n")
    assert "ssh.proxy_jump: " in config_error(load_topology, topology)


def test_a_newline_in_an_inventory_variable_name_is_refused() -> None:
    message = config_error(parse_yaml, {"all": {"hosts": {"web1": {"port\n": 1}}}}, "inv.yml")
    assert message.startswith("inv.yml: group all: host web1: invalid variable name 'port\\n'"), message
    assert "invalid variable name" in config_error(parse_yaml, {"all": {"vars": {"x\n": 1}}}, "inv.yml")


def test_a_range_of_20000_hosts_parses_in_linear_time() -> None:
    """Was 8.3 s (a list scanned per host); a tenth of that is generous on a slow machine."""
    started = time.monotonic()
    inventory = parse_ini("[gw]\nweb[1:20000]\n", "inv.ini")
    assert time.monotonic() - started < 2.0
    assert inventory.groups["gw"][:3] == ("web1", "web2", "web3") and len(inventory.hosts) == 20000
    assert inventory.groups["ungrouped"] == () and inventory.groups["all"][-1] == "web20000"


def test_ungrouped_order_is_kept() -> None:
    inventory = parse_ini("h0\nh5\nh2\n[gw]\nh1\nh5\n[db]\nh9\n[db:children]\ngw\n", "inv.ini")
    assert inventory.groups["ungrouped"] == ("h0", "h2")
    assert inventory.groups["db"] == ("h9", "h1", "h5")
    assert inventory.groups["all"] == ("h0", "h2", "h9", "h1", "h5")


def _ansible_hosts(inventory: Path, pattern: str) -> list[str]:
    exe = shutil.which("ansible")
    if exe is None:
        pytest.fail("ansible not found: pip install -e '.[test]' (ansible-core)")
    env = {**os.environ, "ANSIBLE_LOCAL_TEMP": "/tmp", "ANSIBLE_NOCOLOR": "1", "ANSIBLE_DEPRECATION_WARNINGS": "0"}
    out = subprocess.run([exe, "-i", str(inventory), pattern, "--list-hosts"], capture_output=True, text=True,
                         env=env, check=True, stdin=subprocess.DEVNULL)
    return sorted(line.strip() for line in out.stdout.splitlines()[1:] if line.strip())


@pytest.mark.parametrize("pattern", ["gw[0]", "gw[1]", "gw[-1]", "all[0]", "gw[1:2]", "eu[1]"])
def test_group_subscripts_pick_the_hosts_ansible_picks(pattern: str) -> None:
    inventory = INVENTORY_DATA / "11_order.ini"
    topology = topology_from_inventory(str(inventory))
    assert isinstance(topology, InventoryTopology)
    selected, _ = select(pattern, topology.nodes, limit_groups(topology))
    assert sorted(selected) == _ansible_hosts(inventory, pattern)


def test_an_inventory_topology_keeps_ansibles_group_order(tmp_path: Path) -> None:
    inv = write(tmp_path / "inv14.ini", "[eu]\nh1 ansible_host=10.0.0.1\n[us]\nh2 ansible_host=10.0.0.2\n"
                                        "[gw:children]\nus\neu\n")
    topology = load_topology(write(tmp_path / "t.yaml", f"profile: p\ninventory: {inv.name}\n"))
    assert [n.name for n in topology.nodes] == ["h1", "h2"]
    assert limit_groups(topology) is not None and limit_groups(topology)["gw"] == ("h2", "h1")  # type: ignore[index]
    assert select("gw[0]", topology.nodes, limit_groups(topology))[0] == ("h2",)
    assert getattr(topology, "groups")["gw"] == ("h2", "h1")          # what the CLI's select() call reads
    plain = load_topology(write(tmp_path / "t2.yaml", "profile: p\nnodes: [{name: A, host: h1, group: gw}]\n"))
    assert limit_groups(plain) is None and not hasattr(plain, "groups")
