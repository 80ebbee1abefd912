"""The fault matrix: {fault} x {phase} on the lab, with HAProxy and traffic running.

Every cell runs ``zdupgrade`` as a real process against the 3-node lab with a fault on Node-B
(the 2nd node), then checks what the operator would check: the exit status, the rollback
decision and its reason (console summary and run.json), what really runs on every node, what
HAProxy really does with every server, run.json's per-node state, and -- where the nodes stay
reachable -- that not one request through the load balancer failed.

Faults (columns of ``CELLS``):

* ``fail``: the phase's lab fault word makes its gateway command exit 1 (POST-APPLY: /health 503).
* ``hang``: ``hang-<word>``; the command runs into its timeout (POST-APPLY: /health never answers,
  so the health gate runs into its deadline).
* ``sshd-killed``: ``hang-<word>``, then every sshd of Node-B is killed while the step runs --
  the listener *and* the session processes, so the connection the run holds drops (the
  "dropped connection" of issue 4; killing only the listener would leave the reused connection
  working and test nothing).  The gateway processes keep running.
* ``paused``: ``hang-<word>``, then ``docker pause`` (the node stops answering, nothing refuses).
* ``killed``: ``hang-<word>``, then ``docker kill`` (PID 1 dies: every process is gone).
* ``lb-fail``: the load-balancer hook fails (see ``LB_CELLS``).
* ``sigkill-resume``: ``hang-<word>``, SIGKILL the zdupgrade process while the step runs, clear
  the fault and kill the hung command on the node, then ``zdupgrade --resume``.

What each cell ends with (exit status; decision on Node-B)::

                    EXPORT     UPGRADE    PRE-APPLY     APPLY         POST-APPLY
    fail            70 ABORT   71 ABORT   72 RB_ALL     73 RB_ALL     74 RB_ALL
    hang            70 ABORT   71 ABORT   72 RB_ALL     73 RB_ALL     74 RB_ALL
    sshd-killed     70 ABORT   71 ABORT   75 RB_ALL     75 RB_ALL     75 RB_ALL
    paused          70 ABORT   71 ABORT   75 RB_ALL     75 RB_ALL     75 RB_ALL
    killed          70 ABORT   71 ABORT   75 RB_ALL     75 RB_ALL     75 RB_ALL
    lb-fail         78 -       78 -       73 RB_ALL     73 RB_ALL     74 RB_ALL
    sigkill-resume   0          0          0             0             0

(RB_ALL = ROLLBACK_ALL: Node-B, then Node-A; 75 = Node-B itself could not be rolled back.)
Zero failed requests is required wherever Node-B stays reachable, and also where it is lost
while out of rotation or keeps serving (sshd killed); only a node frozen or crashed while in
rotation may cost requests (HAProxy's health checks take it out).

The lab profile's own step timeouts (60 s) and gate deadlines would make every hang a minute
long, so the cells run a copy of ``lab-gateway`` with only its timeouts and deadlines shortened
(``fast_profile``); steps and commands are the real ones.
"""
from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from tests.support.runs import latest_record, step_running as running_step, wait_record as wait_for_record
from zdu.lab.fleet import Lab, wait_until
from zdu.config.profile import BUILTIN_DIR

ROOT = Path(__file__).resolve().parents[2]
OLD, NEW = "/opt/gateway-1.0", "/opt/gateway-2.0"
NODES = ["Node-A", "Node-B", "Node-C"]
FAULTY = "Node-B"
PHASES = ["EXPORT", "UPGRADE", "PRE-APPLY", "APPLY", "POST-APPLY"]
#: the lab gateway's fault word that fails (or, as hang-<word>, hangs) each phase
WORD = {"EXPORT": "export", "UPGRADE": "upgrade", "PRE-APPLY": "check", "APPLY": "start", "POST-APPLY": "health"}
#: the step of Node-B that hangs with hang-<word> (APPLY: starting 2.0; POST-APPLY: the /health gate)
HUNG_STEP = {"EXPORT": "export configuration", "UPGRADE": "convert configuration",
             "PRE-APPLY": "check new configuration", "APPLY": "start new gateway",
             "POST-APPLY": "new gateway healthy"}
