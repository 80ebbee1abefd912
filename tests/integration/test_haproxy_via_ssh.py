"""The haproxy hook driving a load balancer on another host over SSH (``via: user@host:port``).

With the Docker lab: the "load-balancer host" is a real sshd on 127.0.0.5; zdupgrade logs
in there with the topology's key and runs socat against the lab HAProxy's admin socket.

Without it: a real sshd on 127.0.0.235 whose account's login shell is **dash** (sshd runs
in a private mount namespace that sees a copy of /etc/passwd saying so), a real HAProxy
with backends on 127.0.0.233/234, real socat, and zdupgrade called in-process on two
``transport: local`` nodes.  dash matters: its ``echo`` expands backslash escapes, so the
line sent to the LB host must not rely on it, and a socat address is parsed by socat, so
a socket path must be refused before anything runs there.
"""
from __future__ import annotations

import getpass
import io
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import yaml

import tests.support.sshd as sshd_support
from tests.support.haproxy import HaproxyLab, RecordingSocket, haproxy_lab
from tests.support.sshd import SshdServer, sshd_server  # noqa: F401
from zdu.cli.main import main
from zdu.lab.fleet import Lab
from zdu.lb.haproxy_api import RemoteSocketApi
from zdu.model import Node, SshSettings
from zdu.status import Status
from zdu.transport import make_handler


def test_upgrade_with_haproxy_reached_over_ssh(fresh_lab: Lab, tmp_path: Path, sshd_server) -> None:  # noqa: F811
    lb_host: SshdServer = sshd_server("127.0.0.5", start=False)
    shutil.copyfile(f"{fresh_lab.key_file}.pub", lb_host.workdir / "authorized_keys")
    lb_host.start()
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(fresh_lab.known_hosts.read_text() + lb_host.known_hosts_line())
    config = fresh_lab.write_topology(tmp_path / "topology.yaml", lb="haproxy", extra={
        "ssh": {"known_hosts": str(known_hosts)},
        "load_balancer": {"via": f"{lb_host.user}@{lb_host.host}:{lb_host.port}", "up_timeout": 10}})
    out, err = io.StringIO(), io.StringIO()
    status = main(["--old_install_dir", "/opt/gateway-1.0", "--new_install_dir", "/opt/gateway-2.0",
                   "--config", str(config), "--log_dir", str(tmp_path / "logs")], out=out, err=err)
    assert status is Status.SUCCESS, out.getvalue() + err.getvalue()
    record = json.loads(next((tmp_path / "logs").glob("*/run.json")).read_text())
    assert all(record["nodes"][n]["lb_calls"] == {"disable": 1, "enable": 1} for n in record["node_names"])
    assert lb_host.accepted_logins() >= 1          # the actions really went through that host
    assert all(fresh_lab.running_versions(n.name) == ["2.0"] for n in fresh_lab.nodes)
    fresh_lab.wait_servers_up()


def test_unreachable_lb_host_is_a_preflight_error(fresh_lab: Lab, tmp_path: Path) -> None:
    config = fresh_lab.write_topology(tmp_path / "topology.yaml", lb="haproxy", extra={
        "load_balancer": {"via": "root@127.0.0.6:1"}, "ssh": {"connect_retries": 0, "connect_timeout": 2}})
    out, err = io.StringIO(), io.StringIO()
    status = main(["--old_install_dir", "/opt/gateway-1.0", "--new_install_dir", "/opt/gateway-2.0",
                   "--config", str(config), "--log_dir", str(tmp_path / "logs")], out=out, err=err)
    assert status is Status.CONFIG_ERROR, out.getvalue() + err.getvalue()
    assert "load balancer:" in err.getvalue() and "127.0.0.6" in err.getvalue()
    assert "Traceback" not in err.getvalue() + out.getvalue()
    assert all(fresh_lab.running_versions(n.name) == ["1.0"] for n in fresh_lab.nodes)


# ---------------------------------------------------------------------------- dash LB host

