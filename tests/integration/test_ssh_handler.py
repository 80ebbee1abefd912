"""SshHandler against real OpenSSH servers on loopback addresses (no SSH mocks)."""
from __future__ import annotations

import os
import shlex
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from tests.support.dns import hosts_file_wrapper
from tests.support.localfleet import ROOT
from tests.support.sshd import SshdServer, free_port, keygen, sshd_server  # noqa: F401 (fixture)
from zdu.errors import AuthError, HostKeyError, UnreachableError
from zdu.transport import make_handler
from zdu.transport.retry import Backoff
from zdu.transport.ssh import SshHandler, SshPool, _PromptSocket, _Wakeup
from zdu.model import CommandResult, Node, SshSettings
from zdu.status import Status

Factory = Callable[..., SshdServer]


class FakeSleep:
    """Records the backoff instead of sleeping."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def node_of(server: SshdServer, name: str = "node-a", **kw: Any) -> Node:
    return Node(name=name, host=server.host, port=server.port, **kw)


def settings_of(server: SshdServer, known_hosts: Path, **kw: Any) -> SshSettings:
    kw.setdefault("key_file", str(server.client_key))
    kw.setdefault("connect_timeout", 5.0)
    return SshSettings(known_hosts=str(known_hosts), **kw)


@pytest.fixture
def server(sshd_server: Factory) -> SshdServer:
    return sshd_server("127.0.0.1")


@pytest.fixture
def known_hosts(tmp_path: Path, server: SshdServer) -> Path:
    path = tmp_path / "known_hosts"
    path.write_text(server.known_hosts_line())
    return path


@pytest.fixture(params=["shell", "exec"])
def handler(request: pytest.FixtureRequest, server: SshdServer, known_hosts: Path) -> Iterator[SshHandler]:
    """Through the node's shell session (the default) and one exec channel per command."""
    h = SshHandler(node_of(server), settings_of(server, known_hosts), sleep=FakeSleep(),
                   shell_session=request.param == "shell")
    yield h
    h.close()


# --------------------------------------------------------------------------- commands

def test_exit_codes_stdout_and_stderr(handler: SshHandler) -> None:
    ok = handler.run("echo out")
    assert (ok.exit_code, ok.stdout, ok.stderr, ok.error, ok.ok) == (0, "out\n", "", None, True)
    bad = handler.run("echo out; echo err >&2; exit 7")
    assert isinstance(bad, CommandResult)
    assert (bad.exit_code, bad.stdout, bad.stderr, bad.ok) == (7, "out\n", "err\n", False)
    assert bad.command == "echo out; echo err >&2; exit 7"
    assert bad.started > 0 and bad.duration > 0


def test_killed_by_signal_reports_128_plus_signal(handler: SshHandler) -> None:
    assert handler.run("kill -9 $$").exit_code == 137


def test_hostile_and_non_ascii_arguments_pass_through(handler: SshHandler) -> None:
    value = "héllo wörld ✓ 'single' \"double\" $(touch /tmp/zdu-pwned) `id` ; | & \\ *"
    result = handler.run(f"printf '%s' {shlex.quote(value)}")
    assert result.stdout == value
    assert not os.path.exists("/tmp/zdu-pwned")


def test_env_is_exported_quoted(handler: SshHandler) -> None:
    value = "a 'b' $HOME ; `id`"
    assert handler.run('printf %s "$ZDU_X"', env={"ZDU_X": value}).stdout == value


def test_stdin_is_closed(handler: SshHandler) -> None:
    result = handler.run("cat; echo after", timeout=10)
    assert (result.exit_code, result.stdout) == (0, "after\n")


def test_megabytes_of_output(handler: SshHandler) -> None:
    result = handler.run("head -c 2000000 /dev/zero | tr '\\0' x")
    assert result.exit_code == 0
    assert result.stdout == "x" * 2_000_000
    big = handler.run("printf START; head -c 5000000 /dev/zero | tr '\\0' x; printf END")
    assert big.stdout.startswith("START") and big.stdout.endswith("END")
    assert "characters of output truncated here" in big.stdout and big.stdout.count("x") == 2 * 1024 * 1024 - len("START") - len("END")


