"""The haproxy hook against two REAL haproxy processes (an HA pair) on loopback.

Instance 1 is driven over its unix socket, instance 2 over tcp:127.0.0.1:PORT, so
both transports run in every test.  Backends are python http.server threads on
127.0.0.231/232 with a slow endpoint; health checks run every 100 ms
(:mod:`tests.support.haproxy`).
"""
from __future__ import annotations

import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.support.haproxy import HaproxyLab as Lab, free_port, get, haproxy_lab, wait_for
from zdu.errors import ConfigError, LoadBalancerError
from zdu.transport.base import CommandHandler
from zdu.lb.haproxy import HaproxyLoadBalancer, from_options
from zdu.model import CommandResult, Node

pytestmark = pytest.mark.skipif(shutil.which("haproxy") is None or shutil.which("socat") is None,
                                reason="needs haproxy and socat")

NODE_A = Node("Node-A", "127.0.0.231", lb_server="node-a")
NODE_B = Node("Node-B", "127.0.0.232", lb_server="node-b")


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    with haproxy_lab(tmp_path, {"node-a": "127.0.0.231", "node-b": "127.0.0.232"},
                     instances=2, tcp=(1,)) as lab:
        yield lab


def scur(lb: HaproxyLoadBalancer, node: Node) -> int:
    return sum(lb._scur(node.lb_name).values())  # noqa: SLF001  (test peeks at the poll)


def start_slow(port: int, seconds: float) -> tuple[threading.Thread, list]:
    out: list = []
    t = threading.Thread(target=lambda: out.append(get(port, f"/slow/{seconds}")), daemon=True)
    t.start()
    return t, out


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


def test_check_refuses_sockets_below_level_admin(lab: Lab) -> None:
    """A user- or operator-level socket answers ``show stat`` like an admin one; without
    this check the run would only fail at the first disable, on a live node."""
    inst = lab.instances[0]
    with pytest.raises(LoadBalancerError) as info:
        lab.lb(sockets=[inst.socket, inst.operator_socket, inst.user_socket]).check([NODE_A, NODE_B])
    text = str(info.value)
    assert f"haproxy {inst.operator_socket}: the socket is at level operator; the hook needs " \
           "'stats socket ... level admin'" in text
    assert f"haproxy {inst.user_socket}: the socket is at level user" in text
    assert f"haproxy {inst.socket}:" not in text
    lab.lb().check([NODE_A, NODE_B])                           # both admin sockets pass


def test_serving_reads_what_haproxy_does(lab: Lab) -> None:
    lb = lab.lb(up_timeout=1.0)
    nodes = [NODE_A, NODE_B]
    assert lb.serving(nodes) == {"Node-A": True, "Node-B": True}

    lab.command("set server gateways/node-a state drain", index=1)   # one instance of the pair
    assert lb.serving(nodes) == {"Node-A": False, "Node-B": True}
    lab.command("set server gateways/node-a state ready", index=1)
    wait_for(lambda: lb.serving(nodes)["Node-A"])

    assert lb.disable(NODE_B).ok                                        # MAINT
    assert lb.serving(nodes) == {"Node-A": True, "Node-B": False}
    lab.backends["node-b"].stop()
    assert not lb.enable(NODE_B).ok                                     # DOWN, back to MAINT
    assert lb.serving(nodes) == {"Node-A": True, "Node-B": False}
    lab.command("set server gateways/node-b state ready")
    wait_for(lambda: lab.status("node-b") == "DOWN")
    assert lb.serving(nodes)["Node-B"] is False


def test_healthy_reads_the_health_check_not_the_capacity(lab: Lab) -> None:
    """``healthy`` (asked before each wave and at the end about the nodes put back): a server with
    weight 0 serves no new traffic (``serving`` says False) yet is healthy; one whose process died
    goes DOWN and is named with what HAProxy shows, on the instance that shows it."""
    lb = lab.lb()
    nodes = [NODE_A, NODE_B]
    assert lb.healthy(nodes) == {"Node-A": True, "Node-B": True}
    for index in (0, 1):
        lab.command("set weight gateways/node-a 0", index=index)
    assert lb.serving(nodes)["Node-A"] is False and lb.healthy(nodes)["Node-A"] is True
    lab.command("set server gateways/node-a state maint", index=1)      # one instance of the pair
    answer = lb.healthy(nodes)["Node-A"]
    assert isinstance(answer, str) and answer.startswith("gateways/node-a MAINT") and answer.endswith(lab.sockets[1])
    lab.backends["node-b"].stop()                                        # the new version crashed
    wait_for(lambda: lab.status("node-b") == "DOWN" and lab.status("node-b", index=1) == "DOWN")
    answer = lb.healthy(nodes)["Node-B"]
    assert isinstance(answer, str) and "gateways/node-b DOWN (check L4CON)" in answer
    assert lab.sockets[0] in answer and lab.sockets[1] in answer
    assert lab.status("node-a", index=1) == "MAINT"                      # read-only: nothing changed


def test_a_server_name_with_a_command_in_it_never_reaches_haproxy(lab: Lab) -> None:
    """``;`` is HAProxy's command separator: ``node-b;set server gateways/node-a state maint``
    would take node-a out too.  It is refused before any socket is contacted."""
    hostile = Node("Node-X", "127.0.0.239", lb_server="node-b;set server gateways/node-a state maint")
    lb = lab.lb()
    with pytest.raises(ConfigError, match="node Node-X: lb_server .* is not a HAProxy server name"):
        lb.check([NODE_A, hostile])
    for action in (lb.disable, lb.enable):
        result = action(hostile)
        assert not result.ok and "nothing was sent" in result.message
    assert [lab.status(s, i) for s in ("node-a", "node-b") for i in (0, 1)] == ["UP"] * 4
