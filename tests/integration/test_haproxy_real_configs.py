"""The haproxy hook against HAProxy configurations as operators write them, each a REAL haproxy.

Servers without ``check``, ``backup`` and ``weight 0`` servers, ``disabled`` ones,
``agent-check`` servers (the agent answers over TCP), ``server-template`` slots and names
with ``.`` ``:`` ``-`` ``_``; backends are python http.server threads on loopback
(:class:`tests.support.haproxy.Backend`).
"""
from __future__ import annotations

import io
import shutil
import socketserver
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import pytest
import yaml

from tests.support.haproxy import Backend, free_port, get
from zdu.errors import ConfigError, LoadBalancerError
from zdu.cli.main import main
from zdu.lb.haproxy import HaproxyLoadBalancer, from_options
from zdu.lb.haproxy_api import LocalSocketApi, SocketUnreachable, parse_stat_csv
from zdu.model import Node
from zdu.status import Status

pytestmark = pytest.mark.skipif(shutil.which("haproxy") is None, reason="needs haproxy")


TIMEOUTS = {"connect": "1s", "client": "10s", "server": "10s"}


class _Agent(socketserver.ThreadingTCPServer):
    """An agent-check agent: answers every connection with ``reply``."""

    allow_reuse_address = True
    daemon_threads = True
    reply = "up 100%\n"


class _AgentHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.sendall(self.server.reply.encode())  # type: ignore[attr-defined]


