"""Health gates against a real lab node, through the real SSH handler.

Each wait is declared the way a user declares it (a profile dict read by
``zdu.profile.parse_profile``), rendered by ``zdu.plan.build_plan`` (so node-side
waits run the exact poll command the plan renders) and run by ``zdu.waits.run_wait``
with the node's :class:`~zdu.transport.ssh.SshHandler`.  For every kind -- command,
http (from the node and from the control machine), tcp, process running / exited,
log -- the gate passes when its condition holds, and fails once its deadline has
passed when it does not (returning within the deadline plus a margin).
"""
from __future__ import annotations

import time
import uuid
from typing import Any, Callable, Iterator

import pytest

from zdu.transport import make_handler
from zdu.transport.base import CommandHandler
from zdu.lab.fleet import Lab
from zdu.model import CommandResult, SshSettings, Topology, frozen_map
from zdu.planning.plan import PlannedWait, build_plan
from zdu.config.profile import parse_profile
from zdu.status import Phase
from zdu.run.waits import NODE_SPAN, WaitOutcome, run_wait

NODE = "Node-A"
OLD, NEW = "/opt/gateway-1.0", "/opt/gateway-2.0"
DEADLINE = 2.0          # of the gates that must fail
MARGIN = 5.0            # a failed gate returns by deadline + MARGIN (one check may take up to ~5 s)
GATEWAY = "{{ old_install_dir|ere }}/bin/gateway serve"      # the 1.0 gateway's server process
GATEWAY_LOG = "{{ old_install_dir }}/logs/gateway.log"


class Gates:
    """Renders and runs health gates on one lab node."""

    def __init__(self, lab: Lab, handler: CommandHandler) -> None:
        self.lab = lab
        self.handler = handler
        self.node = lab.node(NODE).model()
        # the node's gateway port as a topology variable, as the lab profile has it
        self.topology = Topology(nodes=(self.node,), ssh=settings(lab), vars=frozen_map({"service_port": 8080}),
                                 source="test_waits")

    def plan(self, wait: dict[str, Any]) -> PlannedWait:
        """The rendered gate of ``wait`` (a profile's ``wait:`` mapping) for the node."""
        profile = parse_profile({"name": "waits", "phases": {"APPLY": [{"name": "gate", "wait": wait}]},
                                 "rollback": {"APPLY": ["true"]}}, source="test_waits")
        plan = build_plan(self.topology, profile, old_install_dir=OLD, new_install_dir=NEW, run_id="waits")
        step = plan.node_plan(NODE).phases[Phase.APPLY][0]
        assert step.kind == "wait" and step.wait is not None
        return step.wait

    def run(self, wait: dict[str, Any], stop: Callable[[], bool] = lambda: False
            ) -> tuple[WaitOutcome, float, PlannedWait]:
        planned = self.plan(wait)
        self.round_trips = 0

        def on_node(command: str, timeout: float) -> CommandResult:
            self.round_trips += 1
            return self.handler.run(command, timeout=timeout)
        start = time.monotonic()
        outcome = run_wait(planned, run_on_node=on_node, stop=stop)
        return outcome, time.monotonic() - start, planned

    def passes(self, wait: dict[str, Any]) -> WaitOutcome:
        outcome, elapsed, planned = self.run({"deadline": 20, "interval": 0.2, **wait})
        assert outcome.ok, (outcome, planned.target)
        assert elapsed < planned.deadline and outcome.waited <= elapsed
        return outcome

    def fails(self, wait: dict[str, Any]) -> WaitOutcome:
        outcome, elapsed, planned = self.run({"deadline": DEADLINE, "interval": 0.2, **wait})
        assert not outcome.ok, (outcome, planned.target)
        assert outcome.polls >= 2, outcome                          # it kept polling ...
        assert outcome.waited >= DEADLINE, outcome                  # ... until the deadline ...
        assert elapsed < DEADLINE + MARGIN, (elapsed, outcome)      # ... and then gave up
        assert f"deadline {DEADLINE:g}s" in outcome.message, outcome
        return outcome


def settings(lab: Lab) -> SshSettings:
    return SshSettings(user="root", key_file=str(lab.key_file), known_hosts=str(lab.known_hosts),
                       host_key_policy="strict", connect_timeout=5, command_timeout=60)


