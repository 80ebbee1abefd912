"""Frozen data types shared by every layer: topology, profile steps, results."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, Mapping, TypeVar

from zdu.planning.serial import Serial
from zdu.status import Phase

HostKeyPolicy = Literal["strict", "accept-new"]


K = TypeVar("K")
V = TypeVar("V")


def frozen_map(data: Mapping[K, V] | None = None) -> Mapping[K, V]:
    """A read-only copy of ``data`` (dataclasses here are frozen all the way down)."""
    return MappingProxyType(dict(data or {}))


# --------------------------------------------------------------------------- topology

@dataclass(frozen=True)
class Node:
    """One node of the fleet, as the topology declares it."""

    name: str
    host: str
    port: int = 22
    user: str | None = None            # None: the topology's ssh.user
    group: str = ""
    roles: tuple[str, ...] = ()
    vars: Mapping[str, Any] = field(default_factory=frozen_map)
    transport: Literal["ssh", "local"] = "ssh"
    lb_server: str | None = None       # name of this node's server in the load balancer
    host_key: str | None = None        # pinned fingerprint, "SHA256:..."
    key_file: str | None = None        # None: the topology's ssh.key_file, else ssh_config's IdentityFile
    #: jump hosts, ``[user@]host[:port]`` each, in connection order; None: the topology's
    #: ``ssh.proxy_jump``, else ssh_config's ProxyJump; ``()``: connect directly ("none")
    proxy_jump: tuple[str, ...] | None = None
    #: names of the fields above that the topology did not give (their values are defaults,
    #: so ssh_config may supply them: "port", "user").  Empty: every value counts as given
    defaulted: frozenset[str] = frozenset()

    @property
    def lb_name(self) -> str:
        """The server name the load balancer knows this node by."""
        return self.lb_server or self.name


@dataclass(frozen=True)
class SshSettings:
    """How the control machine reaches the nodes."""

    user: str = "root"
    key_file: str | None = None
    known_hosts: str | None = None     # None: ~/.ssh/known_hosts
    host_key_policy: HostKeyPolicy = "strict"
    connect_timeout: float = 10.0
    command_timeout: float = 600.0
    connect_retries: int = 3
    parallel: int = 4                  # nodes worked on at once in EXPORT / UPGRADE
    #: the OpenSSH client config to resolve host aliases through (``Host``, ``HostName``,
    #: ``Port``, ``User``, ``IdentityFile``, ``ProxyJump``, ``ConnectTimeout``); None: none.
    #: The default also reads /etc/ssh/ssh_config after it, as ``ssh`` does without ``-F``
    config_file: str | None = "~/.ssh/config"
    #: jump hosts for every node (a node's own ``proxy_jump`` wins); None: ssh_config decides
    proxy_jump: tuple[str, ...] | None = None
    #: offer the ssh-agent's keys: True, False, or None (only when no key file is configured)
    agent: bool | None = None
    #: pinned host-key fingerprints of jump hosts, by the host as written in proxy_jump
    #: (or its ``address`` / ``address:port``)
    jump_host_keys: Mapping[str, str] = field(default_factory=frozen_map)
    #: names of the fields above that the topology did not give ("user", "connect_timeout"),
    #: which ssh_config may then supply.  Empty: every value counts as given
    defaulted: frozenset[str] = frozenset()

    @property
    def known_hosts_file(self) -> str:
        """The known_hosts file as configured (``~`` not yet expanded): ``known_hosts`` or the default."""
        return self.known_hosts or "~/.ssh/known_hosts"


@dataclass(frozen=True)
class LbSettings:
    """Which load-balancer hook to call around the disruptive phases, and its options."""

    type: str = "none"                 # none | script | haproxy | dotted.path:Factory
    options: Mapping[str, Any] = field(default_factory=frozen_map)


@dataclass(frozen=True)
class Tier:
    """An ordered group of nodes: its waves never mix with another tier's, and it must be done
    (and its gate hold) before the next tier starts."""

    name: str
    nodes: tuple[str, ...]                     # node names, topology order
    serial: Serial | None = None               # None: the topology's serial
    gate: tuple["Step", ...] = ()              # must hold after the tier (on each of its nodes)
    gate_on: str = "each"                      # each (node) | control
    min_in_service: int | str | None = None    # capacity guard of this tier (N or "N%")
    max_fail_percentage: float | None = None   # failure budget of this tier's waves


@dataclass(frozen=True)
class RunStep:
    """A ``before:`` or ``after:`` step and where it runs: ``control`` (the control machine),
    ``all`` (every node of the run), or a node or host name."""

    step: "Step"
    on: str = "control"


@dataclass(frozen=True)
class Topology:
    """The validated topology file (or the built-in reference topology)."""

    nodes: tuple[Node, ...]
    ssh: SshSettings = SshSettings()
    load_balancer: LbSettings = LbSettings()
    profile: str | None = None
    vars: Mapping[str, Any] = field(default_factory=frozen_map)
    serial: Serial = Serial()          # nodes per wave (online phases), ansible-style; default 1
    source: str = "<built-in reference topology>"
    lock_dir: str = "/var/tmp/zdupgrade/lock"       # the fleet lock's directory on every node
    tiers: tuple[Tier, ...] = ()                    # () : one tier of every node
    hosts: tuple[Node, ...] = ()                    # other hosts reached over SSH, never upgraded
    before: tuple[RunStep, ...] = ()                # once, before any node is changed
    after: tuple[RunStep, ...] = ()                 # once, at the end of a successful run
    max_fail_percentage: float | None = None        # failure budget per wave (ansible's meaning)
    min_in_service: int | str | None = None         # capacity guard of the whole backend
    pause_timeout: float = 3600.0                   # seconds a pause waits for the operator
    pause_timeout_action: Literal["abort", "continue"] = "abort"
    soak: float = 0.0                               # seconds the nodes put back are watched before each next wave

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def host(self, name: str) -> Node:
        """A node or an extra host by name."""
        for node in (*self.nodes, *self.hosts):
            if node.name == name:
                return node
        raise KeyError(name)


# --------------------------------------------------------------------------- profile

@dataclass(frozen=True)
class CommandSpec:
    """A shell command template; rendered per node by ``templates``."""

    name: str
    run: str                           # jinja2 template; values are shell-quoted unless |raw
    timeout: float | str | None = None  # seconds (or a template giving them); None: ssh.command_timeout


@dataclass(frozen=True)
class WaitSpec:
    """A health gate: poll until a condition holds or the deadline passes.

    ``kind`` is one of: command (exit 0 on the node), http (URL answers with
    ``status`` and a body matching ``body``), tcp (``host:port`` accepts),
    process (a process matching ``pattern`` is running, or has exited when
    ``state`` is "exited"; with ``kill`` whatever still runs at the deadline is killed
    with SIGKILL), log (file ``path`` has a line matching ``pattern``).
    ``where`` says who polls: the node (over its connection) or the control machine.
    """

    name: str
    kind: Literal["command", "http", "tcp", "process", "log"]
    target: str                        # template: the command, URL, host:port, pattern or path
    pattern: str | None = None         # template: regex for body / log line / process
    status: int | None = None          # http: expected status
    # process: running | exited; http and tcp: up (answers) | down (until it no longer answers)
    state: Literal["running", "exited", "up", "down"] = "running"
    where: Literal["node", "control"] = "node"
    deadline: float | str = 60.0       # seconds, or a template that renders to them
    interval: float | str = 1.0
    kill: bool = False                 # process/exited: SIGKILL what is left at the deadline
    request: "HttpSpec | None" = None  # http: the request to poll with (method, headers, auth, tls)


@dataclass(frozen=True)
class HttpSpec:
    """One HTTP request (``http:`` step): the call, and what its answer must be.

    Strings (url, headers, body, every string inside ``json``, auth) are templates, rendered
    unquoted.  Proxies from the environment are not used unless ``proxy`` is true.
    """

    name: str
    url: str
    method: str = "GET"
    headers: Mapping[str, str] = field(default_factory=frozen_map)
    json: Any = None                   # a JSON document to send (Content-Type: application/json)
    body: str | None = None            # a raw body to send
    user: str | None = None            # basic auth
    password: str | None = None
    status: tuple[int, ...] = (200,)   # accepted statuses
    match: str | None = None           # regex the response body must match
    verify: bool = True                # TLS: check the server certificate
    ca_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    proxy: bool = False
    where: Literal["control", "node"] = "control"
    timeout: float | str = 30.0


Step = CommandSpec | WaitSpec | HttpSpec


@dataclass(frozen=True)
class Profile:
    """What the phases do for one product."""

    name: str
    source: str
    phases: Mapping[Phase, tuple[Step, ...]]          # EXPORT .. POST-APPLY
    rollback: Mapping[Phase, tuple[Step, ...]]        # keyed by the furthest phase a node entered
    smoke: tuple[Step, ...] = ()                       # before traffic returns; failure = POST-APPLY
    vars: Mapping[str, Any] = field(default_factory=frozen_map)
    secrets: tuple[str, ...] = ()                      # names of vars whose values are masked
    description: str = ""
    before: tuple[RunStep, ...] = ()                   # once per run, before any node is changed
    after: tuple[RunStep, ...] = ()                    # once, at the end of a successful run
    #: preflight checks that old and new install dirs exist on every node (false: the product has
    #: no install dir on the node, e.g. images or a cluster's objects)
    check_install_dirs: bool = True
    #: a shell command that exits 0 on a node already running the new version: preflight runs it
    #: on each node of a new run, and such a node is left out, untouched (a rerun, a run after a
    #: stop, redoes no node); None: every node is upgraded
    upgraded: str | None = None


# --------------------------------------------------------------------------- results

@dataclass(frozen=True)
class CommandResult:
    """What one command did on one node.  A non-zero exit is a result, not an exception."""

    command: str
    exit_code: int | None              # None when the command never completed (timeout, transport)
    stdout: str = ""
    stderr: str = ""
    started: float = 0.0               # time.time()
    duration: float = 0.0
    error: str | None = None           # None | "timeout" | "unreachable": why there is no exit code

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.error is None

    def replace(self, **changes: Any) -> "CommandResult":
        return dataclasses.replace(self, **changes)
