"""Steering a run on the lab, under traffic through HAProxy (issue 9, "How it is proven").

A lab of its own for this module: five real OpenSSH nodes booting systemd (the sample gateway
1.0 -> 2.0), a real HAProxy in front, the product's traffic probe sending requests through it for
the whole run, and ``zdupgrade`` run as a process of its own (``continue`` / ``abort`` and
``--resume`` from other processes).  Every test asserts zero failed requests where the nodes stay
reachable, and that every node ends on exactly one version, the one the run says.

* an Apinizer-shaped fleet (manager Node-A; cache Node-B, Node-C, whose gateways log
  ``Members {size:2, ...}`` once the cache cluster is whole again; workers Node-D, Node-E)
  upgraded tier by tier, with a ``before:`` backup on the manager and a gate on the cache tier;
* a canary pause answered ``zdupgrade continue`` from another process, and one answered
  ``zdupgrade abort``;
* a failure budget that lets one bad node through (82) and one that stops the run;
* a capacity guard refusing a wave: a node put in MAINT during the run, and a node already DOWN
  when the run starts;
* a node lost mid-APPLY (its sshd killed) and repaired by ``--resume`` once its sshd is back.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from tests.conftest import UpgradeRun, assert_fleet_settled, shorten_deadlines
from tests.support.labruns import (LOCK, assert_all_in_haproxy, assert_traffic_clean, assert_unlocked, finish,
                                   module_lab, node_versions, reset_around, start_upgrade)
from tests.support.runs import CliRun, run_cli, start_cli, step_running
from zdu.config.profile import BUILTIN_DIR
from zdu.lab.fleet import BACKEND, Lab, ssh_banner, wait_until
from zdu.status import Status

pytestmark = pytest.mark.lab

OLD, NEW = "/opt/gateway-1.0", "/opt/gateway-2.0"
NODES = ["Node-A", "Node-B", "Node-C", "Node-D", "Node-E"]
#: short step timeouts and connection settings, so that a lost node costs seconds, not minutes
FAST: dict[str, Any] = {
    "ssh": {"command_timeout": 10, "connect_timeout": 2, "connect_retries": 1},
    "vars": {"stop_timeout": 2},
    "load_balancer": {"drain_timeout": 5, "up_timeout": 5},
}


@pytest.fixture(scope="module")
def steering_lab() -> Iterator[Lab]:
    yield from module_lab("steering", size=len(NODES))


@pytest.fixture
def lab(steering_lab: Lab) -> Iterator[Lab]:
    yield from reset_around(steering_lab)


@pytest.fixture(scope="module")
def profile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """lab-gateway with its deadlines and timeouts shortened (same steps, same commands); the new
    version's health gate, which the ``health`` fault fails, gives up after 3 s."""
    path = shorten_deadlines(BUILTIN_DIR / "lab-gateway.yaml",
                             tmp_path_factory.mktemp("profile") / "lab-gateway-fast.yaml", deadline=10, timeout=10)
    doc = yaml.safe_load(path.read_text())
    healthy = next(s for s in doc["phases"]["POST-APPLY"] if s["name"] == "new gateway healthy")
    healthy["wait"]["deadline"] = 3
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _merged(*docs: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for doc in docs:
        for key, value in doc.items():
            out[key] = {**out[key], **value} if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def start(lab: Lab, tmp_path: Path, profile: Path, extra: dict[str, Any] | None = None, *,
          node_fields: dict[str, dict[str, Any]] | None = None, args: tuple[str, ...] = ()) -> CliRun:
    """``zdupgrade`` on the lab (haproxy hook, traffic through HAProxy) as a process of its own."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    config = lab.write_topology(tmp_path / "topology.yaml", lb="haproxy", extra=_merged(FAST, extra or {}),
                                node_fields=node_fields)
    return start_upgrade(lab, tmp_path, config, *args, profile=profile)


def assert_versions(lab: Lab, run: UpgradeRun, expected: dict[str, str]) -> None:
    """Each node runs (and serves) exactly the version expected, and run.json says the same."""
    assert node_versions(lab) == {n: [v] for n, v in expected.items()}, node_versions(lab)
    for name, version in expected.items():
        assert lab.served_version(name) == version, name
        assert run.record["nodes"][name]["version"] == ("new" if version == "2.0" else "old"), (
            name, run.record["nodes"][name]["version"])


def steps_of(record: dict[str, Any], node: str, phase: str) -> list[dict[str, Any]]:
    return [s for s in record["steps"] if s["node"] == node and s["phase"] == phase]


def phase_window(record: dict[str, Any], node: str, phase: str) -> tuple[float, float]:
    steps = steps_of(record, node, phase)
    assert steps and all(s["ended"] for s in steps), (node, phase, steps)
    return min(s["started"] for s in steps), max(s["ended"] for s in steps)


def table_row(out: str, node: str) -> list[str]:
    row = next(line for line in out.splitlines() if line.startswith(f"| {node} "))
    return [cell.strip() for cell in row.strip().strip("|").split("|")]


# --------------------------------------------------------------------------- tiers, before, gate

MEMBERS = r"Members \{size:2,"
APINIZER_GROUPS = {"Node-A": {"group": "manager"}, "Node-B": {"group": "cache"}, "Node-C": {"group": "cache"},
                   "Node-D": {"group": "worker"}, "Node-E": {"group": "worker"}}
BACKUP = "/var/backups/zdu"
APINIZER: dict[str, Any] = {
    "tiers": [
        "manager",
        {"name": "cache", "serial": 1,
         "gate": [{"name": "cache cluster whole",
                   "wait": {"log": "{{ new_install_dir }}/logs/gateway.log", "pattern": MEMBERS,
                            "deadline": 20, "interval": 0.2}}]},
        {"name": "worker", "serial": 2},
    ],
    # the backup, once, on the manager, before any node is changed
    "before": [{"name": "back up the configuration", "on": "Node-A",
                "run": f"mkdir -p {BACKUP} && tar -czf {BACKUP}/" "{{ run_id }}.tgz -C {{ old_install_dir }} conf"}],
    "min_in_service": 3,
}
JOIN_DELAY = 3.0


def test_apinizer_fleet_tier_by_tier(lab: Lab, tmp_path: Path, profile: Path) -> None:
    lab.form_cluster(["Node-B", "Node-C"], join_delay=JOIN_DELAY)
    run = finish(start(lab, tmp_path, profile, APINIZER, node_fields=APINIZER_GROUPS))
    assert run.status is Status.SUCCESS, run.out
    assert_fleet_settled(lab, run, "2.0")
    assert_unlocked(lab)
    record = run.record
    assert record["tiers"] == {"manager": ["Node-A"], "cache": ["Node-B", "Node-C"], "worker": ["Node-D", "Node-E"]}
    assert [table_row(run.out, n)[-1] for n in NODES] == ["manager", "cache", "cache", "worker", "worker"]
    assert "Tiers, in order: manager (Node-A) -> cache (Node-B, Node-C) -> worker (Node-D, Node-E)" in run.out

    # the backup: once, on the manager, before anything else ran on any node; its archive holds
    # the configuration the manager ran before the upgrade
    before = [s for s in record["steps"] if s["phase"] == "BEFORE"]
    assert [(s["node"], s["exit_code"]) for s in before] == [("Node-A", 0)], before
    assert record["run_phases"]["before"]["outcome"] == "PASSED"
    assert all(s["started"] >= before[0]["ended"] for s in record["steps"] if s is not before[0])
    archive = f"{BACKUP}/{record['run_id']}.tgz"
    code, listing = lab.exec("Node-A", f"tar -tzf {archive}")
    assert code == 0 and "conf/gateway.ini" in listing.split(), listing
    code, saved = lab.exec("Node-A", f"tar -xzOf {archive} conf/gateway.ini")
    assert code == 0 and saved == lab.exec("Node-A", f"cat {OLD}/conf/gateway.ini")[1] and "listen_port=" in saved
    for name in NODES[1:]:
        assert lab.exec(name, f"test -e {archive}")[0] != 0, f"the backup ran on {name} too"

    # tier by tier: the manager, then each cache node alone, then the workers together
    online = {n: (phase_window(record, n, "PRE-APPLY")[0], phase_window(record, n, "POST-APPLY")[1]) for n in NODES}
    assert online["Node-A"][1] < online["Node-B"][0] and online["Node-B"][1] < online["Node-C"][0]
    d, e = online["Node-D"], online["Node-E"]
    assert d[0] < e[1] and e[0] < d[1], "the two workers were not upgraded in one wave"
    # the cache gate: on both cache nodes, after the tier, before any worker
    gates = {s["node"]: s for s in record["steps"] if s["phase"] == "GATE"}
    assert sorted(gates) == ["Node-B", "Node-C"], gates
    assert record["run_phases"]["gate cache"]["outcome"] == "PASSED"
    for gate in gates.values():
        assert gate["ended"] and not gate["error"] and "log line found" in gate["message"], gate
        assert online["Node-C"][1] <= gate["started"] and gate["ended"] <= min(d[0], e[0]), gate
    # ... and it waited for the line: Node-C's gateway 2.0 writes it JOIN_DELAY s after it starts
    started_c = next(s for s in steps_of(record, "Node-C", "APPLY") if s["name"] == "start new gateway")["started"]
    assert gates["Node-C"]["ended"] >= started_c + JOIN_DELAY, (gates["Node-C"], started_c)
    for name, peer in (("Node-B", "Node-C"), ("Node-C", "Node-B")):
        me, other = lab.node(name), lab.node(peer)
        line = (f"Members {{size:2, ver:2.0}} [Member [{me.host}]:{me.service_port} this, "
                f"Member [{other.host}]:{other.service_port}]")
        assert line in lab.gateway_log(name, "2.0"), (name, lab.gateway_log(name, "2.0")[-1500:])
    # the capacity guard (3 of 5 in service) checked every wave against HAProxy, and let each go
    assert [c["leaving"] for c in record["capacity"]] == [["Node-A"], ["Node-B"], ["Node-C"], ["Node-D", "Node-E"]]
    assert all(c["ok"] and c["needed"] == 3 and c["source"] == "the load balancer" for c in record["capacity"])


# --------------------------------------------------------------------------- canary and pause

CANARY: dict[str, Any] = {"serial": [1, "pause", 2], "pause_timeout": 90, "pause_timeout_action": "abort"}


def paused(run: CliRun) -> dict[str, Any]:
    return run.wait_record(lambda r: any(p["ended"] is None for p in r["pauses"]), "the pause after the canary")


def assert_canary_looks_right(lab: Lab, record: dict[str, Any]) -> None:
    """At the pause: the canary serves 2.0 and is back in HAProxy, the others untouched on 1.0."""
    assert [p["wave"] for p in record["pauses"]] == [1], record["pauses"]
    assert node_versions(lab) == {"Node-A": ["2.0"], **{n: ["1.0"] for n in NODES[1:]}}, node_versions(lab)
    assert_all_in_haproxy(lab)
    assert not any(s["node"] != "Node-A" and s["phase"] in ("PRE-APPLY", "APPLY") for s in record["steps"])


def test_canary_pause_continued_from_another_process(lab: Lab, tmp_path: Path, profile: Path) -> None:
    run = start(lab, tmp_path, profile, CANARY)
    record = paused(run)
    assert_canary_looks_right(lab, record)
    time.sleep(1)                                   # the run really waits: nothing moves
    assert run.proc.poll() is None and len(run.record()["steps"]) == len(record["steps"])
    code, out = run_cli(tmp_path, "continue", log_dir=run.log_dir, name="continue", timeout=30)
    assert code == 0 and f"run {record['run_id']}, paused after wave 1: told to continue" in out, out
    done = finish(run)
    assert done.status is Status.SUCCESS, done.out
    pause = done.record["pauses"][0]
    assert pause["answer"] == "continue" and "(zdupgrade continue)" in pause["by"], pause
    assert_fleet_settled(lab, done, "2.0")
    assert_unlocked(lab)


def test_canary_pause_aborted_from_another_process(lab: Lab, tmp_path: Path, profile: Path) -> None:
    run = start(lab, tmp_path, profile, CANARY)
    assert_canary_looks_right(lab, paused(run))
    code, out = run_cli(tmp_path, "abort", log_dir=run.log_dir, name="abort", timeout=30)
    assert code == 0 and "told to abort (rolling back what it upgraded)" in out, out
    done = finish(run)
    assert done.status is Status.ABORTED and int(done.status) == 83, done.out
    pause = done.record["pauses"][0]
    assert pause["answer"] == "abort" and "(zdupgrade abort)" in pause["by"], pause
    # the canary was rolled back; nothing else was touched
    assert done.record["nodes"]["Node-A"]["rollback"]["outcome"] == "PASSED"
    assert all(done.record["nodes"][n]["rollback"] is None and "APPLY" not in done.record["nodes"][n]["phases"]
               for n in NODES[1:])
    assert_fleet_settled(lab, done, "1.0")
    assert_unlocked(lab)


def test_a_canary_that_dies_at_the_pause_stops_the_run_before_the_next_wave(lab: Lab, tmp_path: Path,
                                                                           profile: Path) -> None:
    """The canary passed its checks and HAProxy's, then its new version died (crashed under load):
    when the pause is answered, the run asks HAProxy again before wave 2, finds the canary DOWN and
    stops (85) without taking another node out.  Nothing is rolled back: the operator looks first."""
    run = start(lab, tmp_path, profile, CANARY)
    assert_canary_looks_right(lab, paused(run))
    lab.exec("Node-A", f"{NEW}/bin/gateway stop --timeout 2")       # the canary's 2.0 dies
    wait_until(lambda: lab.server_states()["node-a"]["srv_op_state"] == "0", timeout=10,
               what="Node-A DOWN in HAProxy")
    code, out = run_cli(tmp_path, "continue", log_dir=run.log_dir, name="continue", timeout=30)
    assert code == 0, out
    done = finish(run)
    assert done.status is Status.DEGRADED and int(done.status) == 85, done.out
    record = done.record
    # nothing more was taken out or changed: the other four untouched on 1.0, in HAProxy
    assert all("PRE-APPLY" not in record["nodes"][n]["phases"] and
               record["nodes"][n]["lb_calls"] == {"disable": 0, "enable": 0} for n in NODES[1:]), record["nodes"]
    assert node_versions(lab) == {"Node-A": [], **{n: ["1.0"] for n in NODES[1:]}}, node_versions(lab)
    assert_all_in_haproxy(lab, NODES[1:])
    a = record["nodes"]["Node-A"]
    assert a["version"] == "new" and a["rollback"] is None and not record["decisions"], a
    assert a["not_serving"].startswith("gateways/node-a DOWN (check "), a["not_serving"]
    journal = [json.loads(line) for line in (done.run_dir / "journal.jsonl").read_text().splitlines()]
    check = [e for e in journal if e["type"] == "ServingChecked"]
    assert [(c["wave"], c["not_serving"]) for c in check] == [(2, ["Node-A"])], check
    assert "!!! Node-A is NOT SERVING before wave 2, although this run put it back healthy: the load balancer " \
           "shows gateways/node-a DOWN (check " in done.out
    assert "It runs the new version; the run stops here: no other node is taken out" in done.out
    assert "Node-A: on new (/opt/gateway-2.0), in the load balancer, but NOT SERVING when last checked" in done.out
    assert "--limit Node-B,Node-C,Node-D,Node-E" in done.out
    assert_unlocked(lab)


def test_a_script_hook_that_answers_healthy_stops_the_run_too(lab: Lab, tmp_path: Path, profile: Path) -> None:
    """The lab's script hook with ``healthy: true`` (``lb-hook.sh healthy NODE``: exit 1 and the
    HAProxy status when not UP): the canary's 2.0 dies at the pause, the run stops before wave 2."""
    config = lab.write_topology(tmp_path / "topology.yaml", lb="script", extra={
        "ssh": FAST["ssh"], "vars": FAST["vars"], "load_balancer": {"healthy": True}, **CANARY})
    run = start_upgrade(lab, tmp_path, config, profile=profile)
    paused(run)
    lab.exec("Node-A", f"{NEW}/bin/gateway stop --timeout 2")
    wait_until(lambda: lab.server_states()["node-a"]["srv_op_state"] == "0", timeout=10,
               what="Node-A DOWN in HAProxy")
    code, out = run_cli(tmp_path, "continue", log_dir=run.log_dir, name="continue", timeout=30)
    assert code == 0, out
    done = finish(run)
    assert done.status is Status.DEGRADED, done.out
    assert done.record["nodes"]["Node-A"]["not_serving"] == "gateways/node-a DOWN", done.record["nodes"]["Node-A"]
    assert "!!! Node-A is NOT SERVING before wave 2" in done.out
    assert all(done.record["nodes"][n]["lb_calls"] == {"disable": 0, "enable": 0} for n in NODES[1:])
    assert_all_in_haproxy(lab, NODES[1:])
    assert_unlocked(lab)


