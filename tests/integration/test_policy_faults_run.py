"""A user's rollback policy that raises anything -- SystemExit, its own BaseException subclass,
KeyboardInterrupt, or a reason whose ``__str__`` raises -- must not abandon the fleet mid-run:
the safe default is taken and said, the failed node and the one already switched are rolled
back and put back.  zdupgrade as a real process on ``transport: local`` nodes (real shells, a
real script hook); B fails POST-APPLY after A was upgraded."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.localfleet import ROOT, LocalFleet, profile
from zdu.status import Status

POLICY = """
from zdu.run.policy import Action, Decision

class Vanish(BaseException):
    pass

class Unprintable:
    def __str__(self):
        raise RuntimeError("no text")

class BadRepr:
    def __repr__(self):
        raise SystemExit(4)

def exits(context):
    raise SystemExit(3)

def own_base(context):
    raise Vanish("gone")

def ctrl_c(context):
    raise KeyboardInterrupt

def unprintable_reason(context):
    return Decision(Action.ROLLBACK_NODE, Unprintable())

def unprintable_answer(context):
    return BadRepr()
"""


@pytest.mark.parametrize("policy,raised", [("exits", "SystemExit"), ("own_base", "Vanish"),
                                           ("ctrl_c", "KeyboardInterrupt"),
                                           ("unprintable_reason", "RuntimeError"),
                                           ("unprintable_answer", "SystemExit")])
def test_a_policy_raising_anything_falls_back_to_the_safe_default(tmp_path: Path, policy: str, raised: str) -> None:
    base = profile(tmp_path)
    node = "{{ fleet_root }}/{{ node.name }}"
    base["phases"]["POST-APPLY"][0]["run"] = f"[ {{{{ node.name }}}} != B ] && grep -qx 2.0 {node}/running"
    fleet = LocalFleet(tmp_path, profile_overrides={"phases": base["phases"]})
    (tmp_path / "faulty_policy.py").write_text(POLICY)
    done = subprocess.run([sys.executable, str(ROOT / "zdupgrade"), *fleet.argv(
        "--rollback-policy", f"faulty_policy:{policy}")], capture_output=True, text=True, timeout=120,
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path)}, start_new_session=True)
    out = done.stdout + done.stderr
    assert done.returncode == int(Status.POST_APPLY_FAILED), out
    assert "Traceback" not in out and "internal error" not in out, out
    assert f"the rollback policy failed ({raised}" in out and "falling back to the safe default: ROLLBACK_ALL" in out
    # the default's ROLLBACK_ALL: B (failed) and A (switched) back on the old version and in rotation; C untouched
    assert [fleet.running(n) for n in "ABC"] == ["1.0", "1.0", "1.0"], out
    assert [fleet.lb(n) for n in "ABC"] == ["in", "in", "in"]
    assert fleet.lb_log("C") == []
    assert fleet.record()["status"]["name"] == "POST_APPLY_FAILED"
