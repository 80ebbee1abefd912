"""Ansible inventories (INI and YAML) as the topology's node list.

:func:`load_inventory` reads an inventory file the way ``ansible-inventory --list`` does
(the rules, tested against ansible-core itself on a corpus; no Ansible code is used) and
returns an :class:`Inventory`: the hosts in inventory order, every group's hosts, each
host's variables merged with Ansible's precedence, and one node dict per host for the
topology parser.

Rules followed:

* INI: hosts before any section are ``ungrouped``; ``[g]`` hosts, ``[g:vars]``
  ``key=value`` lines, ``[g:children]`` group names (declared before or after); a host
  line is ``pattern[:port] key=value ...`` (shell-quoted, ``#`` comments), its values read
  as Python literals where they are one (``3``, ``True``, ``[1, 2]``), else strings; the
  same for ``:vars`` values.  YAML: top-level keys are groups; each has ``hosts``,
  ``vars``, ``children`` (mappings, or a single name as a string).
* Host ranges: ``web[01:10].example.com`` (zero-padded), ``db[1:10:3]`` (step),
  ``edge-[a:c]`` (letters), several ranges in one name.
* Every group is under ``all``; a host in no other group is in ``ungrouped``.
* ``group_vars/`` and ``host_vars/`` next to the inventory file (:class:`_VarsFiles`): the
  inventory's group vars < ``group_vars/all`` < ``group_vars/GROUP`` < the inventory's host
  vars < ``host_vars/HOST``, as ``ansible-inventory --list`` merges them.
* Variables: ``all`` < parent group < child group < host.  A group's depth is its
  longest path from ``all``; groups are merged by (depth, ``ansible_group_priority``,
  name), so groups at the same depth merge alphabetically and the last one wins.

Node dict per host: ``name`` (the inventory hostname), ``host`` (``ansible_host``, else
the name), ``port`` (``ansible_port``), ``user`` (``ansible_user``), ``key_file``
(``ansible_ssh_private_key_file``), ``proxy_jump`` (``-J`` / ``-o ProxyJump=`` /
``-o ProxyCommand="ssh -W %h:%p [user@]bastion"`` in ``ansible_ssh_common_args`` /
``ansible_ssh_extra_args``), ``transport`` (``local`` for ``ansible_connection=local``),
``group`` (its most specific group: the last in precedence order), ``roles`` (all its
groups, in precedence order, without ``all``/``ungrouped``) and ``vars`` (every other
variable; no ``ansible_*`` variable is passed on: they hold connection settings and
secrets such as ``ansible_password``).  Keys whose value the inventory does not give are
left out, so the topology's defaults apply.

Errors (bad syntax, an undefined child group, a group loop, a variable that is not a
scalar or a list of scalars, an unknown key or section, a connection other than ssh or
local) are one :class:`~zdu.errors.ConfigError` naming the file and the line, group or host.
"""
from __future__ import annotations

import ast
import os
import re
import shlex
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from zdu.config.values import bounded_int, describe_value, port_number, shorten
from zdu.errors import ConfigError
from zdu.model import frozen_map

MAX_FILE_BYTES = 10 * 1024 * 1024
MAX_RANGE_HOSTS = 100_000
#: host lines and ssh args are split with shlex, whose cost grows with the square of a word's
#: length (a 9 MB host line did not load in 12 minutes): longer ones are refused
MAX_HOST_LINE = 100_000
#: a group holds its children's hosts: the memberships (and the walk that finds them) grow with
#: the square of a chain of children (20,000 groups deep took minutes and gigabytes); bounded
MAX_MEMBERSHIPS = 5_000_000
MAX_SSH_ARGS = 10_000
#: ``ansible_group_priority`` bound (Ansible takes any int; a larger one only orders the same)
MAX_GROUP_PRIORITY = 10**9

# patterns are used with fullmatch ("$" would also match before a final newline)
_SECTION = re.compile(r"\[([^:\]\s]+)(?::(\w+))?\]\s*(?:[#;].*)?")
_GROUP_NAME = re.compile(r"([^:\]\s]+)\s*(?:[#;].*)?")
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")   # fullmatch: "$" also matches before a final newline
_RANGE = re.compile(r"\[([^\]]*)\]")
_IPV6_PORT = re.compile(r"\[[0-9A-Fa-f:.]*:[0-9A-Fa-f:.%\w]*\]:.*")   # "[2001:db8::1]:2222 ...": a host line
_CONNECTION_VARS = ("ansible_host", "ansible_ssh_host", "ansible_port", "ansible_ssh_port",
                    "ansible_user", "ansible_ssh_user", "ansible_ssh_private_key_file",
                    "ansible_private_key_file", "ansible_ssh_common_args",
                    "ansible_ssh_extra_args", "ansible_connection")


