"""A real zdupgrade run on a local fleet whose failing step prints terminal control sequences:
neither its console output (a pipe) nor run.log carries them, and the failure is still shown."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.localfleet import ROOT, LocalFleet, profile


def test_a_node_cannot_overwrite_its_failure_line(tmp_path: Path) -> None:
    data = profile(tmp_path)
    data["phases"]["POST-APPLY"] = [{"name": "new runs", "run":
                                     "test {{ node.name }} != B || { printf '\\033[1G\\033[2K\\033]0;pwned\\007"
                                     "ok \\342\\200\\256gnp.exe\\n' >&2; exit 4; }"}]
    fleet = LocalFleet(tmp_path, profile_overrides={"phases": data["phases"]})
    proc = subprocess.run([sys.executable, str(ROOT / "zdupgrade"), *fleet.argv()], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "NO_COLOR": "1"}, cwd=tmp_path)
    assert proc.returncode == 74, proc.stdout + proc.stderr
    run_log = (fleet.run_dir() / "run.log").read_text()
    for text in (proc.stdout, proc.stderr, run_log):
        assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
    failed = [line for line in proc.stdout.splitlines() if "new runs: FAILED" in line]
    assert failed and "\\x1b[2K" in failed[0]
