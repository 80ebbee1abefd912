"""``webmethods-cluster`` rollbacks: PRE-APPLY (which never turns quiesce mode on) undoes nothing;
APPLY stops both instances and waits for both admin ports to be down before it starts the old one
(the ports are shared by default, where a fixed instance still shutting down would answer the old
one's health check).  The lab run: tests/integration/test_profile_review_webmethods_run.py."""
from __future__ import annotations

from tests.unit.test_profile_plans import plan_of
from zdu.status import Phase


def test_pre_apply_rollback_does_not_touch_quiesce_mode() -> None:
    node_plan = plan_of("webmethods-cluster").node_plan("apigw-1")
    assert node_plan.rollback_for(Phase.PRE_APPLY) == ()


def test_apply_rollback_waits_for_the_ports_before_starting_the_old_instance() -> None:
    plan = plan_of("webmethods-cluster")
    for phase in (Phase.APPLY, Phase.POST_APPLY):
        steps = plan.node_plan("apigw-1").rollback_for(phase)
        names = [s.name for s in steps]
        assert names == ["stop the fixed instance", "stop the old instance (a restart leaves quiesce mode)",
                         "the fixed instance is down", "the old instance is down", "start the old instance",
                         "the old instance is healthy"]
        for down in steps[2:4]:
            assert down.wait is not None and down.wait.state == "down"
            assert down.wait.target.endswith(":5555/rest/apigateway/health")