STATUS = {"EXPORT": 70, "UPGRADE": 71, "PRE-APPLY": 72, "APPLY": 73, "POST-APPLY": 74}
ROLLBACK_FAILED, CONFIG_ERROR, SUCCESS = 75, 78, 0
#: a whole run must end within this, whatever the fault (the run "never hangs")
RUN_BOUND = 150.0

TOPOLOGY_EXTRA: dict[str, Any] = {
    "ssh": {"command_timeout": 4, "connect_timeout": 2, "connect_retries": 1},
    # the gateway's graceful stop must end inside the 4 s command timeout: a 2.0 whose /health
    # hangs holds its request threads, and "gateway stop" waits stop_timeout for them
    "vars": {"stop_timeout": 2},
}
HAPROXY_EXTRA: dict[str, Any] = {"load_balancer": {"drain_timeout": 5, "up_timeout": 5}}


# --------------------------------------------------------------------------- expectations

@dataclass(frozen=True)
class Cell:
    """What one cell must end with."""

    fault: str
    phase: str
    status: int
    action: str | None                 # the policy's decision (None: no decision, e.g. preflight refused)
    failed_phase: str | None = None    # the phase Node-B fails in (the conductor's attribution)
    classification: str | None = None  # run.json classification of that failure
    rollback: dict[str, str] = field(default_factory=dict)  # node -> rollback outcome in run.json
    reachable: bool = True             # Node-B stays reachable: zero failed requests required
    b_versions: list[str] | None = field(default_factory=lambda: ["1.0"])  # on Node-B at the end (None: cannot look)
    b_in_lb: bool = True               # run.json (and HAProxy admin state) of Node-B at the end
    b_version_word: str = "old"        # run.json's record of Node-B's version

    @property
    def zero_failures(self) -> bool:
        """Not one request may fail: Node-B stays up, or is lost while out of rotation, or
        keeps serving (only its sshd died)."""
        return (self.reachable or self.fault == "sshd-killed"
                or (self.phase in ("APPLY", "POST-APPLY") and not self.b_in_lb))

    @property
    def id(self) -> str:
        return f"{self.fault}-{self.phase}"


ROLLED_BACK = {"Node-B": "PASSED", "Node-A": "PASSED"}


def _reachable_cells(fault: str) -> list[Cell]:
    """fail / hang: the failing node stays up; offline phases abort, online ones roll everything back."""
    cells = []
    for phase in PHASES:
        offline = phase in ("EXPORT", "UPGRADE")
        classification = "failed" if fault == "fail" else "timeout"
        if fault == "hang" and phase == "POST-APPLY":
            # POST-APPLY's hang is a /health that never answers: the health gate polls it until its
            # deadline and judges the node unhealthy -- a failed gate, whose message says "timed out"
            classification = "failed"
        cells.append(Cell(fault, phase, STATUS[phase], "ABORT" if offline else "ROLLBACK_ALL", phase,
                          classification, {} if offline else ROLLED_BACK))
    return cells