def test_a_node_that_dies_during_the_soak_stops_the_run(lab: Lab, tmp_path: Path, profile: Path) -> None:
    """``soak: 8``: after Node-A is put back the run watches it before wave 2, asking HAProxy every
    5 s; its 2.0 dies a moment after the put-back, and the look 5 s into the soak finds it DOWN:
    the run stops there (85), 3 s before the soak would have ended, Node-B..E untouched."""
    run = start(lab, tmp_path, profile, {"serial": 1, "soak": 8})
    run.wait_record(lambda r: any(a["node"] == "Node-A" and a["action"] == "enable" and a["ok"]
                                  for a in r["lb_actions"]), "Node-A put back")
    lab.exec("Node-A", f"{NEW}/bin/gateway stop --timeout 2")
    done = finish(run)
    assert done.status is Status.DEGRADED, done.out
    record = done.record
    enabled = next(a for a in record["lb_actions"] if a["node"] == "Node-A" and a["action"] == "enable")
    assert record["ended"] - (enabled["started"] + enabled["duration"]) < 7.5, record["ended"]
    assert "soak: watching the nodes put back for 8s before wave 2" in done.out
    assert "!!! Node-A is NOT SERVING before wave 2" in done.out
    assert all(record["nodes"][n]["lb_calls"] == {"disable": 0, "enable": 0} for n in NODES[1:])
    assert node_versions(lab) == {"Node-A": [], **{n: ["1.0"] for n in NODES[1:]}}, node_versions(lab)
    assert_all_in_haproxy(lab, NODES[1:])
    assert_unlocked(lab)


