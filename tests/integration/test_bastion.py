"""Reaching nodes through real bastions (OpenSSH servers in network namespaces).

The topology (tests/support/netns.py)::

    test process --veth-- ns0: bastion sshd --veth-- ns1: bastion2 / node sshds --veth-- ns2: node sshd

Nothing routes between the namespaces: a node in ns1 can be reached only through the
bastion in ns0 (a direct connection fails with "no route to host", which the first test
proves), and a node in ns2 only through both bastions.  The nodes' sshd logs show that
every login came from the bastion's address.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from tests.support.netns import NetnsLine, NetnsSshd, netns_available
from tests.support.sshd import keygen, sshd_available
from zdu.config.ssh_config import check, resolve
from zdu.errors import ConfigError, HostKeyError, UnreachableError
from zdu.model import Node, SshSettings
from zdu.transport import group_bastion_errors
from zdu.transport.base import BastionError
from zdu.transport.ssh import SshHandler, SshPool

pytestmark = pytest.mark.skipif(not (sshd_available() and netns_available()),
                                reason="needs root, OpenSSH server and network namespaces")


class FakeSleep:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture(scope="module")
def line() -> Iterator[NetnsLine]:
    ns = NetnsLine(3)
    yield ns
    ns.close()


@pytest.fixture
def servers(line: NetnsLine, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Callable[..., NetnsSshd]]:
    started: list[NetnsSshd] = []

    def factory(index: int, port: int = 2200, **kw: Any) -> NetnsSshd:
        server = NetnsSshd(tmp_path_factory.mktemp("nsd"), host=line.address(index), port=port,
                           netns=line.names[index], **kw)
        started.append(server)
        return server.start()
    yield factory
    for server in started:
        server.stop()


@pytest.fixture
def client_key(tmp_path: Path) -> Path:
    return keygen(tmp_path / "operator_ed25519", "operator")


def trust(path: Path, *servers: NetnsSshd) -> Path:
    path.write_text("".join(s.known_hosts_line() for s in servers))
    return path


def node(server: NetnsSshd, name: str, **kw: Any) -> Node:
    return Node(name=name, host=server.host, port=server.port, **kw)


def settings(known_hosts: Path, key: Path, **kw: Any) -> SshSettings:
    kw.setdefault("connect_timeout", 5.0)
    kw.setdefault("config_file", None)
    return SshSettings(known_hosts=str(known_hosts), key_file=str(key), **kw)


def jump(server: NetnsSshd) -> str:
    return f"root@{server.host}:{server.port}"


def behind(servers: Callable[..., NetnsSshd], client_key: Path, port: int, *,
           authorize: tuple[str, ...] = ("bastion", "node"), **bastion_kw: Any
           ) -> tuple[NetnsSshd, NetnsSshd]:
    """A bastion in ns0 and a node in ns1 (port ``port``), trusting ``client_key`` as told."""
    bastion, gw = servers(0, **bastion_kw), servers(1, port)
    for role, server in (("bastion", bastion), ("node", gw)):
        if role in authorize:
            server.authorize(Path(f"{client_key}.pub"))
    return bastion, gw


# --------------------------------------------------------------------------- the only way in

def test_bastion_is_the_only_way_in_and_is_shared(servers: Callable[..., NetnsSshd],
                                                  client_key: Path, tmp_path: Path,
                                                  line: NetnsLine) -> None:
    bastion = servers(0)
    gw_a, gw_b = servers(1, 2201), servers(1, 2202)
    for s in (bastion, gw_a, gw_b):
        s.authorize(Path(f"{client_key}.pub"))
    kh = trust(tmp_path / "known_hosts", bastion, gw_a, gw_b)

    # direct: no way
    direct = SshHandler(node(gw_a, "gw-a"), settings(kh, client_key, connect_retries=0))
    with pytest.raises(UnreachableError, match="no route to host"):
        direct.open()

    pool = SshPool()
    ssh = settings(kh, client_key, proxy_jump=(jump(bastion),))
    a = SshHandler(node(gw_a, "gw-a"), ssh, pool=pool)
    b = SshHandler(node(gw_b, "gw-b"), ssh, pool=pool)
    try:
        assert a.run("echo a").stdout == "a\n"
        assert b.run("echo b").stdout == "b\n"
        assert a.address == f"{gw_a.host}:{gw_a.port} via root@{bastion.host}:{bastion.port}"
        # one connection to the bastion for both nodes; the nodes saw the bastion's address
        assert bastion.accepted_logins() == 1
        assert gw_a.login_sources() == [f"{line.prefix}.5"]     # ns0's side of the ns0-ns1 link
        assert gw_b.login_sources() == gw_a.login_sources()
        assert pool.links() == [(f"root@{bastion.host}:{bastion.port}", 1)]

        # one node dies: the other keeps working over the same bastion connection
        gw_a.crash()
        box: dict[str, Any] = {}
        worker = threading.Thread(target=lambda: box.update(r=b.run("echo still")))
        worker.start()
        worker.join(20)
        assert box["r"].stdout == "still\n"
        with pytest.raises(UnreachableError) as info:
            a.run("true")
        assert "could not connect" in str(info.value) and not isinstance(info.value, BastionError)
        assert bastion.accepted_logins() == 1
    finally:
        a.close()
        b.close()
    assert pool.links() == [(f"root@{bastion.host}:{bastion.port}", 1)]
    assert all(link.client is None for link in pool._links.values())   # closed with the last user


def test_two_hops(servers: Callable[..., NetnsSshd], client_key: Path, tmp_path: Path,
                  line: NetnsLine) -> None:
    first, second, target = servers(0), servers(1), servers(2)
    for s in (first, second, target):
        s.authorize(Path(f"{client_key}.pub"))
    kh = trust(tmp_path / "known_hosts", first, second, target)
    ssh = settings(kh, client_key)
    n = node(target, "deep", proxy_jump=(jump(first), jump(second)))
    with SshHandler(n, ssh, pool=SshPool()) as h:
        assert h.run("echo deep").stdout == "deep\n"
    assert target.login_sources() == [f"{line.prefix}.9"]      # ns1's side of the ns1-ns2 link
    assert second.login_sources() == [f"{line.prefix}.5"]
    assert first.accepted_logins() == 1


def test_ssh_config_in_home_drives_the_reach(servers: Callable[..., NetnsSshd],
                                             client_key: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    bastion, gw = servers(0), servers(1, 2210)
    bastion_key = keygen(tmp_path / "bastion_key", "bastion-only")
    bastion.authorize(Path(f"{bastion_key}.pub"))
    gw.authorize(Path(f"{client_key}.pub"))
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_text(f"""
Host gw1
    HostName {gw.host}
    Port {gw.port}
    User root
    IdentityFile {client_key}
    ProxyJump jumpbox
