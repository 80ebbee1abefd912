"""Topology loading and validation (YAML or JSON).

Every problem is reported as one ``ConfigError`` naming the file, the node and
the field; nothing is contacted before the whole topology is valid.
"""
from __future__ import annotations

import ipaddress
import json
import os
import re
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from zdu.errors import ConfigError
from zdu.model import LbSettings, Node, SshSettings, Topology, frozen_map

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$")
_FINGERPRINT = re.compile(r"^SHA256:[A-Za-z0-9+/]{43}=?$")

_TOP_FIELDS = {"nodes", "ssh", "load_balancer", "profile", "vars", "serial", "lock_dir"}
_NODE_FIELDS = {"name", "host", "port", "user", "group", "roles", "vars", "transport",
                "lb_server", "host_key"}
_SSH_FIELDS = {"user", "key_file", "known_hosts", "host_key_policy", "connect_timeout",
               "command_timeout", "connect_retries", "parallel"}


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


def load_topology(path: str | os.PathLike[str]) -> Topology:
    """Read and validate a topology file; raise ConfigError naming file, node and field."""
    source = str(path)
    data = _read_document(Path(path), what="topology")
    return parse_topology(data, source=source)


MAX_FILE_BYTES = 10 * 1024 * 1024


class _DuplicateKey(Exception):
    def __init__(self, key: Any, line: int | None = None) -> None:
        super().__init__(key)
        self.key, self.line = key, line


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys instead of keeping the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            try:
                duplicate = key in seen
            except TypeError:  # unhashable key: let the base class report it
                break
            if duplicate:
                raise _DuplicateKey(key, key_node.start_mark.line + 1)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _json_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def _read_document(path: Path, *, what: str) -> Any:
    if not path.exists():
        raise ConfigError(f"{path}: {what} file not found")
    if not path.is_file():
        raise ConfigError(f"{path}: {what} path is not a file")
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ConfigError(f"{path}: {what} file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MB")
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: {what} file is not valid UTF-8 (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {what} file: {exc.strerror}") from None
    try:
        if path.suffix.lower() == ".json":
            try:
                return json.loads(text, object_pairs_hook=_json_pairs)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}: JSON syntax error at line {exc.lineno}, column {exc.colno}: "
                                  f"{exc.msg}") from None
        try:
            return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise ConfigError(f"{path}: YAML syntax error{where}: {exc.problem}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: YAML error: {exc}") from None
    except _DuplicateKey as dup:
        where = f" (line {dup.line})" if dup.line else ""
        raise ConfigError(f"{path}: duplicate key {dup.key!r}{where}: each field may appear once") from None
    except RecursionError:
        raise ConfigError(f"{path}: the {what} is nested too deeply") from None


def read_document(path: Path, *, what: str) -> Any:
    """Parse a YAML or JSON file (by suffix) with errors that name the file and line."""
    return _read_document(path, what=what)