def _lost_node_cells(fault: str) -> list[Cell]:
    """sshd-killed / paused / killed: Node-B is lost in the middle of its hung step."""
    cells = []
    # a hung command on a paused node cannot be killed or answered: it ends by its timeout;
    # a dropped connection (sshd or the whole node killed) ends it at once as unreachable
    # (a frozen node and a lost network look alike from the control machine: on a busy machine the
    # paused node's connection may be judged dead before the command's timeout -- either is right)
    lost = "timeout|unreachable" if fault == "paused" else "unreachable"
    can_look = fault == "sshd-killed"    # docker exec still works on Node-B
    for phase in PHASES:
        if phase in ("EXPORT", "UPGRADE"):
            # nothing running was changed: abort, Node-B stays as it was (in traffic if it serves)
            cells.append(Cell(fault, phase, STATUS[phase], "ABORT", phase, lost, {}, reachable=False,
                              b_versions=["1.0"] if can_look else None))
            continue
        # the failed node itself cannot be rolled back: ROLLBACK_FAILED; Node-A is rolled back
        classification = lost if phase != "POST-APPLY" else "failed"  # POST-APPLY: the /health gate
        versions = {"PRE-APPLY": ["1.0"], "APPLY": [], "POST-APPLY": ["2.0"]}[phase]
        cells.append(Cell(fault, phase, ROLLBACK_FAILED, "ROLLBACK_ALL", phase, classification,
                          {"Node-B": "FAILED", "Node-A": "PASSED"}, reachable=False,
                          b_versions=versions if can_look else None,
                          # PRE-APPLY: Node-B was never taken out of the load balancer
                          b_in_lb=phase == "PRE-APPLY",
                          # APPLY: stopped 1.0, never started 2.0; POST-APPLY: 2.0 runs and the
                          # rollback could not run a single step
                          b_version_word={"PRE-APPLY": "old", "APPLY": "unknown", "POST-APPLY": "new"}[phase]))
    return cells


#: lb-fail: how the hook fails in each column
LB_CELLS = {
    # The offline phases never call the load balancer, so "the hook fails" there can only mean it
    # is unusable when the run starts: preflight refuses it before anything is touched.
    "EXPORT": "haproxy runtime API socket that does not exist",
    "UPGRADE": "script hook that does not exist",
    # The disable sits between PRE-APPLY and APPLY and counts as APPLY's failure (APPLY_FAILED).
    "PRE-APPLY": "disable of Node-B fails before doing anything (Node-B never leaves rotation)",
    "APPLY": "disable of Node-B fails after draining it (Node-B is out, the hook says it failed)",
    # The enable after POST-APPLY: the hook puts Node-B back in rotation, then reports failure
    # (like lb-hook.sh when its wait for UP gives up): the conductor cannot know it is in.
    "POST-APPLY": "enable of Node-B fails after putting it back in rotation",
}


def _lb_cells() -> list[Cell]:
    return [
        Cell("lb-fail", "EXPORT", CONFIG_ERROR, None),
        Cell("lb-fail", "UPGRADE", CONFIG_ERROR, None),
        Cell("lb-fail", "PRE-APPLY", STATUS["APPLY"], "ROLLBACK_ALL", "APPLY", "lb", ROLLED_BACK),
        Cell("lb-fail", "APPLY", STATUS["APPLY"], "ROLLBACK_ALL", "APPLY", "lb", ROLLED_BACK),
        Cell("lb-fail", "POST-APPLY", STATUS["POST-APPLY"], "ROLLBACK_ALL", "POST-APPLY", "lb", ROLLED_BACK),
    ]


def _resume_cells() -> list[Cell]:
    return [Cell("sigkill-resume", phase, SUCCESS, None, b_versions=["2.0"], b_version_word="new")
            for phase in PHASES]


CELLS = (_reachable_cells("fail") + _reachable_cells("hang") + _lost_node_cells("sshd-killed")
         + _lost_node_cells("paused") + _lost_node_cells("killed") + _lb_cells() + _resume_cells())


# --------------------------------------------------------------------------- running zdupgrade

def fast_profile(path: Path, step_timeout: float = 5) -> Path:
    """lab-gateway with short step timeouts and gate deadlines (same steps, same commands)."""
    doc = yaml.safe_load((BUILTIN_DIR / "lab-gateway.yaml").read_text())
    sections = [*doc["phases"].values(), doc["smoke"], *doc["rollback"].values()]
    for steps in sections:
        for step in steps:
            if "timeout" in step:
                step["timeout"] = step_timeout
            if "wait" in step:
                # the new side's health gate is POST-APPLY's hung step (hang-health): it gets as
                # long as a hung command, less a second
                step["wait"]["deadline"] = min(step["wait"]["deadline"], max(4, step_timeout - 1)
                                               if "health" in step["name"] and "new" in step["name"] else 15)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@dataclass
