"""The haproxy hook's logic with a scripted runtime API: every value that reaches a runtime-API
command or a socat address is checked first, the socket must be at level admin, and
``serving`` reads who takes traffic.  The shell line for ``via:`` runs through a real dash
and a real socat here (byte for byte); the real HAProxy and sshd are in tests/integration."""
from __future__ import annotations

import shlex
import subprocess
import time
from pathlib import Path
from typing import Mapping

import pytest

from tests.support.haproxy import RecordingSocket
from zdu.errors import ConfigError, LoadBalancerError
from zdu.lb.haproxy import HaproxyLoadBalancer, from_options, is_serving
from zdu.lb.haproxy_api import LocalSocketApi, RemoteSocketApi, RuntimeApi, socat_address
from zdu.model import Node

NODE_A = Node("Node-A", "127.0.0.231", lb_server="node-a")
NODE_B = Node("Node-B", "127.0.0.232", lb_server="node-b")


class ScriptedApi(RuntimeApi):
    """A runtime API that answers from a table and records every command it is sent."""

    def __init__(self, instance: str = "one", rows: Mapping[str, tuple[str, str, int]] | None = None,
                 level: str = "admin", probe: str = "No such server.") -> None:
        super().__init__(instance)
        #: server -> (status, weight, scur)
        self.rows = dict(rows or {"node-a": ("UP", "1", 0), "node-b": ("UP", "1", 0)})
        self.level = level
        self.probe = probe
        self.commands: list[str] = []

    def execute(self, command: str) -> str:
        self.commands.append(command)
        if command.startswith("show stat"):
            lines = ["# pxname,svname,scur,status,weight,check_status"]
            lines += [f"gateways,{name},{scur},{status},{weight},L7OK"
                      for name, (status, weight, scur) in self.rows.items()]
            return "\n".join([*lines, "gateways,BACKEND,0,UP,2,", ""])
        if command == "show cli level":
            return self.level + "\n"
        if command.startswith("set server") and len(command.split()) == 3:
            return self.probe + "\n"
        return "\n"


def hook(*apis: ScriptedApi, **kw: float) -> HaproxyLoadBalancer:
    return HaproxyLoadBalancer("gateways", apis, poll_interval=0.01, **kw)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- names in commands

@pytest.mark.parametrize("backend", [
    "gw;set server gw/node-b state maint",                          # ';' separates commands
    r"gw;set\0040server\0040gw/node-b\0040state\0040maint",         # no space: escapes for echo
    "gw show",                                                       # a space splits words
    "gw/node-a", "gw#1", "", "$(id)", "gw'", 7,
])
def test_a_backend_that_is_not_a_haproxy_identifier_is_refused(backend: object) -> None:
    with pytest.raises(ConfigError, match=r"load_balancer.backend: expected a HAProxy backend name "
                                          r"\(only letters, digits, '-', '_', '.' and ':'"):
        from_options({"backend": backend, "socket": "/run/haproxy.sock"})


@pytest.mark.parametrize("backend", ["gateways", "be_api-1.v2", "ns:gw", "GW2"])
def test_haproxy_identifiers_are_accepted(backend: str) -> None:
    assert from_options({"backend": backend, "socket": "/run/haproxy.sock"}).backend == backend


HOSTILE_SERVER = Node("Node-X", "127.0.0.239", lb_server="node-b;set server gateways/node-a state maint")
UNNAMED = Node("Node X", "127.0.0.238")          # no lb_server: its name is the server name


def test_server_names_are_validated_naming_node_and_field() -> None:
    with pytest.raises(ConfigError) as info:
        hook(ScriptedApi()).validate([NODE_A, HOSTILE_SERVER, UNNAMED])
    text = str(info.value)
    assert ("node Node-X: lb_server 'node-b;set server gateways/node-a state maint' is not a "
            "HAProxy server name; use only letters, digits") in text
    assert "node Node X: its name 'Node X' is used as the HAProxy server name and is not one; " \
           "set lb_server" in text
    assert "Node-A" not in text
    hook(ScriptedApi()).validate([NODE_A, NODE_B, Node("gw-3.dc1:a_b", "h")])


def test_a_bad_server_name_sends_nothing_to_haproxy() -> None:
    api = ScriptedApi()
    lb = hook(api)
    with pytest.raises(ConfigError, match="node Node-X: lb_server"):
        lb.check([NODE_A, HOSTILE_SERVER])
    with pytest.raises(ConfigError, match="node Node-X"):
        lb.serving([HOSTILE_SERVER])
    with pytest.raises(LoadBalancerError, match="node Node-X"):
        lb.server_states(HOSTILE_SERVER)
    for action in (lb.disable, lb.enable):
        result = action(HOSTILE_SERVER)
        assert not result.ok and result.message.endswith("; nothing was sent")
        assert "node Node-X: lb_server" in result.message
    assert api.commands == []