class _Checker:
    """Small typed accessors whose errors name the file and the field path."""

    def __init__(self, source: str) -> None:
        self.source = source

    def document(self, data: Any, what: str, allowed: set[str], required: tuple[str, ...]) -> Mapping[str, Any]:
        """The top level of a topology or profile: a mapping of known fields with the required ones."""
        if data is None:
            raise ConfigError(f"{self.source}: the {what} file is empty")
        top = self.mapping(data, "top level")
        self.known(top, allowed, "top level")
        for field in required:
            if field not in top:
                raise self.fail("top level", f"missing required field {field!r}")
        return top

    def fail(self, where: str, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: {where}: {message}")

    def mapping(self, value: Any, where: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(where, f"expected a mapping, got {_kind(value)}")
        for key in value:
            if not isinstance(key, str):
                raise self.fail(where, f"keys must be strings, got {key!r}")
        return value

    def known(self, value: Mapping[str, Any], allowed: set[str], where: str) -> None:
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise self.fail(where, f"unknown field {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")

    def string(self, value: Any, where: str, *, pattern: re.Pattern[str] | None = None,
               hint: str = "") -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(where, f"expected a non-empty string, got {_kind(value)}")
        if pattern is not None and not pattern.match(value):
            raise self.fail(where, f"invalid value {value!r}{(': ' + hint) if hint else ''}")
        return value

    def integer(self, value: Any, where: str, lo: int, hi: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(where, f"expected an integer {lo}-{hi}, got {_kind(value)}")
        if not lo <= value <= hi:
            raise self.fail(where, f"expected an integer {lo}-{hi}, got {value}")
        return value

    def number(self, value: Any, where: str, lo: float, hi: float) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(where, f"expected a number, got {_kind(value)}")
        if not lo <= value <= hi:
            raise self.fail(where, f"expected a number between {lo:g} and {hi:g}, got {value}")
        return float(value)

    def choice(self, value: Any, where: str, choices: tuple[str, ...]) -> str:
        if value not in choices:
            raise self.fail(where, f"expected one of {', '.join(choices)}, got {value!r}")
        return str(value)

    def string_list(self, value: Any, where: str) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.fail(where, f"expected a list of strings, got {_kind(value)}")
        return tuple(value)

    def vars(self, value: Any, where: str) -> Mapping[str, Any]:
        """Template variables: a scalar, a flat list of scalars, or ``{env: NAME}``."""
        data = self.mapping(value, where)
        for key, item in data.items():
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
                raise self.fail(f"{where}.{key}", "variable names must be identifiers (letters, digits, _)")
            self._var_value(item, f"{where}.{key}")
        return frozen_map(data)

    def _var_value(self, item: Any, where: str) -> None:
        if isinstance(item, Mapping):
            if set(item) != {"env"} or not isinstance(item["env"], str) or not item["env"]:
                raise self.fail(where, "a variable is a string, number, boolean, a list of those, "
                                       "or {env: NAME} (from the control machine's environment)")
            return
        for scalar in (item if isinstance(item, list) else [item]):
            if scalar is not None and not isinstance(scalar, (str, int, float, bool)):
                raise self.fail(where, f"a variable is a string, number, boolean or a list of those, "
                                       f"got {_kind(scalar)}")
            if isinstance(scalar, str) and "\x00" in scalar:
                raise self.fail(where, "contains a NUL byte, which no shell can receive")

    def optional(self, data: Mapping[str, Any], key: str, where: str,
                 parse: Callable[[Any, str], Any], default: Any) -> Any:
        if key not in data or data[key] is None:
            return default
        return parse(data[key], f"{where}.{key}" if where else key)


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({value})"
    if isinstance(value, (int, float)):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    return type(value).__name__


def parse_topology(data: Any, *, source: str) -> Topology:
    """Validate a parsed topology document (dict) into a Topology."""
    c = _Checker(source)
    top = c.document(data, "topology", _TOP_FIELDS, ("nodes",))
    raw_nodes = top["nodes"]
    if not isinstance(raw_nodes, list) or not raw_nodes:
        raise c.fail("nodes", f"expected a non-empty list of nodes, got {_kind(raw_nodes)}")

    ssh = _parse_ssh(c, top.get("ssh"))
    nodes: list[Node] = []
    names: dict[str, int] = {}
    endpoints: dict[tuple[str, int], str] = {}
    lb_names: dict[str, str] = {}
    for index, raw in enumerate(raw_nodes):
        node = _parse_node(c, raw, index)
        if node.name in names:
            raise c.fail(f"nodes[{index}] ({node.name})",
                         f"duplicate node name {node.name!r} (also nodes[{names[node.name]}])")
        names[node.name] = index
        if node.transport == "ssh":
            endpoint = (node.host.lower(), node.port)
            if endpoint in endpoints:
                raise c.fail(f"nodes[{index}] ({node.name})",
                             f"duplicate host:port {node.host}:{node.port} (also node {endpoints[endpoint]})")
            endpoints[endpoint] = node.name
        if node.lb_name in lb_names:
            raise c.fail(f"nodes[{index}] ({node.name}).lb_server",
                         f"load-balancer server {node.lb_name!r} is also used by node {lb_names[node.lb_name]}")
        lb_names[node.lb_name] = node.name
        nodes.append(node)

    lb = _parse_lb(c, top.get("load_balancer"))
    profile = c.optional(top, "profile", "", lambda v, w: c.string(v, w), None)
    variables = c.optional(top, "vars", "", c.vars, frozen_map())
    serial = c.optional(top, "serial", "", lambda v, w: _parse_serial(c, v, w), 1)
    return Topology(nodes=tuple(nodes), ssh=ssh, load_balancer=lb, profile=profile,
                    vars=variables, serial=serial, source=source,
                    lock_dir=c.optional(top, "lock_dir", "", _parse_lock_dir(c), Topology.lock_dir))


def _parse_lock_dir(c: _Checker) -> Callable[[Any, str], str]:
    def parse(value: Any, where: str) -> str:
        text = c.string(value, where)
        parts = text.split("/")
        if not text.startswith("/") or text == "/" or any(p in (".", "..") for p in parts[1:]) \
                or any(ord(ch) < 32 for ch in text):
            raise c.fail(where, f"expected an absolute directory path on the nodes, got {text[:80]!r}")
        return text.rstrip("/")
    return parse


def _parse_node(c: _Checker, raw: Any, index: int) -> Node:
    where = f"nodes[{index}]"
    data = c.mapping(raw, where)
    if "name" in data and isinstance(data["name"], str):
        where = f"nodes[{index}] ({data['name']})"
    c.known(data, _NODE_FIELDS, where)
    for required in ("name", "host"):
        if required not in data:
            raise c.fail(where, f"missing required field {required!r}")
    name = c.string(data["name"], f"{where}.name", pattern=_NAME,
                    hint="letters, digits, '.', '_' and '-', at most 63 characters")
    host = c.string(data["host"], f"{where}.host")
    if not _valid_host(host):
        raise c.fail(f"{where}.host", f"invalid host {host!r}: expected a host name or an IP address")
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
        user=c.optional(data, "user", where, lambda v, w: c.string(v, w), None),
        group=c.optional(data, "group", where, lambda v, w: c.string(v, w), ""),
        roles=c.optional(data, "roles", where, c.string_list, ()),
        vars=c.optional(data, "vars", where, c.vars, frozen_map()),
        transport=transport,
        lb_server=c.optional(data, "lb_server", where, lambda v, w: c.string(v, w), None),
        host_key=host_key,
    )


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return bool(_HOST.match(host)) and ".." not in host


def _parse_ssh(c: _Checker, raw: Any) -> SshSettings:
    if raw is None:
        return SshSettings()
    data = c.mapping(raw, "ssh")
    c.known(data, _SSH_FIELDS, "ssh")
    default = SshSettings()
    path = lambda v, w: os.path.expanduser(c.string(v, w))  # noqa: E731
    return SshSettings(
        user=c.optional(data, "user", "ssh", lambda v, w: c.string(v, w), default.user),
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
    )


def _parse_lb(c: _Checker, raw: Any) -> LbSettings:
    if raw is None:
        return LbSettings()
    data = c.mapping(raw, "load_balancer")
    if "type" not in data:
        raise c.fail("load_balancer", "missing required field 'type' (none, script, haproxy or module.path:Factory)")
    kind = c.string(data["type"], "load_balancer.type")
    if kind not in ("none", "script", "haproxy") and not re.match(r"^[A-Za-z_][\w.]*(:[A-Za-z_]\w*)?$", kind):
        raise c.fail("load_balancer.type",
                     f"unknown load balancer {kind!r}: expected none, script, haproxy or a dotted path")
    options = {k: v for k, v in data.items() if k != "type"}
    return LbSettings(type=kind, options=frozen_map(options))



def _parse_serial(c: _Checker, value: Any, where: str) -> int | str | tuple[int | str, ...]:
    """ansible-style ``serial``: a count, a percentage, or a list of those (the last repeats)."""
    items = value if isinstance(value, list) else [value]
    if not items:
        raise c.fail(where, "expected a count, a percentage like '30%' or a non-empty list of those")
    parsed: list[int | str] = []
    for i, item in enumerate(items):
        w = f"{where}[{i}]" if isinstance(value, list) else where
        if isinstance(item, str) and re.fullmatch(r"\s*\d+(\.\d+)?\s*%\s*", item):
            if float(item.strip().rstrip("%")) <= 0:
                raise c.fail(w, f"a percentage must be above 0, got {item!r}")
            parsed.append(item.strip())
        else:
            parsed.append(c.integer(item, w, 1, 100_000))
    return tuple(parsed) if isinstance(value, list) else parsed[0]