class Run:
    proc: subprocess.Popen[str]
    log_dir: Path
    output: Path

    def wait(self, timeout: float = RUN_BOUND) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"zdupgrade did not finish within {timeout:g}s (it hung):\n{self.text()[-4000:]}")

    def text(self) -> str:
        return self.output.read_text(errors="replace")


def zdupgrade(tmp_path: Path, *args: str, name: str = "run") -> Run:
    log_dir = tmp_path / "logs"
    output = tmp_path / f"{name}.out"
    with output.open("w") as out:
        proc = subprocess.Popen([sys.executable, str(ROOT / "zdupgrade"), *args, "--log_dir", str(log_dir)],
                                stdout=out, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    return Run(proc, log_dir, output)


def start(lab: Lab, tmp_path: Path, *, lb: str = "haproxy", lb_extra: dict[str, Any] | None = None,
          step_timeout: float = 5) -> Run:
    extra = {**TOPOLOGY_EXTRA, **(HAPROXY_EXTRA if lb == "haproxy" else {})}
    if lb_extra:
        extra["load_balancer"] = {**extra.get("load_balancer", {}), **lb_extra}
    config = lab.write_topology(tmp_path / "topology.yaml", lb=lb, extra=extra)  # type: ignore[arg-type]
    profile = fast_profile(tmp_path / "lab-gateway-fast.yaml", step_timeout)
    return zdupgrade(tmp_path, "--old_install_dir", OLD, "--new_install_dir", NEW, "--config", str(config),
                     "--profile", str(profile), "--traffic", f"{lab.frontend_url}/", "--traffic-rate", "100")


def record(log_dir: Path) -> dict[str, Any]:
    return latest_record(log_dir)


def wait_record(run: Run, predicate: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
    return wait_for_record(run.log_dir, predicate, what, proc=run.proc, describe=run.text)


def step_running(phase: str) -> Callable[[dict[str, Any]], bool]:
    """Node-B's hung step of ``phase`` has started and not ended."""
    return running_step(FAULTY, phase, HUNG_STEP[phase])


# --------------------------------------------------------------------------- load-balancer hook

def failing_hook(lab: Lab, tmp_path: Path, action: str, when: str) -> Path:
    """A script hook that drives the lab's HAProxy through the lab's lb-hook.sh, except that the
    first ``action`` of Node-B fails: ``before`` doing anything, or ``after`` doing it."""
    hook = tmp_path / "lb-hook-failing.sh"
    marker = tmp_path / "lb-hook-failed-once"
    hook.write_text(f"""#!/bin/sh
# zdu.lb.script convention: HOOK ACTION NODE, server in $ZDU_LB_SERVER
if [ "$1" = {action} ] && [ "$2" = {FAULTY} ] && [ ! -e {marker} ]; then
    : > {marker}
    {'"' + str(lab.lb_script) + '" "$@" || exit 3' if when == 'after' else ':'}
    echo "injected load-balancer failure: $1 $2 ({when} acting)" >&2
    exit 1
fi
exec "{lab.lb_script}" "$@"
""")
    hook.chmod(0o755)
    return hook


# --------------------------------------------------------------------------- placing the faults

def lose_node(lab: Lab, fault: str) -> None:
    if fault == "sshd-killed":
        lab.kill_sshd(FAULTY)
        # and the session processes: the connection zdupgrade holds drops
        lab.exec(FAULTY, "pkill -KILL -x sshd; pkill -KILL -x sshd-session; true")
    elif fault == "paused":
        lab.pause(FAULTY)
    elif fault == "killed":
        lab.kill(FAULTY)
    else:
        raise ValueError(fault)


def kill_hung_commands(lab: Lab) -> None:
    lab.exec(FAULTY, "pkill -KILL -f '/opt/gateway-[0-9.]+/bin/gatewa[y] (export|upgrade|check|start)'; true")


# --------------------------------------------------------------------------- checks

def servers_settled(lab: Lab, nodes: list[str], timeout: float = 15.0) -> dict[str, dict[str, str]]:
    """Wait until every node's server is READY (admin 0) and UP (op 2) in HAProxy."""
    names = [lab.node(n).lb_server for n in nodes]

    def check() -> dict[str, dict[str, str]] | None:
        states = lab.server_states()
        ok = all(states[s]["srv_admin_state"] == "0" and states[s]["srv_op_state"] == "2" for s in names)
        return states if ok else None
    try:
        return wait_until(check, timeout=timeout, interval=0.1, what="servers ready and UP")
    except Exception:
        raise AssertionError(f"not every one of {nodes} is ready and UP in HAProxy: {lab.server_states()}")


def decision_line(data: dict[str, Any]) -> str:
    d = data["decisions"][0]
    return f"  - {d['node']} {d['phase']}: {d['action']}: {d['reason']}"


def assert_traffic_clean(data: dict[str, Any], out: str) -> None:
    traffic = data.get("traffic")
    assert traffic, f"no traffic report in run.json:\n{out[-3000:]}"
    assert traffic["sent"] >= 10, traffic["summary_line"]   # an offline failure ends in under a second
    assert traffic["failed"] == 0, (traffic["summary_line"], traffic.get("first_failures"))


def check_outcome(lab: Lab, cell: Cell, code: int, out: str, data: dict[str, Any]) -> None:
    ctx = f"\n--- output ---\n{out[-6000:]}"
    assert code == cell.status, f"exit {code}, expected {cell.status}{ctx}"
    assert data["status"]["code"] == cell.status, data["status"]
    # the decision and its reason: in run.json and in the console summary
    if cell.action is None:
        assert data["decisions"] == [], data["decisions"]
    else:
        decision = data["decisions"][0]
        assert (decision["node"], decision["phase"], decision["action"]) == \
            (FAULTY, cell.failed_phase, cell.action), decision
        allowed = (cell.classification or "").split("|")
        assert any(f"({c})" in decision["reason"] for c in allowed), decision
        assert decision_line(data) in out, f"decision not in the summary{ctx}"
        b = data["nodes"][FAULTY]["phases"][cell.failed_phase]
        assert b["outcome"] == "FAILED" and b["classification"] in allowed, b
    rollbacks = {n: s["rollback"]["outcome"] for n, s in data["nodes"].items() if s["rollback"]}
    assert rollbacks == cell.rollback, rollbacks
    if cell.rollback:   # newest first: the failed node, then the one switched before it
        started = [line.split("[", 1)[1].split("]", 1)[0] for line in out.splitlines() if "ROLLBACK started" in line]
        assert started == ["Node-B", "Node-A"], started
    # Node-C, after the failed node, was never touched online; the table says so
    if cell.status:
        row_c = next(line for line in out.splitlines() if line.startswith("| Node-C "))
        assert [c.strip() for c in row_c.strip("|").split("|")][3:] == ["*", "*", "*", "*"], row_c
        assert "Node-C" not in [s["node"] for s in data["steps"] if s["phase"] in ("PRE-APPLY", "APPLY")]
    # the fleet: reachable nodes on exactly one version, back in HAProxy, and run.json agrees
    expected = {"Node-A": "1.0", "Node-C": "1.0"} if cell.status else {"Node-A": "2.0", "Node-C": "2.0"}
    for name, version in expected.items():
        assert lab.running_versions(name) == [version], (name, lab.running_versions(name))
        assert lab.served_version(name) == version, name
        state = data["nodes"][name]
        assert state["in_lb"] is True, (name, state)
        assert state["version"] == ("new" if version == "2.0" else "old"), (name, state["version"])
        assert state["lb_calls"]["disable"] == state["lb_calls"]["enable"], (name, state["lb_calls"])
    b_state = data["nodes"][FAULTY]
    assert b_state["in_lb"] is cell.b_in_lb, b_state
    if cell.reachable:
        # every disable has its enable -- and a rollback never stops a node that may take traffic
        assert b_state["lb_calls"]["disable"] == b_state["lb_calls"]["enable"], b_state["lb_calls"]
    assert b_state["version"] == cell.b_version_word, b_state
    if cell.b_versions is not None:
        assert lab.running_versions(FAULTY) == cell.b_versions, lab.running_versions(FAULTY)
    in_haproxy = list(expected) + ([FAULTY] if cell.reachable else [])
    states = servers_settled(lab, in_haproxy)
    if not cell.b_in_lb:
        # a lost node taken out stays out (MAINT): not routable, and said loudly
        assert states["node-b"]["srv_admin_state"] != "0", states["node-b"]
        assert f"{FAULTY} is OUT OF THE LOAD BALANCER" in out, ctx
    if not cell.reachable:
        # the lost node is reported: its failed rollback in the table, and a warning naming it
        row = next(line for line in out.splitlines() if line.startswith(f"| {FAULTY} "))
        if cell.rollback:
            assert row.rstrip(" |").endswith("FAILED (unreachable)"), row
        assert any(line.startswith(f"WARNING: {FAULTY}") or line.startswith(f"WARNING: !!! {FAULTY}")
                   for line in out.splitlines()), ctx
        # its fleet lock could not be given back: said, with what to remove once it is back; the
        # reachable nodes' locks are gone
        assert any(w.startswith(f"{FAULTY}: lock not released") and "/var/tmp/zdupgrade/lock" in w
                   for w in data["warnings"]), data["warnings"]
        for name in expected:
            assert lab.exec(name, "test -e /var/tmp/zdupgrade/lock")[0] != 0, f"{name} still locked"
    assert "Traceback" not in out, ctx
    if cell.zero_failures and cell.status != CONFIG_ERROR:
        assert_traffic_clean(data, out)


# --------------------------------------------------------------------------- the matrix

@pytest.mark.parametrize("cell", CELLS, ids=[c.id for c in CELLS])
def test_fault_matrix(fresh_lab: Lab, tmp_path: Path, cell: Cell) -> None:
    lab = fresh_lab
    if cell.fault == "sigkill-resume":
        return _sigkill_resume(lab, tmp_path, cell)
    if cell.fault == "lb-fail":
        run = _start_lb_fail(lab, tmp_path, cell)
    elif cell.fault == "fail":
        lab.inject_fault(FAULTY, WORD[cell.phase])
        run = start(lab, tmp_path)
    else:
        lab.inject_fault(FAULTY, f"hang-{WORD[cell.phase]}")
        # a node lost mid-step: the step must still hang when the node is lost (a 5 s timeout
        # was once over before `docker pause` took effect on a loaded CI machine)
        run = start(lab, tmp_path, step_timeout=5 if cell.fault == "hang" else 12)
        if cell.fault != "hang":
            wait_record(run, step_running(cell.phase), f"{FAULTY} hung in {cell.phase}")
            lose_node(lab, cell.fault)
    started = time.monotonic()
    code = run.wait()
    out = run.text()
    data = record(run.log_dir)
    if cell.fault in ("sshd-killed", "paused", "killed"):
        # bounded by the timeouts, not by the fault: lost-node handling must not take minutes
        assert time.monotonic() - started < 90, f"took {time.monotonic() - started:.0f}s"
    if cell.status == CONFIG_ERROR:
        return _check_refused(lab, cell, code, out, data)
    check_outcome(lab, cell, code, out, data)


def _start_lb_fail(lab: Lab, tmp_path: Path, cell: Cell) -> Run:
    if cell.phase == "EXPORT":
        return start(lab, tmp_path, lb="haproxy", lb_extra={"socket": str(tmp_path / "no-such" / "haproxy.sock")})
    if cell.phase == "UPGRADE":
        return start(lab, tmp_path, lb="script", lb_extra={"path": str(tmp_path / "no-such-hook.sh")})
    action, when = {"PRE-APPLY": ("disable", "before"), "APPLY": ("disable", "after"),
                    "POST-APPLY": ("enable", "after")}[cell.phase]
    hook = failing_hook(lab, tmp_path, action, when)
    return start(lab, tmp_path, lb="script", lb_extra={"path": str(hook), "timeout": 30})


def _check_refused(lab: Lab, cell: Cell, code: int, out: str, data: dict[str, Any]) -> None:
    """Preflight refused the load balancer: a clear error, nothing touched."""
    assert code == cell.status, out
    assert "preflight found" in out and "nothing was changed" in out, out
    assert "load balancer" in out and ("no-such" in out), out
    assert data["status"]["name"] == "CONFIG_ERROR" and data["steps"] == [] and data["decisions"] == [], data
    assert all(data["nodes"][n]["lb_calls"] == {"disable": 0, "enable": 0} for n in NODES)
    for name in NODES:
        assert lab.running_versions(name) == ["1.0"], name
        assert lab.exec(name, "test -e /var/tmp/zdupgrade/lock")[0] != 0, f"{name} was locked"
    servers_settled(lab, NODES)


def _sigkill_resume(lab: Lab, tmp_path: Path, cell: Cell) -> None:
    lab.inject_fault(FAULTY, f"hang-{WORD[cell.phase]}")
    run = start(lab, tmp_path)
    wait_record(run, step_running(cell.phase), f"{FAULTY} hung in {cell.phase}")
    run.proc.kill()                      # SIGKILL: no cleanup at all
    run.proc.wait(timeout=10)
    killed = record(run.log_dir)
    assert killed["status"] is None
    done_before = {s["key"] for s in killed["steps"] if s["ended"] is not None and not s["error"]}
    # the operator clears the problem on the node, then resumes
    lab.clear_faults(FAULTY)
    kill_hung_commands(lab)
    resumed = zdupgrade(tmp_path, "--resume", name="resume")
    code = resumed.wait()
    out = resumed.text()
    assert code == SUCCESS, out[-6000:]
    assert "resuming run" in out
    data = record(run.log_dir)
    assert data["status"]["name"] == "SUCCESS" and len(data["resumed"]) == 1, data["status"]
    assert data["decisions"] == []
    rows = [line for line in out.splitlines() if line.startswith("| Node-")]
    assert len(rows) == 3 and all(row.count("PASSED (0)") == 5 for row in rows), rows
    # nothing finished before the kill ran again: no node was upgraded twice
    keys = [s["key"] for s in data["steps"]]
    again = sorted(k for k in done_before if keys.count(k) != 1)
    assert not again, f"steps run again after the resume: {again}"
    starts = [s["node"] for s in data["steps"] if (s["phase"], s["name"]) == ("APPLY", "start new gateway")]
    assert all(starts.count(n) == 1 for n in NODES if n != FAULTY), starts
    for name in NODES:
        assert lab.running_versions(name) == ["2.0"], (name, lab.running_versions(name))
        state = data["nodes"][name]
        assert state["in_lb"] is True and state["version"] == "new", (name, state)
        assert state["lb_calls"] == {"disable": 1, "enable": 1}, (name, state["lb_calls"])
    servers_settled(lab, NODES)
    # traffic restarted with the resumed run (from the stored invocation): not one request failed
    assert data["invocation"]["traffic"] == f"{lab.frontend_url}/"
    assert_traffic_clean(data, out)
    # the fleet lock was released on every node, and the finished run cannot be resumed again
    for name in NODES:
        assert lab.exec(name, "test -e /var/tmp/zdupgrade/lock")[0] != 0, f"{name} still locked"
    again = zdupgrade(tmp_path, "--resume", name="again")
    assert again.wait() == CONFIG_ERROR and "already finished with SUCCESS" in again.text()
