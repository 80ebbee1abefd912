"""--limit: Ansible's host patterns, compared with ansible-core's own InventoryManager
(what ``ansible all --list-hosts -l PATTERN`` runs) on the inventory corpus."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from zdu.config.inventory import load_inventory
from zdu.config.limit import groups_of, select, split_pattern
from zdu.errors import ConfigError
from zdu.model import Node

DATA = Path(__file__).parent / "data" / "inventory"

CASES = {
    "02_children.ini": [
        "gw-eu-1", "gw_eu", "gateways", "gw-*", r"~gw-(eu|us)-\d", "gateways:!gw_us",
        "gateways,&admin", "prod,!admin", "all", "*", "gw*", "gateways[0]", "gateways[1:]",
        "gateways[-1]", "gateways[0:1]", "admin:gw_us", "!gw_eu", "&admin", "mgr-1,gw-us-1",
        "g?_eu", "prod,!gw_eu,&gateways", "~.*-1$", "gw_eu, gw_us ,!gw-eu-2", "admin",
    ],
    "06_nested.yaml": [
        "gw_a:gw_b", "managers,&gw_b", "prod,!canary", "~gw[12]", "gw_*", "canary,mgr1",
        "prod[2]", "all,!managers",
    ],
    "03_ranges.ini": [
        "web0[1-3]*", "web0[!1]*", "db1*", r"~db\d+$", "web*.example.com,!edge-b*", "db:!db-*",
        "web[3:5]", "edge-?.example.com",
    ],
    "01_simple.ini": ["ungrouped", "web,db", "*.example.com", "10.0.0.99", "all,!web"],
}


def _ansible(path: Path, pattern: str) -> list[str]:
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    manager = InventoryManager(loader=DataLoader(), sources=[str(path)])
    manager.subset(pattern)
    return [h.name for h in manager.get_hosts("all")]


def _nodes(path: Path) -> tuple[list[Node], Any]:
    inv = load_inventory(path)
    nodes = [Node(name=n["name"], host=n["host"], group=n["group"], roles=tuple(n["roles"]))
             for n in inv.nodes]
    return nodes, inv


@pytest.mark.parametrize("name, pattern", [(n, p) for n, ps in CASES.items() for p in ps])
def test_same_selection_as_ansible(name: str, pattern: str) -> None:
    expected = _ansible(DATA / name, pattern)
    assert expected, "a corpus pattern should select something"
    nodes, inv = _nodes(DATA / name)
    selected, skipped = select(pattern, nodes, inv.groups)
    assert sorted(selected) == sorted(expected)
    order = [n.name for n in nodes]
    assert list(selected) == [n for n in order if n in selected]      # topology order
    assert list(skipped) == [n for n in order if n not in selected]
    # without the inventory's group map (from Node.group/roles only): same nodes, unless a
    # subscript depends on the inventory's group order
    if "[" not in pattern or "*" in pattern or "!" in pattern.split("[")[1]:
        assert set(select(pattern, nodes)[0]) == set(expected)


def test_topology_nodes_without_inventory() -> None:
    nodes = [Node("Node-A", "h1", group="Gateway", roles=("admin-node-manager", "gateway")),
             Node("Node-B", "h2", group="Gateway", roles=("node-manager", "gateway")),
             Node("Node-C", "h3", group="GatewayManager", roles=("admin-node-manager",)),
             Node("Node-D", "h4")]
    assert select("Gateway", nodes) == (("Node-A", "Node-B"), ("Node-C", "Node-D"))
    assert select("admin-node-manager,!Node-A", nodes)[0] == ("Node-C",)
    assert select("ungrouped", nodes)[0] == ("Node-D",)
    assert select("Node-C,Node-A", nodes)[0] == ("Node-A", "Node-C")        # topology order
    assert select("node-*", nodes)[0] == ("Node-B",)                       # case-sensitive
    assert groups_of(nodes)["gateway"] == ["Node-A", "Node-B"]


@pytest.mark.parametrize("pattern, message", [
    ("gw-typo", "'gw-typo' matches no node or group (nodes: a, b; groups: g)"),
    ("a,gw-typo", "'gw-typo' matches no node"),
    ("a,!typo", "'!typo' matches no node"),
    ("a,&b", "'a,&b' selects no node"),
    ("~(", "'~(' is not a valid regex"),
    ("g[5]", "'g[5]': the subscript is out of range (2 nodes match 'g')"),
    ("@/nonexistent/hosts.txt", "@/nonexistent/hosts.txt: limit file not found"),
    ("", "expected a pattern"),
    (" , ", "holds no pattern"),
    ("!", "an empty term"),
])
def test_errors(pattern: str, message: str) -> None:
    nodes = [Node("a", "h1", group="g"), Node("b", "h2", group="g")]
    with pytest.raises(ConfigError) as info:
        select(pattern, nodes)
    assert str(info.value).startswith("--limit: ") and message in str(info.value)


@pytest.mark.parametrize("pattern, terms", [
    ("a,b , c", ["a", "b", "c"]),
    ("a:b:!c", ["a", "b", "!c"]),
    ("web[1:3]", ["web[1:3]"]),
    ("fd00::1", ["fd00::1"]),
    ("host:2222", ["host:2222"]),
    ("g[0]:h", ["g[0]", "h"]),
])
def test_split_pattern(pattern: str, terms: list[str]) -> None:
    from ansible.inventory.manager import split_host_pattern
    assert split_pattern(pattern) == terms == split_host_pattern(pattern)


def test_the_cli_counts_a_subscript_in_the_inventorys_group_order(tmp_path: Path) -> None:
    """``--limit 'gw[0]'`` upgrades the host Ansible would pick (gw's children in the order
    listed: us, then eu), not the first in topology order."""
    import subprocess
    import sys
    (tmp_path / "inv.ini").write_text("[eu]\nh1 ansible_host=10.0.0.1\n[us]\nh2 ansible_host=10.0.0.2\n"
                                      "[gw:children]\nus\neu\n")
    (tmp_path / "t.yaml").write_text("profile: lab-gateway\n")
    assert _ansible(tmp_path / "inv.ini", "gw[0]") == ["h2"]
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, str(root / "zdupgrade"), "--dry-run", "--config", "t.yaml", "--inventory",
                          "inv.ini", "--limit", "gw[0]", "--old_install_dir", "/opt/a", "--new_install_dir", "/opt/b"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "  nodes: h2;" in out.stdout and "skipped (--limit): h1 " in out.stdout, out.stdout[:600]
