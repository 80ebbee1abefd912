"""``webmethods-bluegreen``: after APPLY asked the old instance to shut down with option drain, it
may still be draining (and answering its health check) when the rollback comes; the rollback stops
it and waits until it is down before starting it again.  The wait for the shutdown in APPLY, and
the rollback's, follow ``drain_timeout`` (a drain longer than a fixed deadline is not a failure).
The lab run: tests/integration/test_profile_review_webmethods_bluegreen_run.py."""
from __future__ import annotations

from pathlib import Path

from tests.unit.test_profile_plans import DATA, plan_of
from zdu.config.profile import load_profile
from zdu.config.topology import load_topology
from zdu.planning.plan import build_plan
from zdu.status import Phase

OLD_HEALTH = "http://apigw-1.example.net:5555/rest/apigateway/health"
NEW_HEALTH = "http://apigw-1.example.net:5556/rest/apigateway/health"


def test_apply_rollback_sees_the_old_instance_down_before_starting_it() -> None:
    plan = plan_of("webmethods-bluegreen")
    for phase in (Phase.APPLY, Phase.POST_APPLY):
        steps = plan.node_plan("apigw-1").rollback_for(phase)
        assert [s.name for s in steps] == [
            "stop the new instance", "the new instance is down", "stop the old instance (ends a shutdown under way)",
            "the old instance is down", "start the old instance", "the old instance is healthy",
            "quiesce mode for design time off"]
        assert steps[2].command == "/opt/softwareag-10.11/profiles/IS_default/bin/shutdown.sh || true"
        for down, url in ((steps[1], NEW_HEALTH), (steps[3], OLD_HEALTH)):
            assert down.wait is not None and down.wait.state == "down" and down.wait.target == url
        assert steps[4].command == "/opt/softwareag-10.11/profiles/IS_default/bin/startup.sh"


def test_pre_apply_rollback_waits_for_the_new_instance_to_be_down() -> None:
    steps = plan_of("webmethods-bluegreen").node_plan("apigw-1").rollback_for(Phase.PRE_APPLY)
    assert [s.name for s in steps][:2] == ["stop the new instance", "the new instance is down"]
    assert all("softwareag-10.11/profiles/IS_default/bin/shutdown.sh" not in (s.command or "") for s in steps)


def test_the_waits_for_the_drain_follow_drain_timeout(tmp_path: Path) -> None:
    source = (DATA / "webmethods-bluegreen" / "topology.yaml").read_text()
    topology = tmp_path / "topology.yaml"
    topology.write_text(source.replace("admin_port_new: 5556}", "admin_port_new: 5556, drain_timeout: 900}"))
    plan = build_plan(load_topology(topology), load_profile("webmethods-bluegreen"), old_install_dir="/opt/a",
                      new_install_dir="/opt/b", run_id="R", env={"WM_ADMIN_PASSWORD": "pw"})
    node_plan = plan.node_plan("apigw-1")
    [shutdown, gone] = node_plan.phases[Phase.APPLY][:2]
    assert shutdown.request is not None and b'"timeout": "900"' in (shutdown.request.body or b"")
    assert gone.wait is not None and gone.wait.state == "down" and gone.wait.deadline > 900
    rollback = {s.name: s for s in node_plan.rollback_for(Phase.APPLY)}
    assert rollback["the old instance is down"].wait.deadline > 900
    assert (rollback["stop the old instance (ends a shutdown under way)"].timeout or 0) > 900
    # the default drain keeps the deadline it had
    assert plan_of("webmethods-bluegreen").node_plan("apigw-1").phases[Phase.APPLY][1].wait.deadline == 300
