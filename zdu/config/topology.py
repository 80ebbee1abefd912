"""Topology loading and validation (YAML or JSON).

Every problem is reported as one ``ConfigError`` naming the file, the node and
the field; nothing is contacted before the whole topology is valid.
"""
from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from zdu.config.values import USER_NAME, valid_host
from zdu.config.documents import _Checker, _kind, describe_value, field_path, read_document
from zdu.model import LbSettings, Node, RunStep, SshSettings, Tier, Topology, frozen_map
from zdu.planning.serial import Serial, parse_serial

if TYPE_CHECKING:
    from zdu.config.inventory import Inventory

# patterns are used with fullmatch ("$" would also match before a final newline)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_FINGERPRINT = re.compile(r"SHA256:[A-Za-z0-9+/]{43}=?")
#: HAProxy's own rule for server names; they reach its runtime API
_LB_SERVER = re.compile(r"[A-Za-z0-9._:-]{1,255}")

#: files of the run folder: a node called ``run`` would write its log over ``run.log``
RESERVED_NODE_NAMES = frozenset({"run", "journal", "events", "report", "control", "summary", "junit"})

_TOP_FIELDS = {"nodes", "ssh", "load_balancer", "profile", "vars", "serial", "lock_dir", "tiers", "hosts", "inventory",
               "before", "after", "max_fail_percentage", "min_in_service", "pause_timeout", "pause_timeout_action", "soak"}
_TIER_FIELDS = {"name", "group", "role", "nodes", "serial", "gate", "gate_on", "min_in_service",
                "max_fail_percentage"}
#: words of ``on:`` (before/after steps, gates): no node or host may be called so
ON_WORDS = frozenset({"control", "all", "each"})
_NODE_FIELDS = {"name", "host", "port", "user", "group", "roles", "vars", "transport",
                "lb_server", "host_key", "key_file", "proxy_jump"}
_SSH_FIELDS = {"user", "key_file", "known_hosts", "host_key_policy", "connect_timeout",
               "command_timeout", "connect_retries", "parallel", "config_file", "proxy_jump", "agent",
               "jump_host_keys"}


class _InventoryChecker(_Checker):
    """Checks the node dicts an Ansible inventory gave: errors name the inventory file, the host
    and the inventory variable the value came from (``inv.ini: host web1: ansible_user: ...``),
    not the topology's ``nodes[0].user`` (there is no such line in any file)."""

    VARIABLES = {"name": "host name", "host": "ansible_host", "port": "ansible_port", "user": "ansible_user",
                 "key_file": "ansible_ssh_private_key_file", "proxy_jump": "ansible_ssh_common_args (ProxyJump)",
                 "transport": "ansible_connection", "group": "group", "roles": "groups", "vars": "vars"}

    def field(self, where: str, key: str) -> str:
        return f"{where}: {self.VARIABLES.get(key, key)}"


@dataclasses.dataclass(frozen=True)
class InventoryTopology(Topology):
    """A topology whose nodes are an Ansible inventory's hosts.  ``groups`` keeps every group's
    hosts in Ansible's order (a group's own hosts, then its children's in the order they are
    listed, breadth first): ``--limit 'gw[0]'`` counts in it, as Ansible does
    (:func:`limit_groups`)."""

    groups: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=frozen_map)
    #: what the inventory said that zdupgrade does not use (an ssh option it ignores ...)
    notes: tuple[str, ...] = ()


def topology_notes(topology: Topology) -> tuple[str, ...]:
    """What the topology's inventory said that zdupgrade does not use (empty without one)."""
    return topology.notes if isinstance(topology, InventoryTopology) else ()


def limit_groups(topology: Topology) -> Mapping[str, tuple[str, ...]] | None:
    """The group map :func:`zdu.config.limit.select` should count subscripts in: an inventory's
    (Ansible's order), else None (groups from each node's ``group`` and ``roles``)."""
    return topology.groups if isinstance(topology, InventoryTopology) else None