LB_HOST = "127.0.0.235"
SERVERS = {"node-a": "127.0.0.233", "node-b": "127.0.0.234"}


@pytest.fixture
def dash_lb_host(sshd_server: Callable[..., SshdServer], tmp_path: Path,  # noqa: F811
                 monkeypatch: pytest.MonkeyPatch) -> SshdServer:
    """A real sshd whose account logs in to dash; /etc/passwd itself is left alone."""
    if shutil.which("unshare") is None or shutil.which("dash") is None:
        pytest.fail("needs unshare (util-linux) and dash")
    user = getpass.getuser()
    lines = []
    for line in Path("/etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == user:
            fields[6] = shutil.which("dash") or "/bin/dash"
        lines.append(":".join(fields))
    passwd = tmp_path / "passwd"
    passwd.write_text("\n".join(lines) + "\n")
    wrapper = tmp_path / "sshd-with-dash-login"
    wrapper.write_text("#!/bin/sh\n"
                       "exec unshare --mount --propagation private /bin/sh -c "
                       f"'mount --bind \"$0\" /etc/passwd && exec {sshd_support.SSHD} \"$@\"' "
                       f"{passwd} \"$@\"\n")
    wrapper.chmod(0o755)
    monkeypatch.setattr(sshd_support, "SSHD", str(wrapper))
    return sshd_server(LB_HOST)


@pytest.fixture
def hap(tmp_path: Path) -> Iterator[HaproxyLab]:
    with haproxy_lab(tmp_path / "haproxy", SERVERS) as lab:
        yield lab


def lb_settings(host: SshdServer, tmp_path: Path) -> SshSettings:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(host.known_hosts_line())
    return SshSettings(user=host.user, key_file=str(host.client_key), known_hosts=str(known_hosts),
                       connect_retries=0, connect_timeout=5)


def run_upgrade(tmp_path: Path, host: SshdServer, hap: HaproxyLab,
                **lb: Any) -> tuple[Status, str]:
    """zdupgrade in-process on two local nodes, the balancer reached via the dash host.
    APPLY saves HAProxy's view of the node (it must be out of rotation then)."""
    seen = tmp_path / "seen"
    seen.mkdir(exist_ok=True)
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir(exist_ok=True), new.mkdir(exist_ok=True)
    profile = tmp_path / "profile.yaml"
    profile.write_text(yaml.safe_dump({"name": "via-dash", "phases": {
        "EXPORT": ["true"], "UPGRADE": ["true"], "PRE-APPLY": ["true"],
        "APPLY": ["printf 'show stat gateways 4 -1\\n' | socat - UNIX-CONNECT:{{ sock }} "
                  "> {{ seen }}/{{ node.name }}.csv"],
        "POST-APPLY": ["true"]}, "rollback": ["true"]}))
    settings = lb_settings(host, tmp_path)
    topology = tmp_path / "topology.yaml"
    topology.write_text(yaml.safe_dump({
        "profile": str(profile),
        "vars": {"sock": hap.instances[0].unix_socket, "seen": str(seen)},
        "ssh": {"user": settings.user, "key_file": settings.key_file, "known_hosts": settings.known_hosts,
                "connect_retries": 0, "connect_timeout": 5},
        "load_balancer": {"type": "haproxy", "backend": "gateways", "socket": hap.instances[0].unix_socket,
                          "via": f"{host.user}@{host.host}:{host.port}", "poll_interval": 0.05,
                          "drain_timeout": 5, "up_timeout": 10, **lb},
        "nodes": [{"name": name, "host": "localhost", "transport": "local", "lb_server": name}
                  for name in SERVERS]}))
    out, err = io.StringIO(), io.StringIO()
    status = main(["--old_install_dir", str(old), "--new_install_dir", str(new), "--config", str(topology),
                   "--log_dir", str(tmp_path / "logs")], out=out, err=err)
    return status, out.getvalue() + err.getvalue()


def test_the_lb_hosts_login_shell_really_is_dash(dash_lb_host: SshdServer, tmp_path: Path) -> None:
    handler = make_handler(Node("lb", LB_HOST, port=dash_lb_host.port), lb_settings(dash_lb_host, tmp_path))
    with handler:
        result = handler.run("readlink /proc/$$/exe; echo 'a\\0040b'")
    assert result.stdout.splitlines() == [shutil.which("dash") and Path(shutil.which("dash") or "").resolve()
                                          .as_posix(), "a b"], result   # dash's echo: \0040 is a space
    assert subprocess.run(["getent", "passwd", getpass.getuser()], capture_output=True,
                          text=True).stdout.rstrip().split(":")[6] != "/usr/bin/dash"   # host untouched


def test_a_normal_via_run_drains_and_enables_through_dash(dash_lb_host: SshdServer, hap: HaproxyLab,
                                                          tmp_path: Path) -> None:
    status, output = run_upgrade(tmp_path, dash_lb_host, hap)

    assert status is Status.SUCCESS, output
    record = json.loads(next((tmp_path / "logs").glob("*/run.json")).read_text())
    assert all(record["nodes"][n]["lb_calls"] == {"disable": 1, "enable": 1} for n in SERVERS)
    for name in SERVERS:                       # out of rotation during its APPLY, the other one in
        rows = {r.split(",")[1]: r.split(",")[17] for r in (tmp_path / "seen" / f"{name}.csv")
                .read_text().splitlines() if r.startswith("gateways,")}
        other = next(n for n in SERVERS if n != name)
        assert rows[name] == "MAINT" and rows[other] == "UP", rows
    assert [hap.status(n) for n in SERVERS] == ["UP", "UP"]
    assert dash_lb_host.accepted_logins() >= 1


@pytest.mark.parametrize("lb, needle", [
    ({"socket": "{sock}!!SYSTEM:touch {pwned}"}, "load_balancer.socket: "),
    ({"socket": "{sock},fork"}, "load_balancer.socket: "),
    ({"socket": "tcp:127.0.0.1,fork:1!!SYSTEM:touch {pwned}"}, "load_balancer.socket: "),
    ({"backend": r"gateways;set\0040server\0040gateways/node-b\0040state\0040maint"},
     "load_balancer.backend: "),
])
def test_a_hostile_socket_or_backend_runs_nothing_on_the_lb_host(dash_lb_host: SshdServer, hap: HaproxyLab,
                                                                 tmp_path: Path, lb: dict[str, str],
                                                                 needle: str) -> None:
    pwned = tmp_path / "PWNED"
    values = {k: v.format(sock=hap.instances[0].unix_socket, pwned=pwned) for k, v in lb.items()}
    status, output = run_upgrade(tmp_path, dash_lb_host, hap, **values)

    assert status is Status.CONFIG_ERROR, output
    assert needle in output and "Traceback" not in output
    assert not pwned.exists()
    assert dash_lb_host.accepted_logins() == 0          # nothing ran on the LB host at all
    assert [hap.status(n) for n in SERVERS] == ["UP", "UP"]


def test_the_runtime_api_command_arrives_byte_for_byte_through_dash(dash_lb_host: SshdServer,
                                                                    tmp_path: Path) -> None:
    """What the hook sends is exactly what the socket receives, even for text dash's echo would
    rewrite (the names the hook builds commands from are refused long before this)."""
    recorder = RecordingSocket(tmp_path / "api.sock")
    settings = lb_settings(dash_lb_host, tmp_path)
    api = RemoteSocketApi(str(tmp_path / "api.sock"), "lb",
                          lambda name: make_handler(Node(name, LB_HOST, port=dash_lb_host.port), settings))
    command = r"show stat gw\0040x\n\c 'q' \"d\" $(touch {p}) `touch {p}` * %s %% \\".replace(
        "{p}", str(tmp_path / "PWNED"))
    try:
        assert api.execute(command) == "\n"
        assert api.execute("show info") == "\n"             # one handler, reused
    finally:
        api.close()
        recorder.close()
    assert recorder.received == [command.encode() + b"\n", b"show info\n"]
    assert not (tmp_path / "PWNED").exists()