def test_a_node_lost_at_the_end_skips_after_until_a_resume_finds_it_serving(lab: Lab, tmp_path: Path,
                                                                          profile: Path) -> None:
    """Every node upgraded; during the soak at the end Node-A's 2.0 dies: the run ends DEGRADED
    (85) and its ``after:`` clean-up does not run (it would remove the way back).  The operator
    starts Node-A's 2.0 again; ``--resume`` soaks, finds every node serving, runs ``after:``: 0."""
    after = {"after": [{"name": "clean up", "on": "Node-A", "run": "touch /var/tmp/zdu-after-ran"}],
             "serial": [3, 2], "soak": 6}
    lab.exec("Node-A", "rm -f /var/tmp/zdu-after-ran")
    run = start(lab, tmp_path, profile, after)
    run.wait_record(lambda r: all(r["nodes"][n]["lb_calls"]["enable"] == 1 and r["nodes"][n]["in_lb"]
                                  for n in NODES), "every node put back")
    lab.exec("Node-A", f"{NEW}/bin/gateway stop --timeout 2")
    done = finish(run)
    assert done.status is Status.DEGRADED, done.out
    assert "soak: watching the nodes put back for 6s before the end of the run" in done.out
    assert "!!! Node-A is NOT SERVING at the end of the run" in done.out
    assert done.record["run_phases"]["after"]["outcome"] == "FAILED", done.record["run_phases"]
    assert lab.exec("Node-A", "test -e /var/tmp/zdu-after-ran")[0] != 0          # after: did not run
    assert all(done.record["nodes"][n]["version"] == "new" for n in NODES)
    assert_unlocked(lab)

    node_a = lab.node("Node-A")
    assert lab.exec("Node-A", f"{NEW}/bin/gateway start --host {node_a.host}")[0] == 0
    assert_all_in_haproxy(lab)
    resumed = finish(start_cli(tmp_path, "--resume", done.record["run_id"], log_dir=run.log_dir, name="resume"),
                     timeout=90)
    assert resumed.status is Status.SUCCESS, resumed.out
    assert resumed.record["run_phases"]["after"]["outcome"] == "PASSED"
    assert lab.exec("Node-A", "test -e /var/tmp/zdu-after-ran")[0] == 0
    assert resumed.record["nodes"]["Node-A"]["not_serving"] is None
    assert "  was: Node-A: !!! Node-A is NOT SERVING at the end of the run" in resumed.out
    assert_fleet_settled(lab, resumed, "2.0")
    assert_unlocked(lab)