@pytest.fixture(scope="module")
def gates(lab: Lab) -> Iterator[Gates]:
    lab.reset()                 # gateway 1.0 running on every node, no faults
    handler = make_handler(lab.node(NODE).model(), settings(lab))
    try:
        yield Gates(lab, handler)
    finally:
        handler.close()


def url(path: str = "/") -> str:
    return "http://{{ node.host }}:{{ service_port }}" + path


# ---------------------------------------------------------------------------- command

def test_command(gates: Gates) -> None:
    outcome = gates.passes({"command": "test -x {{ old_install_dir }}/bin/gateway"})
    assert outcome.polls == 1 and outcome.message == "exit 0"
    failed = gates.fails({"command": "test -e {{ new_install_dir }}/no-such-file"})
    assert "exit 1" in failed.message


def test_command_is_shell_quoted_and_runs_on_the_node(gates: Gates) -> None:
    planned = gates.plan({"command": "test -d {{ old_install_dir }}"})
    assert planned.where == "node" and planned.target == f"test -d {OLD}"
    # the node, not the control machine: /opt/gateway-1.0 exists only in the container
    gates.passes({"command": "test \"$(cat {{ old_install_dir }}/VERSION)\" = 1.0"})


# ---------------------------------------------------------------------------- http

@pytest.mark.parametrize("where", ["node", "control"])
def test_http(gates: Gates, where: str) -> None:
    outcome = gates.passes({"http": url("/health"), "status": 200, "body": '"version": "1.0"', "where": where})
    assert "status 200" in outcome.message
    # wrong status: /nope answers 404
    assert "status 404, expected 200" in gates.fails({"http": url("/nope"), "status": 200, "where": where}).message
    # right status, wrong body: this node still serves 1.0
    assert "body does not match" in gates.fails(
        {"http": url("/"), "status": 200, "body": '"version": "2.0"', "where": where}).message
    # nothing listening
    gates.fails({"http": "http://{{ node.host }}:8099/", "status": 200, "where": where})


def test_http_from_the_node_runs_curl_there(gates: Gates) -> None:
    planned = gates.plan({"http": url("/health"), "where": "node"})
    host = gates.lab.node(NODE).host
    assert planned.where == "node" and planned.target.startswith("curl ")
    assert f"http://{host}:8080/health" in planned.target


# ---------------------------------------------------------------------------- tcp

@pytest.mark.parametrize("where", ["control", "node"])
def test_tcp(gates: Gates, where: str) -> None:
    gates.passes({"tcp": "{{ node.host }}:{{ service_port }}", "where": where})
    gates.fails({"tcp": "{{ node.host }}:8099", "where": where})


# ---------------------------------------------------------------------------- process

def test_process_running_and_exited(gates: Gates) -> None:
    assert gates.passes({"process": GATEWAY}).message == "process running"
    assert "exit 1" in gates.fails({"process": GATEWAY, "state": "exited"}).message


def test_process_pattern_does_not_match_the_polling_shell(gates: Gates) -> None:
    # the pattern appears in no process of the node -- but it is in the command that polls:
    # were pgrep to find its own shell (or its ssh session), "running" would pass
    nothing = f"zdu-no-such-process-{uuid.uuid4().hex}"
    planned = gates.plan({"process": nothing})
    assert nothing not in planned.target                    # hidden from the shell's command line
    assert "pgrep -f" in planned.target
    gates.fails({"process": nothing})
    assert gates.passes({"process": nothing, "state": "exited"}).polls == 1


def test_process_gates_follow_a_process_that_starts_and_exits(gates: Gates) -> None:
    token = f"zdu-wait-probe-{uuid.uuid4().hex}"
    code, out = gates.lab.exec(NODE, f"nohup python3 -c 'import time; time.sleep(2)' {token} "
                                     ">/dev/null 2>&1 </dev/null &")
    assert code == 0, out
    assert gates.passes({"process": token}).polls >= 1                 # it runs ...
    gone = gates.passes({"process": token, "state": "exited"})         # ... then exits by itself
    assert gone.polls >= 2 and gone.waited > 0.5, gone                  # the gate polled until it did


