"""Host-key policy through the CLI, against the lab's real OpenSSH nodes.

strict (the default) refuses unknown and changed keys before anything runs; ``accept-new``
records what it accepted in run.json; a pinned ``host_key: SHA256:...`` is trust enough on its
own and a mismatch is refused with the expected and the offered fingerprint.

The runs use a profile that changes nothing (EXPORT: ``true``), so the shared lab fixture is
enough; every test checks that the nodes are untouched anyway.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pytest

from zdu.cli.main import main
from zdu.lab.fleet import Lab
from zdu.status import Status
from tests.support.sshd import keygen

NODES = ["Node-A", "Node-B", "Node-C"]
PROFILE = "name: harmless\nphases:\n  EXPORT: [{name: touch nothing, run: 'true'}]\n"


def fingerprint_of(public_line: str) -> str:
    blob = base64.b64decode(public_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def host_fingerprint(lab: Lab, name: str) -> str:
    return fingerprint_of((lab.workdir / "nodes" / name / "ssh_host_ed25519_key.pub").read_text())


def run(lab: Lab, tmp_path: Path, known_hosts: Path, *args: str,
        nodes_extra: dict[str, dict[str, Any]] | None = None) -> tuple[Status, str, str, dict[str, Any]]:
    profile = tmp_path / "harmless.yaml"
    profile.write_text(PROFILE)
    nodes = [{"name": n.name, "host": n.host, "port": n.ssh_port, "lb_server": n.lb_server,
              **(nodes_extra or {}).get(n.name, {})} for n in lab.nodes]
    config = lab.write_topology(tmp_path / "topology.yaml", lb="none",
                                extra={"ssh": {"known_hosts": str(known_hosts), "connect_retries": 0},
                                       "nodes": nodes})
    out, err = io.StringIO(), io.StringIO()
    status = main(["--old_install_dir", "/opt/gateway-1.0", "--new_install_dir", "/opt/gateway-2.0",
                   "--config", str(config), "--profile", str(profile), "--log_dir", str(tmp_path / "logs"),
                   *args], out=out, err=err)
    runs = sorted((tmp_path / "logs").glob("*/run.json"))
    record = json.loads(runs[-1].read_text()) if runs else {}
    return status, out.getvalue(), err.getvalue(), record


def assert_refused_before_anything(lab: Lab, status: Status, out: str, err: str, record: dict[str, Any]) -> None:
    assert status is Status.NODE_UNREACHABLE, out + err
    assert "nothing was changed" in err
    assert record["steps"] == [] and record["status"]["name"] == "NODE_UNREACHABLE"
    assert record["host_keys_accepted"] == []
    assert "Traceback" not in out + err
    for name in NODES:
        assert lab.running_versions(name) == ["1.0"]


def test_strict_with_empty_known_hosts_refuses_every_node(lab: Lab, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("")
    status, out, err, record = run(lab, tmp_path, known)
    assert_refused_before_anything(lab, status, out, err, record)
    assert "preflight found 3 problem(s)" in err
    for node in lab.nodes:
        line = next(line for line in err.splitlines() if line.strip().startswith(f"- {node.name}:"))
        assert f"{node.host}:{node.ssh_port}" in line
        assert f"ssh-ed25519 {host_fingerprint(lab, node.name)}" in line
        assert str(known) in line and "strict" in line
    assert known.read_text() == "", "strict must never write known_hosts"


def test_changed_key_is_refused_with_expected_and_offered(lab: Lab, tmp_path: Path) -> None:
    other = keygen(tmp_path / "impostor")
    impostor_line = (tmp_path / "impostor.pub").read_text().strip()
    known = tmp_path / "known_hosts"
    lines = lab.known_hosts.read_text().splitlines()
    node_b = lab.node("Node-B")
    prefix = f"[{node_b.host}]:{node_b.ssh_port} "
    known.write_text("".join((prefix + " ".join(impostor_line.split()[:2]) if line.startswith(prefix) else line)
                             + "\n" for line in lines))
    before = known.read_text()
    status, out, err, record = run(lab, tmp_path, known, "--host-key-policy", "accept-new")
    assert_refused_before_anything(lab, status, out, err, record)
    assert "preflight found 1 problem(s)" in err        # only Node-B: A and C are known and match
    line = next(line for line in err.splitlines() if "- Node-B:" in line)
    assert "HOST KEY CHANGED" in line and f"{node_b.host}:{node_b.ssh_port}" in line
    assert f"expects ssh-ed25519 {fingerprint_of(impostor_line)}" in line
    assert f"offered ssh-ed25519 {host_fingerprint(lab, 'Node-B')}" in line
    assert known.read_text() == before, "a changed key must not be overwritten, even by accept-new"
    assert other.exists()


@pytest.mark.parametrize("start", ["empty", "missing"])
def test_accept_new_records_accepted_keys_in_run_json(lab: Lab, tmp_path: Path, start: str) -> None:
    known = tmp_path / "ssh" / "known_hosts"
    if start == "empty":
        known.parent.mkdir()
        known.write_text("")
    status, out, err, record = run(lab, tmp_path, known, "--host-key-policy", "accept-new")
    assert status is Status.SUCCESS, out + err
    accepted = {entry["node"]: entry for entry in record["host_keys_accepted"]}
    assert sorted(accepted) == NODES, record["host_keys_accepted"]
    for name in NODES:
        assert accepted[name]["key_type"] == "ssh-ed25519"
        assert accepted[name]["fingerprint"] == host_fingerprint(lab, name)
    # each node accepted exactly once (preflight and the run share one connection per node)
    assert len(record["host_keys_accepted"]) == 3
    if start == "missing":      # created by zdupgrade: private
        assert oct(known.stat().st_mode & 0o777) == "0o600"
        assert oct(known.parent.stat().st_mode & 0o777) == "0o700"
    written = known.read_text()
    for node in lab.nodes:
        assert f"[{node.host}]:{node.ssh_port} ssh-ed25519 " in written
    # and the next strict run trusts them
    status, out, err, record = run(lab, tmp_path, known)
    assert status is Status.SUCCESS, out + err
    assert record["host_keys_accepted"] == []


def test_matching_pin_is_enough_without_known_hosts(lab: Lab, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"          # does not even exist
    pins = {name: {"host_key": host_fingerprint(lab, name)} for name in NODES}
    status, out, err, record = run(lab, tmp_path, known, nodes_extra=pins)
    assert status is Status.SUCCESS, out + err
    assert not known.exists(), "a pinned key is not written to known_hosts"
    assert record["host_keys_accepted"] == []
    assert all(record["nodes"][n]["phases"]["EXPORT"]["outcome"] == "PASSED" for n in NODES)


@pytest.mark.parametrize("known_hosts", ["empty", "real"])
def test_pin_mismatch_is_refused_with_expected_and_offered(lab: Lab, tmp_path: Path, known_hosts: str) -> None:
    """Refused whether the key is unknown (pin checked before auth) or in known_hosts (after the
    handshake), and whatever the policy."""
    known = tmp_path / "known_hosts"
    known.write_text("" if known_hosts == "empty" else lab.known_hosts.read_text())
    wrong = fingerprint_of((keygen(tmp_path / "other").with_suffix(".pub")).read_text())
    pins = {"Node-C": {"host_key": wrong}}
    status, out, err, record = run(lab, tmp_path, known, "--host-key-policy", "accept-new", nodes_extra=pins)
    assert status is Status.NODE_UNREACHABLE, out + err
    if known_hosts == "real":
        assert_refused_before_anything(lab, status, out, err, record)
    line = next(line for line in err.splitlines() if "- Node-C:" in line)
    assert "does not match the pinned fingerprint" in line
    assert f"expected {wrong}" in line and f"offered ssh-ed25519 {host_fingerprint(lab, 'Node-C')}" in line
    assert "Node-C" not in {e["node"] for e in record["host_keys_accepted"]}
    assert "Traceback" not in out + err
