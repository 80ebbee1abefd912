"""The README's main command, ``zdupgrade --lab``, as a user runs it: a separate process that
brings up its own lab (on slot 9, so it never meets the test session's lab), upgrades it under
traffic through HAProxy, prints the summary, and leaves nothing behind."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import docker

from zdu.lab.fleet import LAB_LABEL

ROOT = Path(__file__).resolve().parents[2]


def test_zdupgrade_lab_upgrades_the_lab_with_zero_failed_requests(lab: object, tmp_path: Path) -> None:
    # `lab` only guarantees Docker, HAProxy and the node image are there (ZDU_LAB_REQUIRED)
    env = dict(os.environ, ZDU_LAB_SLOT="9", TESTCONTAINERS_RYUK_DISABLED="true")
    proc = subprocess.run([sys.executable, str(ROOT / "zdupgrade"), "--lab", "--old_install_dir", "/opt/gateway-1.0",
                           "--new_install_dir", "/opt/gateway-2.0", "--log_dir", str(tmp_path / "logs")],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "Summary table (Status.SUCCESS):" in out
    traffic = next(line for line in out.splitlines() if line.startswith("traffic: "))
    sent = int(traffic.split()[1])
    assert sent > 100 and " 0 failed" in traffic, traffic
    assert out.count("was out of rotation:") == 3
    assert "lab: after the run: Node-A runs 2.0, Node-B runs 2.0, Node-C runs 2.0" in out
    assert out.rstrip().endswith("lab: torn down")
    client = docker.from_env()
    left = [c.name for c in client.containers.list(all=True, filters={"label": LAB_LABEL})
            if c.name.startswith("zdu-lab9")]
    assert left == []
