"""A node the operator took out of rotation before the run (MAINT in a real HAProxy): the run
says so loudly before it changes anything -- once upgraded and healthy the node goes back into
rotation -- instead of putting it back in without a word (local nodes, a real HAProxy)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from tests.support.haproxy import BACKEND, haproxy_lab, wait_for
from tests.support.localfleet import ROOT, profile


def test_a_node_in_maint_before_the_run_is_named_in_a_warning(tmp_path: Path) -> None:
    with haproxy_lab(tmp_path / "lb", {"node-a": "127.0.0.233", "node-b": "127.0.0.234"}) as lab:
        lab.command(f"set server {BACKEND}/node-b state maint")
        wait_for(lambda: lab.status("node-b") == "MAINT")
        for name in ("A", "B"):
            (tmp_path / name).mkdir()
            (tmp_path / name / "running").write_text("1.0\n")
        (tmp_path / "profile.yaml").write_text(yaml.safe_dump(profile(tmp_path)))
        topology = {"profile": str(tmp_path / "profile.yaml"), "lock_dir": str(tmp_path / "lock"),
                    "load_balancer": {"type": "haproxy", "backend": BACKEND, "sockets": lab.sockets,
                                      "poll_interval": 0.05, "drain_timeout": 5, "up_timeout": 10},
                    "nodes": [{"name": "A", "host": "127.0.0.233", "transport": "local", "lb_server": "node-a"},
                              {"name": "B", "host": "127.0.0.234", "transport": "local", "lb_server": "node-b"}]}
        (tmp_path / "topology.yaml").write_text(yaml.safe_dump(topology))
        (tmp_path / "app-1.0").mkdir()
        (tmp_path / "app-2.0").mkdir()
        done = subprocess.run([sys.executable, str(ROOT / "zdupgrade"), "--old_install_dir", str(tmp_path / "app-1.0"),
                               "--new_install_dir", str(tmp_path / "app-2.0"), "--config", str(tmp_path / "topology.yaml"),
                               "--log_dir", str(tmp_path / "logs"), "--plain"],
                              capture_output=True, text=True, cwd=tmp_path, timeout=120)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
        warning = "B is not serving before the run (the load balancer shows it out of rotation or down)"
        assert warning in done.stdout                     # said as it happened ...
        summary = done.stdout[done.stdout.index("Summary table"):]
        assert warning in summary                         # ... and in the summary
        assert "A is not serving" not in done.stdout
        assert done.stdout.index(warning) < done.stdout.index("EXPORT")   # before anything changed
        assert (tmp_path / "B" / "running").read_text() == "2.0\n"
