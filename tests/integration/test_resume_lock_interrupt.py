"""Resume after SIGKILL, the fleet lock, and Ctrl-C, with zdupgrade as a real separate process."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from tests.support.runs import latest_record, step_running as running_step, wait_record
from zdu.lab.fleet import Lab

ROOT = Path(__file__).resolve().parents[2]
OLD, NEW = "/opt/gateway-1.0", "/opt/gateway-2.0"
NODES = ["Node-A", "Node-B", "Node-C"]


def start(lab: Lab, tmp_path: Path, *extra: str, lb: str = "haproxy") -> tuple[subprocess.Popen[str], Path]:
    config = lab.write_topology(tmp_path / "topology.yaml", lb=lb)  # type: ignore[arg-type]
    log_dir = tmp_path / "logs"
    proc = subprocess.Popen([sys.executable, str(ROOT / "zdupgrade"), "--old_install_dir", OLD,
                             "--new_install_dir", NEW, "--config", str(config), "--log_dir", str(log_dir), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    return proc, log_dir


record = latest_record


def step_running(key: str) -> Callable[[dict[str, Any]], bool]:
    node, phase, _ = key.split("/")
    return running_step(node, phase, key=key)


def resume(log_dir: Path, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "zdupgrade"), "--resume", "--log_dir", str(log_dir), *extra],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)


def assert_fleet(lab: Lab, expected: dict[str, str]) -> None:
    for name, version in expected.items():
        assert lab.running_versions(name) == [version], (name, lab.running_versions(name))
    lab.wait_servers_up()
    assert all(s["srv_admin_state"] == "0" for s in lab.server_states().values()), lab.server_states()


def lock_present(lab: Lab, name: str) -> bool:
    return lab.exec(name, "test -d /var/tmp/zdupgrade/lock")[0] == 0


def test_resume_refuses_a_changed_plan(fresh_lab: Lab, tmp_path: Path) -> None:
    fresh_lab.inject_fault("Node-A", "hang-start")
    proc, log_dir = start(fresh_lab, tmp_path)
    wait_record(log_dir, step_running("Node-A/APPLY/2"), "Node-A stuck")
    proc.kill()
    proc.wait(timeout=10)
    topology = tmp_path / "topology.yaml"
    topology.write_text(topology.read_text().replace("profile: lab-gateway", "profile: lab-gateway\nvars: {stop_timeout: 3}"))
    refused = resume(log_dir, tmp_path)
    assert refused.returncode == 78 and "plan is not the same; refusing to resume" in refused.stderr
    fresh_lab.clear_faults()
    fresh_lab.exec("Node-A", "pkill -f 'gateway start' || true")


def test_lock_held_by_another_run_is_refused_then_broken(fresh_lab: Lab, tmp_path: Path) -> None:
    owner = json.dumps({"run_id": "other-run", "user": "alice", "host": "laptop", "pid": 4242,
                        "started": "2026-11-21T23:00:00+00:00", "message": "upgrading by hand"})
    place = f"mkdir -p /var/tmp/zdupgrade/lock && printf '%s' '{owner}' > /var/tmp/zdupgrade/lock/owner.json"
    fresh_lab.exec("Node-B", place)
    proc, log_dir = start(fresh_lab, tmp_path)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 77, out
    assert "locked by run other-run by alice@laptop (pid 4242)" in out and "upgrading by hand" in out
    assert "--break-lock" in out
    assert_fleet(fresh_lab, {n: "1.0" for n in NODES})
    assert not lock_present(fresh_lab, "Node-A")            # the lock we took there was given back
    assert lock_present(fresh_lab, "Node-B")                # theirs is untouched
    # a check fails as well: both are reported, the status is the check's, and still only theirs is left
    proc, log_dir = start(fresh_lab, tmp_path, "--old_install_dir", "/opt/no-such-gateway")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 78, out
    assert "install dir '/opt/no-such-gateway' does not exist" in out and "locked by run other-run" in out, out
    assert record(log_dir)["status"]["name"] == "CONFIG_ERROR"
    assert_fleet(fresh_lab, {n: "1.0" for n in NODES})
    assert [n for n in NODES if lock_present(fresh_lab, n)] == ["Node-B"]
    # an unreachable node and theirs: unreachable (76) is why, not the lock
    fresh_lab.kill_sshd("Node-C")
    proc, log_dir = start(fresh_lab, tmp_path)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 76, out
    assert "Node-C" in out and "locked by run other-run" in out, out
    assert [n for n in NODES if lock_present(fresh_lab, n)] == ["Node-B"]
    fresh_lab.reset()                                       # Node-C's sshd back (and B's lock gone)
    fresh_lab.exec("Node-B", place)
    proc, log_dir = start(fresh_lab, tmp_path, "--break-lock", "--lock-message", "night change 42")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    data = record(log_dir)
    assert any("lock broken with --break-lock: Node-B" in w for w in data["warnings"])
    assert data["lock"]["message"] == "night change 42"
    assert not any(lock_present(fresh_lab, n) for n in NODES)


def test_ctrl_c_stops_at_a_safe_point_and_puts_nodes_back(fresh_lab: Lab, tmp_path: Path) -> None:
    proc, log_dir = start(fresh_lab, tmp_path, "--traffic", f"{fresh_lab.frontend_url}/", "--traffic-rate", "100")
    wait_record(log_dir, lambda d: d["nodes"]["Node-B"]["lb_calls"]["disable"] >= 1, "Node-B taken out")
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # a second Ctrl-C must not abandon a drained node
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert "stopping at the next safe point" in out and "Interrupt again" in out
    data = record(log_dir)
    assert data["status"]["name"] == "INTERRUPTED"
    assert data["decisions"] and data["decisions"][0]["node"] == "Node-B"
    assert all(data["nodes"][n]["in_lb"] for n in NODES)
    assert data["traffic"]["failed"] == 0, data["traffic"]["summary_line"]
    assert_fleet(fresh_lab, {"Node-A": "2.0", "Node-B": "1.0", "Node-C": "1.0"})
    assert "Summary table (Status.INTERRUPTED)" in out
    assert not any(lock_present(fresh_lab, n) for n in NODES)


def test_sigkill_mid_rollback_then_resume_finishes_the_rollback(fresh_lab: Lab, tmp_path: Path) -> None:
    fresh_lab.inject_fault("Node-B", "health")      # POST-APPLY fails on Node-B ...
    fresh_lab.inject_fault("Node-B", "hang-stop")   # ... and its rollback hangs stopping 2.0
    proc, log_dir = start(fresh_lab, tmp_path)
    wait_record(log_dir, step_running("Node-B/ROLLBACK/0"), "Node-B stuck in its rollback")
    proc.kill()
    proc.wait(timeout=10)
    killed = record(log_dir)
    assert killed["decisions"][0]["action"] == "ROLLBACK_ALL"
    assert killed["rollback_queue"] == ["Node-B", "Node-A"]
    fresh_lab.clear_faults("Node-B")
    fresh_lab.exec("Node-B", "pkill -f 'gateway stop' || true")
    done = resume(log_dir, tmp_path)
    assert done.returncode == 74, done.stdout + done.stderr     # the run's own outcome: POST_APPLY_FAILED
    assert "resuming the rollback: Node-B, Node-A" in done.stdout
    data = record(log_dir)
    assert data["rollback_queue"] == [] and data["status"]["name"] == "POST_APPLY_FAILED"
    assert [data["nodes"][n]["rollback"]["outcome"] for n in ("Node-A", "Node-B")] == ["PASSED", "PASSED"]
    assert data["nodes"]["Node-C"]["rollback"] is None
    assert_fleet(fresh_lab, {n: "1.0" for n in NODES})
    assert all(data["nodes"][n]["in_lb"] for n in NODES)