def test_process_that_ignores_sigterm_is_killed_at_the_deadline(gates: Gates) -> None:
    token = f"zdu-stubborn-{uuid.uuid4().hex}"
    code, out = gates.lab.exec(NODE, "nohup python3 -c 'import signal, time; signal.signal(signal.SIGTERM, "
                                     f"signal.SIG_IGN); time.sleep(300)' {token} >/dev/null 2>&1 </dev/null &")
    assert code == 0, out
    gates.passes({"process": token})
    gates.lab.exec(NODE, f"pkill -TERM -f {token}; true")             # a stop that is ignored
    without_kill = gates.fails({"process": token, "state": "exited"})
    assert "killed" not in without_kill.message
    outcome, elapsed, planned = gates.run({"process": token, "state": "exited", "kill": True,
                                           "deadline": DEADLINE, "interval": 0.2})
    assert planned.kill_command and token not in planned.kill_command  # pkill must not match its shell
    assert outcome.ok and "killed with SIGKILL" in outcome.message, outcome
    assert DEADLINE <= elapsed < DEADLINE + MARGIN
    # gone: "[z]du..." matches the process but not this pgrep's own shell
    assert gates.lab.exec(NODE, f"pgrep -f '[{token[0]}]{token[1:]}'; true")[1].strip() == ""


# ---------------------------------------------------------------------------- log

def test_log(gates: Gates) -> None:
    outcome = gates.passes({"log": GATEWAY_LOG, "pattern": r"Started gateway 1\.0 on "})
    assert outcome.message == "log line found" and outcome.polls == 1
    gates.fails({"log": GATEWAY_LOG, "pattern": r"Started gateway 9\.9"})
    gates.fails({"log": "{{ old_install_dir }}/logs/no-such.log", "pattern": "Started gateway"})


def test_log_line_that_appears_during_the_wait(gates: Gates) -> None:
    log = f"/var/tmp/zdu-wait-{uuid.uuid4().hex}.log"
    code, out = gates.lab.exec(NODE, f"(sleep 1; echo 'Started gateway 3.0 on test' >> {log}) "
                                     ">/dev/null 2>&1 </dev/null &")
    assert code == 0, out
    outcome = gates.passes({"log": log, "pattern": r"Started gateway 3\.0"})
    assert outcome.polls >= 2 and outcome.waited >= 0.5, outcome
    gates.lab.exec(NODE, f"rm -f {log}")


# ---------------------------------------------------------------------------- polled on the node

def test_a_node_side_gate_polls_on_the_node_in_one_round_trip(gates: Gates) -> None:
    log = f"/var/tmp/zdu-wait-{uuid.uuid4().hex}.log"
    gates.lab.exec(NODE, f"(sleep 1; echo ready >> {log}) >/dev/null 2>&1 </dev/null &")
    outcome = gates.passes({"log": log, "pattern": "ready", "interval": 0.05})
    assert outcome.polls >= 8 and gates.round_trips == 1, (outcome, gates.round_trips)
    gates.lab.exec(NODE, f"rm -f {log}")
    # failing until the deadline: every check ran on the node, one round trip per NODE_SPAN
    failed = gates.fails({"command": "false", "interval": 0.05})
    assert failed.polls >= DEADLINE / 0.05 / 2 and gates.round_trips <= DEADLINE / NODE_SPAN + 1, \
        (failed, gates.round_trips)


def test_an_interrupt_is_seen_between_round_trips(gates: Gates) -> None:
    asked = {"n": 0}

    def stop() -> bool:
        asked["n"] += 1
        return True
    outcome, elapsed, _ = gates.run({"command": "false", "deadline": 60, "interval": 0.1}, stop=stop)
    assert outcome.interrupted and not outcome.ok and outcome.polls >= 2
    assert gates.round_trips == 1 and elapsed < NODE_SPAN + MARGIN and asked["n"] == 1


def test_http_from_the_node_with_a_body_pattern_is_judged_on_the_control_side(gates: Gates) -> None:
    # a Python-only pattern (\d, lazy quantifier): the node's tools are never asked to judge it
    outcome = gates.passes({"http": url("/"), "status": 200, "body": r'"version": "\d\.\d+?"', "where": "node"})
    assert outcome.message == "GET (from node): status 200"
    down = gates.fails({"http": url("/"), "status": 200, "body": '"version": "1.0"', "where": "node",
                        "state": "down"})
    assert down.message.endswith("still: GET (from node): status 200"), down
    gone = gates.passes({"http": url("/"), "status": 200, "body": '"version": "9.9"', "where": "node",
                         "state": "down"})
    assert "no longer: GET (from node): status 200, body does not match" in gone.message