def test_a_rerun_leaves_the_nodes_already_upgraded_untouched(lab: Lab, tmp_path: Path, profile: Path) -> None:
    """A first run upgrades Node-A and Node-B (``--limit``); the same command again, for the whole
    fleet, finds them on 2.0 (lab-gateway's ``upgraded`` check) and leaves them out: no step, no
    load-balancer call, their 2.0 processes are the same ones; Node-C..E are upgraded."""
    first = finish(start(lab, tmp_path / "first", profile, {"serial": 1}, args=("--limit", "Node-A,Node-B")))
    assert first.status is Status.SUCCESS, first.out
    pids = {n: lab.exec(n, f"{NEW}/bin/gateway status")[1] for n in ("Node-A", "Node-B")}
    assert all("running (pid" in out for out in pids.values()), pids
    done = finish(start(lab, tmp_path / "again", profile, {"serial": 1}))
    assert done.status is Status.SUCCESS, done.out
    record = done.record
    for name in ("Node-A", "Node-B"):
        node = record["nodes"][name]
        assert node["already_upgraded"] and node["skipped"] and node["version"] == "new", node
        assert node["lb_calls"] == {"disable": 0, "enable": 0} and not node["phases"], node
        assert not [s for s in record["steps"] if s["node"] == name], name
        assert lab.exec(name, f"{NEW}/bin/gateway status")[1] == pids[name]          # never restarted
        assert (f"{name}: already on new (/opt/gateway-2.0) when the run began (the profile's upgraded "
                "check): left out, not touched") in done.out
    assert all(record["nodes"][n]["phases"]["POST-APPLY"]["outcome"] == "PASSED" for n in NODES[2:])
    assert_fleet_settled(lab, done, "2.0")
    assert_unlocked(lab)