def test_invalid_utf8_and_split_multibyte_characters(handler: SshHandler) -> None:
    assert handler.run("printf '\\xff\\xfe'; printf '\\xff' >&2").stdout == "\ufffd\ufffd"
    # 2-byte characters across many read-chunk boundaries: none may be mangled
    result = handler.run("yes é | head -n 200000 | tr -d '\\n'")
    assert result.stdout == "é" * 200_000


def test_one_connection_is_reused(handler: SshHandler, server: SshdServer) -> None:
    handler.open()
    assert handler.connection is not None
    transport = handler.connection.transport
    for i in range(8):
        assert handler.run(f"echo {i}").stdout == f"{i}\n"
    assert handler.connection.transport is transport
    assert handler.connects == 1
    assert server.accepted_logins() == 1


def test_make_handler_picks_ssh(server: SshdServer, known_hosts: Path) -> None:
    with make_handler(node_of(server), settings_of(server, known_hosts)) as h:
        assert isinstance(h, SshHandler)
        assert h.run("true").ok


# --------------------------------------------------------------------------- host keys

def test_strict_refuses_unknown_key(server: SshdServer, tmp_path: Path) -> None:
    known_hosts = tmp_path / "ssh" / "known_hosts"          # does not exist
    h = SshHandler(node_of(server), settings_of(server, known_hosts), sleep=FakeSleep())
    with pytest.raises(HostKeyError) as info:
        h.open()
    msg = str(info.value)
    assert msg.startswith("node-a: ")
    assert f"{server.host}:{server.port}" in msg
    assert f"ssh-ed25519 {server.host_fingerprint}" in msg
    assert str(known_hosts) in msg and "not known" in msg and "Traceback" not in msg
    assert info.value.offered == server.host_fingerprint
    assert not known_hosts.exists()                          # strict never writes
    assert server.accepted_logins() == 0                     # refused before auth


def test_strict_does_not_touch_existing_known_hosts(server: SshdServer, tmp_path: Path,
                                                    sshd_server: Factory) -> None:
    other = sshd_server("127.0.0.2")
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(other.known_hosts_line())
    before = known_hosts.read_bytes()
    with pytest.raises(HostKeyError):
        SshHandler(node_of(server), settings_of(server, known_hosts)).open()
    assert known_hosts.read_bytes() == before


@pytest.mark.parametrize("policy", ["strict", "accept-new"])
def test_changed_key_is_refused(server: SshdServer, known_hosts: Path, policy: str) -> None:
    old = server.host_fingerprint
    server.stop()
    server.regenerate_host_key()
    server.start()
    new = server.host_fingerprint
    before = known_hosts.read_bytes()
    h = SshHandler(node_of(server), settings_of(server, known_hosts, host_key_policy=policy))
    with pytest.raises(HostKeyError) as info:
        h.open()
    msg = str(info.value)
    assert "CHANGED" in msg and old in msg and new in msg
    assert f"{server.host}:{server.port}" in msg
    assert (info.value.expected, info.value.offered) == (old, new)
    assert known_hosts.read_bytes() == before
    assert server.accepted_logins() == 0


def test_accept_new_records_key_and_reports_it(server: SshdServer, tmp_path: Path) -> None:
    known_hosts = tmp_path / "fresh" / "known_hosts"
    accepted: list[tuple[str, str, str]] = []
    settings = settings_of(server, known_hosts, host_key_policy="accept-new")
    with SshHandler(node_of(server), settings,
                    on_host_key_accepted=lambda *a: accepted.append(a)) as h:
        assert h.run("echo hi").stdout == "hi\n"
    assert accepted == [("node-a", "ssh-ed25519", server.host_fingerprint)]
    assert stat.S_IMODE(known_hosts.stat().st_mode) == 0o600
    assert known_hosts.read_text() == server.known_hosts_line()
    # the recorded line is what a strict handler trusts from now on
    with SshHandler(node_of(server), settings_of(server, known_hosts)) as strict:
        assert strict.run("true").ok
    # and a second accept-new run does not record or report it again
    with SshHandler(node_of(server), settings,
                    on_host_key_accepted=lambda *a: accepted.append(a)) as h:
        assert h.run("true").ok
    assert len(accepted) == 1 and known_hosts.read_text().count("\n") == 1


