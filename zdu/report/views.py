"""Text views of past runs: ``zdupgrade runs``, ``show`` and ``logs`` (pure: runs in, text out).

Text that came from the nodes (commands' output, hook output, messages) may hold terminal
control sequences; :func:`printable` shows them as ``\\x1b`` instead of letting them reach the
operator's terminal.
"""
from __future__ import annotations

import os
from typing import Any, Iterable

from tabulate import tabulate

from ..run import events as ev
from ..status import UPGRADE_PHASES, Phase
from .review import LoadedRun, failed_nodes, last_time, rolled_back, seconds, stamp
from .summary import render_summary
from .text import printable

#: the pseudo-phase of ``logs --phase lb``: the load-balancer hook's actions and output
LB_PHASE = "LB"
RUN_LEVEL = (Phase.BEFORE, Phase.AFTER, Phase.GATE)


def one_line(text: str, limit: int = 0) -> str:
    text = printable(" ".join(str(text).split()))
    return text if not limit or len(text) <= limit else text[:limit - 3] + "..."


# --------------------------------------------------------------------------- runs

RUNS_HEADERS = ["RUN ID", "START", "DURATION", "USER@HOST", "TOPOLOGY", "PROFILE", "OLD -> NEW", "STATUS",
                "FAILED", "ROLLED BACK"]


def runs_rows(runs: Iterable[LoadedRun]) -> list[list[str]]:
    """One row per run (newest first, as given)."""
    rows = []
    for run in runs:
        state = run.state
        if state is None:
            rows.append([run.run_id, "-", "-", "-", "-", "-", "-", one_line(run.status_text(), 160), "-", "-"])
            continue
        ended = state.ended if state.ended else None
        duration = seconds(ended - state.started) if ended else seconds(last_time(run) - state.started) + "+"
        who = f"{state.user}@{state.host}" if state.user or state.host else "-"
        status = run.status_text()
        if run.source == "run.json":
            status += " [from run.json]"
        elif run.problem:
            status += " [journal cut short]"
        rows.append([run.run_id, stamp(state.started), duration, one_line(who, 40),
                     one_line(os.path.basename(state.topology) or state.topology, 40), one_line(state.profile, 30),
                     one_line(f"{state.old_install_dir} -> {state.new_install_dir}", 60), one_line(status, 110),
                     ", ".join(failed_nodes(state)) or "-", ", ".join(rolled_back(state)) or "-"])
    return rows


def render_runs(runs: list[LoadedRun]) -> str:
    if not runs:
        return "no runs"
    return tabulate(runs_rows(runs), headers=RUNS_HEADERS, tablefmt="simple", disable_numparse=True)


# --------------------------------------------------------------------------- show