# --------------------------------------------------------------------------- failure budget

def test_failure_budget_lets_one_bad_node_through(lab: Lab, tmp_path: Path, profile: Path) -> None:
    lab.inject_fault("Node-B", "health")            # 2.0 on Node-B answers 503 on /health
    done = finish(start(lab, tmp_path, profile, {"serial": 2, "max_fail_percentage": 50}))
    assert done.status is Status.PARTIAL and int(done.status) == 82, done.out
    b = done.record["nodes"]["Node-B"]
    assert b["phases"]["POST-APPLY"]["outcome"] == "FAILED" and b["rollback"]["outcome"] == "PASSED", b
    assert [d["node"] for d in done.record["decisions"]] == ["Node-B"], done.record["decisions"]
    # the rest of the fleet went on: every other node upgraded, Node-B on the old version, all in
    assert_versions(lab, done, {"Node-A": "2.0", "Node-B": "1.0", "Node-C": "2.0", "Node-D": "2.0", "Node-E": "2.0"})
    assert all(done.record["nodes"][n]["rollback"] is None for n in NODES if n != "Node-B")
    assert all(done.record["nodes"][n]["in_lb"] for n in NODES)
    assert "Failed within the failure budget and rolled back to the old version: Node-B" in done.out
    assert "within the failure budget of 50%" in done.record["decisions"][0]["reason"]
    assert_all_in_haproxy(lab)
    assert_traffic_clean(done)
    assert_unlocked(lab)


