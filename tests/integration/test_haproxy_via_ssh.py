"""The haproxy hook driving a load balancer on another host over SSH (``via: user@host:port``).

The "load-balancer host" is a real sshd on 127.0.0.5; zdupgrade logs in there with the
topology's key and runs socat against the lab HAProxy's admin socket.
"""
from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

from tests.support.sshd import SshdServer, sshd_server  # noqa: F401
from zdu.cli.main import main
from zdu.lab.fleet import Lab
from zdu.status import Status


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
