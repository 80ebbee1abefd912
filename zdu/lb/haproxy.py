"""The ``haproxy`` load-balancer hook: drive HAProxy's runtime API.

``disable`` sets the node's server to DRAIN on every instance (an HA pair is
several sockets, all driven), waits for its current sessions (``scur`` of
``show stat``) to reach 0, then sets MAINT.  ``enable`` first moves a
non-UP server to DRAIN -- health checks run again but HAProxy sends it no new
traffic -- and waits until the check passes (status ``DRAIN``), then sets
READY and waits for ``UP``.  The detour through DRAIN matters: HAProxy 2.6
puts a server leaving MAINT straight back into rotation as ``UP 1/2`` before
any check has run, so a dead node would receive requests for ``fall x inter``.
A server's ``agent-check`` is paused (``disable agent``) from disable until enable has
the server UP again: an agent answering ``ready`` would otherwise undo DRAIN and MAINT.

Topology options (``load_balancer:``)::

    type: haproxy
    backend: gateways    # or backends: [web, api]: a node's server in each (HaproxyBackends)
    sockets: [/run/haproxy/admin.sock, "tcp:127.0.0.1:9999"]   # or socket: one
    via: null            # or a node name / user@host:port: run socat on that host over SSH
    drain_timeout: 30    # s, DRAIN -> scur 0
    up_timeout: 30       # s, READY -> status UP (health check passed)
    poll_interval: 0.2   # s (8 times as often during the first 2 x poll_interval of a wait)
    command_timeout: 5   # s, one runtime-API command
    cut_sessions: true   # after drain_timeout, "shutdown sessions server" what is left

Every value that reaches a runtime-API command is checked before anything is sent:
the backend and each node's server name (``lb_server``, else the node name) must be
HAProxy identifiers (letters, digits, ``-_.:``) -- ``;`` separates commands, a
newline ends one, a space splits words; no option holds a control character; a
socket reached ``via:`` the LB host must be a plain absolute path or tcp:HOST:PORT,
because socat parses its address (see :mod:`zdu.lb.haproxy_api`).  ``check`` also
makes sure every socket is at level admin.
"""
from __future__ import annotations

import math
import re
import time
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from zdu.config.values import describe_value
from zdu.errors import ConfigError, LoadBalancerError
from zdu.transport.base import CommandHandler
from zdu.model import Node
from zdu.lb.base import LbResult, LoadBalancer, refuse_control_characters, seconds_option
from zdu.lb.haproxy_api import (IDENTIFIER_HINT, LocalSocketApi, RemoteSocketApi, RuntimeApi,
                                SocketUnreachable, is_identifier, is_success, parse_address,
                                parse_info, parse_servers_state, parse_stat_csv, socat_address)

#: statuses that mean "in rotation and healthy"; "no check" = no health check configured
UP_STATUSES = frozenset({"UP", "no check"})

#: one HAProxy process as ``show info`` tells it: (Pid, its start on the hook's clock)
Process = tuple[str, float]

#: bits of ``srv_agent_state`` in ``show servers state`` (HAProxy's CHK_ST_CONFIGURED and
#: CHK_ST_ENABLED): the server has an agent-check, and it runs
_AGENT_CONFIGURED, _AGENT_ENABLED = 0x02, 0x04

#: seconds two estimates of one process's start may differ (Uptime_sec is whole seconds)
_START_SLACK = 2.5


def state_of(status: str) -> str:
    """HAProxy's ``status`` column without its parenthesised qualifier: a server with an
    ``agent-check`` shows ``DRAIN (agent)`` and ``DOWN (agent)``, a tracking one
    ``MAINT (via BACKEND/SERVER)``, one resolved by DNS ``MAINT (resolution)``; the state
    is the same.  ``UP 1/3`` (a transition) and ``no check`` are kept as they are."""
    return re.sub(r" \(.*\)$", "", status)


def is_serving(row: Mapping[str, str]) -> bool:
    """True when a ``show stat`` server row is taking new traffic: status UP (also
    ``UP 1/3``, still up while its checks start failing) or ``no check``, with a
    weight above 0.  DOWN, MAINT, DRAIN, NOLB and weight 0 are not serving."""
    status = row.get("status", "")
    up = status == "no check" or status.split(" ", 1)[0] == "UP"
    return up and row.get("weight", "") != "0"


