"""A run whose log folder fills up: the upgrade goes on, and a run that otherwise succeeded
exits 79 (RECORD_FAILED), never 80 ("internal error ... a zdupgrade bug").

The log folder is a real 100 KiB tmpfs, mounted in a private mount namespace of the zdupgrade
process alone (root and unshare needed, as on the CI machine); a node's step prints 120 KB.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.localfleet import ROOT, LocalFleet, profile
from zdu.status import Status


def _can_mount_tmpfs(tmp_path: Path) -> bool:
    unshare = shutil.which("unshare")
    if unshare is None:
        return False
    probe = subprocess.run([unshare, "--mount", "--propagation", "private", "sh", "-c",
                            f"mount -t tmpfs -o size=100k tmpfs {tmp_path}"], capture_output=True)
    return probe.returncode == 0


def test_a_full_log_disk_is_a_record_failure_not_an_internal_error(tmp_path: Path) -> None:
    if not _can_mount_tmpfs(tmp_path):      # the README's test command runs as root: it can
        pytest.fail("this test needs root and unshare(1) to mount a private tmpfs")
    data = profile(tmp_path)
    data["phases"]["PRE-APPLY"] = [{"name": "big", "run":
                                    "test {{ node.name }} != A || head -c 120000 /dev/zero | tr '\\0' x"}]
    fleet = LocalFleet(tmp_path, profile_overrides={"phases": data["phases"]})
    logs = tmp_path / "small"
    logs.mkdir()
    zdu = [sys.executable, str(ROOT / "zdupgrade"), *fleet.argv("--plain", "--log_dir", str(logs))]
    script = 'mount -t tmpfs -o size=100k tmpfs "$1" && shift && exec "$@"'
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                           str(logs), *zdu], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == Status.RECORD_FAILED, done.stdout[-2000:] + done.stderr[-2000:]
    assert "internal error" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert all(fleet.running(n) == "2.0" and fleet.lb(n) == "in" for n in "ABC")
    assert "Status 79 (RECORD_FAILED)" in done.stdout
    assert "run log:" in done.stdout


def test_an_events_file_that_cannot_be_written_is_a_record_failure(tmp_path: Path) -> None:
    """--events on a full device: the upgrade goes on, the summary says the events stream
    failed, and the run exits 79, not 0 (a CI consumer would read nothing and think all went well)."""
    fleet = LocalFleet(tmp_path)
    done = subprocess.run([sys.executable, str(ROOT / "zdupgrade"), *fleet.argv("--plain", "--events", "/dev/full")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == Status.RECORD_FAILED, done.stdout[-2000:] + done.stderr[-2000:]
    assert all(fleet.running(n) == "2.0" and fleet.lb(n) == "in" for n in "ABC")
    assert "the run record is incomplete: events failed: OSError: [Errno 28] No space left on device" in done.stdout


def test_the_events_file_is_written_as_the_run_goes(tmp_path: Path) -> None:
    """A consumer tailing --events sees each event when it happens, not at the end of the run."""
    fleet = LocalFleet(tmp_path, hold=True)
    events = tmp_path / "events.jsonl"
    proc = fleet.start("--plain", "--events", str(events))
    try:
        fleet.wait_for(lambda: fleet.in_apply("A"), "node A in APPLY", proc)
        kinds = [json.loads(line)["type"] for line in events.read_text().splitlines()]
        assert "RunStarted" in kinds and "StepStarted" in kinds, kinds
    finally:
        fleet.release()
        out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out[-2000:]


def test_a_run_stopped_in_preflight_says_its_events_could_not_be_written(tmp_path: Path) -> None:
    """No summary is printed when preflight stops the run: the failed --events stream is said on
    stderr instead of not at all."""
    topology = tmp_path / "topology.yaml"
    topology.write_text("profile: lab-gateway\nload_balancer: {type: none}\nssh: {config_file: none}\n"
                        "nodes:\n  - {name: gw1, host: 127.0.9.1, port: 9}\n")
    done = subprocess.run([sys.executable, str(ROOT / "zdupgrade"), "--old_install_dir", "/opt/gateway-1.0",
                           "--new_install_dir", "/opt/gateway-2.0", "--config", str(topology), "--log_dir",
                           str(tmp_path / "logs"), "--plain", "--events", "/dev/full"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == Status.NODE_UNREACHABLE, done.stdout + done.stderr
    assert "the run record is incomplete: events failed: OSError: [Errno 28]" in done.stderr
    assert "Traceback" not in done.stderr