def test_failure_budget_exceeded_stops_the_run(lab: Lab, tmp_path: Path, profile: Path) -> None:
    lab.inject_fault("Node-B", "health")
    done = finish(start(lab, tmp_path, profile, {"serial": 2, "max_fail_percentage": 40}))
    # one of the wave's two nodes failed (50% > 40%): the default policy rolls back the wave
    assert done.status is Status.POST_APPLY_FAILED, done.out
    assert done.rollback_order() == ["Node-B", "Node-A"]
    for name in ("Node-A", "Node-B"):
        assert done.record["nodes"][name]["rollback"]["outcome"] == "PASSED", name
    assert all("PRE-APPLY" not in done.record["nodes"][n]["phases"] for n in ("Node-C", "Node-D", "Node-E"))
    assert_fleet_settled(lab, done, "1.0")
    assert_unlocked(lab)


# --------------------------------------------------------------------------- capacity guard

def test_capacity_guard_refuses_a_wave_after_a_node_went_to_maint(lab: Lab, tmp_path: Path, profile: Path) -> None:
    run = start(lab, tmp_path, profile, {"serial": 2, "min_in_service": 3})
    # wave 1 (Node-A, Node-B) has gone into APPLY: the guard of wave 2 is still to come
    run.wait_record(lambda r: bool(steps_of(r, "Node-A", "APPLY")), "wave 1 in APPLY")
    lab.haproxy_cmd(f"set server {BACKEND}/node-e state maint")     # an operator, or a failing node
    done = finish(run)
    assert done.status is Status.CAPACITY_REFUSED and int(done.status) == 84, done.out
    checks = done.record["capacity"]
    assert [c["ok"] for c in checks] == [True, False], checks
    refused = checks[-1]
    assert (refused["wave"], refused["leaving"], refused["needed"]) == (2, ["Node-C", "Node-D"], 3), refused
    assert "Node-E" not in refused["serving"] and refused["source"] == "the load balancer", refused
    # the wave was not started; the one before it stays upgraded
    assert all("PRE-APPLY" not in done.record["nodes"][n]["phases"] for n in ("Node-C", "Node-D", "Node-E"))
    assert_versions(lab, done, {"Node-A": "2.0", "Node-B": "2.0", "Node-C": "1.0", "Node-D": "1.0", "Node-E": "1.0"})
    assert_all_in_haproxy(lab, ["Node-A", "Node-B", "Node-C", "Node-D"])
    assert lab.server_states()["node-e"]["srv_admin_state"] != "0"    # left as the operator set it
    assert_traffic_clean(done)
    assert_unlocked(lab)


