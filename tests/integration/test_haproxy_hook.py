"""The haproxy hook against two REAL haproxy processes (an HA pair) on loopback.

Instance 1 is driven over its unix socket, instance 2 over tcp:127.0.0.1:PORT, so
both transports run in every test.  Backends are python http.server threads on
127.0.0.231/232 with a slow endpoint; health checks run every 100 ms.
"""
from __future__ import annotations

import http.client
import json
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest

from zdu.errors import ConfigError, LoadBalancerError
from zdu.transport.base import CommandHandler
from zdu.lb.haproxy import HaproxyLoadBalancer, from_options
from zdu.model import CommandResult, Node

pytestmark = pytest.mark.skipif(shutil.which("haproxy") is None or shutil.which("socat") is None,
                                reason="needs haproxy and socat")

NODE_A = Node("Node-A", "127.0.0.231", lb_server="node-a")
NODE_B = Node("Node-B", "127.0.0.232", lb_server="node-b")


# ---------------------------------------------------------------------------- lab pieces

class _Backend(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_GET(self) -> None:  # noqa: N802
        if self.path.startswith("/slow/"):
            time.sleep(float(self.path.rsplit("/", 1)[1]))
        body = json.dumps({"version": self.server.server_address[0]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass        # health checks and cut sessions reset connections; that is expected


class Backend:
    """A small real HTTP server on one loopback address, stoppable mid-test."""

    def __init__(self, host: str) -> None:
        self.server = _QuietServer((host, 0), _Backend)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if self.thread.is_alive():
            self.server.shutdown()
            self.server.server_close()
            self.thread.join(5)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class Haproxy:
    proc: subprocess.Popen
    socket: str             # the admin socket the hook drives
    user_socket: str        # a level-user socket: set commands are refused
    frontend: int


@dataclass
class Lab:
    backends: dict[str, Backend]
    instances: list[Haproxy] = field(default_factory=list)

    @property
    def sockets(self) -> list[str]:
        return [h.socket for h in self.instances]

    def lb(self, **options: object) -> HaproxyLoadBalancer:
        opts = {"backend": "gateways", "sockets": self.sockets, "poll_interval": 0.05,
                "drain_timeout": 5, "up_timeout": 5, **options}
        return from_options(opts)


def start_haproxy(workdir: Path, index: int, backends: dict[str, Backend], tcp: bool) -> Haproxy:
    unix_sock = workdir / f"admin{index}.sock"
    user_sock = workdir / f"user{index}.sock"
    tcp_port = free_port()
    frontend = free_port()
    servers = "\n".join(
        f"  server {name} {b.server.server_address[0]}:{b.port} check inter 100ms rise 2 fall 2"
        for name, b in backends.items())
    cfg = workdir / f"haproxy{index}.cfg"
    cfg.write_text(f"""
global
  stats socket {unix_sock} mode 600 level admin
  stats socket {user_sock} mode 600 level user
  stats socket ipv4@127.0.0.1:{tcp_port} level admin
defaults
  mode http
  timeout connect 1s
  timeout client 10s
  timeout server 10s
frontend fe
  bind 127.0.0.1:{frontend}
  default_backend gateways
backend gateways
  balance first
  option httpchk GET /health
{servers}
""")
    proc = subprocess.Popen(["haproxy", "-db", "-f", str(cfg)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    inst = Haproxy(proc, f"tcp:127.0.0.1:{tcp_port}" if tcp else str(unix_sock),
                   str(user_sock), frontend)
    lb = from_options({"backend": "gateways", "socket": inst.socket})
    for _ in range(100):   # <= ~5 s: every server UP (first checks passed)
        if proc.poll() is not None:
            raise RuntimeError(f"haproxy exited: {proc.stderr.read().decode()}")
        try:
            states = [lb.server_states(Node(n, "x")) for n in backends]
            if all(s == "UP" for st in states for s in st.values()):
                return inst
        except LoadBalancerError:
            pass
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("haproxy did not come up")


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    backends = {"node-a": Backend("127.0.0.231"), "node-b": Backend("127.0.0.232")}
    lab = Lab(backends)
    try:
        lab.instances.append(start_haproxy(tmp_path, 1, backends, tcp=False))
        lab.instances.append(start_haproxy(tmp_path, 2, backends, tcp=True))
        yield lab
    finally:
        for inst in lab.instances:
            inst.proc.terminate()
            try:
                inst.proc.wait(5)
            except subprocess.TimeoutExpired:
                inst.proc.kill()
                inst.proc.wait(5)
        for b in backends.values():
            b.stop()


def get(port: int, path: str, timeout: float = 10.0) -> tuple[int | None, str]:
    """One GET through a frontend; (status, body) or (None, error) when cut."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    except (OSError, http.client.HTTPException) as exc:
        return None, repr(exc)
    finally:
        conn.close()


def scur(lb: HaproxyLoadBalancer, node: Node) -> int:
    return sum(lb._scur(node.lb_name).values())  # noqa: SLF001  (test peeks at the poll)


def start_slow(port: int, seconds: float) -> tuple[threading.Thread, list]:
    out: list = []
    t = threading.Thread(target=lambda: out.append(get(port, f"/slow/{seconds}")), daemon=True)
    t.start()
    return t, out


def wait_for(cond, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


# ---------------------------------------------------------------------------- tests

def test_check_accepts_known_servers_on_unix_and_tcp(lab: Lab) -> None:
    lb = lab.lb()
    assert lab.sockets[1].startswith("tcp:") and not lab.sockets[0].startswith("tcp:")
    lb.check([NODE_A, NODE_B])
    assert lb.server_states(NODE_A) == {s: "UP" for s in lab.sockets}


def test_check_refuses_unknown_server_backend_and_socket(lab: Lab, tmp_path: Path) -> None:
    with pytest.raises(LoadBalancerError, match="has no server 'node-z'") as info:
        lab.lb().check([NODE_A, Node("Node-Z", "127.0.0.239", lb_server="node-z")])
    assert lab.sockets[0] in str(info.value) and lab.sockets[1] in str(info.value)

    with pytest.raises(LoadBalancerError, match="no backend 'nope'"):
        lab.lb(backend="nope").check([NODE_A])

    missing = str(tmp_path / "missing.sock")
    dead_tcp = f"tcp:127.0.0.1:{free_port()}"
    with pytest.raises(LoadBalancerError) as info:
        lab.lb(sockets=[lab.sockets[0], missing, dead_tcp]).check([NODE_A])
    assert f"{missing} cannot be reached" in str(info.value)
    assert f"{dead_tcp} cannot be reached" in str(info.value)
    assert lab.lb().server_states(NODE_A) == {s: "UP" for s in lab.sockets}  # nothing changed


def test_disable_drains_a_live_slow_request_then_maint(lab: Lab) -> None:
    lb = lab.lb()
    thread, out = start_slow(lab.instances[0].frontend, 1.0)   # balance first -> node-a
    wait_for(lambda: scur(lb, NODE_A) >= 1)

    result = lb.disable(NODE_A)
    thread.join(10)

    assert result.ok, result.message
    assert result.details["sessions_cut"] == 0
    assert result.details["drain_seconds"] >= 0.3
    assert out == [(200, '{"version": "127.0.0.231"}')]          # served, not cut
    assert lb.server_states(NODE_A) == {s: "MAINT" for s in lab.sockets}
    assert lb.server_states(NODE_B) == {s: "UP" for s in lab.sockets}
    # traffic now goes to node-b on both instances
    for inst in lab.instances:
        assert get(inst.frontend, "/") == (200, '{"version": "127.0.0.232"}')


def test_drain_timeout_cuts_and_counts_sessions(lab: Lab) -> None:
    lb = lab.lb(drain_timeout=0.5)
    threads = [start_slow(inst.frontend, 4.0) for inst in lab.instances]
    wait_for(lambda: scur(lb, NODE_A) >= 2)

    result = lb.disable(NODE_A)

    assert result.ok, result.message
    assert result.details["sessions_cut"] == 2
    assert "2 session(s) cut" in result.message
    for thread, out in threads:
        thread.join(10)
        assert out and out[0][0] != 200                         # really cut (502 or reset)
    assert lb.server_states(NODE_A) == {s: "MAINT" for s in lab.sockets}


def test_enable_returns_to_up_after_health_check(lab: Lab) -> None:
    lb = lab.lb()
    assert lb.disable(NODE_B).ok
    result = lb.enable(NODE_B)
    assert result.ok, result.message
    assert result.details["up_seconds"] > 0
    assert lb.server_states(NODE_B) == {s: "UP" for s in lab.sockets}


def test_enable_fails_after_up_timeout_when_backend_is_down(lab: Lab) -> None:
    lb = lab.lb(up_timeout=1.0)
    assert lb.disable(NODE_B).ok
    lab.backends["node-b"].stop()

    started = time.monotonic()
    result = lb.enable(NODE_B)

    assert not result.ok
    assert 0.9 <= time.monotonic() - started < 4
    assert "not healthy after 1s" in result.message and "L4CON" in result.message
    assert {i["status"] for i in result.details["instances"]} == {"DOWN"}
    # never put in rotation unchecked; explicitly back in maintenance
    assert lb.server_states(NODE_B) == {s: "MAINT" for s in lab.sockets}
    assert get(lab.instances[0].frontend, "/")[0] == 200


def test_refusal_is_a_result_not_an_exception(lab: Lab) -> None:
    lb = lab.lb(sockets=[lab.sockets[0], lab.instances[1].user_socket])
    result = lb.disable(NODE_A)
    assert not result.ok
    assert "Permission denied" in result.message
    # the partial drain on the admin instance was undone: the HA pair agrees again
    assert lab.lb().server_states(NODE_A) == {s: "UP" for s in lab.sockets}


def test_lost_socket_in_disable_is_ok_false(lab: Lab, tmp_path: Path) -> None:
    result = lab.lb(sockets=[lab.sockets[0], str(tmp_path / "gone.sock")]).disable(NODE_A)
    assert not result.ok and "gone.sock" in result.message


class SubprocessHandler(CommandHandler):
    """A tiny local stand-in for the ssh handler: run the command with bash."""

    opened = 0

    def open(self) -> None:
        SubprocessHandler.opened += 1

    def run(self, command: str, *, timeout: float | None = None,
            env: dict[str, str] | None = None) -> CommandResult:
        started = time.time()
        proc = subprocess.run(["bash", "-c", command], capture_output=True, text=True,
                              timeout=timeout)
        return CommandResult(command, proc.returncode, proc.stdout, proc.stderr, started,
                             time.time() - started)

    def close(self) -> None:
        pass


def test_via_a_command_handler(lab: Lab, tmp_path: Path) -> None:
    seen: list[str] = []

    def factory(name: str) -> CommandHandler:
        seen.append(name)
        return SubprocessHandler(Node(name, "127.0.0.1", transport="local"))

    lb = from_options({"backend": "gateways", "sockets": lab.sockets, "via": "lb-host",
                       "poll_interval": 0.05}, handler_factory=factory)
    lb.check([NODE_A, NODE_B])
    assert lb.disable(NODE_A).ok
    assert set(lb.server_states(NODE_A).values()) == {"MAINT"}
    assert lb.enable(NODE_A).ok
    assert lb.server_states(NODE_A) == {f"lb-host:{s}": "UP" for s in lab.sockets}
    assert seen == ["lb-host", "lb-host"]          # one handler per socket, reused
    lb.close()

    bad = from_options({"backend": "gateways", "socket": str(tmp_path / "x.sock"),
                        "via": "lb-host"}, handler_factory=factory)
    with pytest.raises(LoadBalancerError, match="x.sock cannot be reached: socat exit"):
        bad.check([NODE_A])
    assert not bad.disable(NODE_A).ok


def test_describe_names_the_commands(lab: Lab) -> None:
    lb = lab.lb(drain_timeout=30)
    assert lb.describe("disable", NODE_A) == (
        "haproxy: set server gateways/node-a state drain; wait scur=0 (<=30s); "
        "state maint [2 instances]")
    assert "state ready; wait UP (<=5s)" in lb.describe("enable", NODE_A)


@pytest.mark.parametrize("options, field", [
    ({"socket": "/x"}, "load_balancer.backend"),
    ({"backend": "gw"}, "load_balancer.socket"),
    ({"backend": "gw", "sockets": "/x"}, "load_balancer.sockets"),
    ({"backend": "gw", "sockets": []}, "load_balancer.sockets"),
    ({"backend": "gw", "socket": "tcp:127.0.0.1"}, "load_balancer.socket"),
    ({"backend": "gw", "socket": "/x", "drain_timeout": 0}, "load_balancer.drain_timeout"),
    ({"backend": "gw", "socket": "/x", "up_timeout": "soon"}, "load_balancer.up_timeout"),
    ({"backend": "gw", "socket": "/x", "poll_interval": -1}, "load_balancer.poll_interval"),
    ({"backend": "gw", "socket": "/x", "via": "lb"}, "load_balancer.via"),
    ({"backend": "gw", "socket": "/x", "drain_timout": 3}, "drain_timout"),
])
def test_from_options_names_the_bad_field(options: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        from_options({"type": "haproxy", **options})


def test_rolling_disable_enable_drops_no_request(lab: Lab) -> None:
    """The point of the hook: traffic through the pair stays clean while each node goes
    out and back in (probe on instance 1's frontend, 200 req/s)."""
    from zdu.run.traffic import TrafficProbe

    lb = lab.lb()
    probe = TrafficProbe(f"http://127.0.0.1:{lab.instances[0].frontend}/", rate=200, timeout=2)
    with probe:
        for node in (NODE_A, NODE_B):
            with probe.window(node.name):
                assert lb.disable(node).ok
                threading.Event().wait(0.4)          # the node's "upgrade"
                assert lb.enable(node).ok
    report = probe.report()
    assert report.sent > 150
    assert report.failed == 0, report.first_failures
    assert set(report.versions) == {"127.0.0.231", "127.0.0.232"}
    assert [w.failed for w in report.windows] == [0, 0]


class FakeApi:
    """A scripted runtime API: scur never drops, clock only moves when we sleep."""

    def __init__(self, instance: str) -> None:
        self.instance = self.address = instance
        self.commands: list[str] = []

    def execute(self, command: str) -> str:
        self.commands.append(command)
        if command.startswith("show stat"):
            return ("# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,"
                    "eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,"
                    "qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,"
                    "check_status,\n"
                    "gateways,node-a,0,0,3,3,,3,0,0,,0,,0,0,0,0,DRAIN,1,1,0,0,0,1,0,,1,3,1,,3,,2,"
                    "0,,1,L7OK,\n"
                    "gateways,BACKEND,0,0,3,3,,3,0,0,0,0,,0,0,0,0,UP,1,1,0,,0,1,0,,1,3,0,,3,,1,"
                    "0,,1,,\n")
        return "\n"

    def close(self) -> None:
        pass


def test_drain_wait_uses_the_injected_clock_and_is_bounded() -> None:
    now = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    apis = [FakeApi("one"), FakeApi("two")]
    lb = HaproxyLoadBalancer("gateways", apis, drain_timeout=30, poll_interval=0.2,  # type: ignore[arg-type]
                             sleep=sleep, clock=lambda: now[0])
    started = time.monotonic()
    result = lb.disable(NODE_A)

    assert time.monotonic() - started < 1                      # never really slept
    assert sum(slept) == pytest.approx(30)
    assert 140 <= len(slept) <= 152
    assert result.ok and result.details["sessions_cut"] == 6   # 3 on each instance
    assert result.details["drain_seconds"] == pytest.approx(30)
    for api in apis:
        sets = [c for c in api.commands if not c.startswith("show")]
        assert sets == ["set server gateways/node-a state drain",
                        "set server gateways/node-a state maint",
                        "shutdown sessions server gateways/node-a"]

    frozen = HaproxyLoadBalancer("gateways", [FakeApi("x")], drain_timeout=5,  # type: ignore[list-item]
                                 poll_interval=1, sleep=lambda s: None, clock=lambda: 0.0)
    assert frozen.disable(NODE_A).details["sessions_cut"] == 3  # a stuck clock still ends
