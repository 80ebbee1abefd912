"""Real zdupgrade runs on a ``transport: local`` fleet (real shells, a real hook file, a real
plugin module) whose load-balancer hook is faulty: a script exec cannot start is refused in
preflight with nothing touched; a plugin hook whose methods raise anything (SystemExit,
KeyboardInterrupt, its own BaseException) or answer garbage ends in the run's ordinary statuses,
never a traceback or an internal error, and the summary says where each node is."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.localfleet import ROOT, LocalFleet

PLUGIN = '''
import time
from pathlib import Path
from zdu.lb.base import LbResult, LoadBalancer

class Boom(BaseException):
    pass

RAISES = {"SystemExit": lambda: SystemExit(3), "KeyboardInterrupt": lambda: KeyboardInterrupt("from the plugin"),
          "Boom": lambda: Boom("its own")}

class Hook(LoadBalancer):
    """Writes each node's lb file like the fleet's script hook; ``fail`` names what goes wrong."""
    name = "flaky"

    def __init__(self, options):
        self.root = Path(options["env"]["FLEET_ROOT"])
        self.fail = options.get("fail", {})

    def _act(self, action, node, state):
        what = self.fail.get(f"{action}-{node.name}")
        if what in RAISES:
            raise RAISES[what]()
        if what == "hang":                 # an API call that never answers
            (self.root / node.name / "hung").write_text(action + "\\n")
            time.sleep(3600)
        (self.root / node.name / "lb").write_text(state + "\\n")
        if what == "nan":
            return LbResult(True, f"{node.name} {state}", float("nan"), {"took": float("inf")})
        return LbResult(True, f"{node.name} {state}")

    def disable(self, node):
        return self._act("disable", node, "out")

    def enable(self, node):
        return self._act("enable", node, "in")

    def serving(self, nodes):
        if "serving" in self.fail:
            return {n.name: "no" for n in nodes}     # truthy: read as it was, every node "served"
        return {n.name: (self.root / n.name / "lb").read_text().strip() == "in" for n in nodes}

    def close(self):
        if "close" in self.fail:
            raise RAISES[self.fail["close"]]()

def make(options):
    return Hook(options)
'''


def run(fleet: LocalFleet, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "zdupgrade"), *fleet.argv("--plain")], capture_output=True,
                          text=True, timeout=120, cwd=fleet.root, env={**os.environ, **(env or {})})


def plugin_fleet(tmp_path: Path, fail: dict[str, str], lb: dict[str, Any] | None = None,
                 **extra: Any) -> tuple[LocalFleet, dict[str, str]]:
    (tmp_path / "zdu_test_flaky_run_lb.py").write_text(PLUGIN)
    fleet = LocalFleet(tmp_path / "fleet", extra={"load_balancer": {"type": "zdu_test_flaky_run_lb:make", "fail": fail,
                                                                    **(lb or {})}, **extra})
    return fleet, {"PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}


def untouched(fleet: LocalFleet) -> bool:
    return all(not (fleet.root / n / "export").exists() and fleet.lb(n) == "in" and fleet.running(n) == "1.0"
               for n in fleet.names)


@pytest.mark.parametrize("content, why", [
    ("#!/no/such/interp\necho hi\n", "its #! interpreter /no/such/interp is not an executable file"),
    ("#!/bin/sh\r\necho hi\r\n", "its #! line ends in a carriage return"),
    ("echo no interpreter line\n", "its first line is not #!"),
])
def test_a_script_hook_exec_cannot_start_is_refused_before_any_node_is_touched(tmp_path: Path, content: str,
                                                                              why: str) -> None:
    fleet = LocalFleet(tmp_path)
    fleet.hook.write_bytes(content.encode())
    done = run(fleet)
    out = done.stdout + done.stderr
    assert done.returncode == 78, out
    assert f"load-balancer hook script cannot be run: {fleet.hook}: {why}" in out
    assert "Traceback" not in out
    assert untouched(fleet)                 # it used to export and upgrade, then fail at disable: 75


def test_a_bare_relative_hook_path_runs_the_file_preflight_checked(tmp_path: Path) -> None:
    fleet = LocalFleet(tmp_path, extra={"load_balancer": {"path": "hook.sh"}})
    done = run(fleet)                       # cwd: the fleet root, where hook.sh is
    assert done.returncode == 0, done.stdout + done.stderr
    assert all(fleet.lb_log(n) == ["disable", "enable"] for n in fleet.names)


@pytest.mark.parametrize("kind", ["SystemExit", "KeyboardInterrupt", "Boom"])
def test_a_plugin_disable_raising_anything_is_a_failed_action(tmp_path: Path, kind: str) -> None:
    fleet, env = plugin_fleet(tmp_path, {"disable-B": kind})
    done = run(fleet, env)
    out = done.stdout + done.stderr
    assert done.returncode == 73, out       # APPLY_FAILED, rolled back (it was 3, 130 or a traceback)
    assert "Traceback" not in out and "internal error" not in out
    assert "[B] load balancer disable: FAILED - " in out
    assert "  B: on old" in out and fleet.running("B") == "1.0" and fleet.lb("B") == "in"
    assert "  A: on old" in out and fleet.lb("A") == "in"       # A was upgraded, then rolled back


def test_a_plugin_enable_raising_leaves_the_node_out_loudly(tmp_path: Path) -> None:
    fleet, env = plugin_fleet(tmp_path, {"enable-B": "Boom"})
    done = run(fleet, env)
    out = done.stdout + done.stderr
    assert done.returncode == 75, out       # ROLLBACK_FAILED: a node could not be put back
    assert "Traceback" not in out
    assert "[B] load balancer enable: FAILED - Boom: its own" in out
    assert "!!! B is OUT OF THE LOAD BALANCER" in out and fleet.lb("B") == "out"


def test_a_plugin_serving_answer_that_cannot_be_read_stops_preflight(tmp_path: Path) -> None:
    fleet, env = plugin_fleet(tmp_path, {"serving": "strings"}, min_in_service=2)
    done = run(fleet, env)
    out = done.stdout + done.stderr
    assert done.returncode == 84, out       # it ran through, counting "no" as serving
    assert ("capacity guard: cannot read the load balancer: hook 'zdu_test_flaky_run_lb:make': serving() "
            "answered a str for node 'A', not true/false") in out
    assert untouched(fleet)


def test_a_plugin_answering_a_nan_duration_leaves_a_run_folder_the_review_commands_read(tmp_path: Path) -> None:
    fleet, env = plugin_fleet(tmp_path, {"disable-B": "nan"})
    done = run(fleet, env)
    assert done.returncode == 0, done.stdout + done.stderr
    shown = subprocess.run([sys.executable, str(ROOT / "zdupgrade"), "show", "--log_dir", str(fleet.log_dir)],
                           capture_output=True, text=True, timeout=60, env={**os.environ, **env})
    assert shown.returncode == 0 and "damaged" not in shown.stdout + shown.stderr, shown.stdout + shown.stderr
    assert "NaN" not in (fleet.run_dir() / "run.json").read_text()     # it was "damaged: ... nan"


def test_a_plugin_close_raising_does_not_turn_a_success_into_an_internal_error(tmp_path: Path) -> None:
    fleet, env = plugin_fleet(tmp_path, {"close": "SystemExit"})
    done = run(fleet, env)
    assert done.returncode == 0, done.stdout + done.stderr          # it was 3
    assert ("zdupgrade: warning: load-balancer hook 'zdu_test_flaky_run_lb:make': close() raised SystemExit "
            "(ignored)") in done.stderr
    assert all(fleet.running(n) == "2.0" and fleet.lb(n) == "in" for n in fleet.names)


def test_a_plugin_call_that_never_returns_ends_at_call_timeout_and_the_run_ends(tmp_path: Path) -> None:
    fleet, env = plugin_fleet(tmp_path, {"disable-B": "hang"}, {"call_timeout": 2})
    started = time.monotonic()
    done = run(fleet, env)
    took = time.monotonic() - started
    out = done.stdout + done.stderr
    assert done.returncode == 75, out       # ROLLBACK_FAILED: nodes could not be put back (it hung for ever)
    assert took < 60                        # the plugin's thread sleeps an hour: it did not hold the exit
    assert "Traceback" not in out and "internal error" not in out
    assert (fleet.root / "B" / "hung").read_text() == "disable\n"
    assert ("[B] load balancer disable: FAILED - hook 'zdu_test_flaky_run_lb:make': disable() of B did not return "
            "within 2 s (load_balancer.call_timeout); it is left running, and the hook is not called again") in out
    # nothing is sent to the hook beside the hung call; every node is reported, none left half-done
    assert "enable() of B was not called: its disable() of B, started" in out
    assert fleet.running("A") == "1.0" and fleet.running("B") == "1.0" and fleet.running("C") == "1.0"
    assert "!!! B is OUT OF THE LOAD BALANCER" in out and "!!! A is OUT OF THE LOAD BALANCER" in out
