"""`zdupgrade abort` at a pause rolls back the nodes upgraded so far, and not again a node a
failure already rolled back within the failure budget: that node runs the old version and is
back in the load balancer, and rolling it back once more took it out of traffic a second time
(its hook log read disable, enable, disable, enable).  zdupgrade as a process on ``transport:
local`` nodes behind the script hook."""
from __future__ import annotations

from pathlib import Path

from tests.integration.test_pause import paused, zdupgrade
from tests.support.localfleet import LocalFleet, profile
from zdu.status import Status


def test_abort_leaves_a_node_the_budget_already_rolled_back(tmp_path: Path) -> None:
    data = profile(tmp_path)
    node = "{{ fleet_root }}/{{ node.name }}"
    data["phases"]["POST-APPLY"] = [{"name": "new runs",
                                     "run": f"[ {{{{ node.name }}}} != B ] && grep -qx 2.0 {node}/running"}]
    fleet = LocalFleet(tmp_path, names="ABCD", extra={"serial": [2, "pause", "100%"], "max_fail_percentage": 50},
                       profile_overrides={"phases": data["phases"]})
    proc = fleet.start()
    fleet.wait_for(lambda: paused(fleet), "the pause after wave 1", proc)
    assert fleet.running("A") == "2.0" and fleet.running("B") == "1.0"      # B failed and was rolled back
    assert fleet.lb_log("B") == ["disable", "enable"]
    answered = zdupgrade("abort", "--log_dir", str(fleet.log_dir), cwd=tmp_path)
    assert answered.returncode == 0, answered.stdout + answered.stderr
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == int(Status.ABORTED), out
    assert [fleet.running(n) for n in "ABCD"] == ["1.0"] * 4
    assert all(fleet.lb(n) == "in" for n in "ABCD")
    assert fleet.lb_log("A") == ["disable", "enable", "disable", "enable"]    # upgraded, then rolled back
    assert fleet.lb_log("B") == ["disable", "enable"]                         # rolled back once, not twice
    assert fleet.lb_log("C") == [] and fleet.lb_log("D") == []
    nodes = fleet.record()["nodes"]
    assert nodes["B"]["rollback"]["outcome"] == "PASSED" and nodes["A"]["rollback"]["outcome"] == "PASSED"
