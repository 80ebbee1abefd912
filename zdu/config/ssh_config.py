"""Where and how each node is reached: the topology first, then the OpenSSH client config.

:func:`resolve` turns a :class:`~zdu.model.Node` and the topology's
:class:`~zdu.model.SshSettings` into a frozen :class:`ResolvedTarget`: the address, port,
user, key files, agent use, connect timeout and jump chain the transport will use, with
where each value came from (``sources``), for ``--dry-run`` and ``run.json``.

Precedence, per value (the first that says something wins):

* address: ssh_config's ``HostName`` for the node's ``host`` (an alias), else ``host``;
* port: the node's ``port`` if the topology gave it, ssh_config's ``Port``, 22;
* user: the node's ``user``, ``ssh.user`` if the topology gave it, ssh_config's ``User``,
  ``ssh.user``'s default (root);
* keys: the node's ``key_file``, ``ssh.key_file``, ssh_config's ``IdentityFile`` lines (the
  files that exist, in order), else the default ``~/.ssh/id_*`` keys;
* agent: ``ssh.agent`` if it is true or false; unset, the agent is used unless a key file
  comes from the topology (or ssh_config says ``IdentitiesOnly yes``);
* connect timeout: ``ssh.connect_timeout`` if given, ssh_config's ``ConnectTimeout``, 10 s;
* jumps: the node's ``proxy_jump``, ``ssh.proxy_jump``, ssh_config's ``ProxyJump``.

Jump hosts resolve like ``ssh -J`` does: each one is itself looked up in ssh_config
(``HostName``, ``Port``, ``User``, ``IdentityFile``), what the jump spec says
(``user@host:port``) winning; the *first* jump host's own ``ProxyJump`` is followed too.
A jump host's keys are its ssh_config ``IdentityFile`` lines, else ``ssh.key_file``; its
pinned host key is ``ssh.jump_host_keys[host as written]`` (or by address).

The config files are parsed with paramiko's :class:`~paramiko.config.SSHConfig` (``Host``
patterns with ``!negation``, ``Match host/originalhost/user/localuser/all/canonical/
final``, ``%`` tokens). Beyond it: ``Include`` is honoured (glob, relative to ``~/.ssh`` or
``/etc/ssh``, conditional when inside a ``Host``/``Match`` block, as OpenSSH does);
``Match exec`` is never run (that block is ignored, with a note); an unparsable line is a
:class:`~zdu.errors.ConfigError` naming file and line.  Files that set none of the options read
here and have no ``Match`` block (Debian's stock ``/etc/ssh/ssh_config``) give every host nothing,
so they are not handed to paramiko at all, which keeps it out of a dry run.  With the default
``ssh.config_file`` (``~/.ssh/config``) ``/etc/ssh/ssh_config`` is read after it, as
``ssh`` does without ``-F``; a named file is read alone (and must exist).
``ProxyCommand`` is not supported: a node that only ssh_config's ``ProxyCommand`` would
reach is a ConfigError.
"""
from __future__ import annotations

import glob
import ipaddress
import os
import re
import shlex
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from zdu.errors import ConfigError
from zdu.model import Node, SshSettings, frozen_map
from zdu.config.values import bounded_int, describe_value, port_number, valid_host, valid_user

#: ``ssh.config_file``'s default; with it the system file is read too
DEFAULT_CONFIG = "~/.ssh/config"
SYSTEM_CONFIG = "/etc/ssh/ssh_config"
#: longest jump chain followed (a longer one is almost surely a ProxyJump loop)
MAX_HOPS = 8
_MAX_INCLUDE_DEPTH = 16
#: longest ssh_config ConnectTimeout taken (seconds), as for the topology's ssh.connect_timeout
MAX_CONNECT_TIMEOUT = 3600

#: where a resolved value came from
NODE, SSH, SSH_CONFIG, JUMP_SPEC, DEFAULT = "node", "ssh", "ssh_config", "proxy_jump", "default"