def render_show(run: LoadedRun) -> str:
    """Everything about one run: header, the summary table, decisions, nodes, load balancer,
    traffic, pauses, tiers and run steps."""
    state = run.state
    if state is None:
        return f"run {run.run_id}: {run.status_text()}"
    end = last_time(run)
    lines = [f"run {state.run_id}" + (f" (from {run.source}: {run.problem})" if run.source != "journal" else "")]
    if run.source == "journal" and run.problem:
        lines.append(f"  warning    {one_line(run.problem)}: the state shown may be incomplete")
    lines += [f"  status     {one_line(run.status_text())}",
              f"  started    {stamp(state.started)}    ended {stamp(state.ended)}    "
              f"duration {seconds(end - state.started)}{'' if state.ended else '+'}",
              f"  by         {one_line(state.user)}@{one_line(state.host)} (zdupgrade {one_line(state.tool_version) or '?'})"]
    if state.argv:
        lines.append(f"  command    zdupgrade {one_line(' '.join(state.argv), 300)}")
    lines += [f"  topology   {one_line(state.topology)}",
              f"  profile    {one_line(state.profile)}    load balancer {one_line(state.lb)}",
              f"  upgrade    {one_line(state.old_install_dir)} -> {one_line(state.new_install_dir)}"]
    if state.resumed:
        lines.append("  resumed    " + ", ".join(stamp(t) for t in state.resumed))
    lines += ["", printable(render_summary(state)), ""]
    if state.decisions:
        lines.append("Decisions (rollback policy):")
        for d in state.decisions:
            targets = f" -> rolls back {', '.join(d.targets)}" if d.targets else ""
            lines.append(f"  {stamp(d.time, date=False)} {d.node} {d.phase} ({d.classification}): "
                         f"{d.action}{targets}")
            lines.append(f"      reason: {one_line(d.reason)}")
    lines.append("Phases per node:")
    for name in state.node_names:
        node = state.nodes[name]
        lines.append(f"  {name}" + (" (skipped: --limit)" if node.skipped else f" (now: {node.version}, "
                                                                                f"load balancer {node.lb})"))
        results = [(p.value, node.phases[p]) for p in UPGRADE_PHASES if p in node.phases]
        if node.rollback is not None:
            results.append((Phase.ROLLBACK.value, node.rollback))
        for label, result in results:
            took = seconds((result.ended or end) - result.started) + ("" if result.ended else "+")
            message = f" - {one_line(result.message, 200)}" if result.message else ""
            lines.append(f"    {label:<11} {stamp(result.started, date=False)} -> "
                         f"{stamp(result.ended, date=False) if result.ended else 'running':<8} {took:>9}  "
                         f"{result.cell()}{message}")
        for window in node.out_windows:
            lines.append(f"    out of rotation {stamp(window['out'], date=False)} -> {stamp(window['in'], date=False)}"
                         f" ({seconds(window['seconds'])})")
        if node.out_since is not None:
            lines.append(f"    out of rotation since {stamp(node.out_since, date=False)} (not put back)")
    if state.lb_actions:
        lines.append("Load balancer actions:")
        for action in state.lb_actions:
            message = f" - {one_line(action['message'], 200)}" if action.get("message") else ""
            lines.append(f"  {stamp(action['started'], date=False)} {action['node']} {action['action']}: "
                         f"{'ok' if action['ok'] else 'FAILED'} ({seconds(action['duration'])}){message}")
    lines.extend(_traffic_lines(state.traffic))
    if state.pauses:
        lines.append("Pauses:")
        for pause in state.pauses:
            ended = f" -> {stamp(pause['ended'], date=False)}: {pause['answer']} by {one_line(pause['by'] or '?')}" \
                if pause.get("ended") else " (still waiting)"
            lines.append(f"  after wave {pause['wave']}: {stamp(pause['started'], date=False)}{ended}")
    if state.tiers:
        lines.append("Tiers: " + " -> ".join(f"{t} ({', '.join(n)})" for t, n in state.tiers.items()))
    if state.run_phases:
        lines.append("Run steps:")
        for label, result in state.run_phases.items():
            lines.append(f"  {label}: {result.cell()} {stamp(result.started, date=False)}"
                         + (f" - {one_line(result.message, 200)}" if result.message else ""))
        for step in (s for s in state.steps if s.phase in RUN_LEVEL):
            status = "ok" if step.error is None else str(step.error).upper()
            lines.append(f"    {step.phase} {one_line(step.name)} on {step.target or step.node or 'control'}: "
                         f"{status} ({seconds(step.duration)})")
    if state.capacity:
        lines.append("Capacity checks:")
        for check in state.capacity:
            lines.append(f"  before wave {check['wave']}: {len(check['serving'])} serving, "
                         f"{len(check['leaving'])} leaving, {check['needed']} needed: "
                         f"{'ok' if check['ok'] else 'REFUSED'} ({check['source']})")
    if not run.has_output:
        lines.append(f"(commands' output is only in {run.run_id}/journal.jsonl, which could not be read)")
    return "\n".join(lines)


