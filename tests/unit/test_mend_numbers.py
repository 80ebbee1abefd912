"""A reviewer's findings on numbers and line ends (December): ports, timeouts, subscripts.

``str.isdigit()`` then ``int()`` took '²' (int() refuses it: status 80, "a zdupgrade bug") and
5,000-digit strings (int() refuses those too); every such value is now read with
:func:`zdu.config.values.bounded_int` (ASCII digits, bounded) and refused with a ConfigError
naming the file and the field.  Regexes used with ``.match`` and ``$`` took a final newline.
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from tests.support.badinput import NINES, PROFILE, config_error, dry_run, refused, short, write
from zdu.config import limit
from zdu.config.limit import select
from zdu.config.ssh_config import JumpSyntaxError, parse_jump, parse_jumps, resolve
from zdu.config.topology import load_topology
from zdu.config.values import bounded_int, port_number
from zdu.lb.haproxy import from_options
from zdu.model import Node, SshSettings


@pytest.mark.parametrize("value, expected", [
    ("22", 22), (22, 22), ("65535", 65535), ("0", None), ("65536", None), ("²", None), ("٣", None),
    (NINES, None), (" 22", None), ("+22", None), ("-1", None), (True, None), (22.0, None), ("", None),
], ids=short)
def test_port_number(value: object, expected: int | None) -> None:
    assert port_number(value) == expected


def test_bounded_int_signed_only_where_negative_is_allowed() -> None:
    assert bounded_int("-5", -10, 10) == -5 and bounded_int("-5", 0, 10) is None
    assert bounded_int("9" * 18, 0, 10**18) == int("9" * 18) and bounded_int("9" * 19, 0, 10**19) is None


@pytest.mark.parametrize("config, needle", [
    ("Host gw1\n  Port ²\n", "gives Port '²', which is not a port number"),
    (f"Host gw1\n  Port {NINES}\n", "gives Port '999"),
    ("Host gw1\n  ConnectTimeout ²\n", "gives ConnectTimeout '²', expected a number of seconds 1-3600"),
    (f"Host gw1\n  ConnectTimeout {NINES}\n", "gives ConnectTimeout '999"),
    ("Host gw1\n  ProxyJump bastion:²\n", "ProxyJump: invalid port '²' in jump host 'bastion:²'"),
    ("Host gw1\n  ProxyJump bastion\nHost bastion\n  Port ²\n", "jump host bastion: ssh_config"),
], ids=short)
def test_ssh_config_numbers_are_ascii_and_bounded(tmp_path: Path, config: str, needle: str) -> None:
    path = write(tmp_path / "ssh_config", config)
    node = Node(name="A", host="gw1", defaulted=frozenset({"port", "user"}))
    message = config_error(resolve, node, SshSettings(config_file=str(path),
                                                      defaulted=frozenset({"user", "connect_timeout"})))
    assert message.startswith("node A: ") and needle in message, message


@pytest.mark.parametrize("jump", ["bastion:²", f"bastion:{NINES}", "ops@bastion:0"], ids=short)
def test_topology_jump_port_is_ascii_and_bounded(tmp_path: Path, jump: str) -> None:
    topology = write(tmp_path / "t.yaml", f"profile: p\nnodes: [{{name: A, host: gw1, proxy_jump: \"{jump}\"}}]\n")
    message = config_error(load_topology, topology)
    assert message.startswith(f"{topology}: nodes[0] (A).proxy_jump: invalid port "), message


def test_tcp_wait_on_a_port_of_unicode_digits(tmp_path: Path) -> None:
    write(tmp_path / "pt.yaml", "name: pt\nvars: {app_port: \"²\"}\nphases:\n  EXPORT:\n"
                                "    - {name: port, wait: {tcp: \"127.0.0.1:{{ app_port }}\", deadline: 1}}\n")
    topology = write(tmp_path / "t.yaml", "profile: ./pt.yaml\nnodes: [{name: A, host: 127.0.0.1, transport: local}]\n")
    refused(dry_run(tmp_path, "--config", str(topology)),
            f"{tmp_path / 'pt.yaml'}: phases.EXPORT[0] wait 'port' (node A): a tcp wait needs HOST:PORT",
            "'127.0.0.1:²'")


def test_limit_subscript_of_5000_digits(tmp_path: Path) -> None:
    topology = write(tmp_path / "t.yaml", "profile: p\nnodes:\n  - {name: db0, host: 10.0.0.1, group: db}\n"
                                          "  - {name: db1, host: 10.0.0.2, group: db}\n")
    nodes = load_topology(topology).nodes
    for pattern in (f"db[{NINES}]", f"db[0:{NINES}]", f"db[-{NINES}]"):
        message = config_error(select, pattern, nodes)
        assert message.startswith("--limit: 'db[") and "the subscript is out of range (at most 1,000,000,000)" \
            in message, message
    assert select("db[1]", nodes)[0] == ("db1",) and select("db[-1]", nodes)[0] == ("db1",)


@pytest.mark.parametrize("key", ["drain_timeout", "up_timeout", "command_timeout", "poll_interval"])
@pytest.mark.parametrize("value", [math.inf, math.nan, 1e300, 10**30, 0, -1])
def test_haproxy_timings_are_bounded(key: str, value: float) -> None:
    message = config_error(from_options, {"backend": "gw", "socket": "/run/haproxy.sock", key: value})
    assert message.startswith(f"load_balancer.{key}: expected a number of seconds "), message


def test_haproxy_timings_within_bounds_and_a_busy_poll_refused() -> None:
    lb = from_options({"backend": "gw", "socket": "/run/haproxy.sock", "drain_timeout": 86400,
                       "up_timeout": 0.5, "command_timeout": 3600, "poll_interval": 0.01})
    assert (lb.drain_timeout, lb.up_timeout, lb.poll_interval) == (86400.0, 0.5, 0.01)
    assert "at least 0.01" in config_error(from_options, {"backend": "gw", "socket": "/x", "poll_interval": 1e-300})


def test_haproxy_infinite_timeout_in_a_topology_is_a_config_error(tmp_path: Path) -> None:
    write(tmp_path / "p.yaml", PROFILE)
    topology = write(tmp_path / "t.yaml", "profile: ./p.yaml\nload_balancer: {type: haproxy, socket: /run/h.sock, "
                                          "backend: gw, command_timeout: .inf}\n"
                                          "nodes: [{name: A, host: 127.0.0.1, transport: local}]\n")
    refused(dry_run(tmp_path, "--config", str(topology)), "load_balancer.command_timeout: expected a number of "
                                                          "seconds above 0 and at most 3600, got inf")


@pytest.mark.parametrize("text", ["ops\n@bastion", "ops@bastion\n:22"])
def test_a_newline_in_a_jump_host_is_refused(text: str) -> None:
    with pytest.raises(JumpSyntaxError):
        parse_jump(text)
    with pytest.raises(JumpSyntaxError):
        parse_jumps([text])


def test_a_subscript_or_host_port_followed_by_a_newline_is_not_one() -> None:
    assert limit._split_subscript("db[0]\n", "--limit") == ("db[0]\n", None)
    assert limit._split_subscript("db[0]", "--limit") == ("db", (0, None))
    assert not limit._HOST_PORT.fullmatch("h:22\n") and limit._HOST_PORT.fullmatch("h:22")


def test_a_request_url_with_a_newline_is_refused(tmp_path: Path) -> None:
    write(tmp_path / "p.yaml", "name: p\nvars: {path: \"x\\n\"}\nphases:\n  EXPORT:\n"
                               "    - {name: r, http: {url: \"http://127.0.0.1:9/{{ path }}\"}}\n")
    topology = write(tmp_path / "t.yaml", "profile: ./p.yaml\nnodes: [{name: A, host: 127.0.0.1, transport: local}]\n")
    refused(dry_run(tmp_path, "--config", str(topology)),
            f"{tmp_path / 'p.yaml'}: phases.EXPORT[0] request 'r' (node A): the url must be http(s)://HOST... "
            "with no space or control character, got 'http://127.0.0.1:9/x\\n'")