def serving_servers(rows: Mapping[str, Mapping[str, str]]) -> set[str]:
    """The servers of one backend's ``show stat`` rows that take new traffic: a ``backup``
    server (column ``bck`` 1) only when no active server is serving -- HAProxy sends a
    backup nothing while an active server is up, so it adds no capacity."""
    up = {name for name, row in rows.items() if is_serving(row)}
    active = {name for name in up if rows[name].get("bck", "0") != "1"}
    return active or up


_OPTIONS = frozenset({"type", "backend", "backends", "socket", "sockets", "via", "drain_timeout",
                      "up_timeout", "poll_interval", "command_timeout", "cut_sessions"})


class _Failed(Exception):
    """Internal: stop the current action and report ok=False with this message."""


class HaproxyLoadBalancer(LoadBalancer):
    """Takes a node's server in one HAProxy backend in and out of traffic on every instance."""

    name = "haproxy"

    def __init__(self, backend: str, apis: Sequence[RuntimeApi], *,
                 drain_timeout: float = 30.0, up_timeout: float = 30.0,
                 poll_interval: float = 0.2, cut_sessions: bool = True,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not apis:
            raise ValueError("at least one runtime API socket is needed")
        if poll_interval <= 0:
            raise ValueError("poll_interval must be > 0")
        if not is_identifier(backend):
            raise ValueError(f"backend {backend!r}: {IDENTIFIER_HINT}")
        self.backend = backend
        self.apis = tuple(apis)
        self.drain_timeout = drain_timeout
        self.up_timeout = up_timeout
        self.poll_interval = poll_interval
        self.cut_sessions = cut_sessions
        self._sleep = sleep
        self._clock = clock
        #: node name -> the HAProxy process of each instance when its disable ended
        self._processes_at_disable: dict[str, dict[str, Process | None]] = {}

    # ------------------------------------------------------------------ public surface

    @property
    def instances(self) -> list[str]:
        """The instance names (socket addresses, ``via:`` prefixed when remote)."""
        return [api.instance for api in self.apis]

    def validate(self, nodes: Sequence[Node]) -> None:
        """ConfigError naming every node whose server name is not a HAProxy identifier."""
        problems = [p for p in map(_server_problem, nodes) if p]
        if problems:
            raise ConfigError("; ".join(problems))

    def check(self, nodes: Sequence[Node]) -> None:
        """Raise LoadBalancerError unless every socket answers at level admin, the backend
        exists and every node's server is in it, on every instance.  Changes nothing.

        A server name that is not a HAProxy identifier is a ConfigError, raised before
        any socket is contacted.
        """
        self.validate(nodes)
        problems = self._check_problems(nodes)
        if problems:
            raise LoadBalancerError("; ".join(problems))

    def _check_problems(self, nodes: Sequence[Node]) -> list[str]:
        """What :meth:`check` refuses, one line each (the names are valid)."""
        problems: list[str] = []
        for api in self.apis:
            try:
                rows = self._backend_rows(api)
                level = self._level_problem(api, nodes)
            except SocketUnreachable as exc:
                problems.append(f"haproxy socket {exc.instance} cannot be reached: {exc.reason}")
                continue
            if level:
                problems.append(level)
            if rows is None:
                problems.append(f"haproxy {api.instance}: no backend {self.backend!r}")
                continue
            missing = [n for n in nodes if n.lb_name not in rows]
            if missing:
                names = ", ".join(f"{n.lb_name!r} (node {n.name})" for n in missing)
                known = ", ".join(sorted(rows)) or "none"
                problems.append(f"haproxy {api.instance}: backend {self.backend!r} has no "
                                f"server {names}; its servers: {known}")
        return problems

    def server_states(self, node: Node) -> dict[str, str]:
        """The ``status`` column of the node's server on each instance ("UP", "MAINT", ...).

        Raises LoadBalancerError if a socket cannot be reached or does not know the server.
        """
        problem = _server_problem(node)
        if problem:
            raise LoadBalancerError(problem)
        try:
            return {api.instance: self._row(api, node.lb_name)["status"] for api in self.apis}
        except (SocketUnreachable, _Failed) as exc:
            raise LoadBalancerError(str(exc)) from exc

    def serving(self, nodes: Sequence[Node]) -> Mapping[str, bool]:
        """Node name -> True when its server takes new traffic on *every* instance
        (see :func:`is_serving`); a server missing from the backend is not serving.

        One ``show stat`` per instance; changes nothing.  Raises LoadBalancerError when
        a socket cannot be reached or has no such backend, ConfigError for a bad name.
        """
        self.validate(nodes)
        serving = {node.name: True for node in nodes}
        for _, rows in self._every_backend():
            up = serving_servers(rows)
            for node in nodes:
                if node.lb_name not in up:
                    serving[node.name] = False
        return serving

    def healthy(self, nodes: Sequence[Node]) -> Mapping[str, bool | str]:
        """Node name -> True when its server is UP (also ``UP 1/3``: still up while checks
        start failing) or ``no check`` on *every* instance, whatever its weight or ``backup``
        flag; else what HAProxy shows (``DOWN on <instance>``; a server missing from the
        backend: ``not in backend ...``).  One ``show stat`` per instance; changes nothing.
        Raises LoadBalancerError when a socket cannot be reached or has no such backend."""
        self.validate(nodes)
        wrong: dict[str, list[str]] = {node.name: [] for node in nodes}
        for api, rows in self._every_backend():
            where = f" on {api.instance}" if len(self.apis) > 1 else ""
            for node in nodes:
                row = rows.get(node.lb_name)
                if row is None:
                    wrong[node.name].append(f"not in backend {self.backend!r}{where}")
                    continue
                status = row.get("status", "")
                if not (status == "no check" or status.split(" ", 1)[0] == "UP"):
                    check = row.get("check_status", "")
                    wrong[node.name].append(f"{self.backend}/{node.lb_name} {status or 'no status'}"
                                            + (f" (check {check})" if check else "") + where)
        return {name: "; ".join(problems) if problems else True for name, problems in wrong.items()}

    def disable(self, node: Node) -> LbResult:
        """DRAIN on every instance, wait for scur 0 (<= drain_timeout), then MAINT.

        Sessions still open at the deadline are counted as ``sessions_cut`` (and shut
        down when ``cut_sessions``); the result stays ok because the node is out of
        traffic -- the caller decides whether cut sessions fail the run.
        """
        start = self._clock()
        server = node.lb_name
        target = f"{self.backend}/{server}"
        details: dict[str, Any] = {"backend": self.backend, "server": server,
                                   "drain_seconds": 0.0, "sessions_cut": 0, "instances": []}
        problem = _server_problem(node)
        if problem:
            return LbResult(False, f"haproxy disable: {problem}; nothing was sent", 0.0, details)
        changed: list[RuntimeApi] = []
        try:
            processes = self._processes()
            before = {api.instance: self._row(api, server)["status"] for api in self.apis}
            agents = self._agents(server)
            paused: list[RuntimeApi] = []
            try:
                # an agent that answers "ready" would undo DRAIN and MAINT at its next check
                for api in self.apis:
                    if agents[api.instance][1]:
                        self._command(api, f"disable agent {target}")
                        paused.append(api)
                for api in self.apis:
                    self._set_state(api, target, "drain")
                    changed.append(api)
            except _Failed as exc:
                restored = self._restore(changed, target, before)
                for api in paused:
                    try:
                        self._command(api, f"enable agent {target}")
                    except (_Failed, SocketUnreachable):
                        restored += f" (its agent-check stays paused on {api.instance})"
                raise _Failed(f"{exc}{restored}") from None
            if paused:
                details["agent_paused"] = [a.instance for a in paused]

            drain_start = self._clock()
            drained, scur = self._wait(lambda: self._scur(server),
                                       lambda obs: all(v == 0 for v in obs.values()),
                                       self.drain_timeout)
            details["drain_seconds"] = round(self._clock() - drain_start, 3)
            cut = 0 if drained else sum(scur.values())
            details["sessions_cut"] = cut

            for api in self.apis:
                self._set_state(api, target, "maint")
            if cut and self.cut_sessions:
                for api in self.apis:
                    if scur.get(api.instance):
                        self._command(api, f"shutdown sessions server {target}")
            after = {api.instance: self._row(api, server) for api in self.apis}
            now = self._processes()
        except (_Failed, SocketUnreachable) as exc:
            details["instances"] = [a.instance for a in changed]
            return LbResult(False, f"haproxy disable {target}: {exc}",
                            self._clock() - start, details)
        self._processes_at_disable[node.name] = now
        reloaded = _reloads(processes, now)
        note = ("; its agent-check is paused until enable (an agent answering 'ready' would "
                "undo MAINT)" if paused else "")
        if reloaded:
            details["reloaded"] = reloaded
            note += (f"; HAProxy was reloaded during the drain on {', '.join(reloaded)}: the "
                    "sessions its old process still had to this server were not counted (that "
                    "process finishes them as it stops)")

        details["instances"] = [{"instance": inst, "status": row["status"],
                                 "scur_at_deadline": scur.get(inst, 0)}
                                for inst, row in after.items()]
        states = ", ".join(sorted({row["status"] for row in after.values()}))
        if drained:
            message = (f"haproxy: {target} drained in {details['drain_seconds']:.1f}s; "
                       f"{states} on {len(self.apis)} instance(s){note}")
        else:
            action = "shut down" if self.cut_sessions else "left open"
            message = (f"haproxy: {target} drain timeout after {self.drain_timeout:g}s, "
                       f"{cut} session(s) cut ({action}); {states} on {len(self.apis)} instance(s)"
                       f"{note}")
        return LbResult(True, message, self._clock() - start, details)

    def enable(self, node: Node) -> LbResult:
        """Health-gate through DRAIN, then READY and wait for UP on every instance.

        ok=False when HAProxy's own health check has not passed within up_timeout;
        the server is then put back in MAINT so it cannot slip in later unobserved.
        """
        start = self._clock()
        deadline = start + self.up_timeout
        server = node.lb_name
        target = f"{self.backend}/{server}"
        details: dict[str, Any] = {"backend": self.backend, "server": server,
                                   "up_seconds": None, "instances": []}
        problem = _server_problem(node)
        if problem:
            return LbResult(False, f"haproxy enable: {problem}; nothing was sent", 0.0, details)
        reload_note = ""
        try:
            now = self._processes()
            rows = {api.instance: self._row(api, server) for api in self.apis}
            reload_note = self._reload_note(node, now, rows, details)
            gated = [api for api in self.apis
                     if state_of(rows[api.instance]["status"]) not in UP_STATUSES]
            for api in gated:
                if state_of(rows[api.instance]["status"]) != "DRAIN":
                    self._set_state(api, target, "drain")
            healthy, obs = self._wait(lambda: self._statuses(server, gated),
                                      lambda o: all(state_of(s) == "DRAIN" for s, _ in o.values()),
                                      max(0.0, deadline - self._clock()))
            if not healthy:
                details["instances"] = _instances(obs)
                for api in gated:
                    self._set_state(api, target, "maint")
                raise _Failed(f"not healthy after {self.up_timeout:g}s: {_describe(obs)}; "
                              "left in MAINT")
            for api in self.apis:
                self._set_state(api, target, "ready")
            up, obs = self._wait(lambda: self._statuses(server, self.apis),
                                 lambda o: all(state_of(s) in UP_STATUSES for s, _ in o.values()),
                                 max(0.0, deadline - self._clock()))
            if not up:
                details["instances"] = _instances(obs)
                raise _Failed(f"not UP after {self.up_timeout:g}s: {_describe(obs)}")
            agents = self._agents(server)      # one `show servers state` per instance, not per instance squared
            resumed = [api for api in self.apis if agents[api.instance] == (True, False)]
            for api in resumed:
                self._command(api, f"enable agent {target}")
        except (_Failed, SocketUnreachable) as exc:
            return LbResult(False, f"haproxy enable {target}: {exc}{reload_note}",
                            self._clock() - start, details)
        if resumed:      # the agent has its say again (it may drain the server itself)
            details["agent_resumed"] = [a.instance for a in resumed]
            reload_note = "; its agent-check runs again" + reload_note
        elapsed = self._clock() - start
        details["up_seconds"] = round(elapsed, 3)
        details["instances"] = _instances(obs)
        note = ("" if all(state_of(s) == "UP" for s, _ in obs.values())
                else " (no health check configured: HAProxy cannot confirm health)")
        return LbResult(True, f"haproxy: {target} UP in {elapsed:.1f}s on "
                              f"{len(self.apis)} instance(s){note}{reload_note}", elapsed, details)

    def describe(self, action: str, node: Node) -> str:
        """One dry-run line, e.g. ``haproxy: set server gateways/node-a state drain; ...``."""
        target = f"{self.backend}/{node.lb_name}"
        n = f"[{len(self.apis)} instance{'s' if len(self.apis) != 1 else ''}]"
        if action == "disable":
            return (f"haproxy: set server {target} state drain; wait scur=0 "
                    f"(<={self.drain_timeout:g}s); state maint {n}")
        if action == "enable":
            return (f"haproxy: set server {target} state drain until its health check passes; "
                    f"state ready; wait UP (<={self.up_timeout:g}s) {n}")
        return f"haproxy: {action} {target} {n}"

    def close(self) -> None:
        """Close remote handlers (idempotent)."""
        for api in self.apis:
            api.close()

    # ------------------------------------------------------------------ internals

    def _command(self, api: RuntimeApi, command: str) -> None:
        answer = api.execute(command)
        if not is_success(answer):
            raise _Failed(f"{api.instance} refused {command!r}: {answer.strip()}")

    def _set_state(self, api: RuntimeApi, target: str, state: str) -> None:
        self._command(api, f"set server {target} state {state}")

    def _restore(self, changed: Iterable[RuntimeApi], target: str,
                 before: Mapping[str, str]) -> str:
        """Undo a partial drain so the instances of an HA pair agree again."""
        undone = []
        for api in changed:
            if state_of(before.get(api.instance, "")) in UP_STATUSES:
                try:
                    self._set_state(api, target, "ready")
                    undone.append(api.instance)
                except (_Failed, SocketUnreachable):
                    pass
        return f" (set back to ready on {', '.join(undone)})" if undone else ""

    def _agents(self, server: str) -> dict[str, tuple[bool, bool]]:
        """Per instance: (the server has an agent-check, it runs), from ``show servers state``
        (``show stat`` leaves the agent's columns empty while it is paused)."""
        out = {}
        for api in self.apis:
            rows = parse_servers_state(api.execute(f"show servers state {self.backend}"))
            flags = rows.get(server, {}).get("srv_agent_state", "")
            bits = int(flags) if flags.isdigit() else 0
            out[api.instance] = (bool(bits & _AGENT_CONFIGURED), bool(bits & _AGENT_ENABLED))
        return out

    def _processes(self) -> dict[str, Process | None]:
        """Each instance's HAProxy process (``show info``: Pid, and Uptime_sec for its start),
        None where the answer has neither (an old HAProxy, a stand-in)."""
        out: dict[str, Process | None] = {}
        for api in self.apis:
            info = parse_info(api.execute("show info"))
            pid, uptime = info.get("Pid", ""), info.get("Uptime_sec", "")
            out[api.instance] = (pid, self._clock() - int(uptime)) if pid and uptime.isdigit() else None
        return out

    def _reload_note(self, node: Node, now: Mapping[str, Process | None],
                     rows: Mapping[str, Mapping[str, str]], details: dict[str, Any]) -> str:
        """What enable says when an instance's HAProxy is another process than at the node's
        disable: a reload (``-sf``) starts with the server as its configuration has it, often
        in rotation -- while the node was being upgraded."""
        reloaded = _reloads(self._processes_at_disable.pop(node.name, {}), now)
        if not reloaded:
            return ""
        details["reloaded"] = reloaded
        shown = ", ".join(f"{rows[inst]['status']} on {inst}" for inst in rows)
        if not any(is_serving(row) for row in rows.values()):   # e.g. a server-state-file
            why = "it kept the server out of rotation"
        else:
            why = "the new process may have sent it traffic during its upgrade"
        return (f"; HAProxy was reloaded while the node was out of rotation ({', '.join(reloaded)}) "
                f"and showed the server {shown} before enable: {why}")

    def _level_problem(self, api: RuntimeApi, nodes: Sequence[Node]) -> str | None:
        """Why ``api`` is not at level admin, or None.  A socket at level operator or user
        answers ``show stat`` fine and would only fail at the first ``set server``."""
        level = api.execute("show cli level").strip()
        if level == "admin":
            return None
        fix = "the hook needs 'stats socket ... level admin' to change server states"
        if level in ("operator", "user"):
            return f"haproxy {api.instance}: the socket is at level {level}; {fix}"
        # HAProxy < 2.0 has no "show cli level": a "set server" naming no action changes
        # nothing, and HAProxy checks the level before it looks at the arguments
        server = nodes[0].lb_name if nodes else "zdu-level-probe"
        answer = api.execute(f"set server {self.backend}/{server}")
        if "permission denied" in answer.lower():
            return f"haproxy {api.instance}: the socket is not at level admin ({answer.strip()}); {fix}"
        return None

    def _every_backend(self) -> Iterator[tuple[RuntimeApi, dict[str, dict[str, str]]]]:
        """Each instance with the backend's server rows there; LoadBalancerError when a socket
        cannot be reached or has no such backend."""
        for api in self.apis:
            try:
                rows = self._backend_rows(api)
            except SocketUnreachable as exc:
                raise LoadBalancerError(str(exc)) from exc
            if rows is None:
                raise LoadBalancerError(f"haproxy {api.instance}: no backend {self.backend!r}")
            yield api, rows

    def _backend_rows(self, api: RuntimeApi) -> dict[str, dict[str, str]] | None:
        """Server rows of the backend by server name; None when there is no such backend."""
        rows = parse_stat_csv(api.execute(f"show stat {self.backend} 6 -1"))
        mine = [r for r in rows if r.get("pxname") == self.backend]
        if not any(r.get("svname") == "BACKEND" for r in mine):
            return None
        return {r["svname"]: r for r in mine if r["svname"] != "BACKEND"}

    def _row(self, api: RuntimeApi, server: str) -> dict[str, str]:
        rows = self._backend_rows(api)
        if rows is None:
            raise _Failed(f"{api.instance}: no backend {self.backend!r}")
        if server not in rows:
            raise _Failed(f"{api.instance}: backend {self.backend!r} has no server {server!r}")
        return rows[server]

    def _scur(self, server: str) -> dict[str, int]:
        return {api.instance: int(self._row(api, server).get("scur") or 0) for api in self.apis}

    def _statuses(self, server: str,
                  apis: Sequence[RuntimeApi]) -> dict[str, tuple[str, str]]:
        out = {}
        for api in apis:
            row = self._row(api, server)
            out[api.instance] = (row["status"], row.get("check_status", ""))
        return out

    def _wait(self, observe: Callable[[], Any], done: Callable[[Any], bool],
              timeout: float) -> tuple[bool, Any]:
        """Poll ``observe`` until ``done`` or ``timeout``; returns (done, last observation).

        For the first 2 x poll_interval the polls come 8 times as often: what was just asked
        for is often there a moment later (the sessions of short requests end; the next health
        check passes), and a poll is one runtime-API command.

        Bounded twice: by the clock deadline, and by a poll count derived from it, so a
        clock that does not move cannot make the loop endless.
        """
        start = self._clock()
        deadline = start + timeout
        quick = self.poll_interval / 8
        for _ in range(math.ceil(timeout / self.poll_interval) + 18):
            obs = observe()
            if done(obs):
                return True, obs
            now = self._clock()
            remaining = deadline - now
            if remaining <= 0:
                break
            pause = quick if now - start < 2 * self.poll_interval else self.poll_interval
            self._sleep(min(pause, remaining))
        return False, obs


class HaproxyBackends(HaproxyLoadBalancer):
    """The hook over several backends that hold the node's server (``backends: [web, api]``:
    one machine in two backends, each balancing it).  Every action runs for each backend
    in the order given, on every instance; a node is out of traffic only when it is out of
    all of them, and serving only when it serves in all of them.  A failed disable stops at
    that backend (the run puts the node back in all of them, as for one backend)."""

    def __init__(self, parts: Sequence[HaproxyLoadBalancer]) -> None:
        if len(parts) < 2:
            raise ValueError("HaproxyBackends needs at least two backends")
        first = parts[0]
        super().__init__(first.backend, first.apis, drain_timeout=first.drain_timeout,
                         up_timeout=first.up_timeout, poll_interval=first.poll_interval,
                         cut_sessions=first.cut_sessions, sleep=first._sleep, clock=first._clock)
        self.parts = tuple(parts)
        self.backends = tuple(p.backend for p in parts)

    def _check_problems(self, nodes: Sequence[Node]) -> list[str]:
        problems: list[str] = []
        for part in self.parts:      # a socket's own problem is said once, not per backend
            problems += [p for p in part._check_problems(nodes) if p not in problems]
        return problems

    def server_states(self, node: Node) -> dict[str, str]:
        """``BACKEND@INSTANCE`` -> the ``status`` column of the node's server there."""
        return {f"{part.backend}@{inst}": status for part in self.parts
                for inst, status in part.server_states(node).items()}

    def serving(self, nodes: Sequence[Node]) -> Mapping[str, bool]:
        answers = [part.serving(nodes) for part in self.parts]
        return {node.name: all(a[node.name] for a in answers) for node in nodes}

    def healthy(self, nodes: Sequence[Node]) -> Mapping[str, bool | str]:
        answers = [part.healthy(nodes) for part in self.parts]
        return {node.name: "; ".join(str(a[node.name]) for a in answers if a[node.name] is not True) or True
                for node in nodes}

    def disable(self, node: Node) -> LbResult:
        return self._each(node, lambda part: part.disable(node), "sessions_cut")

    def enable(self, node: Node) -> LbResult:
        return self._each(node, lambda part: part.enable(node), None)

    def _each(self, node: Node, action: Callable[[HaproxyLoadBalancer], LbResult],
              total: str | None) -> LbResult:
        start = self._clock()
        done: list[tuple[str, LbResult]] = []
        for part in self.parts:
            result = action(part)
            done.append((part.backend, result))
            if not result.ok:
                break
        ok = all(r.ok for _, r in done)
        details: dict[str, Any] = {"server": node.lb_name, "backends": {b: r.details for b, r in done}}
        if total:
            details[total] = sum(int(r.details.get(total) or 0) for _, r in done)
        message = "; ".join(r.message for _, r in done)
        if not ok and len(done) < len(self.parts):
            message += f" (not tried: backend(s) {', '.join(self.backends[len(done):])})"
        return LbResult(ok, message, self._clock() - start, details)

    def describe(self, action: str, node: Node) -> str:
        return " / ".join(part.describe(action, node) for part in self.parts)


def _server_problem(node: Node) -> str | None:
    """Why ``node``'s server name cannot go into a runtime-API command, or None."""
    name = node.lb_name
    if is_identifier(name):
        return None
    if node.lb_server is not None:
        return (f"node {node.name}: lb_server {name!r} is not a HAProxy server name; "
                f"use {IDENTIFIER_HINT}")
    return (f"node {node.name}: its name {name!r} is used as the HAProxy server name and is not "
            f"one; set lb_server to the server's name ({IDENTIFIER_HINT})")


def _reloads(before: Mapping[str, Process | None], now: Mapping[str, Process | None]) -> list[str]:
    """``INSTANCE (pid A -> B)`` for each instance whose HAProxy process in ``now`` is another
    than in ``before``: another Pid, or the same Pid started at another time."""
    out = []
    for inst, old in before.items():
        new = now.get(inst)
        if old is None or new is None:
            continue
        if new[0] != old[0]:
            out.append(f"{inst} (pid {old[0]} -> {new[0]})")
        elif abs(new[1] - old[1]) > _START_SLACK:
            out.append(f"{inst} (pid {old[0]}, restarted)")
    return out


def _instances(obs: Mapping[str, tuple[str, str]]) -> list[dict[str, str]]:
    return [{"instance": inst, "status": s, "check_status": c} for inst, (s, c) in obs.items()]


def _describe(obs: Mapping[str, tuple[str, str]]) -> str:
    return ", ".join(f"{status}{f' ({check})' if check else ''} on {inst}"
                     for inst, (status, check) in obs.items())


#: the seconds each timing option may be: above 0 (poll_interval: at least 10 ms, or the poll is a
#: busy loop), at most a day for a drain or a health check and an hour for one runtime-API
#: command -- never .inf or 1e300, which no deadline or socket timeout can hold
_SECONDS = {"drain_timeout": (0.0, 86400.0), "up_timeout": (0.0, 86400.0), "poll_interval": (0.01, 60.0),
            "command_timeout": (0.0, 3600.0)}


def _number(options: Mapping[str, Any], key: str, default: float) -> float:
    return seconds_option(options, key, default, *_SECONDS[key])


def from_options(options: Mapping[str, Any], *,
                 handler_factory: Callable[[str], CommandHandler] | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> HaproxyLoadBalancer:
    """Build the hook from the topology's ``load_balancer:`` mapping.

    ``handler_factory(node_name)`` gives the CommandHandler of the LB host when
    ``via`` is set.  Raises ConfigError naming the bad field.
    """
    refuse_control_characters(dict(options), "load_balancer")
    unknown = sorted(set(options) - _OPTIONS)
    if unknown:
        raise ConfigError(f"load_balancer: unknown option(s) {', '.join(unknown)} "
                          f"(known: {', '.join(sorted(_OPTIONS))})")
    if "backend" in options and "backends" in options:
        raise ConfigError("load_balancer.backend: give either backend or backends, not both")
    if "backends" in options:
        backends = options["backends"]
        if isinstance(backends, str) or not isinstance(backends, (list, tuple)) or not backends:
            raise ConfigError(f"load_balancer.backends: expected a non-empty list of HAProxy "
                              f"backend names, got {backends!r}")
        field = "backends"
    else:
        backends, field = [options.get("backend")], "backend"
    for backend in backends:
        if not isinstance(backend, str) or not is_identifier(backend):
            raise ConfigError(f"load_balancer.{field}: expected a HAProxy backend name "
                              f"({IDENTIFIER_HINT}), got {backend!r}")
    if len(set(backends)) != len(backends):
        raise ConfigError("load_balancer.backends: a backend is listed twice")
    via = options.get("via")
    if via is not None and (not isinstance(via, str) or not via or any(c.isspace() for c in via)):
        raise ConfigError(f"load_balancer.via: expected a node name or user@host:port, got {via!r}")

    if "socket" in options and "sockets" in options:
        raise ConfigError("load_balancer.socket: give either socket or sockets, not both")
    if "sockets" in options:
        field, sockets = "sockets", options["sockets"]
        if isinstance(sockets, str) or not isinstance(sockets, (list, tuple)) or not sockets:
            raise ConfigError(f"load_balancer.sockets: expected a non-empty list, got {sockets!r}")
    elif "socket" in options:
        field, sockets = "socket", [options["socket"]]
    else:
        raise ConfigError("load_balancer.socket: required (a unix socket path or tcp:HOST:PORT)")
    if len(set(map(str, sockets))) != len(sockets):
        raise ConfigError(f"load_balancer.{field}: a socket is listed twice")
    for sock in sockets:
        if not isinstance(sock, str):
            raise ConfigError(f"load_balancer.{field}: expected a string, got {sock!r}")
        try:
            parse_address(sock) if via is None else socat_address(sock)
        except ValueError as exc:
            raise ConfigError(f"load_balancer.{field}: {exc}") from None

    drain_timeout = _number(options, "drain_timeout", 30.0)
    up_timeout = _number(options, "up_timeout", 30.0)
    poll_interval = _number(options, "poll_interval", 0.2)
    command_timeout = _number(options, "command_timeout", 5.0)
    cut_sessions = options.get("cut_sessions", True)
    if not isinstance(cut_sessions, bool):
        raise ConfigError(f"load_balancer.cut_sessions: expected true or false, got {cut_sessions!r}")

    apis: list[RuntimeApi]
    if via is None:
        apis = [LocalSocketApi(s, timeout=command_timeout) for s in sockets]
    else:
        if handler_factory is None:
            raise ConfigError(f"load_balancer.via: {via!r} needs a command handler "
                              "(none was provided to the haproxy hook)")
        apis = [RemoteSocketApi(s, via, handler_factory, timeout=command_timeout)
                for s in sockets]
    parts = [HaproxyLoadBalancer(backend, apis, drain_timeout=drain_timeout, up_timeout=up_timeout,
                                 poll_interval=poll_interval, cut_sessions=cut_sessions,
                                 sleep=sleep, clock=clock) for backend in backends]
    return parts[0] if len(parts) == 1 else HaproxyBackends(parts)