@dataclass(frozen=True)
class Inventory:
    """A parsed inventory: hosts, groups, merged variables and node dicts."""

    source: str
    hosts: tuple[str, ...]                                   # inventory order
    groups: Mapping[str, tuple[str, ...]]                    # group -> its hosts (with children's)
    children: Mapping[str, tuple[str, ...]]                  # group -> child groups
    host_vars: Mapping[str, Mapping[str, Any]]               # what ansible-inventory --list shows
    nodes: tuple[Mapping[str, Any], ...]                     # one topology node dict per host
    notes: tuple[str, ...] = ()

    def host_groups(self, host: str) -> tuple[str, ...]:
        """Every group ``host`` is in (directly or through a child group), sorted."""
        return tuple(sorted(g for g, members in self.groups.items() if host in members))


# --------------------------------------------------------------------------- the model

@dataclass
class _Group:
    name: str
    vars: dict[str, Any] = field(default_factory=dict)
    hosts: list[str] = field(default_factory=list)
    known: set[str] = field(default_factory=set)           # ``hosts`` as a set: membership in O(1)
    children: list[str] = field(default_factory=list)
    parents: list[str] = field(default_factory=list)
    linked: set[tuple[str, str]] = field(default_factory=set)   # ("child"|"parent", name): O(1) checks
    priority: int = 1


