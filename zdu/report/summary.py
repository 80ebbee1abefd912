"""The per-node x per-phase summary table (pure: RunState in, text out)."""
from __future__ import annotations

import shlex

from zdu.run.state import RunState
from zdu.status import UPGRADE_PHASES, LbState, Status, Version

from .text import one_line_text

TITLE = "MULTI-NODE ZERO DOWN-TIME UPGRADE SUMMARY"
NOT_RUN = "*"


def _tier_of(state: RunState) -> dict[str, str]:
    return {n: tier for tier, nodes in state.tiers.items() for n in nodes}


def summary_rows(state: RunState) -> list[list[str]]:
    """One row per node: name, a cell per phase, the rollback cell (and its tier, with tiers),
    in tier order."""
    tiers = _tier_of(state)
    order = [n for nodes in state.tiers.values() for n in nodes] or list(state.node_names)
    order += [n for n in state.node_names if n not in order]
    rows = []
    for name in order:
        node = state.nodes[name]
        row = [name]
        for phase in UPGRADE_PHASES:
            outcome = node.outcome(phase)
            row.append(outcome.cell() if outcome else ("SKIPPED" if node.skipped else NOT_RUN))
        row.append(node.rollback.cell() if node.rollback else NOT_RUN)
        if tiers:
            row.append(tiers.get(name, ""))
        rows.append(row)
    return rows


def render_summary(state: RunState) -> str:
    """The table the console and the run log end with, plus decisions, warnings and traffic."""
    status = state.status if state.status is not None else Status.FATAL_ERROR
    title = str(status) if state.status is not None else "not finished"
    headers = ["NODE"] + [p.value for p in UPGRADE_PHASES] + ["ROLLBACK"] + (["TIER"] if state.tiers else [])
    # cells escaped before tabulate measures them, so the columns stay aligned
    rows = [[one_line_text(str(cell)) for cell in row] for row in summary_rows(state)]
    from tabulate import tabulate    # here: a run's start does not pay for the table it prints at its end
    table = tabulate(rows, headers=headers, tablefmt="orgtbl")
    width = len(table.splitlines()[0])
    head = [f"Summary table ({title}):", "| " + TITLE.ljust(width - 4) + " |", table]
    lines: list[str] = []
    if state.tiers:
        lines.append("Tiers, in order: " + " -> ".join(f"{t} ({', '.join(n)})" for t, n in state.tiers.items()))
    if state.run_phases:
        lines.append("Run steps: " + "; ".join(f"{label}: {result.cell()}" + (f" - {result.message}" if result.message
                                                                               else "")
                                               for label, result in state.run_phases.items()))
    for pause in state.pauses:
        waited = f" after {pause['ended'] - pause['started']:.1f}s" if pause["ended"] else ""
        answer = pause["answer"] or "still waiting"
        lines.append(f"Pause after wave {pause['wave']}: {answer}" + (f" (by {pause['by']}{waited})" if pause["by"]
                                                                      else ""))
    within = [d.node for d in state.decisions if d.within_budget]
    if within:
        lines.append(f"Failed within the failure budget and rolled back to the old version: {', '.join(within)}")
    if state.decisions:
        lines.append("Rollback decisions:")
        for d in state.decisions:
            lines.append(f"  - {d.node} {d.phase}: {d.action}: {d.reason}")
    lines.append("Nodes:")
    lines.extend(f"  {n}: {_node_line(state, n)}" for n in state.node_names)
    windows = [(n, w["seconds"]) for n in state.node_names for w in state.nodes[n].out_windows]
    if windows:
        lines.append("Out of rotation: " + ", ".join(f"{n} {s:.2f}s" for n, s in windows))
    hint = rerun_hint(state)
    if hint:
        lines.append(hint)
    if state.traffic:
        lines.append(str(state.traffic.get("summary_line") or state.traffic))
        for window in state.traffic.get("windows") or []:
            lines.append(f"  while {window['label']} was out of rotation: {window['sent']} sent, "
                         f"{window['failed']} failed, p50 {_ms(window.get('p50_ms'))}, "
                         f"p99 {_ms(window.get('p99_ms'))}")
    # what was true before a --resume (a node out of the load balancer, a lock left) may have been
    # repaired since: said as history, not as a warning about the fleet now
    earlier = state.warnings[:state.earlier_warnings]
    if earlier:
        lines.append(f"Before the latest --resume ({len(earlier)} warning(s); \"Nodes:\" above is how the fleet "
                     "stands now):")
        lines.extend(f"  was: {warning}" for warning in earlier)
    for warning in state.warnings[state.earlier_warnings:]:
        lines.append(f"WARNING: {warning}")
    for listener, error in state.listener_failures.items():
        lines.append(f"WARNING: the run record is incomplete: {listener} failed: {error}")
    if state.ended and state.status is not None:
        lines.append(f"Status {int(status)} ({status.name}) after {state.ended - state.started:.1f}s")
    # messages, reasons and warnings quote nodes, hooks and exceptions: each stays one line, and
    # no control sequence in them reaches a terminal (`cat run.log` included)
    return "\n".join(head + [one_line_text(line) for line in lines])


def rerun_hint(state: RunState) -> str | None:
    """For a run that ended with its nodes on two versions (interrupted, or stopped, or nodes
    rolled back within the failure budget, after others were upgraded): which are still on the
    old one and the ``--limit`` that takes a new run to them alone.  None when the fleet is on
    one version, or the run has not ended (``--resume`` goes on with it).  Nodes on an unknown
    version are left out: the summary reports them, and they need a look, not a rerun."""
    if not state.ended or state.status is None or state.status is Status.SUCCESS:
        return None
    nodes = [state.nodes[n] for n in state.active_nodes]
    old = [n for n in nodes if n.version is Version.OLD]
    if not old or not any(n.version is Version.NEW for n in nodes):
        return None
    which = ", ".join(f"{n.name} ({'rolled back' if n.rollback else 'not upgraded'})" for n in old)
    limit = state.invocation.get("limit")
    instead = f" (in place of its --limit {shlex.quote(str(limit))})" if limit else ""
    return (f"Still on the old version: {which}. To upgrade them, run the same command again with "
            f"--limit {shlex.quote(','.join(n.name for n in old))}{instead}")


def _node_line(state: RunState, name: str) -> str:
    node = state.nodes[name]
    if node.already_upgraded:
        return (f"already on new ({state.new_install_dir}) when the run began (the profile's upgraded check): "
                "left out, not touched")
    if node.skipped:
        return "skipped (--limit), not touched"
    version = {Version.OLD: f"on old ({state.old_install_dir})", Version.NEW: f"on new ({state.new_install_dir})",
               Version.UNKNOWN: "on an UNKNOWN version"}[node.version]
    lb = {LbState.IN: "in the load balancer", LbState.OUT: "OUT OF the load balancer"}.get(
        node.lb, f"load balancer state UNKNOWN ({node.lb})")
    if node.not_serving is not None and node.lb is LbState.IN:
        lb += f", but NOT SERVING when last checked ({node.not_serving})"
    return f"{version}, {lb}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"