def test_pinned_fingerprint_match_is_trusted(server: SshdServer, tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"                   # empty: only the pin vouches
    node = node_of(server, host_key=server.host_fingerprint)
    with SshHandler(node, settings_of(server, known_hosts)) as h:
        assert h.run("echo pinned").stdout == "pinned\n"
    assert not known_hosts.exists()


@pytest.mark.parametrize("in_known_hosts", [False, True])
@pytest.mark.parametrize("policy", ["strict", "accept-new"])
def test_pinned_fingerprint_mismatch_is_refused(server: SshdServer, tmp_path: Path,
                                                policy: str, in_known_hosts: bool) -> None:
    known_hosts = tmp_path / "known_hosts"
    if in_known_hosts:
        known_hosts.write_text(server.known_hosts_line())
    wrong = "SHA256:" + "A" * 43
    accepted: list[Any] = []
    h = SshHandler(node_of(server, host_key=wrong),
                   settings_of(server, known_hosts, host_key_policy=policy),
                   on_host_key_accepted=lambda *a: accepted.append(a))
    with pytest.raises(HostKeyError) as info:
        h.run("touch /tmp/zdu-should-not-run")
    msg = str(info.value)
    assert wrong in msg and server.host_fingerprint in msg and "pinned" in msg
    assert (info.value.expected, info.value.offered) == (wrong, server.host_fingerprint)
    assert accepted == [] and known_hosts.exists() == in_known_hosts
    assert not h.connected


# --------------------------------------------------------------------------- failures

def test_refused_port_is_retried_then_unreachable(tmp_path: Path) -> None:
    port = free_port("127.0.0.1")
    sleep = FakeSleep()
    node = Node(name="node-x", host="127.0.0.1", port=port)
    settings = SshSettings(known_hosts=str(tmp_path / "kh"), connect_retries=3)
    h = SshHandler(node, settings, sleep=sleep)
    with pytest.raises(UnreachableError) as info:
        h.run("true")
    assert sleep.calls == [0.5, 1.0, 2.0]
    assert str(info.value) == (f"node-x: cannot connect to 127.0.0.1:{port}: "
                               "connection refused (tried 4 times)")


def test_silent_listener_is_a_banner_timeout(tmp_path: Path) -> None:
    with socket.socket() as listener:                        # accepts (backlog), never speaks
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        sleep = FakeSleep()
        settings = SshSettings(known_hosts=str(tmp_path / "kh"), connect_timeout=0.3,
                               connect_retries=1)
        t0 = time.monotonic()
        with pytest.raises(UnreachableError) as info:
            SshHandler(Node("node-s", "127.0.0.1", port), settings, sleep=sleep).open()
    assert time.monotonic() - t0 < 5
    assert "no SSH banner" in str(info.value) and f"127.0.0.1:{port}" in str(info.value)
    assert len(sleep.calls) == 1


def test_a_dropped_syn_is_a_connect_timeout(tmp_path: Path) -> None:
    """zdupgrade makes the TCP connection itself now (to be able to cut it short): a SYN
    nobody answers (a listener whose accept queue is full drops it) ends at connect_timeout."""
    with socket.socket() as listener, socket.socket() as queued:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        queued.connect(("127.0.0.1", port))                  # fills the queue: SYNs are dropped
        settings = SshSettings(known_hosts=str(tmp_path / "kh"), connect_timeout=0.5, connect_retries=0)
        with pytest.raises(UnreachableError) as info:
            SshHandler(Node("node-d", "127.0.0.1", port), settings, sleep=FakeSleep()).open()
    assert str(info.value) == f"node-d: cannot connect to 127.0.0.1:{port}: no answer within 0.5 s"


def test_every_address_a_name_resolves_to_is_tried(tmp_path: Path, sshd_server: Factory) -> None:
    """``./zdupgrade lock status`` for a node whose name has an IPv6 and an IPv4 address (an
    /etc/hosts of the test's own, in a mount namespace), sshd listening on the IPv4 one only:
    the IPv6 address, first in the resolver's order, is refused and the IPv4 one is used, as
    paramiko's own connect would; with both refused, one error names the node's address."""
    server = sshd_server("127.0.0.1")
    prefix = hosts_file_wrapper(tmp_path / "hosts", "::1 both.zdu.test\n127.0.0.1 both.zdu.test\n")
    order = subprocess.run(prefix + [sys.executable, "-c", "import socket; print(*dict.fromkeys(i[4][0] for i in "
                                     "socket.getaddrinfo('both.zdu.test', 22, 0, socket.SOCK_STREAM)))"],
                           capture_output=True, text=True, timeout=30)
    assert order.stdout.split() == ["::1", "127.0.0.1"], order.stdout + order.stderr
    known = tmp_path / "known_hosts"
    known.write_text(server.known_hosts_line().replace("127.0.0.1", "both.zdu.test", 1))
    config = tmp_path / "topology.yaml"
    config.write_text(f"ssh: {{user: root, key_file: {server.client_key}, known_hosts: {known}, "
                      "config_file: none, connect_retries: 0}\n"
                      f"nodes:\n  - {{name: gw1, host: both.zdu.test, port: {server.port}}}\n")
    argv = prefix + [sys.executable, str(ROOT / "zdupgrade"), "lock", "status", "--config", str(config)]
    free = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=str(tmp_path))
    assert free.returncode == Status.SUCCESS and "1 of 1 node(s) free" in free.stdout, free.stdout + free.stderr
    assert server.accepted_logins() == 1
    server.stop()
    refused = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=str(tmp_path))
    assert refused.returncode == Status.NODE_UNREACHABLE, refused.stdout + refused.stderr
    assert f"gw1: cannot reach the node: cannot connect to both.zdu.test:{server.port}: connection refused\n" \
        in refused.stdout


