"""Secrets never reach a log, run.json or the console; run folders are private.

A profile declares ``secrets: [admin_password]``; the value comes from the topology's vars and is
used as a command argument and inside a larger string, and the node prints it on stdout and
stderr.  Every file of the run folder and the console output are searched for the value in
every form it can take on its way (raw, shell-quoted, escaped inside a larger quoted word,
JSON-escaped).
"""
from __future__ import annotations

import base64
import io
import json
import os
import shlex
from pathlib import Path
from typing import Any

import pytest

from zdu.cli.main import main
from zdu.lab.fleet import Lab
from zdu.status import Status

NODES = ["Node-A", "Node-B", "Node-C"]
SECRET = "S3cr3t pa'ss;$(id) \"w\u00f6rd\""

PROFILE = """\
name: with-secret
secrets: [admin_password]
phases:
  EXPORT:
    - {name: as an argument, run: "printf 'out:%s\\\\n' {{ admin_password }}"}
    - {name: inside a larger word, run: "echo {{ 'password=' ~ admin_password ~ ';' }} >&2"}
    - {name: keep it on the node, run: "mkdir -p {{ work_dir }} && printf '%s' {{ admin_password }} > {{ work_dir }}/pw"}
    - {name: printed on both streams, run: "cat {{ work_dir }}/pw; echo; cat {{ work_dir }}/pw >&2"}
"""


def forms(secret: str) -> set[str]:
    """Every spelling of ``secret`` that could leak."""
    escaped = secret.replace("'", "'\"'\"'")          # inside a larger single-quoted word
    found = {secret, shlex.quote(secret), escaped}
    found |= {json.dumps(f)[1:-1] for f in list(found)}   # as run.json writes it
    found |= {json.dumps(f, ensure_ascii=False)[1:-1] for f in list(found)}
    return found


def run(lab: Lab, tmp_path: Path, vars_: dict[str, Any], profile_text: str = PROFILE,
        env: dict[str, str] | None = None) -> tuple[Status, str, str, Path]:
    profile = tmp_path / "with-secret.yaml"
    profile.write_text(profile_text)
    config = lab.write_topology(tmp_path / "topology.yaml", lb="none", extra={"vars": vars_})
    out, err = io.StringIO(), io.StringIO()
    status = main(["--old_install_dir", "/opt/gateway-1.0", "--new_install_dir", "/opt/gateway-2.0",
                   "--config", str(config), "--profile", str(profile), "--log_dir", str(tmp_path / "logs")],
                  env, out=out, err=err)
    run_dir = next((tmp_path / "logs").iterdir())
    return status, out.getvalue(), err.getvalue(), run_dir


def node_file(lab: Lab, node: str, path: str) -> bytes:
    code, out = lab.exec(node, f"base64 -w0 {shlex.quote(path)}")
    assert code == 0, out
    return base64.b64decode(out.strip())


def assert_nowhere(secret: str, out: str, err: str, run_dir: Path) -> None:
    texts = {"console out": out, "console err": err}
    texts.update({str(p): p.read_text(encoding="utf-8", errors="replace") for p in run_dir.iterdir()})
    for where, text in texts.items():
        for form in forms(secret):
            assert form not in text, f"secret ({form!r}) leaked into {where}"
        # no fragment long enough to be useful either
        for piece in ("S3cr3t", "w\u00f6rd"):
            assert piece not in text, f"part of the secret ({piece!r}) leaked into {where}"


def assert_private(run_dir: Path) -> None:
    assert oct(run_dir.stat().st_mode & 0o777) == "0o700"
    files = list(run_dir.iterdir())
    assert {p.name for p in files} >= {"run.log", "run.json", "Node-A.log", "Node-B.log", "Node-C.log"}
    for path in files:
        assert oct(path.stat().st_mode & 0o777) == "0o600", path


def test_secret_from_topology_vars_is_masked_everywhere(fresh_lab: Lab, tmp_path: Path) -> None:
    status, out, err, run_dir = run(fresh_lab, tmp_path, {"admin_password": SECRET})
    assert status is Status.SUCCESS, out + err
    record = json.loads((run_dir / "run.json").read_text())
    for name in NODES:   # the node got the real value
        assert node_file(fresh_lab, name, f"/var/tmp/zdupgrade/{record['run_id']}/pw") == SECRET.encode()
    assert_nowhere(SECRET, out, err, run_dir)
    node_log = (run_dir / "Node-A.log").read_text()
    assert "printf 'out:%s\\n' ******" in node_log          # the command, masked
    assert "out:******" in node_log                         # stdout, masked
    assert node_log.count("******") >= 6
    assert_private(run_dir)


def test_secret_in_a_failure_message_is_masked(fresh_lab: Lab, tmp_path: Path) -> None:
    """The last output line of a failing command goes into run.json, run.log and the console."""
    profile = ("name: failing\nsecrets: [admin_password]\nphases:\n  EXPORT:\n"
               "    - {name: leak and fail, run: \"echo login failed for {{ admin_password }} >&2; exit 9\"}\n")
    status, out, err, run_dir = run(fresh_lab, tmp_path, {"admin_password": SECRET}, profile)
    assert status is Status.EXPORT_FAILED, out + err
    assert "exit code 9: login failed for ******" in out
    assert_nowhere(SECRET, out, err, run_dir)
    assert_private(run_dir)


ENV_PROFILE = PROFILE.replace("secrets: [admin_password]\n", "")   # env values are secret by themselves


def test_secret_from_the_control_machine_environment(fresh_lab: Lab, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """``vars: {admin_password: {env: ZDU_ADMIN_PASSWORD}}``: the value comes from the control
    machine's environment and is always treated as secret, even if the profile does not say so."""
    value = "Env-" + SECRET
    monkeypatch.setenv("ZDU_ADMIN_PASSWORD", value)
    status, out, err, run_dir = run(fresh_lab, tmp_path, {"admin_password": {"env": "ZDU_ADMIN_PASSWORD"}},
                                    ENV_PROFILE, env=dict(os.environ))
    assert status is Status.SUCCESS, out + err
    record = json.loads((run_dir / "run.json").read_text())
    for name in NODES:
        assert node_file(fresh_lab, name, f"/var/tmp/zdupgrade/{record['run_id']}/pw") == value.encode()
    assert_nowhere(value, out, err, run_dir)
    assert "out:******" in (run_dir / "Node-B.log").read_text()
    assert_private(run_dir)