def reference_topology() -> Topology:
    """The built-in topology used without ``--config``: Node-A, Node-B, Node-C.

    Like the Axway reference configuration: Node-A and Node-B form the Gateway
    group, Node-C runs the GatewayManager group.  The addresses are those of the
    local lab (``./zdupgrade --lab``), so the default works out of the box there.
    """
    nodes = (
        Node(name="Node-A", host="127.0.0.11", port=2222, group="Gateway",
             roles=("admin-node-manager", "gateway"), lb_server="node-a"),
        Node(name="Node-B", host="127.0.0.12", port=2222, group="Gateway",
             roles=("node-manager", "gateway"), lb_server="node-b"),
        Node(name="Node-C", host="127.0.0.13", port=2222, group="GatewayManager",
             roles=("admin-node-manager", "api-manager"), lb_server="node-c"),
    )
    return Topology(nodes=nodes, profile="lab-gateway")


def load_topology(path: str | os.PathLike[str], *, inventory: str | None = None) -> Topology:
    """Read and validate a topology file; raise ConfigError naming file, node and field.

    ``inventory`` (``--inventory``) is an Ansible inventory whose hosts become the nodes (it
    wins over the topology's own ``inventory:``)."""
    source = str(path)
    data = read_document(Path(path), what="topology")
    return parse_topology(data, source=source, inventory=inventory, base_dir=Path(path).parent, values_checked=True)


def topology_from_inventory(inventory: str) -> Topology:
    """An Ansible inventory alone as the topology (``--inventory`` without ``--config``)."""
    return parse_topology({}, source=inventory, inventory=inventory, base_dir=Path.cwd())


def _load_inventory(ref: str, base_dir: Path | None) -> Inventory:
    from zdu.config.inventory import load_inventory
    path = Path(os.path.expanduser(ref))
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return load_inventory(path)