def test_the_last_guard_refuses_a_command_with_a_separator_or_newline(tmp_path: Path) -> None:
    local = LocalSocketApi(str(tmp_path / "absent.sock"))
    for command in ("show info;show stat", "show info\nshow stat", "show\x00info"):
        with pytest.raises(ValueError, match="unsafe runtime-API command"):
            local.execute(command)         # ValueError, not "cannot connect": refused first
        with pytest.raises(ValueError, match="unsafe runtime-API command"):
            RemoteSocketApi("/run/h.sock", "lb", lambda n: None).socat_command(command)  # type: ignore


# ---------------------------------------------------------------------------- socat addresses

@pytest.mark.parametrize("sock", [
    "/run/haproxy.sock!!SYSTEM:id > /tmp/pwned",       # a dual address: the second half runs
    "/run/haproxy.sock,fork",                          # address options
    "UNIX-CONNECT:/run/haproxy.sock",                  # an address type
    "/run/my haproxy/admin.sock",                      # whitespace
    "/run/h.sock;id", "/run/$(id).sock", "/run/h`id`.sock", "/run/h'.sock",
    "run/haproxy.sock",                                # relative: depends on the login directory
    "tcp:127.0.0.1:9999!!SYSTEM:id",
    "tcp:lb,fork:9999",
    "tcp:fe80::1%eth0,fork:9999",                      # an IPv6 scope id is any text to ipaddress
    "tcp:127.0.0.1:0", "tcp:127.0.0.1:65536", "tcp:127.0.0.1:http", "tcp::9999",
])
def test_a_socket_reached_via_the_lb_host_must_be_plain(sock: str) -> None:
    with pytest.raises(ConfigError, match="load_balancer.socket: "):
        from_options({"backend": "gw", "socket": sock, "via": "root@127.0.0.240:22"},
                     handler_factory=lambda name: None)  # type: ignore[arg-type,return-value]


@pytest.mark.parametrize("sock, peer", [
    ("/run/haproxy/admin.sock", "UNIX-CONNECT:/run/haproxy/admin.sock"),
    ("unix:/var/lib/haproxy/stats@1", "UNIX-CONNECT:/var/lib/haproxy/stats@1"),
    ("tcp:127.0.0.1:9999", "TCP:127.0.0.1:9999"),
    ("tcp:[::1]:9999", "TCP:[::1]:9999"),
    ("tcp:lb-1.example.com:9999", "TCP:lb-1.example.com:9999"),
])
def test_plain_sockets_become_socat_addresses(sock: str, peer: str) -> None:
    assert socat_address(sock) == peer
    lb = from_options({"backend": "gw", "socket": sock, "via": "lb"},
                      handler_factory=lambda name: None)  # type: ignore[arg-type,return-value]
    api = lb.apis[0]
    assert isinstance(api, RemoteSocketApi)
    line = api.socat_command("show stat gw 6 -1")
    assert line == f"printf '%s\\n' 'show stat gw 6 -1' | socat - {shlex.quote(peer)}"


def test_a_local_socket_path_may_hold_spaces_but_a_tcp_host_must_be_a_host() -> None:
    assert from_options({"backend": "gw", "socket": "/run/my haproxy/admin.sock"}).instances == [
        "/run/my haproxy/admin.sock"]       # connected to directly, never through a shell
    with pytest.raises(ConfigError, match="expected tcp:HOST:PORT with HOST an IP address or a host name"):
        from_options({"backend": "gw", "socket": "tcp:lb,fork:9999"})


def test_via_must_be_one_word() -> None:
    with pytest.raises(ConfigError, match="load_balancer.via: expected a node name or user@host:port"):
        from_options({"backend": "gw", "socket": "/run/h.sock", "via": "lb host"},
                     handler_factory=lambda name: None)  # type: ignore[arg-type,return-value]