def _traffic_lines(traffic: dict[str, Any] | None) -> list[str]:
    if not traffic:
        return []
    lines = ["Traffic:", "  " + one_line(str(traffic.get("summary_line") or ""))]
    if traffic.get("url"):
        lines.append(f"  {one_line(traffic['url'])} at {traffic.get('target_rate', 0):g} req/s for "
                     f"{seconds(traffic.get('duration'))}, {traffic.get('late', 0)} sent late")
    for window in traffic.get("windows") or []:
        lines.append(f"  while {one_line(window['label'])} was out of rotation: {window['sent']} sent, "
                     f"{window['failed']} failed, p99 {_ms(window.get('p99_ms'))}")
    series = traffic.get("series") or []
    if series:
        interval = float(traffic.get("series_interval") or 1.0)
        worst = max(series, key=lambda p: (p["failed"], p["p99_ms"] or 0))
        lines.append(f"  worst {interval:g}s at +{worst['t']:g}s: {worst['sent']} sent, {worst['failed']} failed, "
                     f"p99 {_ms(worst['p99_ms'])}")
    for failure in traffic.get("first_failures") or []:
        lines.append(f"  failure: {one_line(failure, 200)}")
    return lines


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


# --------------------------------------------------------------------------- logs

def log_entries(run: LoadedRun, node: str | None = None, phase: str | None = None) -> list[ev.Event]:
    """The steps (and load-balancer actions) of ``node`` in ``phase`` (``LB``: load-balancer
    actions only), in order."""
    out: list[ev.Event] = []
    for event in run.events:
        if isinstance(event, ev.StepFinished):
            if node is not None and node not in (event.node, event.target):
                continue
            if phase is not None and event.phase.value != phase:
                continue
            out.append(event)
        elif isinstance(event, ev.LbFinished):
            if (node is None or event.node == node) and phase in (None, LB_PHASE):
                out.append(event)
    return out


def render_logs(run: LoadedRun, node: str | None = None, phase: str | None = None, *,
                failed_first: bool = False) -> str:
    """Every command of the selection with its output; ``failed_first``: the failed steps first."""
    entries = log_entries(run, node, phase)
    if failed_first:
        failed = [e for e in entries if _failed(e)]
        entries = failed + [e for e in entries if not _failed(e)]
    blocks = [render_entry(e) for e in entries]
    return "\n".join(blocks)


def _failed(event: ev.Event) -> bool:
    if isinstance(event, ev.StepFinished):
        return event.failure is not None
    return isinstance(event, ev.LbFinished) and not event.ok


def render_entry(event: ev.Event) -> str:
    """One command (or load-balancer action) with its full output."""
    if isinstance(event, ev.LbFinished):
        head = (f"==> {event.node} load balancer {event.action}: {'ok' if event.ok else 'FAILED'}, "
                f"{stamp(event.at)}, {seconds(event.duration)}")
        if event.message:
            head += f" - {one_line(event.message)}"
        output = event.details.get("output") if isinstance(event.details, dict) else None
        return head + ("\n--- hook output\n" + _block(str(output)) if output else "\n")
    assert isinstance(event, ev.StepFinished)
    where = event.node or f"{event.target or 'control'} ({event.phase.value.lower()} step)"
    code = "" if event.exit_code is None else f", exit {event.exit_code}"
    status = "ok" if event.failure is None else f"{event.failure.value.upper()}"
    head = (f"==> {where} {event.phase} [{one_line(event.name)}] {event.kind}, {stamp(event.at - event.duration)}, "
            f"{seconds(event.duration)}{code}: {status}")
    if event.message:
        head += f" - {one_line(event.message)}"
    parts = [head, "$ " + printable(event.command).replace("\n", "\n  ")]
    if event.stdout:
        parts.append("--- stdout\n" + _block(event.stdout).rstrip("\n"))
    if event.stderr:
        parts.append("--- stderr\n" + _block(event.stderr).rstrip("\n"))
    return "\n".join(parts) + "\n"


def _block(text: str) -> str:
    text = printable(text)
    return text if text.endswith("\n") else text + "\n"