def parse_topology(data: Any, *, source: str, inventory: str | None = None,
                   base_dir: Path | None = None, values_checked: bool = False) -> Topology:
    """Validate a parsed topology document (dict) into a Topology.

    With an inventory (``inventory:`` in the document, or ``inventory`` given) the nodes come
    from it (and ``nodes:`` must not be given too)."""
    c = _Checker(source)
    if data == {} and inventory:
        data = {"inventory": inventory}
    top = c.document(data, "topology", _TOP_FIELDS, (), values_checked=values_checked)
    ref = inventory or c.optional(top, "inventory", "", lambda v, w: c.string(v, w), None)
    # the nodes' checker: an inventory's node dicts are checked naming the inventory and the host
    nc: _Checker = c
    hosts_of: Inventory | None = None
    if ref is not None:
        if "nodes" in top:
            raise c.fail("nodes", "the nodes come from the inventory; leave out either nodes: or the inventory")
        from zdu.config.inventory import nodes_of
        hosts_of = _load_inventory(ref, base_dir)
        nc = _InventoryChecker(hosts_of.source)
        top = {**top, "nodes": nodes_of(hosts_of)}
    if "nodes" not in top:
        raise c.fail("top level", "missing required field 'nodes' (or an inventory: / --inventory)")
    raw_nodes = top["nodes"]
    if not isinstance(raw_nodes, list) or not raw_nodes:
        raise c.fail("nodes", f"expected a non-empty list of nodes, got {_kind(raw_nodes)}")

    ssh = _parse_ssh(c, top.get("ssh"))
    nodes: list[Node] = []
    names: dict[str, tuple[int, str]] = {}   # lower-case name -> (index, name)
    endpoints: dict[tuple[str, int], str] = {}
    lb_names: dict[str, str] = {}
    label = _host_label if hosts_of is not None else _node_label
    for index, raw in enumerate(raw_nodes):
        node = _parse_node(nc, raw, index, inventory=hosts_of is not None)
        where = label(index, node.name)
        if node.name.lower() in names:
            first, other = names[node.name.lower()]
            also = f"host {other}" if hosts_of is not None else f"nodes[{first}]"
            if other == node.name:
                raise nc.fail(where, f"duplicate node name {node.name!r} (also {also})")
            raise nc.fail(nc.field(where, "name"), f"{node.name!r} differs from node {other!r} ({also}) only by case: "
                                                   "their logs would be one file on a case-insensitive file system")
        names[node.name.lower()] = (index, node.name)
        if node.transport == "ssh":
            endpoint = (node.host.lower(), node.port)
            if endpoint in endpoints:
                raise nc.fail(where, f"duplicate host:port {node.host}:{node.port} (also node {endpoints[endpoint]})")
            endpoints[endpoint] = node.name
        if node.lb_name in lb_names:
            raise nc.fail(nc.field(where, "lb_server"),
                          f"load-balancer server {node.lb_name!r} is also used by node {lb_names[node.lb_name]}")
        lb_names[node.lb_name] = node.name
        nodes.append(node)

    lb = _parse_lb(c, top.get("load_balancer"))
    profile = c.optional(top, "profile", "", lambda v, w: c.string(v, w), None)
    variables = c.optional(top, "vars", "", c.vars, frozen_map())
    serial = c.optional(top, "serial", "", lambda v, w: parse_serial(v, f"{c.source}: {w}"), Serial())
    for index, node in enumerate(nodes):
        if node.name.lower() in ON_WORDS:
            raise nc.fail(label(index, node.name), f"{node.name!r} is a word of 'on:' "
                                                    f"({', '.join(sorted(ON_WORDS))}); choose another node name")
    hosts = _parse_hosts(c, top.get("hosts"), names)
    targets = {n.name for n in nodes} | {h.name for h in hosts}
    before = _parse_run_steps(c, top.get("before"), "before", targets)
    after = _parse_run_steps(c, top.get("after"), "after", targets)
    topology = Topology(nodes=tuple(nodes), ssh=ssh, load_balancer=lb, profile=profile,
                        vars=variables, serial=serial, source=source,
                        lock_dir=c.optional(top, "lock_dir", "", _parse_lock_dir(c), Topology.lock_dir),
                        tiers=_parse_tiers(c, top.get("tiers"), nodes), hosts=hosts, before=before, after=after,
                        max_fail_percentage=c.optional(top, "max_fail_percentage", "",
                                                       lambda v, w: c.number(v, w, 0, 100), None),
                        min_in_service=c.optional(top, "min_in_service", "", _parse_capacity(c), None),
                        pause_timeout=c.optional(top, "pause_timeout", "", lambda v, w: c.number(v, w, 1, 7 * 86400),
                                                 Topology.pause_timeout),
                        pause_timeout_action=c.optional(top, "pause_timeout_action", "",
                                                        lambda v, w: c.choice(v, w, ("abort", "continue")), "abort"),
                        soak=c.optional(top, "soak", "", lambda v, w: c.number(v, w, 0, 86400), Topology.soak))
    if hosts_of is None:
        return topology
    return InventoryTopology(**{f.name: getattr(topology, f.name) for f in dataclasses.fields(Topology)},
                             groups=hosts_of.groups,
                             notes=tuple(f"{hosts_of.source}: {note}" for note in hosts_of.notes))


def _node_label(index: int, name: str) -> str:
    return f"nodes[{index}] ({name})"


def _host_label(index: int, name: str) -> str:
    return f"host {name}"


def _parse_capacity(c: _Checker) -> Callable[[Any, str], int | str]:
    """``min_in_service``: a count of nodes, or a percentage of the backend (tier) like "50%"."""
    def parse(value: Any, where: str) -> int | str:
        if isinstance(value, str) and re.fullmatch(r"\s*[0-9]{1,18}(\.[0-9]{1,18})?\s*%\s*", value):
            if float(value.strip().rstrip("%")) > 100:
                raise c.fail(where, f"a percentage is at most 100%, got {describe_value(value)}")
            return value.strip()
        return c.integer(value, where, 0, 100_000)
    return parse