class Hap:
    def __init__(self, workdir: Path, servers: str, *, state_file: Path | None = None) -> None:
        self.socket = str(workdir / "admin.sock")
        self.operator_socket = str(workdir / "operator.sock")
        self.state_file = state_file
        keep = (f"  server-state-file {state_file}\n", "  load-server-state-from-file global\n") \
            if state_file else ("", "")
        self.frontend = free_port()
        self.cfg = cfg = workdir / "haproxy.cfg"
        timeouts = "".join(f"  timeout {k} {v}\n" for k, v in TIMEOUTS.items())
        cfg.write_text(f"""
global
  stats socket {self.socket} mode 600 level admin
  stats socket {self.operator_socket} mode 600 level operator
{keep[0]}defaults
  mode http
{keep[1]}{timeouts}frontend fe
  bind 127.0.0.1:{self.frontend}
  default_backend gw
backend gw
  balance first
  option httpchk GET /
{servers}
""")
        self.procs: list[subprocess.Popen[bytes]] = []
        self.reload()

    def reload(self) -> None:
        """Start haproxy; when one runs, as a reload does: a new process, ``-sf OLD_PID``
        (the old one stops listening and finishes its sessions)."""
        old = ["-sf", str(self.procs[-1].pid)] if self.procs else []
        if self.procs and self.state_file:      # what a reload script does before -sf
            self.state_file.write_text(self.command("show servers state"))
        self.procs.append(subprocess.Popen(["haproxy", "-db", "-f", str(self.cfg), *old],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def command(self, text: str) -> str:
        """One runtime-API command, sent directly (test side)."""
        return LocalSocketApi(self.socket).execute(text)

    def status(self, server: str) -> str:
        for line in self.command("show stat gw 4 -1").splitlines():
            fields = line.split(",")
            if len(fields) > 17 and fields[1] == server:
                return fields[17]
        raise AssertionError(f"no server {server}")

    def wait_status(self, server: str, want: str, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.status(server) == want:
                    return
            except (SocketUnreachable, AssertionError):
                pass
            time.sleep(0.05)
        raise AssertionError(f"{server} not {want!r} in time")

    def lb(self, **options: object) -> HaproxyLoadBalancer:
        where = {} if "backends" in options else {"backend": "gw"}
        return from_options({**where, "socket": self.socket, "poll_interval": 0.05,
                             "drain_timeout": 3, "up_timeout": 3, **options})


@contextmanager
def haproxy(workdir: Path, servers: str, *, state_file: Path | None = None) -> Iterator[Hap]:
    workdir.mkdir(parents=True, exist_ok=True)
    hap = Hap(workdir, servers, state_file=state_file)
    try:
        yield hap
    finally:
        for proc in hap.procs:
            proc.kill()       # a test's haproxy: nothing to drain gracefully
            proc.wait(5)


@pytest.fixture
def web() -> Iterator[list[Backend]]:
    backends = [Backend(f"127.0.0.{241 + i}") for i in range(3)]
    yield backends
    for b in backends:
        b.stop()


@pytest.fixture
def agent() -> Iterator[_Agent]:
    server = _Agent(("127.0.0.1", 0), _AgentHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def addr(b: Backend) -> str:
    return f"{b.server.server_address[0]}:{b.port}"


def agent_checked(web: list[Backend], agent: _Agent) -> str:
    """Server 'ag' with an agent-check on ``agent`` and a plain server 'other'."""
    return (f"  server ag {addr(web[0])} check inter 100ms agent-check agent-addr 127.0.0.1 "
            f"agent-port {agent.server_address[1]} agent-inter 100ms\n"
            f"  server other {addr(web[1])} check inter 100ms\n")


# ---------------------------------------------------------------------------- agent-check

def test_an_agent_checked_server_is_drained_and_enabled(tmp_path: Path, web: list[Backend],
                                                        agent: _Agent) -> None:
    """HAProxy shows a drained server that has an agent-check as 'DRAIN (agent)', whoever
    drained it: enable's health gate waited for 'DRAIN' exactly and failed every time
    ("not healthy after 3s: DRAIN (agent) (L7OK)"), leaving a healthy node in MAINT."""
    with haproxy(tmp_path, agent_checked(web, agent)) as hap:
        hap.wait_status("ag", "UP")
        hap.wait_status("other", "UP")
        lb, node = hap.lb(), Node("ag", "127.0.0.241")
        lb.check([node])
        assert lb.disable(node).ok
        assert hap.status("ag") == "MAINT"
        assert get(hap.frontend, "/") == (200, '{"version": "127.0.0.242"}')

        result = lb.enable(node)

        assert result.ok, result.message
        assert hap.status("ag") == "UP"
        assert get(hap.frontend, "/") == (200, '{"version": "127.0.0.241"}')   # balance first


def test_an_agent_that_says_drain_is_not_serving(tmp_path: Path, web: list[Backend],
                                                 agent: _Agent) -> None:
    agent.reply = "drain\n"
    with haproxy(tmp_path, agent_checked(web, agent)) as hap:
        hap.wait_status("ag", "DRAIN (agent)")
        hap.wait_status("other", "UP")
        assert hap.lb().serving([Node("ag", "x"), Node("other", "y")]) == {"ag": False, "other": True}


# ---------------------------------------------------------------------------- capacity

def test_a_backup_server_adds_no_capacity_while_an_active_one_serves(tmp_path: Path,
                                                                     web: list[Backend]) -> None:
    """A 'backup' server is UP but HAProxy sends it nothing while an active server is up:
    serving() said True for it, so the capacity guard counted a node that took no traffic."""
    with haproxy(tmp_path, f"  server a {addr(web[0])} check inter 100ms\n"
                           f"  server bk {addr(web[1])} check inter 100ms backup\n") as hap:
        hap.wait_status("a", "UP")
        hap.wait_status("bk", "UP")
        lb = hap.lb()
        nodes = [Node("a", "x"), Node("bk", "y")]
        assert lb.serving(nodes) == {"a": True, "bk": False}
        assert get(hap.frontend, "/") == (200, '{"version": "127.0.0.241"}')

        assert lb.disable(nodes[0]).ok          # now the backup takes the traffic
        assert get(hap.frontend, "/") == (200, '{"version": "127.0.0.242"}')
        assert lb.serving(nodes) == {"a": False, "bk": True}


def test_weight_0_disabled_and_no_check_servers_as_configured(tmp_path: Path,
                                                              web: list[Backend]) -> None:
    """Found sound: weight 0 and 'disabled' are not serving; a server without 'check'
    ('no check') is serving, and its enable does not wait for an 'UP' that never comes."""
    with haproxy(tmp_path, f"  server nochk {addr(web[0])}\n"
                           f"  server w0 {addr(web[1])} check inter 100ms weight 0\n"
                           f"  server off {addr(web[2])} check inter 100ms disabled\n") as hap:
        hap.wait_status("w0", "UP")
        lb = hap.lb(up_timeout=20)
        nodes = [Node("nochk", "x"), Node("w0", "y"), Node("off", "z")]
        assert hap.status("nochk") == "no check" and hap.status("off") == "MAINT"
        assert lb.serving(nodes) == {"nochk": True, "w0": False, "off": False}

        assert lb.disable(nodes[0]).ok
        assert hap.status("nochk") == "MAINT"
        started = time.monotonic()
        result = lb.enable(nodes[0])
        assert result.ok, result.message
        assert time.monotonic() - started < 2
        assert "no health check configured" in result.message
        assert hap.status("nochk") == "no check"


def test_template_slots_and_names_with_dots_colons_dashes(tmp_path: Path, web: list[Backend]) -> None:
    """Found sound: server-template slots (tpl1..) and 'my.srv:1-a_b' go through every call."""
    with haproxy(tmp_path, f"  server my.srv:1-a_b {addr(web[0])} check inter 100ms\n"
                           f"  server-template tpl 2 {addr(web[1])} check inter 100ms\n") as hap:
        for name in ("my.srv:1-a_b", "tpl1", "tpl2"):
            hap.wait_status(name, "UP")
        lb = hap.lb()
        nodes = [Node("odd", "x", lb_server="my.srv:1-a_b"), Node("tpl1", "y"), Node("tpl2", "z")]
        lb.check(nodes)
        for node in nodes:
            assert lb.disable(node).ok
            assert hap.status(node.lb_name) == "MAINT"
            assert lb.enable(node).ok
            assert hap.status(node.lb_name) == "UP"


# ---------------------------------------------------------------------------- reloads

def test_a_reload_while_the_node_is_out_is_reported_by_enable(tmp_path: Path, web: list[Backend]) -> None:
    """A reload (new process, -sf) while the node was out started the server as configured,
    UP and in rotation during the node's upgrade; enable said only 'UP in 0.0s'."""
    with haproxy(tmp_path, f"  server a {addr(web[0])} check inter 100ms\n"
                           f"  server b {addr(web[1])} check inter 100ms\n") as hap:
        hap.wait_status("a", "UP")
        lb, node = hap.lb(), Node("a", "x")
        assert lb.disable(node).ok
        first = hap.procs[0].pid
        hap.reload()
        hap.procs[0].wait(5)                       # the old process is gone
        hap.wait_status("a", "UP")                 # the new one: as configured
        second = hap.procs[1].pid

        result = lb.enable(node)

        assert result.ok, result.message
        assert result.details["reloaded"] == [f"{hap.socket} (pid {first} -> {second})"]
        assert "reloaded while the node was out of rotation" in result.message
        assert f"showed the server UP on {hap.socket} before enable" in result.message
        assert "may have sent it traffic" in result.message
        assert "reloaded" not in lb.enable(node).message         # said once, for that window
        assert "reloaded" not in lb.disable(node).message        # no reload: nothing said


def test_a_reload_that_keeps_the_state_is_told_apart(tmp_path: Path, web: list[Backend]) -> None:
    """With a server-state-file the new process keeps the server in MAINT: the reload is said,
    without claiming the node may have had traffic."""
    with haproxy(tmp_path, f"  server a {addr(web[0])} check inter 100ms\n"
                           f"  server b {addr(web[1])} check inter 100ms\n",
                 state_file=tmp_path / "servers.state") as hap:
        hap.wait_status("a", "UP")
        lb, node = hap.lb(), Node("a", "x")
        assert lb.disable(node).ok
        hap.reload()
        hap.procs[0].wait(5)
        hap.wait_status("a", "MAINT")                        # carried over by the new process

        result = lb.enable(node)

        assert result.ok, result.message
        assert len(result.details["reloaded"]) == 1
        assert "it kept the server out of rotation" in result.message
        assert "may have sent it traffic" not in result.message


def test_a_reload_during_the_drain_is_reported_by_disable(tmp_path: Path, web: list[Backend]) -> None:
    """The new process answers the socket with no session on the server: the drain looked
    complete ('drained in 0.6s') while the old process still carried a request to it."""
    with haproxy(tmp_path, f"  server a {addr(web[0])} check inter 100ms\n"
                           f"  server b {addr(web[1])} check inter 100ms\n") as hap:
        hap.wait_status("a", "UP")
        lb, node = hap.lb(drain_timeout=10), Node("a", "x")
        with ThreadPoolExecutor(2) as pool:
            slow = pool.submit(get, hap.frontend, "/slow/2")      # balance first: to a
            deadline = time.monotonic() + 5
            while "gw,a,0,0,0," in hap.command("show stat gw 4 -1") and time.monotonic() < deadline:
                time.sleep(0.02)                                    # until a has the session
            pool.submit(lambda: (time.sleep(0.4), hap.reload()))
            result = lb.disable(node)
            assert slow.result(10) == (200, '{"version": "127.0.0.241"}')   # old process finished it

        assert result.ok, result.message
        assert len(result.details["reloaded"]) == 1
        assert "reloaded during the drain" in result.message
        assert "were not counted" in result.message
        assert hap.status("a") == "MAINT"                          # in the new process


# ---------------------------------------------------------------------------- several backends

def test_a_server_in_two_backends_is_taken_out_of_both(tmp_path: Path, web: list[Backend]) -> None:
    """One machine balanced by two backends: with 'backend: gw' only gw's server was drained
    and backend api kept sending the node requests during its upgrade; 'backends: [gw, api]'
    takes it out of (and back into) both."""
    api_port = free_port()
    servers = (f"  server a {addr(web[0])} check inter 100ms\n"
               f"  server b {addr(web[1])} check inter 100ms\n"
               f"frontend fe_api\n  bind 127.0.0.1:{api_port}\n  default_backend api\n"
               f"backend api\n  balance first\n"
               f"  server a {addr(web[0])} check inter 100ms\n"
               f"  server b {addr(web[1])} check inter 100ms\n")
    with haproxy(tmp_path, servers) as hap:
        hap.wait_status("a", "UP")
        lb = hap.lb(backends=["gw", "api"])
        node, other = Node("a", "x"), Node("b", "y")
        lb.check([node, other])
        assert get(api_port, "/") == (200, '{"version": "127.0.0.241"}')

        result = lb.disable(node)

        assert result.ok, result.message
        assert "gw/a drained" in result.message and "api/a drained" in result.message
        assert lb.server_states(node) == {f"gw@{hap.socket}": "MAINT", f"api@{hap.socket}": "MAINT"}
        assert get(hap.frontend, "/") == (200, '{"version": "127.0.0.242"}')
        assert get(api_port, "/") == (200, '{"version": "127.0.0.242"}')    # not to the node
        assert lb.serving([node, other]) == {"a": False, "b": True}

        result = lb.enable(node)
        assert result.ok, result.message
        assert lb.server_states(node) == {f"gw@{hap.socket}": "UP", f"api@{hap.socket}": "UP"}
        assert get(api_port, "/") == (200, '{"version": "127.0.0.241"}')

        hap.command("set server api/a state maint")        # out of one backend: not serving
        assert lb.serving([node, other]) == {"a": False, "b": True}
        described = lb.describe("disable", node)
        assert "set server gw/a state drain" in described and "set server api/a state drain" in described


def test_every_listed_backend_must_hold_the_server(tmp_path: Path, web: list[Backend]) -> None:
    servers = (f"  server a {addr(web[0])} check inter 100ms\n"
               f"backend api\n  server b {addr(web[1])} check inter 100ms\n")
    with haproxy(tmp_path, servers) as hap:
        hap.wait_status("a", "UP")
        with pytest.raises(LoadBalancerError, match="backend 'api' has no server 'a'") as info:
            hap.lb(backends=["gw", "api"]).check([Node("a", "x")])
        assert str(info.value).count("backend 'api'") == 1
        assert hap.status("a") == "UP"                       # nothing changed


@pytest.mark.parametrize("options, needle", [
    ({"backend": "gw", "backends": ["gw"]}, "either backend or backends"),
    ({"backends": []}, "non-empty list"),
    ({"backends": "gw"}, "non-empty list"),
    ({"backends": ["gw", "gw"]}, "listed twice"),
    ({"backends": ["gw", "a;b"]}, "load_balancer.backends: expected a HAProxy backend name"),
])
def test_backends_option_is_checked(options: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        from_options({"socket": "/nonexistent.sock", **options})


def test_an_agent_that_answers_ready_cannot_undo_the_drain(tmp_path: Path, web: list[Backend],
                                                           agent: _Agent) -> None:
    """An agent answering 'up ready' sets the server READY at every agent check: disable said
    'MAINT' while, 200 ms later, the server was UP again and took requests during the upgrade.
    The agent-check is now paused from disable until the server is UP again."""
    agent.reply = "up ready\n"
    with haproxy(tmp_path, agent_checked(web, agent)) as hap:
        hap.wait_status("ag", "UP")
        hap.wait_status("other", "UP")
        lb, node = hap.lb(), Node("ag", "127.0.0.241")

        result = lb.disable(node)

        assert result.ok, result.message
        assert result.details["agent_paused"] == [hap.socket]
        assert "agent-check is paused" in result.message
        time.sleep(0.6)                                        # 6 agent intervals
        assert hap.status("ag") == "MAINT"
        assert get(hap.frontend, "/") == (200, '{"version": "127.0.0.242"}')

        result = lb.enable(node)

        assert result.ok, result.message
        assert result.details["agent_resumed"] == [hap.socket]
        assert hap.status("ag") == "UP"
        state = hap.command("show servers state gw")
        agent_state = next(line.split()[14] for line in state.splitlines() if line.split()[3:4] == ["ag"])
        assert int(agent_state) & 0x04                         # the agent runs again
        assert "agent" not in lb.disable(Node("other", "y")).message    # no agent: nothing paused


# ---------------------------------------------------------------------------- whole runs

def run_upgrade(tmp_path: Path, hap: Hap, servers: Sequence[str], **lb: Any) -> tuple[Status, str]:
    """zdupgrade in-process on local nodes (one per server) behind ``hap``; APPLY saves
    HAProxy's view of every server (the node must be out of rotation then)."""
    seen = tmp_path / "seen"
    seen.mkdir(exist_ok=True)
    for name in ("old", "new"):
        (tmp_path / name).mkdir(exist_ok=True)
    phases: dict[str, list[str]] = {phase: ["true"] for phase in ("EXPORT", "UPGRADE", "PRE-APPLY", "POST-APPLY")}
    phases["APPLY"] = ["sleep 0.5",       # several agent intervals into the node's upgrade
                       "printf 'show stat -1 4 -1\\n' | socat - UNIX-CONNECT:{{ sock }} "
                       "> {{ seen }}/{{ node.name }}.csv"]
    profile = tmp_path / "profile.yaml"
    profile.write_text(yaml.safe_dump({"name": "real-configs", "phases": phases, "rollback": ["true"]}))
    topology = tmp_path / "topology.yaml"
    topology.write_text(yaml.safe_dump({
        "profile": str(profile), "vars": {"sock": hap.socket, "seen": str(seen)},
        "load_balancer": {"type": "haproxy", "socket": hap.socket, "poll_interval": 0.05,
                          "drain_timeout": 5, "up_timeout": 10, **lb},
        "nodes": [{"name": f"n-{s}", "host": "localhost", "transport": "local", "lb_server": s}
                  for s in servers]}))
    out, err = io.StringIO(), io.StringIO()
    status = main(["--old_install_dir", str(tmp_path / "old"), "--new_install_dir", str(tmp_path / "new"),
                   "--config", str(topology), "--log_dir", str(tmp_path / "logs")], out=out, err=err)
    return status, out.getvalue() + err.getvalue()


def seen_status(tmp_path: Path, node: str) -> dict[str, str]:
    """``BACKEND/SERVER`` -> status, as HAProxy showed it during ``node``'s APPLY."""
    rows = parse_stat_csv((tmp_path / "seen" / f"{node}.csv").read_text())
    return {f"{r['pxname']}/{r['svname']}": r["status"] for r in rows}


def test_a_run_takes_each_node_out_of_both_backends(tmp_path: Path, web: list[Backend],
                                                    agent: _Agent) -> None:
    """A whole run, 'backends: [gw, api]', server a with an agent answering 'up ready':
    during each node's APPLY its server is MAINT in both backends, the other one UP."""
    agent.reply = "up ready\n"
    agent_opts = f"agent-check agent-addr 127.0.0.1 agent-port {agent.server_address[1]} agent-inter 100ms"
    pair = (f"  server a {addr(web[0])} check inter 100ms {agent_opts}\n"
            f"  server b {addr(web[1])} check inter 100ms\n")
    with haproxy(tmp_path / "hap", pair + "backend api\n" + pair) as hap:
        for name in ("a", "b"):
            hap.wait_status(name, "UP")

        status, output = run_upgrade(tmp_path, hap, ["a", "b"], backends=["gw", "api"])

        assert status is Status.SUCCESS, output
        assert seen_status(tmp_path, "n-a") == {"gw/a": "MAINT", "gw/b": "UP", "api/a": "MAINT", "api/b": "UP"}
        assert seen_status(tmp_path, "n-b") == {"gw/a": "UP", "gw/b": "MAINT", "api/a": "UP", "api/b": "MAINT"}
        assert {hap.status(n) for n in ("a", "b")} == {"UP"}


def test_an_operator_level_socket_is_refused_before_any_node_is_touched(tmp_path: Path,
                                                                        web: list[Backend]) -> None:
    servers = (f"  server a {addr(web[0])} check inter 100ms\n"
               f"  server b {addr(web[1])} check inter 100ms\n")
    with haproxy(tmp_path / "hap", servers) as hap:
        hap.wait_status("a", "UP")
        status, output = run_upgrade(tmp_path, hap, ["a", "b"], backend="gw",
                                     socket=hap.operator_socket)
        assert status is Status.CONFIG_ERROR, output
        assert f"{hap.operator_socket}: the socket is at level operator" in output
        assert "Traceback" not in output
        assert not (tmp_path / "seen" / "n-a.csv").exists()
        assert {hap.status(n) for n in ("a", "b")} == {"UP"}
