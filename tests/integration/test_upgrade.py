"""Whole runs of ``zdupgrade`` on the lab: 3 real OpenSSH nodes, real gateway processes, HAProxy.

Each case calls the CLI in-process, then looks at the nodes themselves (which gateway
processes run, which version answers), at HAProxy, and at the run's logs.
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any


from zdu.cli.main import main
from zdu.lab.fleet import Lab
from zdu.status import Status

OLD, NEW = "/opt/gateway-1.0", "/opt/gateway-2.0"
NODES = ["Node-A", "Node-B", "Node-C"]


def upgrade(lab: Lab, tmp_path: Path, *, lb: str = "script", extra: dict[str, Any] | None = None,
            args: tuple[str, ...] = ()) -> tuple[Status, str, str, dict[str, Any], Path]:
    config = lab.write_topology(tmp_path / "topology.yaml", lb=lb, extra=extra)  # type: ignore[arg-type]
    out, err = io.StringIO(), io.StringIO()
    log_dir = tmp_path / "logs"
    status = main(["--old_install_dir", OLD, "--new_install_dir", NEW, "--config", str(config),
                   "--log_dir", str(log_dir), *args], out=out, err=err)
    runs = sorted(log_dir.glob("*/run.json"))
    record = json.loads(runs[-1].read_text()) if runs else {}
    return status, out.getvalue(), err.getvalue(), record, (runs[-1].parent if runs else log_dir)


def table_rows(out: str) -> dict[str, list[str]]:
    """The summary table's node rows, cell by cell."""
    rows = {}
    for line in out.splitlines():
        if line.startswith("| Node-"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows[cells[0]] = cells
    return rows


def versions(lab: Lab) -> dict[str, list[str]]:
    return {name: lab.running_versions(name) for name in NODES}


def assert_one_version_each(lab: Lab, expected: dict[str, str]) -> None:
    running = versions(lab)
    for name, version in expected.items():
        assert running[name] == [version], running
        assert lab.served_version(name) == version


def assert_balanced_and_in(lab: Lab, record: dict[str, Any]) -> None:
    for name in NODES:
        calls = record["nodes"][name]["lb_calls"]
        assert calls["disable"] == calls["enable"], (name, calls)
        assert record["nodes"][name]["in_lb"] is True
    lab.wait_servers_up()
    states = lab.server_states()
    assert all(s["srv_admin_state"] == "0" for s in states.values()), states


def test_full_upgrade_every_node_runs_new_version(fresh_lab: Lab, tmp_path: Path) -> None:
    status, out, err, record, run_dir = upgrade(fresh_lab, tmp_path)
    assert status is Status.SUCCESS, out + err
    assert_one_version_each(fresh_lab, {n: "2.0" for n in NODES})
    assert_balanced_and_in(fresh_lab, record)
    assert all(record["nodes"][n]["lb_calls"] == {"disable": 1, "enable": 1} for n in NODES)
    assert [(a["node"], a["action"], a["ok"]) for a in record["lb_actions"]] == \
        [(n, action, True) for n in NODES for action in ("disable", "enable")]
    # the summary, like Axway's
    assert "Summary table (Status.SUCCESS):" in out
    rows = table_rows(out)
    for name in NODES:
        assert rows[name] == [name] + ["PASSED (0)"] * 5 + ["*"]
    # the logs
    assert (run_dir / "run.log").read_text().count("Summary table (Status.SUCCESS)") == 1
    node_log = (run_dir / "Node-B.log").read_text()
    assert node_log.count("ZDU_EXEC_CMD") >= 2 * 6
    assert "########## APPLY ##########" in node_log and "exit code: 0" in node_log
    assert f"{NEW}/bin/gateway start --host {fresh_lab.node('Node-B').host}" in node_log
    assert record["status"] == {"name": "SUCCESS", "code": 0}
    assert oct((run_dir / "run.json").stat().st_mode & 0o777) == "0o600"
    assert oct(run_dir.stat().st_mode & 0o777) == "0o700"


def test_preflight_sudo_and_free_space_refused_before_any_change(fresh_lab: Lab, tmp_path: Path) -> None:
    profile = tmp_path / "sudo.yaml"
    profile.write_text("name: needs-sudo\nphases:\n  EXPORT: ['sudo -n true']\nrollback: ['true']\n")
    status, out, err, record, _ = upgrade(fresh_lab, tmp_path, args=("--profile", str(profile),
                                                                     "--min-free-mb", "100000000"))
    assert status is Status.CONFIG_ERROR, out + err
    for name in NODES:   # every problem of every node, at once
        assert f"{name}: the profile runs commands with sudo" in err
        assert f"{name}: only " in err and "MB free under /var/tmp, need 100000000 MB" in err
    assert record["steps"] == [] and all(record["nodes"][n]["lb_calls"]["disable"] == 0 for n in NODES)
    assert_one_version_each(fresh_lab, {n: "1.0" for n in NODES})