Host jumpbox
    HostName {bastion.host}
    Port {bastion.port}
    User root
    IdentityFile {bastion_key}
Host *
    ConnectTimeout 4
""")
    trust(home / ".ssh" / "known_hosts", bastion, gw)
    monkeypatch.setenv("HOME", str(home))
    ssh = SshSettings(defaulted=frozenset({"user", "connect_timeout"}))   # nothing given
    n = Node(name="gw1", host="gw1", defaulted=frozenset({"port", "user"}))
    target = resolve(n, ssh)
    assert (target.address, target.port, target.key_files, target.connect_timeout) == (
        gw.host, gw.port, (str(client_key),), 4.0)
    assert [(j.name, j.address, j.key_files) for j in target.jumps] == [
        ("jumpbox", bastion.host, (str(bastion_key),))]
    check(target)                    # the first hop is an IP address: nothing to look up
    with SshHandler(n, ssh, pool=SshPool()) as h:
        assert h.run("hostname >/dev/null; echo via-config").stdout == "via-config\n"
    assert bastion.accepted_logins() == 1 and gw.accepted_logins() == 1


# --------------------------------------------------------------------------- failures

def test_dead_bastion_is_one_clear_error_for_every_node(servers: Callable[..., NetnsSshd],
                                                        client_key: Path, tmp_path: Path) -> None:
    bastion = servers(0)
    gw_a, gw_b = servers(1, 2221), servers(1, 2222)
    kh = trust(tmp_path / "known_hosts", bastion, gw_a, gw_b)
    bastion.stop()
    sleep = FakeSleep()
    pool = SshPool()
    ssh = settings(kh, client_key, proxy_jump=(jump(bastion),), connect_retries=2)
    errors: list[tuple[str, BaseException]] = []
    for server, name in ((gw_a, "gw-a"), (gw_b, "gw-b")):
        h = SshHandler(node(server, name), ssh, pool=pool, sleep=sleep)
        with pytest.raises(BastionError) as info:
            h.open()
        errors.append((name, info.value))
    first = errors[0][1]
    assert isinstance(first, BastionError)
    assert first.reason == "unreachable" and first.bastion == f"root@{bastion.host}:{bastion.port}"
    assert str(first) == (f"gw-a: cannot reach the node through bastion root@{bastion.host}:"
                          f"{bastion.port}: cannot connect to {bastion.host}:{bastion.port}: "
                          "connection refused (tried 3 times)")
    assert sleep.calls == [0.5, 1.0]          # the second node did not try again
    lines, rest = group_bastion_errors(errors)
    assert rest == [] and lines == [
        f"bastion root@{bastion.host}:{bastion.port}: cannot connect to {bastion.host}:"
        f"{bastion.port}: connection refused (tried 3 times); nodes behind it: gw-a, gw-b"]


def test_refused_bastion_host_key(servers: Callable[..., NetnsSshd], client_key: Path,
                                  tmp_path: Path) -> None:
    bastion, gw = behind(servers, client_key, 2230)
    kh = trust(tmp_path / "known_hosts", gw)            # the bastion's key is not known
    h = SshHandler(node(gw, "gw"), settings(kh, client_key, proxy_jump=(jump(bastion),)),
                   pool=SshPool())
    with pytest.raises(BastionError) as info:
        h.open()
    err = info.value
    assert err.reason == "host-key" and isinstance(err, UnreachableError)
    assert bastion.host_fingerprint in str(err) and "not known" in str(err)
    assert "ssh.jump_host_keys" in str(err)
    assert bastion.accepted_logins() == 0 and gw.accepted_logins() == 0


def test_jump_host_pin(servers: Callable[..., NetnsSshd], client_key: Path,
                       tmp_path: Path) -> None:
    bastion, gw = behind(servers, client_key, 2240)
    kh = trust(tmp_path / "known_hosts", gw)
    pinned = settings(kh, client_key, proxy_jump=(jump(bastion),),
                      jump_host_keys={bastion.host: bastion.host_fingerprint})
    with SshHandler(node(gw, "gw"), pinned, pool=SshPool()) as h:
        assert h.run("echo pinned").ok
    wrong = settings(kh, client_key, proxy_jump=(jump(bastion),),
                     jump_host_keys={bastion.host: "SHA256:" + "B" * 43})
    with pytest.raises(BastionError) as info:
        SshHandler(node(gw, "gw"), wrong, pool=SshPool()).open()
    assert info.value.reason == "host-key" and "pinned" in str(info.value)
    assert "B" * 43 in str(info.value) and bastion.host_fingerprint in str(info.value)


def test_node_host_key_behind_a_bastion_is_checked(servers: Callable[..., NetnsSshd],
                                                   client_key: Path, tmp_path: Path) -> None:
    bastion, gw = behind(servers, client_key, 2250)
    kh = trust(tmp_path / "known_hosts", bastion)        # the node's key is not known
    h = SshHandler(node(gw, "gw"), settings(kh, client_key, proxy_jump=(jump(bastion),)),
                   pool=SshPool())
    with pytest.raises(HostKeyError) as info:
        h.open()
    assert not isinstance(info.value, BastionError)
    assert gw.host_fingerprint in str(info.value) and gw.accepted_logins() == 0


def test_bastion_refuses_our_key(servers: Callable[..., NetnsSshd], client_key: Path,
                                 tmp_path: Path) -> None:
    bastion, gw = behind(servers, client_key, 2260, authorize=("node",))   # bastion: not ours
    kh = trust(tmp_path / "known_hosts", bastion, gw)
    with pytest.raises(BastionError) as info:
        SshHandler(node(gw, "gw"), settings(kh, client_key, proxy_jump=(jump(bastion),)),
                   pool=SshPool(), sleep=FakeSleep()).open()
    assert info.value.reason == "auth" and "was refused" in str(info.value)


def test_bastion_that_does_not_forward(servers: Callable[..., NetnsSshd], client_key: Path,
                                       tmp_path: Path) -> None:
    bastion, gw = behind(servers, client_key, 2270, extra_config="AllowTcpForwarding no\n")
    kh = trust(tmp_path / "known_hosts", bastion, gw)
    with pytest.raises(BastionError) as info:
        SshHandler(node(gw, "gw"), settings(kh, client_key, proxy_jump=(jump(bastion),)),
                   pool=SshPool()).open()
    assert info.value.reason == "forwarding" and "AllowTcpForwarding" in str(info.value)


def test_unknown_alias_is_a_config_error_before_any_connection(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    import socket
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_text("Host gw1\n    HostName 10.0.0.1\n")
    monkeypatch.setenv("HOME", str(home))
    asked: list[str] = []

    def resolver(host: str, *a: Any, **kw: Any) -> Any:
        asked.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    target = resolve(Node(name="gw-x", host="gw-typo"), SshSettings())
    with pytest.raises(ConfigError) as info:
        check(target, resolver=resolver)
    msg = str(info.value)
    assert msg.startswith("node gw-x: cannot resolve host 'gw-typo'")
    assert str(home / ".ssh" / "config") in msg and "Name or service not known" in msg
    assert asked == ["gw-typo"]


def test_bastion_dies_mid_command_then_comes_back(servers: Callable[..., NetnsSshd],
                                                  client_key: Path, tmp_path: Path) -> None:
    bastion, gw = behind(servers, client_key, 2280)
    kh = trust(tmp_path / "known_hosts", bastion, gw)
    pool = SshPool(failure_ttl=0)             # a later attempt may try the bastion again
    h = SshHandler(node(gw, "gw"), settings(kh, client_key, proxy_jump=(jump(bastion),)),
                   pool=pool, sleep=FakeSleep())
    try:
        # a timeout through the bastion still kills the remote command
        timed = h.run("echo before; sleep 41.3", timeout=1)
        assert (timed.error, timed.stdout) == ("timeout", "before\n")
        assert h.run("pgrep -f 'sleep 4[1].3'").exit_code == 1
        box: dict[str, Any] = {}
        worker = threading.Thread(target=lambda: box.update(r=h.run("echo started; sleep 29.7")))
        worker.start()
        deadline = time.monotonic() + 10
        while "sleep 29.7" not in gw_processes(gw) and time.monotonic() < deadline:
            time.sleep(0.05)
        bastion.crash()
        worker.join(20)
        assert (box["r"].exit_code, box["r"].error) == (None, "unreachable")
        with pytest.raises(BastionError, match="connection refused"):
            h.run("true")
        bastion.start()
        assert h.run("echo back").stdout == "back\n"
        assert pool.links()[0][1] == 2 and h.connects == 2
    finally:
        h.close()


def gw_processes(server: NetnsSshd) -> str:
    from tests.support.sshd import descendants
    assert server.process is not None
    out = []
    for pid in descendants(server.process.pid):
        try:
            out.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            pass
    return "\n".join(out)


def test_nodes_opening_at_once_share_one_bastion_login(servers: Callable[..., NetnsSshd],
                                                       client_key: Path, tmp_path: Path) -> None:
    bastion = servers(0)
    gws = [servers(1, 2290 + i) for i in range(4)]
    for s in (bastion, *gws):
        s.authorize(Path(f"{client_key}.pub"))
    kh = trust(tmp_path / "known_hosts", bastion, *gws)
    pool = SshPool()
    ssh = settings(kh, client_key, proxy_jump=(jump(bastion),))
    handlers = [SshHandler(node(g, f"gw{i}"), ssh, pool=pool) for i, g in enumerate(gws)]
    results: dict[str, str] = {}
    threads = [threading.Thread(target=lambda h=h: results.update({h.node.name: h.run("echo x").stdout}))
               for h in handlers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for h in handlers:
        h.close()
    assert results == {f"gw{i}": "x\n" for i in range(4)}
    assert bastion.accepted_logins() == 1


def test_accept_new_records_the_bastion_key(servers: Callable[..., NetnsSshd], client_key: Path,
                                            tmp_path: Path) -> None:
    bastion, gw = behind(servers, client_key, 2300)
    kh = trust(tmp_path / "known_hosts", gw)
    accepted: list[tuple[str, str, str]] = []
    ssh = settings(kh, client_key, proxy_jump=(jump(bastion),), host_key_policy="accept-new")
    with SshHandler(node(gw, "gw"), ssh, pool=SshPool(),
                    on_host_key_accepted=lambda *a: accepted.append(a)) as h:
        assert h.run("true").ok
    assert accepted == [(bastion.host, "ssh-ed25519", bastion.host_fingerprint)]
    assert bastion.known_hosts_line() in kh.read_text()