def test_capacity_guard_refuses_at_preflight_with_a_node_already_down(lab: Lab, tmp_path: Path,
                                                                      profile: Path) -> None:
    lab.exec("Node-E", f"{OLD}/bin/gateway stop --timeout 2")
    wait_until(lambda: lab.server_states()["node-e"]["srv_op_state"] == "0", timeout=10,
               what="Node-E DOWN in HAProxy")
    done = finish(start(lab, tmp_path, profile, {"serial": 1, "min_in_service": 4}))
    # refused by preflight before anything changed, with the capacity guard's own status
    assert done.status is Status.CAPACITY_REFUSED, done.out
    assert "preflight found 4 problem(s); nothing was changed" in done.out
    for wave, node in enumerate(NODES[:4], 1):
        assert (f"capacity guard: wave {wave} ({node}) would leave 3 of 5 node(s) in service, at least 4 must "
                "(per the load balancer; not serving now: Node-E)") in done.out
    assert done.record["steps"] == [] and all(
        done.record["nodes"][n]["lb_calls"] == {"disable": 0, "enable": 0} for n in NODES), done.record["steps"]
    assert node_versions(lab) == {**{n: ["1.0"] for n in NODES[:4]}, "Node-E": []}
    assert_all_in_haproxy(lab, NODES[:4])
    assert_unlocked(lab)