#: used with fullmatch ("$" would also match before a final newline)
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")
_SETTING = re.compile(r"(\w+)(?:\s*=\s*|\s+)(.+)")
_MATCH_KNOWN = {"all", "canonical", "final", "host", "originalhost", "user", "localuser"}
#: the ssh_config options resolution reads (and those that change how paramiko matches); files
#: that set none of them, and have no Match block, resolve every host to nothing: they are not
#: handed to paramiko (Debian's stock /etc/ssh/ssh_config sets only SendEnv, HashKnownHosts and
#: GSSAPIAuthentication), which keeps paramiko out of a dry run's imports (0.1 s)
_READ_OPTIONS = re.compile(r"(hostname|port|user|identityfile|identitiesonly|connecttimeout|proxyjump|"
                           r"proxycommand|canonical\w*)(?:\s*=\s*|\s+)", re.IGNORECASE)


# --------------------------------------------------------------------------- jump specs

class JumpSyntaxError(ValueError):
    """A ``proxy_jump`` value that is not ``[user@]host[:port]`` (the message says why)."""


@dataclass(frozen=True)
class JumpSpec:
    """One jump host as written: ``[user@]host[:port]`` (or ``ssh://[user@]host[:port]``)."""

    host: str
    user: str | None = None
    port: int | None = None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host and self.port else self.host
        return (f"{self.user}@" if self.user else "") + host + (f":{self.port}" if self.port else "")