class _Builder:
    """Hosts and groups as the parsers add them (insertion order kept everywhere)."""

    def __init__(self, source: str, vars_dir: Path | None = None) -> None:
        self.source = source
        self.vars_dir = vars_dir                             # where group_vars/ and host_vars/ are
        self.groups: dict[str, _Group] = {}
        self.hosts: dict[str, dict[str, Any]] = {}
        self.notes: list[str] = []
        self.group("all")
        self.group("ungrouped")

    def fail(self, where: str, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: {where}: {message}")

    def group(self, name: str) -> _Group:
        if name not in self.groups:
            self.groups[name] = _Group(name)
        return self.groups[name]

    def host(self, name: str, group: str, port: int | None, variables: Mapping[str, Any],
             where: str) -> None:
        host_vars = self.hosts.setdefault(name, {})
        if port is not None:
            host_vars["ansible_port"] = port
        for key, value in variables.items():
            host_vars[self.var_name(key, where)] = self.var_value(value, f"{where}: {key}")
        members = self.group(group)
        if name not in members.known:
            members.known.add(name)
            members.hosts.append(name)

    def set_var(self, group: str, key: Any, value: Any, where: str) -> None:
        key = self.var_name(key, where)
        value = self.var_value(value, f"{where}: {key}")
        if key == "ansible_group_priority":
            priority = bounded_int(value, -MAX_GROUP_PRIORITY, MAX_GROUP_PRIORITY)
            if priority is None:
                raise self.fail(where, f"ansible_group_priority must be an integer from {-MAX_GROUP_PRIORITY:,} "
                                       f"to {MAX_GROUP_PRIORITY:,}, got {describe_value(value, 40)}")
            self.group(group).priority = priority
            return
        self.group(group).vars[key] = value

    def add_child(self, parent: str, child: str, where: str) -> None:
        if parent == child:
            raise self.fail(where, f"group {child!r} cannot be its own child")
        p, c = self.group(parent), self.group(child)
        # sets, not "in list": a [top:children] of 20,000 groups took 7 s here
        if ("child", child) not in p.linked:
            p.linked.add(("child", child))
            p.children.append(child)
        if ("parent", parent) not in c.linked:
            c.linked.add(("parent", parent))
            c.parents.append(parent)

    def var_name(self, key: Any, where: str) -> str:
        if not isinstance(key, str) or not _VAR_NAME.fullmatch(key):
            raise self.fail(where, f"invalid variable name {key!r}: names are identifiers "
                                   "(letters, digits, _)")
        return key

    def var_value(self, value: Any, where: str) -> Any:
        items = value if isinstance(value, list) else [value]
        for item in items:
            if item is not None and not isinstance(item, (str, int, float, bool)):
                kind = "a mapping" if isinstance(item, Mapping) else type(item).__name__
                raise self.fail(where, f"a variable is a string, number, boolean or a list of "
                                       f"those, got {kind}")
            if isinstance(item, str) and "\x00" in item:
                raise self.fail(where, "contains a NUL byte")
        return value

    # ------------------------------------------------------------------ the result

    def finish(self) -> Inventory:
        groups = self.groups
        for name, group in groups.items():
            if name != "all" and not group.parents:
                self.add_child("all", name, f"group {name}")
        # a host is in "ungrouped" when it is in no other group (all is not one); linear in the
        # number of group memberships (a [gw] web[1:20000] line once took 8 s here)
        grouped = {h for name, g in groups.items() if name not in ("all", "ungrouped") for h in g.hosts}
        ungrouped = groups["ungrouped"]
        ungrouped.hosts = [h for h in ungrouped.hosts if h not in grouped] + \
            [h for h in self.hosts if h not in grouped and h not in ungrouped.known]
        ungrouped.known = set(ungrouped.hosts)
        depth = self._depths()
        if not self.hosts:
            # not the topology's "nodes: expected a non-empty list", which names no inventory line
            raise ConfigError(f"{self.source}: the inventory defines no hosts")
        budget = [MAX_MEMBERSHIPS]
        members = {name: tuple(self._members(name, budget)) for name in groups}
        groups_of: dict[str, list[_Group]] = {host: [] for host in self.hosts}
        for name, hosts in members.items():
            for host in hosts:
                groups_of[host].append(groups[name])
        host_vars: dict[str, Mapping[str, Any]] = {}
        nodes: list[Mapping[str, Any]] = []
        group_files = _VarsFiles(self.vars_dir, "group_vars")
        host_files = _VarsFiles(self.vars_dir, "host_vars")
        file_vars = {name: group_files.variables(name) for name in groups}
        for host, own in self.hosts.items():
            mine = sorted(groups_of[host], key=lambda g: (depth[g.name], g.priority, g.name))
            merged: dict[str, Any] = {}
            # Ansible's order: the inventory's group vars, group_vars/all, group_vars/<group>
            # (groups in the same order), the inventory's host vars, host_vars/<host>
            for group in mine:
                merged.update(group.vars)
            for group in mine:
                merged.update(file_vars[group.name])
            merged.update(own)
            merged.update(host_files.variables(host))
            host_vars[host] = frozen_map(merged)
            named = [g.name for g in mine if g.name not in ("all", "ungrouped")]
            nodes.append(self._node(host, merged, named))
        return Inventory(
            source=self.source, hosts=tuple(self.hosts),
            groups=frozen_map(members),
            children=frozen_map({n: tuple(g.children) for n, g in groups.items()}),
            host_vars=frozen_map(host_vars), nodes=tuple(nodes),
            notes=tuple(dict.fromkeys(self.notes)))

    def _members(self, name: str, budget: list[int]) -> list[str]:
        """The group's hosts, then its children's level by level (breadth first), each once:
        the order Ansible's subscripts (``group[0]``) count in.  ``budget`` (one counter for all
        groups) bounds the groups walked and hosts collected."""
        groups = self.groups
        order = {name: None}           # a dict: ordered, and membership in O(1)
        level = [name]
        while level:
            nxt = []
            for parent in level:
                for child in groups[parent].children:
                    if child not in order:
                        order[child] = None
                        nxt.append(child)
            level = nxt
        out: dict[str, None] = {}
        budget[0] -= len(order)
        for group in order:
            hosts = groups[group].hosts
            if hosts:
                budget[0] -= len(hosts)
                out.update(dict.fromkeys(hosts))
        if budget[0] < 0:
            raise ConfigError(f"{self.source}: the groups hold more than {MAX_MEMBERSHIPS:,} hosts in all "
                              f"(a group holds its children's hosts: group {name!r} has "
                              f"{len(order) - 1:,} groups below it)")
        return list(out)

    def _depths(self) -> dict[str, int]:
        """Longest path from ``all`` to each group; a loop is an error.  Iterative: a chain of
        thousands of ``[gN:children]`` groups is as deep as it is long."""
        depth: dict[str, int] = {}
        for start in self.groups:
            if start in depth:
                continue
            path = [start]                                  # groups whose parents are being walked
            on_path = {start}
            parents: list[Iterator[str]] = [iter(self.groups[start].parents)]
            while path:
                parent = next(parents[-1], None)
                if parent is None:                          # every parent known: this one is too
                    name = path.pop()
                    parents.pop()
                    on_path.discard(name)
                    depth[name] = max((depth[p] + 1 for p in self.groups[name].parents), default=0)
                elif parent in on_path:
                    loop = " -> ".join(path[path.index(parent):] + [parent])
                    raise self.fail(f"group {parent}", f"groups form a loop ({shorten(loop)})")
                elif parent not in depth:
                    path.append(parent)
                    on_path.add(parent)
                    parents.append(iter(self.groups[parent].parents))
        return depth

    def _node(self, host: str, merged: Mapping[str, Any], groups: list[str]) -> dict[str, Any]:
        where = f"host {host}"
        node: dict[str, Any] = {"name": host}
        address = _first(merged, "ansible_ssh_host", "ansible_host")
        node["host"] = self._text(address, f"{where}: ansible_host") if address is not None else host
        port = _first(merged, "ansible_ssh_port", "ansible_port")
        if port is not None:
            number = port_number(port)
            if number is None:
                raise self.fail(f"{where}: ansible_port", f"expected a port 1-65535, got {describe_value(port, 40)}")
            node["port"] = number
        user = _first(merged, "ansible_ssh_user", "ansible_user")
        if user is not None:
            node["user"] = self._text(user, f"{where}: ansible_user")
        key = _first(merged, "ansible_ssh_private_key_file", "ansible_private_key_file")
        if key is not None:
            node["key_file"] = self._text(key, f"{where}: ansible_ssh_private_key_file")
        jumps = _jumps(merged, self, where)
        if jumps is not None:
            node["proxy_jump"] = jumps
        connection = merged.get("ansible_connection")
        if connection is not None:
            if connection == "local":
                node["transport"] = "local"
            elif connection not in ("ssh", "paramiko", "smart"):
                raise self.fail(f"{where}: ansible_connection",
                                f"{connection!r} is not supported (ssh or local)")
        if groups:
            node["group"] = groups[-1]
            node["roles"] = groups
        else:
            node["group"] = "ungrouped"
            node["roles"] = []
        node["vars"] = {k: v for k, v in merged.items() if not k.startswith("ansible_")}
        return node

    def _text(self, value: Any, where: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(where, f"expected a non-empty string, got {value!r}")
        if "{{" in value or "{%" in value:
            raise self.fail(where, "templated values are not supported here")
        return value


# --------------------------------------------------------------------------- group_vars/, host_vars/

#: bounds on a group_vars/NAME/ directory: files read for one group or host, and how deep
MAX_VARS_FILES = 1000
MAX_VARS_DEPTH = 8
_VARS_SUFFIXES = ("", ".yml", ".yaml", ".json")


class _VarsFiles:
    """The variables Ansible's ``host_group_vars`` plugin reads from ``group_vars/`` or
    ``host_vars/`` next to the inventory file: for a name, the first of ``NAME``, ``NAME.yml``,
    ``NAME.yaml``, ``NAME.json`` that exists; a directory gives its files (sorted, recursively,
    hidden ones and ``~`` backups skipped, only those without an extension or ending in
    ``.yml``/``.yaml``/``.json``), later files replacing earlier ones' keys.  Values are plain
    data: a Jinja template in one is text, never evaluated.  A mapping (or a list holding one)
    is playbook data that cannot be a template variable: it is left out, unless it is an
    ``ansible_*`` variable (then the node's checks refuse it)."""

    def __init__(self, base: Path | None, kind: str) -> None:
        self.kind = kind
        self.base = base / kind if base is not None else None
        try:
            self.names = set(os.listdir(self.base)) if self.base is not None and self.base.is_dir() else set()
        except OSError as exc:
            raise ConfigError(f"{self.base}: cannot read the directory: {exc.strerror}") from None

    def variables(self, name: str) -> dict[str, Any]:
        if not self.names or not name or name.startswith(".") or "/" in name:
            return {}
        assert self.base is not None
        for suffix in _VARS_SUFFIXES:
            if name + suffix in self.names:
                path = self.base / (name + suffix)
                files = self._directory(path, 0, [], [MAX_VARS_FILES]) if path.is_dir() else [path]
                out: dict[str, Any] = {}
                for file in files:
                    out.update(self._read(file))
                return out
        return {}

    def _directory(self, path: Path, depth: int, found: list[Path], dirs: list[int]) -> list[Path]:
        if depth > MAX_VARS_DEPTH:
            raise ConfigError(f"{path}: {self.kind} directories are nested more than {MAX_VARS_DEPTH} deep")
        dirs[0] -= 1                                         # symlinks can make a tree of few levels wide
        if dirs[0] < 0:
            raise ConfigError(f"{path}: more than {MAX_VARS_FILES} {self.kind} directories")
        try:
            entries = sorted(os.listdir(path))
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the directory: {exc.strerror}") from None
        for entry in entries:
            if entry.startswith(".") or entry.endswith("~"):
                continue
            full, ext = path / entry, os.path.splitext(entry)[1]
            if full.is_dir() and not ext:
                self._directory(full, depth + 1, found, dirs)
            elif full.is_file() and ext in _VARS_SUFFIXES:
                found.append(full)
                if len(found) > MAX_VARS_FILES:
                    raise ConfigError(f"{path}: more than {MAX_VARS_FILES} {self.kind} files")
        return found

    def _read(self, path: Path) -> dict[str, Any]:
        from zdu.config.documents import read_document
        try:
            data = read_document(path, what=self.kind)
        except ConfigError as exc:
            raise _ansible_tag(exc, path) from None
        if data is None:                                     # an empty file, as Ansible
            return {}
        if isinstance(data, str) and data.startswith("$ANSIBLE_VAULT"):
            raise ConfigError(f"{path}: the file is encrypted with ansible-vault, which zdupgrade "
                              "cannot read")
        if not isinstance(data, Mapping):
            raise ConfigError(f"{path}: expected a mapping of variables, got {describe_value(data, 40)}")
        out: dict[str, Any] = {}
        for key, value in data.items():
            if not isinstance(key, str) or not _VAR_NAME.fullmatch(key):
                raise ConfigError(f"{path}: invalid variable name {describe_value(key, 60)}: names "
                                  "are identifiers (letters, digits, _)")
            items = value if isinstance(value, list) else [value]
            if key.startswith("ansible_") or all(i is None or isinstance(i, (str, int, float, bool))
                                                 for i in items):
                out[key] = value
        return out


def _first(data: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        if data.get(name) is not None:
            return data[name]
    return None


# --------------------------------------------------------------------------- ssh args

def _jumps(merged: Mapping[str, Any], b: _Builder, where: str) -> list[str] | None:
    """The jump hosts that ``ansible_ssh_common_args`` / ``_extra_args`` ask for."""
    found: list[tuple[str, list[str]]] = []
    for var in ("ansible_ssh_common_args", "ansible_ssh_extra_args"):
        text = merged.get(var)
        if text is None:
            continue
        if not isinstance(text, str):
            raise b.fail(f"{where}: {var}", f"expected a string, got {describe_value(text, 60)}")
        if len(text) > MAX_SSH_ARGS:
            raise b.fail(f"{where}: {var}", f"longer than {MAX_SSH_ARGS:,} characters ({len(text):,})")
        try:
            words = shlex.split(text)
        except ValueError as exc:
            raise b.fail(f"{where}: {var}", f"cannot split {text!r}: {exc}") from None
        i = 0
        while i < len(words):
            word = words[i]
            value: str | None = None
            if word in ("-J", "-o") and i + 1 < len(words):
                value, i = words[i + 1], i + 2
                option = "ProxyJump=" + value if word == "-J" else value
            elif word.startswith("-J") and len(word) > 2:
                option, i = "ProxyJump=" + word[2:], i + 1
            elif word.startswith("-o") and len(word) > 2:
                option, i = word[2:], i + 1
            elif word[:2] in _DESTINATION_FLAGS:
                raise b.fail(f"{where}: {var}", _destination(word[:2], _DESTINATION_FLAGS[word[:2]]))
            else:
                b.notes.append(f"{where}: {var}: {word!r} is not used by zdupgrade")
                i += 1
                continue
            parts = re.match(r"^(\w+)(?:\s*=\s*|\s+)(.*)$", option, re.S)
            name, arg = (parts.group(1), parts.group(2)) if parts else (option, "")
            if name.lower() == "proxyjump":
                found.append((var, [] if arg.strip().lower() == "none" else
                              [h.strip() for h in arg.split(",") if h.strip()]))
            elif name.lower() == "proxycommand":
                found.append((var, [_proxy_command(arg, b, f"{where}: {var}")]))
            elif name.lower() in _DESTINATION_OPTIONS:
                raise b.fail(f"{where}: {var}", _destination(f"-o {name}", _DESTINATION_OPTIONS[name.lower()]))
            else:
                why = (" (host keys are checked by zdupgrade's ssh.host_key_policy)"
                       if name.lower() in ("stricthostkeychecking", "userknownhostsfile") else "")
                b.notes.append(f"{where}: {var}: ssh option {name!r} is not used by zdupgrade{why}")
    if not found:
        return None
    if len(found) > 1:
        raise b.fail(where, f"jump hosts are given twice ({', '.join(v for v, _ in found)}); "
                            "ssh itself refuses that")
    return found[0][1]


#: ssh options in ``ansible_ssh_*_args`` that say where or as whom to connect: zdupgrade does not
#: pass these args to ssh, so taking them silently would reach another port, user or key than
#: Ansible does -- they are refused, naming the variable to use
_DESTINATION_FLAGS = {"-p": "ansible_port", "-l": "ansible_user", "-i": "ansible_ssh_private_key_file",
                      "-F": "ssh.config_file in a topology (--config)"}
_DESTINATION_OPTIONS = {"port": "ansible_port", "user": "ansible_user", "hostname": "ansible_host",
                        "identityfile": "ansible_ssh_private_key_file",
                        "certificatefile": "ssh_config (ssh.config_file in a topology)"}


def _destination(option: str, instead: str) -> str:
    return (f"{option} is not supported here (zdupgrade does not pass these ssh args on, so the "
            f"node would be reached differently than with Ansible): use {instead}")


#: ``-o`` options of a ``ProxyCommand="ssh ... -W %h:%p host"`` that do not change which jump host is
#: reached or as whom (zdupgrade's own host-key policy and timeouts apply to the jump): ignored
_PROXY_IGNORED = {"stricthostkeychecking", "userknownhostsfile", "globalknownhostsfile", "serveraliveinterval",
                  "serveralivecountmax", "connecttimeout", "loglevel", "batchmode", "compression",
                  "controlmaster", "controlpath", "controlpersist", "tcpkeepalive", "forwardagent"}


def _proxy_command(command: str, b: _Builder, where: str) -> str:
    """``ssh -W %h:%p [-q] [-p PORT] [-l USER] [-o Port=|User=|harmless] [user@]host`` is
    ``ProxyJump [user@]host[:port]``."""
    try:
        words = shlex.split(command)
    except ValueError as exc:            # "No closing quotation", "No escaped character"
        raise b.fail(where, f"cannot split ProxyCommand {describe_value(command)}: {exc}") from None
    refuse = b.fail(where, f"ProxyCommand {describe_value(command)} is not supported: use "
                           "-o ProxyJump=[user@]host[:port] (or ssh -W %h:%p host)")
    if not words or not (words[0] == "ssh" or words[0].endswith("/ssh")):
        raise refuse
    user = port = None
    dest: str | None = None
    forward = False
    rest = words[1:]
    while rest:
        word = rest.pop(0)
        if word == "-W" and rest and rest.pop(0) == "%h:%p":
            forward = True
        elif word == "-q":
            continue
        elif word in ("-p", "-l") and rest:
            value = rest.pop(0)
            port, user = (value, user) if word == "-p" else (port, value)
        elif word.startswith("-o") and (len(word) > 2 or rest):
            option = word[2:] if len(word) > 2 else rest.pop(0)
            parts = re.match(r"^(\w+)(?:\s*=\s*|\s+)(.*)$", option, re.S)
            name, value = (parts.group(1).lower(), parts.group(2)) if parts else (option.lower(), "")
            if name == "port" and value:
                port = value
            elif name == "user" and value:
                user = value
            elif name not in _PROXY_IGNORED:
                raise refuse
        elif not word.startswith("-") and dest is None:
            dest = word
        else:
            raise refuse
    if not forward or dest is None:
        raise refuse
    if user and "@" not in dest:
        dest = f"{user}@{dest}"
    return f"{dest}:{port}" if port else dest


# --------------------------------------------------------------------------- host patterns

def expand_hosts(pattern: str) -> tuple[list[str], int | None]:
    """``web[01:03].x:2222`` -> (["web01.x", "web02.x", "web03.x"], 2222); raises ValueError."""
    pattern = pattern.strip()
    if not pattern:
        raise ValueError("empty host name")
    if pattern.endswith(":"):
        raise ValueError(f"host {pattern!r} ends in ':' (reserved for a port)")
    port: int | None = None
    if pattern.startswith("[") and "]:" in pattern and _is_ipv6(pattern[1:pattern.index("]")]):
        host, port_text = pattern[1:].split("]:", 1)
        port = _port(port_text, pattern)
        return [host], port
    if pattern.count(":") > 1 and _is_ipv6(pattern):
        return [pattern], None
    name = pattern
    depth, colon = 0, -1
    for index, char in enumerate(pattern):
        depth += (char == "[") - (char == "]")
        if char == ":" and depth == 0:
            if colon >= 0:
                raise ValueError(f"invalid host {pattern!r}")
            colon = index
    if colon >= 0:
        name, port = pattern[:colon], _port(pattern[colon + 1:], pattern)
    hosts = _expand(name)
    for host in hosts:
        if not host or any(c.isspace() for c in host) or host == "---":
            raise ValueError(f"invalid host {host!r}")
    return hosts, port


def _port(text: str, pattern: str) -> int:
    port = port_number(text)
    if port is None:
        raise ValueError(f"invalid port in {describe_value(pattern)}: expected 1-65535")
    return port


def _is_ipv6(text: str) -> bool:
    import ipaddress
    try:
        ipaddress.IPv6Address(text)
        return True
    except ValueError:
        return False


def _expand(name: str) -> list[str]:
    match = _RANGE.search(name)
    if not match:
        if "[" in name or "]" in name:
            raise ValueError(f"unbalanced '[' ']' in host {name!r}")
        return [name]
    head, spec, tail = name[:match.start()], match.group(1), name[match.end():]
    bounds = spec.split(":")
    if len(bounds) not in (2, 3):
        raise ValueError(f"host range [{spec}] must be begin:end or begin:end:step")
    begin, end = bounds[0] or "0", bounds[1]
    step_text = bounds[2] if len(bounds) == 3 else "1"
    if not end:
        raise ValueError(f"host range [{spec}] has no end")
    shown = describe_value(f"[{spec}]", 60)
    step = bounded_int(step_text, 1, 10**18)
    if step is None:
        raise ValueError(f"host range {shown}: step must be a positive integer")
    letters = string.ascii_letters
    first, last = bounded_int(begin, 0, 10**18), bounded_int(end, 0, 10**18)
    if len(begin) == 1 and len(end) == 1 and begin in letters and end in letters:
        b, e = letters.index(begin), letters.index(end)
        if b > e:
            raise ValueError(f"host range {shown}: begin must not be after end")
        values = list(letters[b:e + 1:step])
    elif first is not None and last is not None:
        if begin.startswith("0") and len(begin) > 1 and len(begin) != len(end):
            raise ValueError(f"host range {shown}: zero-padded begin and end must be as long")
        if first > last:            # Ansible silently makes no host of it: a typo that drops hosts
            raise ValueError(f"host range {shown}: begin must not be after end")
        width = len(begin) if begin.startswith("0") and len(begin) > 1 else 0
        count = (last - first) // step + 1
        if count > MAX_RANGE_HOSTS:
            raise ValueError(f"host range {shown} gives more than {MAX_RANGE_HOSTS} hosts")
        values = [str(i).zfill(width) for i in range(first, last + 1, step)]
    else:
        raise ValueError(f"host range {shown} must be numbers (ASCII digits, at most 18) or single letters")
    out: list[str] = []
    for value in values:
        out.extend(_expand(head + value + tail))
        if len(out) > MAX_RANGE_HOSTS:
            raise ValueError(f"host ranges in {name!r} give more than {MAX_RANGE_HOSTS} hosts")
    return out


# --------------------------------------------------------------------------- INI

def _ini_value(text: str) -> Any:
    """A value as Ansible's INI plugin reads it: a Python literal if it is one."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text
    if isinstance(value, (tuple, set, frozenset)):
        value = list(value)
    if isinstance(value, bytes) or value is ... or isinstance(value, complex):
        return text
    return value


def parse_ini(text: str, source: str, vars_dir: Path | None = None) -> Inventory:
    """Parse INI inventory ``text`` (``source`` names it in errors; ``vars_dir`` holds its
    ``group_vars/`` and ``host_vars/``, if any)."""
    b = _Builder(source, vars_dir)
    group, state = "ungrouped", "hosts"
    pending: dict[str, tuple[int, str, list[str]]] = {}       # group -> (line, state, parents)
    declared = {"all", "ungrouped"}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        where = f"line {lineno}"
        if not line or line[0] in "#;":
            continue
        section = _SECTION.fullmatch(line)
        if section:
            group, kind = section.group(1), section.group(2) or "hosts"
            if kind not in ("hosts", "children", "vars"):
                raise b.fail(where, f"section [{group}:{kind}] has unknown type {kind!r} "
                                    "(hosts, children or vars)")
            b.group(group)
            if kind != "vars":
                declared.add(group)
                pending.pop(group, None)
            elif group not in declared:
                pending.setdefault(group, (lineno, "vars", []))
            state = kind
            continue
        if line.startswith("[") and not _IPV6_PORT.fullmatch(line.split()[0]):
            raise b.fail(where, f"invalid section {line!r} (no spaces; [group], [group:vars] "
                                "or [group:children])")
        if state == "hosts":
            if len(line) > MAX_HOST_LINE:
                raise b.fail(where, f"the host line is longer than {MAX_HOST_LINE:,} characters "
                                    f"({len(line):,})")
            try:
                words = shlex.split(line, comments=True)
            except ValueError as exc:
                raise b.fail(where, f"cannot parse host line {line!r}: {exc}") from None
            if not words:
                continue
            try:
                hosts, port = expand_hosts(words[0])
            except ValueError as exc:
                hint = ""
                first = not b.hosts and len(b.groups) == 2          # no host or [section] before it
                if first and (words[0] == "---" or (words[0].endswith(":") and len(words) == 1)):
                    hint = " -- this looks like YAML: a YAML inventory is read by its name, .yml, .yaml or .json"
                raise b.fail(where, f"{exc}{hint}") from None
            variables: dict[str, Any] = {}
            for word in words[1:]:
                if "=" not in word:
                    raise b.fail(where, f"expected key=value after the host, got {word!r}")
                key, value = word.split("=", 1)
                variables[key] = _ini_value(value)
            for host in hosts:
                b.host(host, group, port, variables, f"{where} ({host})")
        elif state == "vars":
            if "=" not in line:
                raise b.fail(where, f"expected key=value in [{group}:vars], got {line!r}")
            key, value = (part.strip() for part in line.split("=", 1))
            b.set_var(group, key, _ini_value(value), f"{where} ([{group}:vars])")
        else:
            match = _GROUP_NAME.fullmatch(line)
            if not match:
                raise b.fail(where, f"expected a group name in [{group}:children], got {line!r}")
            child = match.group(1)
            if child not in declared:
                entry = pending.setdefault(child, (lineno, "children", []))
                if entry[1] == "vars":
                    pending[child] = entry = (lineno, "children", [])
                entry[2].append(group)
            b.add_child(group, child, f"{where} ([{group}:children])")
    for name, (lineno, kind, parents) in pending.items():
        if kind == "vars":
            raise b.fail(f"line {lineno}", f"section [{name}:vars] is for group {name!r}, "
                                           "which is never declared")
        raise b.fail(f"line {lineno}", f"section [{parents[-1]}:children] names group "
                                       f"{name!r}, which is never declared")
    return b.finish()


# --------------------------------------------------------------------------- YAML

def parse_yaml(data: Any, source: str, vars_dir: Path | None = None) -> Inventory:
    """Build an inventory from a parsed YAML (or JSON) inventory document (``vars_dir``: as
    :func:`parse_ini`)."""
    b = _Builder(source, vars_dir)
    if not data:
        raise b.fail("top level", "the inventory is empty")
    if not isinstance(data, Mapping):
        raise b.fail("top level", "expected a mapping of groups (all: {hosts: ..., children: ...})")
    if "plugin" in data:
        raise b.fail("top level", "this is an inventory plugin configuration, not an inventory")
    for name, group_data in data.items():
        _yaml_group(b, name, group_data, f"group {name}")
    return b.finish()


def _yaml_group(b: _Builder, name: Any, data: Any, where: str) -> str:
    if not isinstance(name, str) or not name or any(c.isspace() or c in ":]" for c in name):
        raise b.fail(where, f"invalid group name {name!r}")
    b.group(name)
    if data is None:
        return name
    if not isinstance(data, Mapping):
        raise b.fail(where, "a group is a mapping with hosts, vars and children")
    for key, value in data.items():
        if key not in ("hosts", "vars", "children"):
            raise b.fail(where, f"unknown key {key!r} (hosts, vars or children)")
        if isinstance(value, str):
            value = {value: None}
        if value is None:
            continue
        if not isinstance(value, Mapping):
            raise b.fail(f"{where}: {key}", "expected a mapping")
        if key == "vars":
            for var, item in value.items():
                b.set_var(name, var, item, f"{where}: vars")
        elif key == "children":
            for child, child_data in value.items():
                child = _yaml_group(b, child, child_data, f"group {child}")
                b.add_child(name, child, f"{where}: children")
        else:
            for pattern, host_vars in value.items():
                if not isinstance(pattern, str):
                    raise b.fail(f"{where}: hosts", f"host {pattern!r} must be a string "
                                                    "(quote numbers)")
                try:
                    hosts, port = expand_hosts(pattern)
                except ValueError as exc:
                    raise b.fail(f"{where}: hosts", str(exc)) from None
                if host_vars is not None and not isinstance(host_vars, Mapping):
                    raise b.fail(f"{where}: host {pattern}", "host variables must be a mapping")
                for host in hosts:
                    b.host(host, name, port, host_vars or {}, f"{where}: host {host}")
    return name


# --------------------------------------------------------------------------- files

def load_inventory(path: str | Path) -> Inventory:
    """Read an inventory file: ``.yml``/``.yaml``/``.json`` as YAML, anything else as INI."""
    p = Path(path)
    source = str(path)
    if p.is_dir():
        raise ConfigError(f"{source}: is a directory: give one inventory file (zdupgrade does not "
                          "read a directory of inventory sources as Ansible does)")
    if p.suffix.lower() in (".yml", ".yaml", ".json"):
        from zdu.config.topology import read_document
        try:
            data = read_document(p, what="inventory")
        except ConfigError as exc:
            raise _ansible_tag(exc, source) from None
        try:
            return parse_yaml(data, source, p.parent)
        except ConfigError as exc:
            raise ConfigError(f"{exc}{_ini_hint(p)}") from None
    if not p.is_file():
        raise ConfigError(f"{source}: inventory file not found")
    try:
        if p.stat().st_size > MAX_FILE_BYTES:
            raise ConfigError(f"{source}: inventory file is larger than "
                              f"{MAX_FILE_BYTES // (1024 * 1024)} MB")
        # utf-8-sig: a byte-order mark (Windows editors write one) is not part of "[group]";
        # Ansible reads "\ufeff[web]" as a host range and fails with a puzzling message
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: inventory file is not valid UTF-8 (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read inventory file: {exc.strerror}") from None
    return parse_ini(text, source, p.parent)


_TAGS = {"!vault": "a !vault value: zdupgrade cannot read vault-encrypted values",
         "!unsafe": "a !unsafe value: Ansible's YAML tags are not read by zdupgrade (it never "
                    "evaluates Jinja: a plain string is never templated here)"}


def _ansible_tag(exc: ConfigError, path: str | Path) -> ConfigError:
    """``exc`` said plainer when a YAML file uses one of Ansible's own tags, which the loader
    does not know ("could not determine a constructor for the tag '!vault'"); ``exc`` itself
    else (or, for any other YAML error, with the INI hint)."""
    text = str(exc)
    for tag, meaning in _TAGS.items():
        if f"tag '{tag}'" in text:
            line = re.search(r" at (line [0-9]+)", text)
            return ConfigError(f"{path}: {line.group(1) + ': ' if line else ''}{meaning}")
    if "YAML" in text and Path(path).suffix.lower() in (".yml", ".yaml", ".json"):
        return ConfigError(f"{text}{_ini_hint(Path(path))}")
    return exc


def _ini_hint(path: Path) -> str:
    """A hint when a .yml/.yaml/.json inventory that failed to load starts like an INI one."""
    try:
        with path.open("rb") as handle:
            head = handle.read(4096).decode("utf-8-sig", "replace")
    except OSError:
        return ""
    first = next((line.strip() for line in head.splitlines()
                  if line.strip() and line.strip()[0] not in "#;"), "")
    return (" -- this looks like an INI inventory: name it without .yml, .yaml or .json"
            if _SECTION.fullmatch(first) else "")


def group_map(inventory: Inventory) -> Mapping[str, tuple[str, ...]]:
    """``group -> hosts`` in Ansible's order, for :func:`zdu.config.limit.select`."""
    return inventory.groups


def nodes_of(inventory: Inventory, names: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Copies of the node dicts (of ``names`` only, if given), ready for the topology."""
    wanted = set(names) if names is not None else None
    return [dict(n) for n in inventory.nodes if wanted is None or n["name"] in wanted]
