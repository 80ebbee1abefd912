"""known_hosts when ``~`` means nothing: HOME unset and a user id without a passwd entry (a
container run with an arbitrary uid).  ``~/.ssh/known_hosts`` stayed a relative path, so
accept-new would have written the nodes' host keys into ``./~/.ssh/known_hosts``; now the run is
refused (78) before any node is contacted, naming the setting.  A real process under
``unshare --map-user`` (a uid with no passwd entry)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from zdu.status import Status

ROOT = Path(__file__).resolve().parents[2]
PROFILE = {"name": "p", "phases": {"APPLY": [{"name": "a", "run": "true"}]},
           "rollback": {"APPLY": [{"name": "b", "run": "true"}]}}


def _run(tmp_path: Path, *, home: str | None) -> subprocess.CompletedProcess[str]:
    (tmp_path / "old").mkdir(exist_ok=True)
    (tmp_path / "new").mkdir(exist_ok=True)
    (tmp_path / "profile.yaml").write_text(yaml.safe_dump(PROFILE))
    (tmp_path / "topology.yaml").write_text(yaml.safe_dump({
        "nodes": [{"name": "A", "host": "127.0.0.1", "port": 1}], "load_balancer": {"type": "none"},
        "ssh": {"host_key_policy": "accept-new", "connect_timeout": 2, "connect_retries": 0}}))
    env = {k: v for k, v in os.environ.items() if k != "HOME"}
    if home is not None:
        env["HOME"] = home
    return subprocess.run(["unshare", "--map-user=12345", "--map-group=12345", "--", sys.executable,
                           str(ROOT / "zdupgrade"), "--config", "topology.yaml", "--profile", "profile.yaml",
                           "--old_install_dir", str(tmp_path / "old"), "--new_install_dir", str(tmp_path / "new"),
                           "--log_dir", str(tmp_path / "logs")],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=120)


def test_no_home_and_no_passwd_entry_is_refused_before_any_node(tmp_path: Path) -> None:
    proc = _run(tmp_path, home=None)
    assert proc.returncode == int(Status.CONFIG_ERROR), proc.stdout + proc.stderr
    assert ("ssh.known_hosts '~/.ssh/known_hosts': '~' cannot be expanded on this machine (HOME is not set and "
            "user id 12345 has no passwd entry)") in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "~").exists() and not (tmp_path / "logs").exists()


def test_with_home_set_the_run_goes_on_to_its_preflight(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    proc = _run(tmp_path, home=str(home))
    # the node's port is closed: preflight finds it unreachable (the known_hosts check passed)
    assert proc.returncode == int(Status.NODE_UNREACHABLE), proc.stdout + proc.stderr
    assert "cannot be expanded" not in proc.stderr
