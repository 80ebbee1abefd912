"""A node the load-balancer hook refuses at validate() is an error naming the topology file it is
in (as a bad load_balancer setting is), exit 78, nothing touched; zdupgrade as a real process with
a real plugin module on a ``transport: local`` fleet."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.localfleet import ROOT, LocalFleet

PLUGIN = '''
from zdu.errors import ConfigError
from zdu.lb.base import LbResult, LoadBalancer

class Pool(LoadBalancer):
    name = "pool"
    def __init__(self, options):
        pass
    def validate(self, nodes):
        raise ConfigError("node B: not a member of pool web-443")
    def disable(self, node):
        return LbResult(True, "out")
    def enable(self, node):
        return LbResult(True, "in")

def make(options):
    return Pool(options)
'''


def test_a_node_the_hook_refuses_names_the_topology_file(tmp_path: Path) -> None:
    (tmp_path / "zdu_test_pool_lb.py").write_text(PLUGIN)
    fleet = LocalFleet(tmp_path / "fleet", extra={"load_balancer": {"type": "zdu_test_pool_lb:make"}})
    done = subprocess.run([sys.executable, str(ROOT / "zdupgrade"), *fleet.argv()], capture_output=True, text=True,
                          timeout=120, cwd=fleet.root,
                          env={**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"})
    assert done.returncode == 78, done.stdout + done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith(f"zdupgrade: error: {fleet.topology}: ") and "node B: not a member of pool web-443" in line
    assert "Traceback" not in done.stderr
    assert not fleet.log_dir.exists() or not any(fleet.log_dir.iterdir())       # no run was opened
    assert all(fleet.lb_log(n) == [] and fleet.running(n) == "1.0" for n in fleet.names)