def test_an_ipv6_node(tmp_path: Path, sshd_server: Factory) -> None:
    server = sshd_server("::1")
    known = tmp_path / "known_hosts"
    known.write_text(server.known_hosts_line())
    h = SshHandler(node_of(server), settings_of(server, known), sleep=FakeSleep())
    try:
        assert h.run("echo $SSH_CONNECTION").stdout.split()[2] == "::1"
    finally:
        h.close()


def test_abandon_connects_cuts_a_handshake_and_a_syn_short(tmp_path: Path) -> None:
    """SshPool.abandon_connects from another thread ends connects under way at once: one
    waiting for the SSH banner, one waiting for its SYN's answer; each fails saying so (not as a
    timeout), and is not retried."""
    with socket.socket() as silent, socket.socket() as full, socket.socket() as queued:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        queued.connect(full.getsockname())
        pool = SshPool()
        settings = SshSettings(known_hosts=str(tmp_path / "kh"), connect_timeout=30, connect_retries=3)
        errors: dict[str, BaseException] = {}

        def connect(name: str, port: int) -> None:
            try:
                SshHandler(Node(name, "127.0.0.1", port), settings, pool=pool, sleep=FakeSleep()).open()
            except BaseException as exc:  # noqa: BLE001 - what the test looks at
                errors[name] = exc
        ports = {"banner": silent.getsockname()[1], "syn": full.getsockname()[1]}
        threads = [threading.Thread(target=connect, args=item) for item in ports.items()]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while len(pool._handshakes) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        assert pool.abandon_connects() == 2
        for thread in threads:
            thread.join(timeout=10)
        assert not any(thread.is_alive() for thread in threads), "a connect was not cut short"
    assert sorted(errors) == ["banner", "syn"]
    assert all(isinstance(exc, UnreachableError) for exc in errors.values()), errors
    for name, exc in errors.items():
        assert str(exc) == f"{name}: the connect to 127.0.0.1:{ports[name]} was given up: zdupgrade was interrupted"
    assert not pool._handshakes                 # each attempt took its own out again
    assert pool.abandon_connects() == 0