def parse_jump(text: str) -> JumpSpec:
    """Parse one jump host; raise :class:`JumpSyntaxError` naming what is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise JumpSyntaxError("a jump host is a non-empty string [user@]host[:port]")
    raw = text.strip()
    rest = raw[len("ssh://"):] if raw.startswith("ssh://") else raw
    user: str | None = None
    if "@" in rest:
        user, rest = rest.rsplit("@", 1)
        if not _USER.fullmatch(user):
            raise JumpSyntaxError(f"invalid user {user!r} in jump host {raw!r}")
    port: int | None = None
    if rest.startswith("["):                       # [v6]:port
        end = rest.find("]")
        if end < 0:
            raise JumpSyntaxError(f"unclosed '[' in jump host {raw!r}")
        host, tail = rest[1:end], rest[end + 1:]
        if tail:
            if not tail.startswith(":"):
                raise JumpSyntaxError(f"unexpected {tail!r} after ']' in jump host {raw!r}")
            port = _port(tail[1:], raw)
    elif rest.count(":") == 1:
        host, port_text = rest.split(":")
        port = _port(port_text, raw)
    else:
        host = rest
    if not valid_host(host, alias=True):
        raise JumpSyntaxError(f"invalid host {host!r} in jump host {raw!r}: expected a host "
                              "name, an ssh_config alias or an IP address")
    return JumpSpec(host=host, user=user, port=port)


def parse_jumps(value: Any) -> tuple[str, ...]:
    """A ``proxy_jump`` value as the topology may give it: ``"none"`` (direct: ``()``),
    ``"a,b"`` or ``["a", "b"]`` (several hops, in connection order).  Each hop is checked
    with :func:`parse_jump`; raises :class:`JumpSyntaxError`."""
    if isinstance(value, str):
        if value.strip().lower() == "none":
            return ()
        items: Sequence[Any] = value.split(",")
    elif isinstance(value, (list, tuple)) and value:
        items = value
    else:
        raise JumpSyntaxError("expected 'none', a jump host [user@]host[:port], a comma-separated "
                              "list of them, or a non-empty list")
    hops = tuple(str(parse_jump(item)) if isinstance(item, str) else _not_str(item)
                 for item in items)
    if len(hops) > MAX_HOPS:
        raise JumpSyntaxError(f"at most {MAX_HOPS} jump hosts, got {len(hops)}")
    return hops


def _not_str(item: Any) -> str:
    raise JumpSyntaxError(f"a jump host is a string [user@]host[:port], got {type(item).__name__}")


def _port(text: str, raw: str) -> int:
    port = port_number(text)
    if port is None:
        raise JumpSyntaxError(f"invalid port {describe_value(text, 40)} in jump host {describe_value(raw)}: "
                              "expected a port number 1-65535")
    return port


# --------------------------------------------------------------------------- the result

@dataclass(frozen=True)
class ResolvedTarget:
    """Where and how one node (or one jump host) is reached, and why.

    ``jumps`` are the jump hosts in connection order (each a ResolvedTarget with no jumps of
    its own); ``sources`` maps each of address, port, user, key_files, agent,
    connect_timeout, jumps to :data:`NODE`, :data:`SSH`, :data:`SSH_CONFIG`,
    :data:`JUMP_SPEC` or :data:`DEFAULT`.
    """

    name: str                          # node name, or the jump host as written
    alias: str                         # the host name looked up in ssh_config
    address: str
    port: int
    user: str
    key_files: tuple[str, ...] = ()
    agent: bool = True                 # offer the ssh-agent's keys
    default_keys: bool = False         # also try ~/.ssh/id_* (no key configured anywhere)
    host_key: str | None = None        # pinned fingerprint
    connect_timeout: float = 10.0
    jumps: tuple["ResolvedTarget", ...] = ()
    sources: Mapping[str, str] = field(default_factory=frozen_map)
    config_files: tuple[str, ...] = ()  # the ssh_config files read
    notes: tuple[str, ...] = ()        # things the user may want to know (skipped IdentityFile...)

    @property
    def endpoint(self) -> str:
        """``address:port`` (``[v6]:port``)."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"

    def describe(self) -> str:
        """One line for ``--dry-run``: ``gw1: admin@10.0.0.5:2222 key ~/.ssh/k via ...``."""
        keys = ", ".join(self.key_files) if self.key_files else (
            "default keys" if self.default_keys else "no key file")
        text = f"{self.name}: {self.user}@{self.endpoint}, {keys}"
        if self.agent:
            text += " + agent"
        if self.jumps:
            text += ", via " + " -> ".join(f"{j.user}@{j.endpoint}"
                                          + (f" ({j.name})" if j.name != j.address else "")
                                          for j in self.jumps)
        if self.host_key:
            text += f", host key pinned {self.host_key}"
        from_config = [k for k, v in self.sources.items() if v == SSH_CONFIG]
        if from_config:
            text += f" [ssh_config: {', '.join(from_config)}]"
        return text

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form for run.json (no secrets: key *paths*, never key material)."""
        return {
            "name": self.name, "alias": self.alias, "address": self.address, "port": self.port,
            "user": self.user, "key_files": list(self.key_files), "agent": self.agent,
            "default_keys": self.default_keys, "host_key": self.host_key,
            "connect_timeout": self.connect_timeout,
            "jumps": [j.to_dict() for j in self.jumps],
            "sources": dict(self.sources), "config_files": list(self.config_files),
            "notes": list(self.notes),
        }


# --------------------------------------------------------------------------- config files

def _paramiko_config() -> Any:
    """A new paramiko SSHConfig that never runs ``Match exec`` (nor trusts criteria it does not
    know, which paramiko would count as matching): such a block is ignored, with a note.
    paramiko is imported here, when a config file says something resolution reads."""
    from paramiko.config import SSHConfig

    class _SSHConfig(SSHConfig):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.notes: list[str] = []

        def _does_match(self, match_list: list[dict[str, Any]], target_hostname: str,
                        canonical: bool, final: bool, options: Any) -> Any:
            unknown = [m for m in match_list if m["type"] not in _MATCH_KNOWN]
            if not unknown:
                return super()._does_match(match_list, target_hostname, canonical, final, options)
            known = [m for m in match_list if m["type"] in _MATCH_KNOWN]
            if not known or super()._does_match(known, target_hostname, canonical, final, options):
                kinds = ", ".join(sorted({m["type"] for m in unknown}))
                note = f"ssh_config 'Match {kinds}' is not evaluated by zdupgrade: that block was ignored"
                if note not in self.notes:
                    self.notes.append(note)
            return False

    return _SSHConfig()


def _says_anything(lines: Sequence[str]) -> bool:
    """Whether ``lines`` (one config, Includes inlined) can give any host an option resolution
    reads: a Match block (its criteria may note or refuse something), or such an option."""
    return any(line[:5].lower() == "match" or _READ_OPTIONS.match(line) for line in lines)


@dataclass(frozen=True)
class SshConfigFiles:
    """The parsed ssh_config file(s) of one run; :meth:`lookup` is thread-safe."""

    files: tuple[str, ...]
    _config: Any                        # paramiko's SSHConfig; None: the files set nothing read here
    _lock: threading.Lock = field(default_factory=threading.Lock, compare=False)

    def lookup(self, alias: str) -> tuple[Mapping[str, Any], tuple[str, ...]]:
        """ssh_config's options for ``alias`` and the notes about them.  Patterns match
        case-sensitively, as in OpenSSH (``Host web*`` does not match ``WEB1``)."""
        if self._config is None:
            return {}, ()
        with self._lock:
            self._config.notes = []
            options = self._config.lookup(alias)
            return options, tuple(self._config.notes)


_cache: dict[tuple[Any, ...], SshConfigFiles] = {}
_cache_lock = threading.Lock()


def load_config(config_file: str | None) -> SshConfigFiles | None:
    """Parse the ssh_config named by ``ssh.config_file`` (cached while the files are
    unchanged); None when it is None.  Raises ConfigError naming the file and line."""
    if config_file is None:
        return None
    default = config_file == DEFAULT_CONFIG
    main = os.path.expanduser(config_file)
    paths = [main, SYSTEM_CONFIG] if default else [main]
    if not default and not os.path.isfile(main):
        raise ConfigError(f"ssh.config_file: {main}: no such file (use 'none' to read no ssh_config)")
    stamp = tuple((p, _mtime(p)) for p in paths)
    with _cache_lock:
        cached = _cache.get(stamp)
    if cached is not None:
        return cached
    lines: list[str] = []
    read: list[str] = []
    for path in paths:
        if not os.path.isfile(path):
            continue
        base = os.path.dirname(path) if path == SYSTEM_CONFIG else os.path.expanduser("~/.ssh")
        lines.append("Host *")                 # each file starts unconditional
        _inline(Path(path), base, [], lines, read, 0)
    config = _paramiko_config() if _says_anything(lines) else None
    try:
        if config is not None:
            config.parse(iter(lines))
    except Exception as exc:  # noqa: BLE001 - paramiko raises several kinds; all are bad config
        raise ConfigError(f"ssh_config ({', '.join(read)}): {exc}") from None
    result = SshConfigFiles(tuple(read), config)
    with _cache_lock:
        _cache[stamp] = result
    return result


def _mtime(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


def _inline(path: Path, base: str, condition: list[str], out: list[str], read: list[str],
            depth: int) -> None:
    """Append ``path``'s lines to ``out``, expanding ``Include`` and checking each line.

    A block header inside an included file is rewritten as a ``Match`` that also requires
    ``condition`` (the enclosing block's criteria), so an Include inside ``Host x`` only
    applies to x, as in OpenSSH; the enclosing header is re-emitted after the Include.
    """
    if depth > _MAX_INCLUDE_DEPTH:
        raise ConfigError(f"{path}: Include nested more than {_MAX_INCLUDE_DEPTH} deep")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not valid UTF-8 (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ssh_config: {exc.strerror}") from None
    read.append(str(path))
    current = list(condition)          # criteria of the block we are in
    header = _header(condition)
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _SETTING.match(line)
        if not match:
            raise ConfigError(f"{path}:{lineno}: cannot parse ssh_config line {line!r}")
        key, value = match.group(1).lower(), match.group(2).strip()
        try:
            if key == "include":
                for pattern in shlex.split(value):
                    pattern = os.path.expanduser(pattern)
                    if not os.path.isabs(pattern):
                        pattern = os.path.join(base, pattern)
                    for included in sorted(glob.glob(pattern)):
                        if os.path.isfile(included):
                            _inline(Path(included), base, current, out, read, depth + 1)
                            out.append(header)
                continue
            if key == "host":
                current = condition + ["originalhost", ",".join(shlex.split(value))]
            elif key == "match":
                words = shlex.split(value)
                own = [] if words == ["all"] else words
                current = condition + own
            else:
                out.append(line)
                continue
        except ValueError as exc:
            raise ConfigError(f"{path}:{lineno}: {exc} in {line!r}") from None
        header = _header(current) if condition else line
        out.append(header)


def _header(criteria: list[str]) -> str:
    if not criteria:
        return "Host *"
    return "Match " + " ".join(shlex.quote(c) for c in criteria)


# --------------------------------------------------------------------------- resolution

def resolve(node: Node, settings: SshSettings, config: SshConfigFiles | None | bool = True
            ) -> ResolvedTarget:
    """Resolve how to reach ``node``; see the module docstring for the precedence.

    ``config``: the parsed ssh_config (``True``: load ``settings.config_file``).  Raises
    ConfigError for a bad ssh_config, a bad jump spec, a jump loop or ProxyCommand.
    Touches no network (see :func:`check` for the DNS test).
    """
    files = load_config(settings.config_file) if config is True else config or None
    options, notes = files.lookup(node.host) if files else ({}, ())
    note_list = list(notes)
    sources: dict[str, str] = {}
    where = f"node {node.name}"

    address = _hostname(options, node.host, files, where)
    sources["address"] = SSH_CONFIG if address != node.host else NODE
    if "port" not in node.defaulted:
        port, sources["port"] = node.port, NODE
    elif "port" in options:
        port, sources["port"] = _config_port(options["port"], files, where), SSH_CONFIG
    else:
        port, sources["port"] = node.port, DEFAULT
    if node.user:
        user, sources["user"] = node.user, NODE
    elif "user" not in settings.defaulted:
        user, sources["user"] = settings.user, SSH
    elif options.get("user"):
        user, sources["user"] = _config_user(options["user"], files, where), SSH_CONFIG
    else:
        user, sources["user"] = settings.user, DEFAULT

    keys: tuple[str, ...]
    if node.key_file:
        keys, sources["key_files"] = (_expand(node.key_file),), NODE
    elif settings.key_file:
        keys, sources["key_files"] = (_expand(settings.key_file),), SSH
    else:
        keys, sources["key_files"] = _identity_files(options, note_list, where)
    agent, sources["agent"] = _agent(settings, sources["key_files"], options)
    timeout, sources["connect_timeout"] = _timeout(settings, options, files, where)

    if node.proxy_jump is not None:
        specs, sources["jumps"] = node.proxy_jump, NODE
    elif settings.proxy_jump is not None:
        specs, sources["jumps"] = settings.proxy_jump, SSH
    else:
        specs, sources["jumps"] = _config_jumps(options, files, where), SSH_CONFIG
        if any(parse_jump(j).host.lower() == node.host.lower() for j in specs):
            # "Host *  ProxyJump x" also matches x itself: ignored
            note_list.append(f"{where}: ssh_config ProxyJump for {node.host!r} names {node.host!r} "
                             "itself: ignored (reached directly)")
            specs = ()
        if not specs:
            sources["jumps"] = DEFAULT
            if options.get("proxycommand"):
                raise ConfigError(
                    f"{where}: ssh_config ({', '.join(files.files if files else ())}) gives a "
                    f"ProxyCommand for {node.host!r}, which zdupgrade does not run; use "
                    f"ProxyJump there, or proxy_jump in the topology")
    jumps = _chain(specs, settings, files, where, seen=(node.host.lower(),), notes=note_list)
    return ResolvedTarget(
        name=node.name, alias=node.host, address=address, port=port, user=user,
        key_files=keys, agent=agent, default_keys=sources["key_files"] == DEFAULT,
        host_key=node.host_key, connect_timeout=timeout, jumps=jumps,
        sources=frozen_map(sources), config_files=files.files if files else (),
        notes=tuple(dict.fromkeys(note_list)))


def resolve_all(nodes: Iterable[Node], settings: SshSettings) -> dict[str, ResolvedTarget]:
    """:func:`resolve` for every ssh node (local nodes are left out), ssh_config read once."""
    files = load_config(settings.config_file)
    return {n.name: resolve(n, settings, files) for n in nodes if n.transport == "ssh"}


def _chain(specs: Sequence[str], settings: SshSettings, files: SshConfigFiles | None,
           where: str, *, seen: tuple[str, ...], notes: list[str]) -> tuple[ResolvedTarget, ...]:
    """The jump chain for ``specs`` like ``ssh -J``: the first hop's own ProxyJump first."""
    hops: list[ResolvedTarget] = []
    for index, text in enumerate(specs):
        try:
            spec = parse_jump(text)
        except JumpSyntaxError as exc:
            raise ConfigError(f"{where}: proxy_jump: {exc}") from None
        if spec.host.lower() in seen:
            raise ConfigError(f"{where}: jump host {spec.host!r} loops back "
                              f"(ProxyJump chain {' -> '.join([*seen, spec.host.lower()])})")
        hop, own, proxy_command = _hop(spec, settings, files, where, notes)
        if index == 0:
            # only the first hop is reached the way ssh_config says; later hops are
            # reached through the previous one (ssh -J overrides their ProxyJump)
            if proxy_command and not own:
                raise ConfigError(f"{where}: jump host {spec.host}: ssh_config gives a "
                                  "ProxyCommand for it, which zdupgrade does not run; use "
                                  "ProxyJump there")
            if any(parse_jump(j).host.lower() == spec.host.lower() for j in own):
                own = ()        # "Host *  ProxyJump x" also matches x itself: ignored, as fabric does
            if own:
                hops.extend(_chain(own, settings, files, where,
                                   seen=(*seen, spec.host.lower()), notes=notes))
        seen = (*seen, spec.host.lower())
        hops.append(hop)
        if len(hops) > MAX_HOPS:
            raise ConfigError(f"{where}: more than {MAX_HOPS} jump hosts (a ProxyJump loop?)")
    return tuple(hops)


def _hop(spec: JumpSpec, settings: SshSettings, files: SshConfigFiles | None, where: str,
         notes: list[str]) -> tuple[ResolvedTarget, tuple[str, ...], bool]:
    options, found = files.lookup(spec.host) if files else ({}, ())
    notes.extend(found)
    hop_where = f"{where}: jump host {spec.host}"
    sources: dict[str, str] = {}
    address = _hostname(options, spec.host, files, hop_where)
    sources["address"] = SSH_CONFIG if address != spec.host else JUMP_SPEC
    if spec.port:
        port, sources["port"] = spec.port, JUMP_SPEC
    elif "port" in options:
        port, sources["port"] = _config_port(options["port"], files, hop_where), SSH_CONFIG
    else:
        port, sources["port"] = 22, DEFAULT
    if spec.user:
        user, sources["user"] = spec.user, JUMP_SPEC
    elif options.get("user"):
        user, sources["user"] = _config_user(options["user"], files, hop_where), SSH_CONFIG
    else:
        user, sources["user"] = settings.user, SSH if "user" not in settings.defaulted else DEFAULT
    keys: tuple[str, ...]
    if options.get("identityfile"):
        keys, sources["key_files"] = _identity_files(options, notes, hop_where)
    elif settings.key_file:
        keys, sources["key_files"] = (_expand(settings.key_file),), SSH
    else:
        keys, sources["key_files"] = (), DEFAULT
    agent, sources["agent"] = _agent(settings, sources["key_files"], options)
    timeout, sources["connect_timeout"] = _timeout(settings, options, files, hop_where)
    pins = settings.jump_host_keys
    pin = pins.get(spec.host) or pins.get(f"{address}:{port}") or pins.get(address)
    own = _config_jumps(options, files, hop_where)
    hop = ResolvedTarget(
        name=spec.host, alias=spec.host, address=address, port=port, user=user,
        key_files=keys, agent=agent, default_keys=sources["key_files"] == DEFAULT,
        host_key=pin, connect_timeout=timeout, sources=frozen_map(sources),
        config_files=files.files if files else ())
    return hop, own, bool(options.get("proxycommand"))


def _hostname(options: Mapping[str, Any], alias: str, files: SshConfigFiles | None, where: str) -> str:
    value = options.get("hostname")
    # paramiko fills HostName with the alias when ssh_config has none
    if not value or value == alias:
        return alias
    text = str(value)
    # it reaches the socket, known_hosts lookups and every message: checked as the topology's host
    if not valid_host(text, alias=True):
        raise ConfigError(f"{where}: ssh_config ({_names(files)}) gives HostName "
                          f"{describe_value(text, 60)} for {alias!r}, which is not a host name or an "
                          "IP address")
    return text


def _config_user(value: Any, files: SshConfigFiles | None, where: str) -> str:
    text = str(value)
    if not valid_user(text):
        raise ConfigError(f"{where}: ssh_config ({_names(files)}) gives User {describe_value(text, 60)}, "
                          "which is not a user name (no whitespace or control character, not "
                          "starting with '-')")
    return text


def _config_port(value: Any, files: SshConfigFiles | None, where: str) -> int:
    text = str(value).strip()
    port = port_number(text)
    if port is None:
        raise ConfigError(f"{where}: ssh_config ({_names(files)}) gives Port {describe_value(text, 40)}, "
                          "which is not a port number (1-65535)")
    return port


def _timeout(settings: SshSettings, options: Mapping[str, Any], files: SshConfigFiles | None,
             where: str) -> tuple[float, str]:
    if "connect_timeout" not in settings.defaulted:
        return settings.connect_timeout, SSH
    value = options.get("connecttimeout")
    if value is None:
        return settings.connect_timeout, DEFAULT
    text = str(value).strip()
    seconds = bounded_int(text, 1, MAX_CONNECT_TIMEOUT)
    if seconds is None:
        raise ConfigError(f"{where}: ssh_config ({_names(files)}) gives ConnectTimeout "
                          f"{describe_value(text, 40)}, expected a number of seconds 1-{MAX_CONNECT_TIMEOUT}")
    return float(seconds), SSH_CONFIG


def _identity_files(options: Mapping[str, Any], notes: list[str], where: str
                    ) -> tuple[tuple[str, ...], str]:
    # "IdentityFile none": no key file (and not the default ones), as ssh means it
    listed = [os.path.expanduser(p) for p in options.get("identityfile") or () if str(p).lower() != "none"]
    if not listed and options.get("identityfile"):
        return (), SSH_CONFIG
    if not listed:
        return (), DEFAULT
    present = tuple(p for p in listed if os.path.isfile(p))
    for missing in (p for p in listed if p not in present):
        # as ssh does: an IdentityFile that is not there is skipped
        notes.append(f"{where}: ssh_config IdentityFile {missing} does not exist (skipped)")
    return present, SSH_CONFIG


def _agent(settings: SshSettings, key_source: str, options: Mapping[str, Any]) -> tuple[bool, str]:
    if settings.agent is not None:
        return settings.agent, SSH
    if key_source in (NODE, SSH):
        return False, DEFAULT
    if str(options.get("identitiesonly", "no")).lower() == "yes":
        return False, SSH_CONFIG
    return True, DEFAULT


def _config_jumps(options: Mapping[str, Any], files: SshConfigFiles | None, where: str
                  ) -> tuple[str, ...]:
    value = options.get("proxyjump")
    if not value:
        return ()
    try:
        return parse_jumps(str(value))
    except JumpSyntaxError as exc:
        raise ConfigError(f"{where}: ssh_config ({_names(files)}) ProxyJump: {exc}") from None


def _expand(path: str) -> str:
    return os.path.expanduser(path)


def _names(files: SshConfigFiles | None) -> str:
    return ", ".join(files.files) if files else "no ssh_config"


# --------------------------------------------------------------------------- DNS check

Resolver = Callable[..., Any]


def check(target: ResolvedTarget, *, resolver: Resolver = socket.getaddrinfo) -> None:
    """Raise ConfigError when the first host to connect to (the node, or its first jump
    host) cannot be resolved here: an alias ssh_config does not know that is no DNS name
    either.  Hosts behind a jump host are resolved by the jump host, not checked here."""
    first = target.jumps[0] if target.jumps else target
    try:
        ipaddress.ip_address(first.address)
        return
    except ValueError:
        pass
    try:
        resolver(first.address, first.port, type=socket.SOCK_STREAM)
        return
    except (OSError, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    what = "host" if first is target else "its jump host"
    files = ", ".join(target.config_files) or "none read"
    if first.sources.get("address") == SSH_CONFIG:
        raise ConfigError(f"node {target.name}: {what} {first.alias!r} is HostName "
                          f"{first.address!r} in ssh_config ({files}), which does not resolve "
                          f"({reason})")
    raise ConfigError(f"node {target.name}: cannot resolve {what} {first.alias!r}: it is not a "
                      f"Host alias in ssh_config ({files}) and does not resolve in DNS ({reason})")


def check_all(targets: Iterable[ResolvedTarget], *, resolver: Resolver = socket.getaddrinfo,
              parallel: int = 8) -> list[ConfigError]:
    """:func:`check` for every target (a few DNS lookups at once); the problems, in order."""
    items = list(targets)

    def one(target: ResolvedTarget) -> ConfigError | None:
        try:
            check(target, resolver=resolver)
        except ConfigError as exc:
            return exc
        return None
    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(items) or 1))) as pool:
        return [e for e in pool.map(one, items) if e is not None]
