"""``compose``: every value in a command goes through the quote filter -- the message of EXPORT's
"one image line" check once inserted ``image`` raw inside double quotes, where a ``$(...)`` in it
ran (the first EXPORT step refuses such an image, but a step must not rely on another one for its
quoting).  The step's rendered command runs here in a real shell on a compose file without that line."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

from zdu.config.profile import load_profile
from zdu.config.topology import load_topology
from zdu.planning.plan import build_plan
from zdu.status import Phase


def test_image_in_the_one_image_line_message_is_quoted(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    image = f"api7/gw$(touch {marker})`touch {marker}`"
    topology = tmp_path / "topology.yaml"
    topology.write_text("profile: compose\nssh: {user: ops}\nload_balancer: {type: none}\n"
                        f"vars: {{new_version: 3.8.17, compose_dir: {json.dumps(str(tmp_path / 'project'))}, "
                        f"image: {json.dumps(image)}}}\n"
                        "nodes:\n  - {name: dp-1, host: dp-1.example.net}\n")
    plan = build_plan(load_topology(topology), load_profile("compose"), old_install_dir="/a", new_install_dir="/b",
                      run_id="R")
    [step] = [s for s in plan.node_plan("dp-1").phases[Phase.EXPORT] if s.name.endswith("one image line of the gateway")]
    assert step.command is not None
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "docker-compose.yaml").write_text("services: {}\n")
    done = subprocess.run(["sh", "-c", step.command], capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert not marker.exists(), step.command
    assert f"expected one 'image: {image}:TAG' line in the compose file, found 0" in done.stderr