# --------------------------------------------------------------------------- repair after a lost node

def lose_sshd(lab: Lab, name: str) -> None:
    """Kill the node's sshd listener and its sessions: the run's connection drops, the gateway
    processes live on (as the fault matrix's sshd-killed cells do)."""
    lab.kill_sshd(name)
    lab.exec(name, "pkill -KILL -x sshd; pkill -KILL -x sshd-session; true")


def test_node_lost_mid_apply_is_repaired_by_resume(lab: Lab, tmp_path: Path, profile: Path) -> None:
    lab.inject_fault("Node-B", "hang-start")        # Node-B's 2.0 start hangs ...
    run = start(lab, tmp_path, profile, {"serial": 1})
    run.wait_record(step_running("Node-B", "APPLY", "start new gateway"), "Node-B starting 2.0")
    lose_sshd(lab, "Node-B")                        # ... and its sshd dies meanwhile
    lost = finish(run)
    assert lost.status is Status.ROLLBACK_FAILED, lost.out
    b = lost.record["nodes"]["Node-B"]
    assert b["rollback"]["outcome"] == "FAILED" and b["in_lb"] is False, b
    assert lost.record["nodes"]["Node-A"]["rollback"]["outcome"] == "PASSED"
    assert "Node-B is OUT OF THE LOAD BALANCER" in lost.out
    assert lab.server_states()["node-b"]["srv_admin_state"] != "0"      # kept out: it runs nothing known
    assert_traffic_clean(lost)                      # Node-B was out of rotation when it was lost
    assert lab.exec("Node-B", f"test -d {LOCK}")[0] == 0                 # its lock could not be released

    # the operator brings Node-B's sshd back (and clears what hung); nothing else is repaired by hand
    lab.clear_faults("Node-B")
    lab.exec("Node-B", "pkill -KILL -f '/opt/gateway-[0-9.]+/bin/gatewa[y] start'; true")
    assert lab.exec("Node-B", "systemctl start zdu-sshd.service")[0] == 0
    node_b = lab.node("Node-B")
    wait_until(lambda: ssh_banner(node_b.host, node_b.ssh_port), timeout=10, what="Node-B's sshd back")
    repaired = finish(start_cli(tmp_path, "--resume", lost.record["run_id"], log_dir=run.log_dir, name="resume"),
                      timeout=90)
    record = repaired.record
    assert "repairing: Node-B" in repaired.out, repaired.out
    assert repaired.status is Status.APPLY_FAILED, repaired.out    # the run failed; now fully rolled back
    assert len(record["resumed"]) == 1 and record["nodes"]["Node-B"]["rollback"]["outcome"] == "PASSED"
    # only the unfinished work ran: Node-B's rollback and its way back into HAProxy
    again = [(s["node"], s["phase"]) for s in record["steps"] if s["started"] >= record["resumed"][0]]
    assert again and set(again) == {("Node-B", "ROLLBACK")}, again
    # no waiting out health gates: each run ended in seconds, bounded by the connect timeouts
    for done in (lost, repaired):
        assert done.record["ended"] - done.record["started"] < 45, done.out[-2000:]
    assert record["ended"] - record["resumed"][0] < 20, record["resumed"]
    assert_fleet_settled(lab, repaired, "1.0")      # every node on 1.0, all in HAProxy, no request failed
    assert_unlocked(lab)
    assert "Node-B: on old (/opt/gateway-1.0), in the load balancer" in repaired.out
    # what the first attempt warned about is history now, not a warning about the fleet
    assert not [line for line in repaired.out.splitlines() if line.startswith("WARNING: ")], repaired.out[-2500:]
    assert "  was: Node-B: !!! Node-B is OUT OF THE LOAD BALANCER" in repaired.out