def test_wrong_client_key_is_an_auth_error_not_retried(server: SshdServer, known_hosts: Path,
                                                       tmp_path: Path) -> None:
    stranger = keygen(tmp_path / "stranger")
    sleep = FakeSleep()
    h = SshHandler(node_of(server), settings_of(server, known_hosts, key_file=str(stranger)),
                   sleep=sleep)
    with pytest.raises(AuthError) as info:
        h.open()
    msg = str(info.value)
    assert msg.startswith("node-a: authentication as ") and str(stranger) in msg
    assert f"{server.host}:{server.port}" in msg and "refused" in msg
    assert sleep.calls == []


def test_missing_key_file_is_an_auth_error(server: SshdServer, known_hosts: Path,
                                           tmp_path: Path) -> None:
    with pytest.raises(AuthError, match="does not exist"):
        SshHandler(node_of(server),
                   settings_of(server, known_hosts, key_file=str(tmp_path / "nope"))).open()


def test_timeout_kills_the_remote_command(handler: SshHandler, server: SshdServer) -> None:
    t0 = time.monotonic()
    result = handler.run("echo before; sleep 31.7", timeout=1)
    assert time.monotonic() - t0 < 5
    assert (result.exit_code, result.error, result.stdout) == (None, "timeout", "before\n")
    # the brackets keep pgrep from matching its own shell
    probe = handler.run("pgrep -f 'sleep 3[1].7'")
    assert probe.exit_code == 1, probe.stdout
    assert handler.connects == 1 and server.accepted_logins() == 1


def test_timeout_escalates_to_kill(handler: SshHandler) -> None:
    t0 = time.monotonic()
    result = handler.run("trap '' TERM; sleep 32.7 & wait; sleep 32.7", timeout=0.5)
    assert result.error == "timeout" and time.monotonic() - t0 < 5
    assert handler.run("pgrep -f 'sleep 3[2].7'").exit_code == 1


def _wait_for_remote(server: SshdServer, needle: str, deadline: float = 10.0) -> None:
    from tests.support.sshd import descendants
    assert server.process is not None
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        for pid in descendants(server.process.pid):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if needle.encode() in cmdline:
                return
        time.sleep(0.02)
    raise AssertionError(f"{needle!r} never started under sshd")


def test_sshd_killed_mid_command_then_reconnect(handler: SshHandler, server: SshdServer) -> None:
    """A dropped connection gives error="unreachable" (with the output so far); the next
    run() raises while the node is down and reconnects once it is back."""
    assert handler.run("true").ok
    box: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: box.update(r=handler.run("echo started; sleep 29.3")))
    worker.start()
    _wait_for_remote(server, "sleep 29.3")
    server.crash()
    worker.join(timeout=10)
    assert not worker.is_alive()
    result = box["r"]
    assert (result.exit_code, result.error) == (None, "unreachable")
    # output sshd had forwarded before it died is kept; whether "started" made it out
    # of the dying sshd is a race this test cannot control
    assert result.stdout in ("", "started\n")
    assert not handler.connected

    with pytest.raises(UnreachableError, match="connection refused"):
        handler.run("true")

    server.start()
    assert handler.run("echo back").stdout == "back\n"
    assert handler.connects == 2


def test_dead_idle_connection_reconnects_on_next_run(handler: SshHandler,
                                                     server: SshdServer) -> None:
    assert handler.run("true").ok
    server.crash()
    server.start()
    assert handler.run("echo again").stdout == "again\n"
    assert handler.connects == 2


