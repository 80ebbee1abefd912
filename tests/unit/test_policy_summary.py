"""Rollback policy (pure) and the summary table."""
from __future__ import annotations

from zdu.run.state import DecisionRecord, PhaseResult, RunState
from zdu.run.policy import Action, FailureContext, default_policy, load_policy, rollback_node_only
from zdu.status import FailureKind, Outcome, Phase, Status
from zdu.report.summary import render_summary, summary_rows


def ctx(phase: Phase, switched: tuple[str, ...] = ()) -> FailureContext:
    return FailureContext(node="Node-B", phase=phase, classification=FailureKind.FAILED, message="boom",
                          exit_code=1, switched=switched, results={})


def test_default_policy_aborts_offline_phases() -> None:
    for phase in (Phase.EXPORT, Phase.UPGRADE):
        decision = default_policy(ctx(phase))
        assert decision.action is Action.ABORT
        assert "nothing to roll back" in decision.reason


def test_default_policy_rolls_back_everything_online() -> None:
    for phase in (Phase.PRE_APPLY, Phase.APPLY, Phase.POST_APPLY):
        decision = default_policy(ctx(phase, switched=("Node-A",)))
        assert decision.action is Action.ROLLBACK_ALL
        assert "Node-B" in decision.reason and "Node-A" in decision.reason


def test_node_only_policy() -> None:
    assert rollback_node_only(ctx(Phase.APPLY, ("Node-A",))).action is Action.ROLLBACK_NODE
    assert rollback_node_only(ctx(Phase.EXPORT)).action is Action.ABORT


def test_load_policy_by_name_and_path() -> None:
    assert load_policy(None) is default_policy
    assert load_policy("node-only") is rollback_node_only
    assert load_policy("zdu.run.policy:rollback_node_only") is rollback_node_only
    assert load_policy("zdu.run.policy.default_policy") is default_policy


def test_load_policy_errors_are_clear() -> None:
    import pytest
    from zdu.errors import ConfigError
    with pytest.raises(ConfigError, match="cannot load 'no_such_module:f': no module named 'no_such_module'"):
        load_policy("no_such_module:f")
    with pytest.raises(ConfigError, match="zdu.run.policy has no attribute 'nope'"):
        load_policy("zdu.run.policy:nope")


def test_summary_table_like_axway() -> None:
    state = RunState(run_id="r", old_install_dir="/opt/a", new_install_dir="/opt/b", profile="p",
                     topology="t", node_names=["Node-A", "Node-B", "Node-C"])
    for name in ("Node-A", "Node-B", "Node-C"):
        for phase in (Phase.EXPORT, Phase.UPGRADE):
            state.nodes[name].phases[phase] = PhaseResult(Outcome.PASSED, 0)
    state.nodes["Node-A"].phases[Phase.PRE_APPLY] = PhaseResult(Outcome.PASSED, 0)
    state.nodes["Node-A"].phases[Phase.APPLY] = PhaseResult(Outcome.FAILED, 3, FailureKind.FAILED)
    state.nodes["Node-A"].rollback = PhaseResult(Outcome.PASSED, 0)
    state.decisions.append(DecisionRecord("Node-A", Phase.APPLY, "ROLLBACK_ALL", "because", FailureKind.FAILED))
    state.status = Status.APPLY_FAILED
    rows = summary_rows(state)
    assert rows[0] == ["Node-A", "PASSED (0)", "PASSED (0)", "PASSED (0)", "FAILED (3)", "*", "PASSED (0)"]
    assert rows[2] == ["Node-C", "PASSED (0)", "PASSED (0)", "*", "*", "*", "*"]
    text = render_summary(state)
    assert text.splitlines()[0] == "Summary table (Status.APPLY_FAILED):"
    assert "MULTI-NODE ZERO DOWN-TIME UPGRADE SUMMARY" in text
    header = text.splitlines()[2]
    for column in ("NODE", "EXPORT", "UPGRADE", "PRE-APPLY", "APPLY", "POST-APPLY", "ROLLBACK"):
        assert column in header
    assert "Node-A APPLY: ROLLBACK_ALL: because" in text


def test_timeout_cell() -> None:
    assert PhaseResult(Outcome.FAILED, None, FailureKind.TIMEOUT).cell() == "FAILED (timeout)"