def _parse_hosts(c: _Checker, raw: Any, names: Mapping[str, tuple[int, str]]) -> tuple[Node, ...]:
    """``hosts:``: other hosts reached over SSH (a database server, a load-balancer host), never
    upgraded; named by before/after steps and load_balancer.via."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise c.fail("hosts", f"expected a list of hosts, got {_kind(raw)}")
    hosts: list[Node] = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        host = _parse_node(c, item, index, section="hosts")
        where = f"hosts[{index}] ({host.name})"
        if host.name.lower() in names or host.name.lower() in seen:
            raise c.fail(where, f"{host.name!r} is already the name of a node or host")
        if host.name.lower() in ON_WORDS:
            raise c.fail(where, f"{host.name!r} is a word of 'on:'; choose another host name")
        seen.add(host.name.lower())
        hosts.append(host)
    return tuple(hosts)


def _parse_run_steps(c: _Checker, raw: Any, where: str, targets: set[str]) -> tuple[RunStep, ...]:
    from zdu.config.profile import run_steps
    steps = run_steps(c, raw, where)
    for i, item in enumerate(steps):
        if item.on not in ("control", "all") and item.on not in targets:
            raise c.fail(f"{where}[{i}].on", f"{describe_value(item.on)} is not control, all, a node or a host "
                                             "(hosts: lists the hosts that are not upgraded)")
    return steps


def _parse_tiers(c: _Checker, raw: Any, nodes: list[Node]) -> tuple[Tier, ...]:
    """``tiers:``: ordered groups of nodes; each node in the first tier it matches."""
    if raw is None:
        return ()
    if not isinstance(raw, list) or not raw:
        raise c.fail("tiers", f"expected a non-empty list of tiers, got {_kind(raw)}")
    from zdu.config.profile import step
    specs = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        where = f"tiers[{index}]"
        data = c.mapping({"name": item} if isinstance(item, str) else item, where)
        c.known(data, _TIER_FIELDS, where)
        if "name" not in data:
            raise c.fail(where, "missing required field 'name'")
        name = c.string(data["name"], f"{where}.name", pattern=re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"),
                        hint="letters, digits, '.', '_' and '-'")
        where = f"tiers[{index}] ({name})"
        if name in seen:
            raise c.fail(where, f"duplicate tier {name!r}")
        seen.add(name)
        explicit = c.optional(data, "nodes", where, c.string_list, None)
        groups = c.optional(data, "group", where, _one_or_more(c), None)
        roles = c.optional(data, "role", where, _one_or_more(c), None)
        gate_raw = data.get("gate")
        gate = tuple(step(c, g, f"{where}.gate[{i}]") for i, g in enumerate(
            gate_raw if isinstance(gate_raw, list) else [gate_raw])) if gate_raw is not None else ()
        specs.append((name, explicit, groups, roles, Tier(
            name=name, nodes=(),
            serial=c.optional(data, "serial", where, lambda v, w: parse_serial(v, f"{c.source}: {w}"), None),
            gate=gate, gate_on=c.optional(data, "gate_on", where, lambda v, w: c.choice(v, w, ("each", "control")),
                                          "each"),
            min_in_service=c.optional(data, "min_in_service", where, _parse_capacity(c), None),
            max_fail_percentage=c.optional(data, "max_fail_percentage", where, lambda v, w: c.number(v, w, 0, 100),
                                           None))))
    members: dict[str, list[str]] = {name: [] for name, *_ in specs}
    for node in nodes:
        for name, explicit, groups, roles, _tier in specs:
            if explicit is not None:
                hit = node.name in explicit
            elif groups is not None or roles is not None:
                hit = node.group in (groups or ()) or bool(set(node.roles) & set(roles or ()))
            else:
                hit = node.group == name or name in node.roles
            if hit:
                members[name].append(node.name)
                break
        else:
            raise c.fail("tiers", f"node {node.name!r} (group {node.group or '-'!s}, roles "
                                  f"{', '.join(node.roles) or '-'}) is in no tier; every node must be in one")
    for name, explicit, *_ in specs:
        for missing in sorted(set(explicit or ()) - {n.name for n in nodes}):
            raise c.fail(f"tiers ({name}).nodes", f"{missing!r} is not a node of the topology")
        if not members[name]:
            raise c.fail(f"tiers ({name})", "no node is in this tier")
    return tuple(dataclasses.replace(tier, nodes=tuple(members[name])) for name, *_, tier in specs)


def _one_or_more(c: _Checker) -> Callable[[Any, str], tuple[str, ...]]:
    def parse(value: Any, where: str) -> tuple[str, ...]:
        return (c.string(value, where),) if isinstance(value, str) else c.string_list(value, where)
    return parse


def _parse_lock_dir(c: _Checker) -> Callable[[Any, str], str]:
    def parse(value: Any, where: str) -> str:
        text = c.string(value, where)
        parts = text.split("/")
        if not text.startswith("/") or text == "/" or any(p in (".", "..") for p in parts[1:]) \
                or any(ord(ch) < 32 for ch in text):
            raise c.fail(where, f"expected an absolute directory path on the nodes, got {text[:80]!r}")
        return text.rstrip("/")
    return parse


def _parse_node(c: _Checker, raw: Any, index: int, section: str = "nodes", *, inventory: bool = False) -> Node:
    """One node (or host); ``inventory``: a node dict of an Ansible inventory, named as its host."""
    where = f"{section}[{index}]"
    data = c.mapping(raw, where)
    name_value = data.get("name")
    printable = isinstance(name_value, str) and 0 < len(name_value) <= 64 and name_value.isprintable()
    if inventory:
        where = _host_label(index, name_value if printable else describe_value(name_value))
    elif printable:
        where = f"{section}[{index}] ({name_value})"
    c.known(data, _NODE_FIELDS, where)
    for required in ("name", "host"):
        if required not in data:
            raise c.fail(where, f"missing required field {required!r}")
    name = c.string(data["name"], c.field(where, "name"), pattern=_NAME,
                    hint="letters, digits, '.', '_' and '-', at most 63 characters")
    if name.lower() in RESERVED_NODE_NAMES:
        raise c.fail(c.field(where, "name"), f"{name!r} is reserved: the node's log ({name}.log) would share its "
                                      f"name with a file of the run folder (reserved, in any case: "
                                      f"{', '.join(sorted(RESERVED_NODE_NAMES))})")
    host = c.string(data["host"], c.field(where, "host"))
    if not valid_host(host):
        raise c.fail(c.field(where, "host"), f"invalid host {describe_value(host)}: expected a host name or an IP address")
    transport = c.optional(data, "transport", where,
                           lambda v, w: c.choice(v, w, ("ssh", "local")), "ssh")
    host_key = c.optional(data, "host_key", where,
                          lambda v, w: c.string(v, w, pattern=_FINGERPRINT,
                                                hint="expected 'SHA256:' and 43 base64 characters, as ssh-keygen -lf prints"),
                          None)
    return Node(
        name=name,
        host=host,
        port=c.optional(data, "port", where, lambda v, w: c.integer(v, w, 1, 65535), 22),
        user=c.optional(data, "user", where, lambda v, w: _user(c, v, w), None),
        group=c.optional(data, "group", where, lambda v, w: c.string(v, w), ""),
        roles=c.optional(data, "roles", where, c.string_list, ()),
        vars=c.optional(data, "vars", where, c.vars, frozen_map()),
        transport=transport,
        lb_server=c.optional(data, "lb_server", where,
                             lambda v, w: c.string(v, w, pattern=_LB_SERVER,
                                                   hint="letters, digits, '.', '_', ':' and '-' (HAProxy's rule)"),
                             None),
        host_key=host_key,
        key_file=c.optional(data, "key_file", where, lambda v, w: os.path.expanduser(c.string(v, w)), None),
        proxy_jump=c.optional(data, "proxy_jump", where, _jumps(c), None),
        defaulted=frozenset({"port", "user"} - set(data)),
    )


def _jumps(c: _Checker) -> Callable[[Any, str], tuple[str, ...]]:
    """``proxy_jump``: ``[user@]host[:port]``, a comma list or a list of those, or ``none``."""
    from zdu.config.ssh_config import JumpSyntaxError, parse_jumps

    def parse(value: Any, where: str) -> tuple[str, ...]:
        # identifiers: no control character (a newline in "ops\n@bastion" is no user name)
        if isinstance(value, str):
            c.text(value, where)
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                if isinstance(item, str):
                    c.text(item, f"{where}[{i}]")
        try:
            return parse_jumps(value)
        except JumpSyntaxError as exc:
            raise c.fail(where, str(exc)) from None
    return parse


def _user(c: _Checker, value: Any, where: str) -> str:
    return c.string(value, where, pattern=USER_NAME, hint="no whitespace, and not starting with '-'")


def _parse_ssh(c: _Checker, raw: Any) -> SshSettings:
    if raw is None:
        return SshSettings(defaulted=frozenset({"user", "connect_timeout"}))
    data = c.mapping(raw, "ssh")
    c.known(data, _SSH_FIELDS, "ssh")
    default = SshSettings()
    path = lambda v, w: os.path.expanduser(c.string(v, w))  # noqa: E731
    return SshSettings(
        user=c.optional(data, "user", "ssh", lambda v, w: _user(c, v, w), default.user),
        key_file=c.optional(data, "key_file", "ssh", path, None),
        known_hosts=c.optional(data, "known_hosts", "ssh", path, None),
        host_key_policy=c.optional(data, "host_key_policy", "ssh",
                                   lambda v, w: c.choice(v, w, ("strict", "accept-new")), "strict"),
        connect_timeout=c.optional(data, "connect_timeout", "ssh",
                                   lambda v, w: c.number(v, w, 0.1, 3600), default.connect_timeout),
        command_timeout=c.optional(data, "command_timeout", "ssh",
                                   lambda v, w: c.number(v, w, 0.1, 86400), default.command_timeout),
        connect_retries=c.optional(data, "connect_retries", "ssh",
                                   lambda v, w: c.integer(v, w, 0, 20), default.connect_retries),
        parallel=c.optional(data, "parallel", "ssh", lambda v, w: c.integer(v, w, 1, 256), default.parallel),
        # ~/.ssh/config by default; "none" (or null) reads no ssh_config at all
        config_file=(None if "config_file" in data and data["config_file"] in (None, "none") else
                     c.optional(data, "config_file", "ssh", lambda v, w: c.string(v, w), default.config_file)),
        proxy_jump=c.optional(data, "proxy_jump", "ssh", _jumps(c), None),
        agent=c.optional(data, "agent", "ssh", _bool(c), None),
        jump_host_keys=c.optional(data, "jump_host_keys", "ssh", _pins(c), frozen_map()),
        defaulted=frozenset({"user", "connect_timeout"} - set(data)),
    )


def _bool(c: _Checker) -> Callable[[Any, str], bool]:
    def parse(value: Any, where: str) -> bool:
        if not isinstance(value, bool):
            raise c.fail(where, f"expected true or false, got {_kind(value)}")
        return value
    return parse


def _pins(c: _Checker) -> Callable[[Any, str], Mapping[str, str]]:
    """``jump_host_keys``: {jump host as written in proxy_jump: SHA256 fingerprint}."""
    def parse(value: Any, where: str) -> Mapping[str, str]:
        pins = {}
        for host, fingerprint in c.mapping(value, where).items():
            pins[host] = c.string(fingerprint, f"{where}.{host}", pattern=_FINGERPRINT,
                                  hint="expected 'SHA256:' and 43 base64 characters, as ssh-keygen -lf prints")
        return frozen_map(pins)
    return parse


def _parse_lb(c: _Checker, raw: Any) -> LbSettings:
    if raw is None:
        return LbSettings()
    data = c.mapping(raw, "load_balancer")
    if "type" not in data:
        raise c.fail("load_balancer", "missing required field 'type' (none, script, haproxy or module.path:Factory)")
    kind = c.string(data["type"], "load_balancer.type")
    if kind not in ("none", "script", "haproxy") and not re.fullmatch(r"[A-Za-z_][\w.]*(:[A-Za-z_]\w*)?", kind):
        raise c.fail("load_balancer.type", f"unknown load balancer {describe_value(kind)}: "
                                           "expected none, script, haproxy or a dotted path")
    options = {k: v for k, v in data.items() if k != "type"}
    for key, value in options.items():
        _lb_option(c, value, f"load_balancer.{key}", env=key == "env")
    return LbSettings(type=kind, options=frozen_map(options))


def _lb_option(c: _Checker, value: Any, where: str, *, env: bool = False) -> None:
    """Every string of the load-balancer options is an identifier (a path, a backend, a socket
    address, a node name); only the values of ``env`` (passed to the hook's environment) are text."""
    if isinstance(value, str):
        c.text(value, where)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            c.text(str(key), where)
            if env and isinstance(item, str):
                c.text(item, field_path(where, key), identifier=False)
            else:
                _lb_option(c, item, field_path(where, key))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _lb_option(c, item, f"{where}[{i}]")