def test_the_command_reaches_the_socket_byte_for_byte_through_dash(tmp_path: Path) -> None:
    """dash's ``echo`` expands backslash escapes (``\\0040`` is a space, ``\\n`` a newline), so
    the old ``echo CMD | socat`` line let a name with no whitespace inject words and commands."""
    recorder = RecordingSocket(tmp_path / "h.sock")
    api = RemoteSocketApi(str(tmp_path / "h.sock"), "lb", lambda n: None)  # type: ignore
    command = r"""show stat gw\0040x\n 'q' "d" $(touch X) `touch Y` * ~ %s %% \\ !"""
    try:
        subprocess.run(["dash", "-c", api.socat_command(command)], cwd=tmp_path, check=True,
                       capture_output=True, timeout=10)
        old_line = f"echo {shlex.quote(command)} | socat stdio UNIX-CONNECT:{tmp_path / 'h.sock'}"
        subprocess.run(["dash", "-c", old_line], check=True, capture_output=True, timeout=10)
        recorder.wait_for(2)
    finally:
        recorder.close()
    assert recorder.received[0] == command.encode() + b"\n"
    assert recorder.received[1] != recorder.received[0]      # what the echo line did instead
    assert b"gw x" in recorder.received[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.sock"]   # nothing ran


# ---------------------------------------------------------------------------- level admin

@pytest.mark.parametrize("level, probe, needle", [
    ("operator", "", "the socket is at level operator; the hook needs 'stats socket ... level admin'"),
    ("user", "", "the socket is at level user"),
    ("Unknown command. Please enter one of the following commands only :", "Permission denied",
     "the socket is not at level admin (Permission denied)"),        # HAProxy 1.x
])
def test_check_refuses_a_socket_below_level_admin(level: str, probe: str, needle: str) -> None:
    low = ScriptedApi("two", level=level, probe=probe)
    admin = ScriptedApi("one")
    with pytest.raises(LoadBalancerError) as info:
        hook(admin, low).check([NODE_A, NODE_B])
    assert f"haproxy two: {needle}" in str(info.value)
    assert "haproxy one" not in str(info.value)
    assert not [c for c in admin.commands + low.commands if len(c.split()) > 3 and c.startswith("set")]


def test_check_accepts_level_admin_old_and_new() -> None:
    old = ScriptedApi("old", level="Unknown command.", probe="No such server.")
    hook(ScriptedApi("new"), old).check([NODE_A])
    assert old.commands[-1] == "set server gateways/node-a"     # the probe names no action


# ---------------------------------------------------------------------------- serving

@pytest.mark.parametrize("status, weight, expected", [
    ("UP", "1", True), ("UP 1/3", "1", True), ("no check", "1", True),
    ("UP", "0", False), ("DOWN", "1", False), ("DOWN 1/2", "1", False), ("MAINT", "1", False),
    ("MAINT (via gw/node-c)", "1", False), ("DRAIN", "1", False), ("NOLB", "1", False),
])
def test_serving_statuses(status: str, weight: str, expected: bool) -> None:
    assert is_serving({"status": status, "weight": weight}) is expected


def test_serving_asks_every_instance_and_changes_nothing() -> None:
    one = ScriptedApi("one", {"node-a": ("UP", "1", 0), "node-b": ("UP", "1", 0)})
    two = ScriptedApi("two", {"node-a": ("UP", "1", 0), "node-b": ("DRAIN", "1", 0)})
    missing = Node("Node-C", "127.0.0.233", lb_server="node-c")
    assert hook(one, two).serving([NODE_A, NODE_B, missing]) == {
        "Node-A": True, "Node-B": False, "Node-C": False}
    assert [c for c in one.commands + two.commands if not c.startswith("show stat")] == []


def test_serving_raises_when_the_balancer_cannot_be_asked(tmp_path: Path) -> None:
    lb = HaproxyLoadBalancer("gateways", [LocalSocketApi(str(tmp_path / "gone.sock"))])
    with pytest.raises(LoadBalancerError, match="gone.sock"):
        lb.serving([NODE_A])


# ---------------------------------------------------------------------------- drain clock

def test_drain_wait_uses_the_injected_clock_and_is_bounded() -> None:
    now = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    stuck = {"node-a": ("DRAIN", "1", 3)}            # scur never drops
    apis = [ScriptedApi("one", stuck), ScriptedApi("two", stuck)]
    lb = HaproxyLoadBalancer("gateways", apis, drain_timeout=30, poll_interval=0.2,
                             sleep=sleep, clock=lambda: now[0])
    started = time.monotonic()
    result = lb.disable(NODE_A)

    assert time.monotonic() - started < 1                      # never really slept
    assert sum(slept) == pytest.approx(30)
    assert 150 <= len(slept) <= 170              # 0.2 s apart, 0.025 s during the first 0.4 s
    assert slept[:16] == pytest.approx([0.025] * 16) and slept[-2] == pytest.approx(0.2)
    assert result.ok and result.details["sessions_cut"] == 6   # 3 on each instance
    assert result.details["drain_seconds"] == pytest.approx(30)
    for api in apis:
        sets = [c for c in api.commands if not c.startswith("show")]
        assert sets == ["set server gateways/node-a state drain",
                        "set server gateways/node-a state maint",
                        "shutdown sessions server gateways/node-a"]

    frozen = HaproxyLoadBalancer("gateways", [ScriptedApi("x", stuck)], drain_timeout=5,
                                 poll_interval=1, sleep=lambda s: None, clock=lambda: 0.0)
    assert frozen.disable(NODE_A).details["sessions_cut"] == 3  # a stuck clock still ends


@pytest.mark.parametrize("address", ["tcp:127.0.0.1:\u00b2", "tcp:127.0.0.1:0", "tcp:127.0.0.1:65536",
                                     "tcp:127.0.0.1:" + "9" * 5000, "tcp:127.0.0.1", "tcp:127.0.0.1:99\n"])
def test_a_bad_admin_address_is_refused_with_the_expected_form(address: str) -> None:
    from zdu.lb.haproxy_api import parse_address
    with pytest.raises(ValueError, match="expected tcp:HOST:PORT"):
        parse_address(address)
    assert parse_address("tcp:[::1]:9999") == ("tcp", ("::1", 9999))