def test_custom_backoff(tmp_path: Path) -> None:
    sleep = FakeSleep()
    h = SshHandler(Node("n", "127.0.0.1", free_port("127.0.0.1")),
                   SshSettings(known_hosts=str(tmp_path / "kh")), sleep=sleep,
                   backoff=Backoff(retries=5, initial=1, factor=3, maximum=10))
    with pytest.raises(UnreachableError, match="tried 6 times"):
        h.open()
    assert sleep.calls == [1, 3, 9, 10, 10]


# --------------------------------------------------------------------------- keys and agent

@pytest.fixture
def server200(sshd_server: Factory) -> SshdServer:
    return sshd_server("127.0.0.200")


def _authorize(server: SshdServer, key: Path) -> None:
    with open(server.workdir / "authorized_keys", "a", encoding="utf-8") as fh:
        fh.write(Path(f"{key}.pub").read_text())


def test_per_node_key_file_wins_over_ssh_key_file(server200: SshdServer, tmp_path: Path,
                                                  sshd_server: Factory) -> None:
    other = sshd_server("127.0.0.201")
    kh = tmp_path / "known_hosts"
    kh.write_text(server200.known_hosts_line() + other.known_hosts_line())
    # ssh.key_file is server200's key; the other node logs in with its own key only
    settings = settings_of(server200, kh, config_file=None)
    with SshHandler(node_of(server200, "a"), settings) as a:
        assert a.run("echo a").ok
    with SshHandler(node_of(other, "b", key_file=str(other.client_key)), settings) as b:
        assert b.run("echo b").stdout == "b\n"
        assert b.target.key_files == (str(other.client_key),)
        assert b.target.sources["key_files"] == "node" and b.target.agent is False
    with pytest.raises(AuthError, match="does not exist"):
        SshHandler(node_of(other, "c", key_file=str(tmp_path / "nope")), settings).open()


