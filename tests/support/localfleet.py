"""A fleet of ``transport: local`` nodes: real shells, real processes, real signals, no Docker.

Each node is a folder under ``root`` holding ``running`` (the version it serves), ``lb`` (``in`` or
``out``, written by a real script hook) and ``lb.log``.  The profile's commands are real shell
commands working on those files; a node can be held inside APPLY (``hold``) until the test
creates ``root/release``, so a test can signal or kill zdupgrade at a known point.

Used for the interrupt, resume and hostile-input tests that need a real zdupgrade process but
not real SSH (the Docker lab proves the same flows over SSH).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import yaml

ROOT = Path(__file__).resolve().parents[2]

HOOK = """#!/bin/sh
# script hook of the local test fleet: HOOK disable|enable NODE
set -eu
dir="$FLEET_ROOT/$ZDU_NODE_NAME"
echo "$1" >> "$dir/lb.log"
if [ -e "$FLEET_ROOT/hold-$1-$ZDU_NODE_NAME" ]; then
    : > "$FLEET_ROOT/in-$1-$ZDU_NODE_NAME"
    while [ ! -e "$FLEET_ROOT/release" ]; do sleep 0.02; done
fi
case "$1" in
  disable) echo out > "$dir/lb" ;;
  enable)  echo in > "$dir/lb" ;;
esac
echo "hook $1 $ZDU_NODE_NAME ${HOOK_SECRET:-}"
"""


def profile(root: Path, *, hold: bool = False) -> dict[str, Any]:
    """The fleet's profile; with ``hold`` every node waits inside APPLY for ``root/release``."""
    node = "{{ fleet_root }}/{{ node.name }}"
    apply = [{"name": "stop old", "run": f"echo stopped > {node}/running"}]
    if hold:
        apply.append({"name": "held", "run": f": > {node}/in-apply; "
                                             f"while [ ! -e {{{{ fleet_root }}}}/release ]; do sleep 0.02; done"})
    apply.append({"name": "start new", "run": f"echo 2.0 > {node}/running"})
    return {
        "name": "local-fleet",
        "vars": {"fleet_root": str(root)},
        "phases": {
            "EXPORT": [{"name": "export", "run": f"mkdir -p {node} && echo exported > {node}/export"}],
            "UPGRADE": [{"name": "convert", "run": f"test -e {node}/export"}],
            "PRE-APPLY": [{"name": "check", "run": "true"}],
            "APPLY": apply,
            "POST-APPLY": [{"name": "new runs", "run": f"grep -qx 2.0 {node}/running"}],
        },
        "rollback": {"APPLY": [{"name": "start old", "run": f"echo 1.0 > {node}/running"}]},
    }


class LocalFleet:
    """Files for a topology of local nodes, and helpers to drive a real zdupgrade process."""

    def __init__(self, root: Path, names: Iterable[str] = ("A", "B", "C"), *, hold: bool = False,
                 serial: Any = 1, extra: dict[str, Any] | None = None,
                 profile_overrides: dict[str, Any] | None = None) -> None:
        self.root = root
        self.names = list(names)
        self.log_dir = root / "logs"
        for name in self.names:
            (root / name).mkdir(parents=True, exist_ok=True)
            (root / name / "running").write_text("1.0\n")
            (root / name / "lb").write_text("in\n")
        self.old_dir, self.new_dir = root / "app-1.0", root / "app-2.0"
        self.old_dir.mkdir(exist_ok=True)
        self.new_dir.mkdir(exist_ok=True)
        self.hook = root / "hook.sh"
        self.hook.write_text(HOOK)
        self.hook.chmod(0o755)
        data = profile(root, hold=hold)
        data.update(profile_overrides or {})
        self.profile = root / "profile.yaml"
        self.profile.write_text(yaml.safe_dump(data, sort_keys=False))
        topo: dict[str, Any] = {
            "profile": str(self.profile),
            "serial": serial,
            "lock_dir": str(root / "fleet-lock"),
            "ssh": {"command_timeout": 60},
            "load_balancer": {"type": "script", "path": str(self.hook), "timeout": 60,
                              "env": {"FLEET_ROOT": str(root)}},
            "nodes": [{"name": n, "host": "127.0.0.1", "transport": "local"} for n in self.names],
        }
        for key, value in (extra or {}).items():
            if isinstance(value, dict) and isinstance(topo.get(key), dict):
                topo[key].update(value)
            else:
                topo[key] = value
        self.topology = root / "topology.yaml"
        self.topology.write_text(yaml.safe_dump(topo, sort_keys=False))

    # -- node state

    def running(self, name: str) -> str:
        return (self.root / name / "running").read_text().strip()

    def lb(self, name: str) -> str:
        return (self.root / name / "lb").read_text().strip()

    def lb_log(self, name: str) -> list[str]:
        path = self.root / name / "lb.log"
        return path.read_text().split() if path.exists() else []

    def release(self) -> None:
        (self.root / "release").touch()

    def hold_hook(self, action: str, name: str) -> None:
        (self.root / f"hold-{action}-{name}").touch()

    # -- zdupgrade

    def argv(self, *extra: str) -> list[str]:
        return ["--old_install_dir", str(self.old_dir), "--new_install_dir", str(self.new_dir), "--config",
                str(self.topology), "--log_dir", str(self.log_dir), *extra]

    def start(self, *extra: str, env: dict[str, str] | None = None,
              cwd: Path | None = None) -> subprocess.Popen[str]:
        """zdupgrade as a separate process, in its own session (as from an operator's shell)."""
        return subprocess.Popen([sys.executable, str(ROOT / "zdupgrade"), *self.argv(*extra)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                cwd=cwd or self.root, env={**os.environ, **(env or {})}, start_new_session=True)

    def resume(self, *extra: str, cwd: Path | None = None, env: dict[str, str] | None = None
               ) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(ROOT / "zdupgrade"), "--resume", "--log_dir",
                               str(self.log_dir), *extra], capture_output=True, text=True,
                              cwd=cwd or self.root, timeout=120, env={**os.environ, **(env or {})})

    def wait_for(self, what: Callable[[], bool], description: str, proc: subprocess.Popen[str] | None = None,
                 timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not what():
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"zdupgrade ended ({proc.returncode}) before {description}:\n"
                                     f"{proc.stdout.read() if proc.stdout else ''}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {description}")
            time.sleep(0.02)

    def in_apply(self, name: str) -> bool:
        return (self.root / name / "in-apply").exists()

    def run_dir(self) -> Path:
        runs = sorted(p.parent for p in self.log_dir.glob("*/journal.jsonl"))
        assert runs, f"no run under {self.log_dir}"
        return runs[-1]

    def record(self) -> dict[str, Any]:
        return json.loads((self.run_dir() / "run.json").read_text())


def signal_and_wait(proc: subprocess.Popen[str], sig: signal.Signals, timeout: float = 60) -> str:
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=timeout)
    return out
