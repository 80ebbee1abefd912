"""A step that reads nothing node-specific is planned once for the fleet and given each node's
name; a step with any node-specific part (its command, a wait's target, a timeout) is planned
per node.  The plans must be what planning every step for every node would give."""
from __future__ import annotations

import pytest

from zdu.config.profile import parse_profile
from zdu.config.topology import parse_topology
from zdu.model import Phase, Topology
from zdu.planning import plan as plan_module
from zdu.planning.plan import Plan, build_plan, format_plan

PROFILE = {
    "name": "sharing",
    "vars": {"port": 8080},
    "phases": {
        "EXPORT": [{"name": "fleet", "run": "echo {{ new_install_dir }} {{ port }}"}],
        "UPGRADE": [{"name": "own timeout", "run": "echo same", "timeout": "{{ patience }}"}],
        "APPLY": [{"name": "own", "run": "systemctl restart gw@{{ node.host }}"},
                  {"name": "fleet wait", "wait": {"tcp": "127.0.0.1:{{ port }}", "deadline": 5}},
                  {"name": "own wait", "wait": {"tcp": "{{ node.host }}:{{ port }}", "deadline": 5}}],
    },
    "rollback": {"APPLY": ["echo back {{ old_install_dir }}"]},
}


def _topology() -> Topology:
    return parse_topology({
        "profile": "sharing", "serial": 1,
        "load_balancer": {"type": "none"},
        "nodes": [{"name": f"n{i}", "host": f"10.0.0.{i}", "vars": {"patience": 10 + i}} for i in (1, 2, 3)],
    }, source="t.yaml")


def _plans() -> Plan:
    return build_plan(_topology(), parse_profile(PROFILE, source="p.yaml"), old_install_dir="/opt/a",
                      new_install_dir="/opt/b", run_id="r1")


def test_shared_steps_carry_each_nodes_name_and_own_steps_their_own_values() -> None:
    plan = _plans()
    by_node = {p.node.name: p for p in plan.nodes}
    for name, node_plan in by_node.items():
        for phase, steps in node_plan.phases.items():
            assert all(s.node == name for s in steps), (name, phase)
        assert all(s.node == name for steps in node_plan.rollback.values() for s in steps)
    export = [by_node[n].phases[Phase.EXPORT][0] for n in by_node]
    assert {s.command for s in export} == {"echo /opt/b 8080"}
    # the command is the fleet's, the timeout each node's: planned per node
    upgrade = [by_node[n].phases[Phase.UPGRADE][0] for n in ("n1", "n2", "n3")]
    assert [s.timeout for s in upgrade] == [11.0, 12.0, 13.0]
    apply = {n: by_node[n].phases[Phase.APPLY] for n in by_node}
    assert [apply[n][0].command for n in ("n1", "n2", "n3")] == [
        f"systemctl restart gw@10.0.0.{i}" for i in (1, 2, 3)]
    assert {apply[n][1].wait.target for n in apply} == {apply["n1"][1].wait.target}
    assert len({apply[n][2].wait.target for n in apply}) == 3
    assert "10.0.0.2" in apply["n2"][2].wait.shown


def test_sharing_gives_the_plan_planning_each_node_would(monkeypatch: pytest.MonkeyPatch) -> None:
    shared = _plans()
    # plan every step of every node afresh, without the fleet's step cache
    monkeypatch.setattr(plan_module, "_plan_step",
                        lambda profile, node, phase, index, step, ctx, section, smoke=False, where=None:
                        plan_module._plan_one_step(profile, node, phase, index, step, ctx, section, smoke, where))
    fresh = _plans()
    assert fresh.nodes == shared.nodes
    assert format_plan(fresh) == format_plan(shared)