@pytest.fixture
def agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A real ssh-agent on a socket of our own (SSH_AUTH_SOCK points at it)."""
    import subprocess
    sock = tmp_path / "agent.sock"
    proc = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    for _ in range(200):
        if sock.exists():
            break
        time.sleep(0.02)
    monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
    yield sock
    proc.kill()
    proc.wait()


def _encrypted_key(tmp_path: Path, passphrase: str) -> Path:
    import subprocess
    key = tmp_path / "encrypted_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", "enc",
                    "-f", str(key)], check=True, stdin=subprocess.DEVNULL)
    return key


def _ssh_add(agent_sock: Path, key: Path, passphrase: str, tmp_path: Path) -> None:
    """ssh-add headless: SSH_ASKPASS_REQUIRE=force makes it ask our script, no TTY needed."""
    import subprocess
    askpass = tmp_path / "askpass.sh"
    askpass.write_text(f"#!/bin/sh\nprintf '%s\\n' {shlex.quote(passphrase)}\n")
    askpass.chmod(0o700)
    env = {"PATH": os.environ["PATH"], "SSH_AUTH_SOCK": str(agent_sock),
           "SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force", "DISPLAY": ":0"}
    subprocess.run(["ssh-add", str(key)], check=True, env=env, stdin=subprocess.DEVNULL,
                   capture_output=True, timeout=20)
    listed = subprocess.run(["ssh-add", "-l"], env=env, capture_output=True, text=True).stdout
    assert "enc (ED25519)" in listed


def test_encrypted_key_through_the_agent(server200: SshdServer, tmp_path: Path,
                                         agent: Path) -> None:
    key = _encrypted_key(tmp_path, "s3cret pass")
    _authorize(server200, key)
    kh = tmp_path / "known_hosts"
    kh.write_text(server200.known_hosts_line())
    # key_file alone (agent unset): no agent, and the key cannot be decrypted
    with pytest.raises(AuthError) as info:
        SshHandler(node_of(server200), settings_of(server200, kh, key_file=str(key),
                                                   config_file=None)).open()
    assert "is encrypted" in str(info.value) and "ssh.agent: true" in str(info.value)
    assert "s3cret" not in str(info.value)
    _ssh_add(agent, key, "s3cret pass", tmp_path)
    # agent: true offers the agent's copy of the key along with the file
    with SshHandler(node_of(server200), settings_of(server200, kh, key_file=str(key),
                                                    agent=True, config_file=None)) as h:
        assert h.run("echo through-agent").stdout == "through-agent\n"
    # agent alone (no key file, no default keys in this HOME): the agent is offered by default
    with SshHandler(node_of(server200), SshSettings(known_hosts=str(kh), config_file=None,
                                                    connect_timeout=5)) as h:
        assert h.target.agent and h.run("true").ok
    # agent: false and no key file: nothing to offer
    with pytest.raises(AuthError, match="no key to offer"):
        SshHandler(node_of(server200), SshSettings(known_hosts=str(kh), config_file=None,
                                                   agent=False, connect_timeout=5),
                   sleep=FakeSleep()).open()


# --------------------------------------------------------------------------- known_hosts lines

def test_malformed_known_hosts_lines_are_skipped_with_a_warning(server200: SshdServer,
                                                                tmp_path: Path) -> None:
    good = server200.known_hosts_line()
    name, key_type, blob = good.split()
    kh = tmp_path / "known_hosts"
    kh.write_bytes(
        f"{name} ssh-ed25519 AAAA!!notbase64\n"              # 1: bad base64 (hostile case 11)
        f"{name} ssh-ed25519 {blob[:20]}\n".encode()         # 2: truncated key
        + b"lonely-field\n"                                   # 3: too few fields
        + b"\xff\xfe bad bytes\n"                             # 4: not UTF-8
        + b"# a comment\n\n"
        + f"@cert-authority *.example.com {key_type} {blob}\n".encode()   # 7
        + good.encode())                                      # 8: the real entry
    warnings: list[str] = []
    with SshHandler(node_of(server200), settings_of(server200, kh, config_file=None),
                    pool=SshPool(), on_warning=warnings.append) as h:
        assert h.run("echo ok").stdout == "ok\n"
    assert [w.split(": skipped")[0] for w in warnings] == [f"{kh}:{n}" for n in (1, 2, 3, 4, 7)]
    assert "not valid base64" in warnings[0] and "not valid UTF-8" in warnings[3]
    assert "@cert-authority" in warnings[4]
    # a run hands the same callback to the pool and to each handler: each line is still told once
    told: list[str] = []
    with SshHandler(node_of(server200), settings_of(server200, kh, config_file=None),
                    pool=SshPool(on_warning=told.append), on_warning=told.append) as h:
        assert h.run("true").ok
    assert told == warnings


def test_hashed_and_pattern_entries_and_revoked(server200: SshdServer, tmp_path: Path) -> None:
    import base64
    import hashlib
    import hmac as hmac_
    name, key_type, blob = server200.known_hosts_line().split()
    salt = os.urandom(20)
    digest = hmac_.new(salt, name.encode(), hashlib.sha1).digest()
    hashed = f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"
    for entry in (hashed, f"[127.0.0.2*]:{server200.port}"):
        kh = tmp_path / f"kh-{len(entry)}"
        kh.write_text(f"{entry} {key_type} {blob}\n")
        with SshHandler(node_of(server200), settings_of(server200, kh, config_file=None),
                        pool=SshPool()) as h:
            assert h.run("true").ok
    revoked = tmp_path / "kh-revoked"
    revoked.write_text(f"{name} {key_type} {blob}\n@revoked * {key_type} {blob}\n")
    with pytest.raises(HostKeyError, match="@revoked"):
        SshHandler(node_of(server200), settings_of(server200, revoked, config_file=None),
                   pool=SshPool()).open()
    assert server200.accepted_logins() == 2


# --------------------------------------------------------------------------- unsendable values

def test_lone_surrogate_or_nul_is_a_transport_error_not_a_crash(handler: SshHandler,
                                                                 server: SshdServer) -> None:
    from zdu.transport.base import InvalidCommandError
    bad = "p\udce4ss"                    # what os.environ gives for a Latin-1 b"p\xe4ss"
    with pytest.raises(InvalidCommandError) as info:
        handler.run(f"echo {bad}")
    msg = str(info.value)
    assert msg.startswith("node-a: the command cannot be sent: character 6")
    assert "U+DCE4" in msg and "nothing ran" in msg and bad not in msg
    with pytest.raises(InvalidCommandError, match="environment variable ADMIN_PW") as info:
        handler.run('echo "$ADMIN_PW"', env={"ADMIN_PW": bad})
    assert bad not in str(info.value)
    with pytest.raises(InvalidCommandError, match="NUL"):
        handler.run("echo a\x00b")
    with pytest.raises(InvalidCommandError, match="invalid environment variable name"):
        handler.run("true", env={"A B": "x"})
    assert server.accepted_logins() == 0 and handler.run("echo fine").stdout == "fine\n"


# --------------------------------------------------------------------------- no packet waits for a timer

def test_the_connection_sends_each_packet_at_once(handler: SshHandler) -> None:
    """Nagle's algorithm is off on the socket under the connection (paramiko sets no option), and
    its reads re-arm the kernel's quick acknowledgements: without both, a connect and each channel
    it opens waited 40 ms for a delayed ACK (benchmarks/README.md)."""
    handler.run("true")
    assert handler.connection is not None
    sock = handler.connection.transport.sock
    assert isinstance(sock, _PromptSocket)
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


@pytest.mark.skipif(not hasattr(socket, "TCP_QUICKACK"), reason="TCP_QUICKACK is Linux's")
def test_each_read_rearms_quick_acknowledgements() -> None:
    calls: list[tuple[int, int, int]] = []

    class Spy(_PromptSocket):
        __slots__ = ()

        def setsockopt(self, *args: Any) -> None:  # type: ignore[override]
            calls.append(args)
            super().setsockopt(*args)

    with socket.create_server(("127.0.0.1", 0)) as listener:
        with Spy(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.connect(listener.getsockname())
            peer, _ = listener.accept()
            with peer:
                peer.sendall(b"one")
                assert sock.recv(16) == b"one"
                assert calls == [(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)]
                peer.close()
                assert sock.recv(16) == b""          # the end: nothing to acknowledge
                assert len(calls) == 1


def _exec(handler: SshHandler, command: str) -> tuple[Any, _Wakeup]:
    handler.open()
    assert handler.connection is not None
    chan = handler.connection.transport.open_session()
    wakeup = _Wakeup(chan)
    chan.exec_command(command)
    return chan, wakeup


def test_a_shell_session_reader_wakes_for_stderr_alone(server: SshdServer, known_hosts: Path) -> None:
    """paramiko's select-able pipe wakes for stdout only: a reader waiting for the driver's last
    stderr record slept to its 1 s poll cap.  The wake-up fires for stderr data by itself."""
    h = SshHandler(node_of(server), settings_of(server, known_hosts), sleep=FakeSleep())
    try:
        chan, wakeup = _exec(h, "sleep 0.3; printf e >&2; sleep 30")
        wakeup.arm()
        assert wakeup.wait(20), "no wake-up for data on stderr"
        assert chan.recv_stderr_ready() and not chan.recv_ready()
        assert chan.recv_stderr(16) == b"e"
        chan.close()
    finally:
        h.close()


def test_reading_one_stream_empty_keeps_the_wakeup_for_the_other(server: SshdServer, known_hosts: Path) -> None:
    h = SshHandler(node_of(server), settings_of(server, known_hosts), sleep=FakeSleep())
    try:
        chan, wakeup = _exec(h, "printf o; printf e >&2; sleep 30")
        deadline = time.monotonic() + 20
        while not (chan.recv_ready() and chan.recv_stderr_ready()) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert chan.recv(16) == b"o"                  # paramiko clears its event: stdout is empty
        assert wakeup.wait(0), "emptying stdout hid the data waiting on stderr"
        assert chan.recv_stderr(16) == b"e"
        chan.close()
    finally:
        h.close()
