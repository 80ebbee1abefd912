"""``zdupgrade report``: one run as one self-contained HTML file.

No network: CSS, script and charts (SVG) are inline, and a Content-Security-Policy (``default-src
'none'``, the one style and the one script allowed by their hashes) makes the browser refuse
anything else -- so even text that escaped escaping could not run or fetch.  Every text that came
from the run (commands, their output, messages, names) is HTML-escaped, with control characters
shown as escapes.

Sections: header, summary table, a per-node phase timeline (Gantt) with out-of-rotation windows,
the traffic curve (requests/s, failures, p99 over time, on the timeline's time axis) when the run
had traffic, decisions, load-balancer actions, pauses, run steps, warnings, and every command
with its output folded in ``<details>``.
"""
from __future__ import annotations

import base64
import hashlib
import html
import math
import re
from typing import Any, Iterable, Sequence

from .. import __version__
from ..run import events as ev
from ..run.state import PhaseResult, RunState
from ..status import UPGRADE_PHASES, Phase
from .review import LoadedRun, failed_nodes, last_time, rolled_back, seconds, stamp
from .summary import NOT_RUN, summary_rows
from .views import printable

#: SVG geometry (user units; the SVG scales to the page width)
WIDTH = 1000
LABEL = 120
ROW = 30
BAR = 16
AXIS = 24
CHART = 120


#: lone surrogates (a JSON ``\\udcff`` in a journal): no UTF-8 file can hold them
_SURROGATE = re.compile("[\ud800-\udfff]")


def esc(value: Any) -> str:
    """Text for HTML (element content or a quoted attribute); a lone surrogate is shown as its
    escape (``\\udcff``, as ``zdupgrade logs`` shows it), so the page can be written as UTF-8."""
    text = _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", printable(str(value)))
    return html.escape(text, quote=True)


def css_name(value: str) -> str:
    """A class-name fragment: ``PRE-APPLY`` -> ``pre-apply`` (letters, digits and ``-`` only)."""
    return "".join(c if c.isalnum() else "-" for c in value.lower())


def _hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


STYLE = """
:root { --ok: #2e7d32; --bad: #c62828; --warn: #ef6c00; --muted: #666; --line: #ddd; }
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; margin-bottom: .2em; } h2 { border-bottom: 1px solid var(--line); margin-top: 1.6em; }
code, pre { font-family: ui-monospace, monospace; font-size: 12.5px; }
pre { background: #f6f6f6; padding: .5em; overflow-x: auto; white-space: pre-wrap; word-break: break-all; margin: .3em 0; }
table { border-collapse: collapse; margin: .5em 0; } th, td { border: 1px solid var(--line); padding: .25em .5em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
.status { display: inline-block; padding: .2em .6em; border-radius: 4px; color: #fff; font-weight: bold; }
.status-ok { background: var(--ok); } .status-bad { background: var(--bad); } .status-open { background: var(--warn); }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: .1em 1em; } dl.facts dt { color: var(--muted); }
td.cell-passed { color: var(--ok); } td.cell-failed { color: var(--bad); font-weight: bold; } td.cell-running { color: var(--warn); }
.warning { color: var(--bad); }
svg { width: 100%; height: auto; display: block; }
svg text { font: 11px system-ui, sans-serif; fill: #333; }
svg .grid { stroke: #eee; } svg .axis { stroke: #999; }
.phase-export { fill: #90caf9; } .phase-upgrade { fill: #64b5f6; } .phase-pre-apply { fill: #a5d6a7; }
.phase-apply { fill: #66bb6a; } .phase-post-apply { fill: #26a69a; } .phase-rollback { fill: #ffb74d; }
.phase-before, .phase-after, .phase-gate { fill: #b39ddb; }
rect.outcome-failed { stroke: var(--bad); stroke-width: 2.5; } rect.outcome-running { stroke: var(--warn); stroke-dasharray: 3 2; stroke-width: 2; }
rect.out-window { fill: #e53935; opacity: .75; } rect.out-shade { fill: #e53935; opacity: .08; }
polyline.rate { fill: none; stroke: #1565c0; stroke-width: 1.5; } polyline.p99 { fill: none; stroke: #6a1b9a; stroke-width: 1.5; }
rect.failures { fill: var(--bad); }
.legend span { display: inline-block; margin-right: 1em; } .legend i { display: inline-block; width: 1.2em; height: .8em; margin-right: .3em; vertical-align: middle; }
.legend .sw-export { background: #90caf9; } .legend .sw-upgrade { background: #64b5f6; } .legend .sw-pre-apply { background: #a5d6a7; }
.legend .sw-apply { background: #66bb6a; } .legend .sw-post-apply { background: #26a69a; } .legend .sw-rollback { background: #ffb74d; }
.legend .sw-out { background: #e53935; } .legend .sw-failed { border: 2px solid var(--bad); } .legend .sw-run { background: #b39ddb; }
.legend .sw-rate { background: #1565c0; height: 3px; } .legend .sw-p99 { background: #6a1b9a; height: 3px; } .legend .sw-failures { background: var(--bad); }
details.step { border: 1px solid var(--line); border-radius: 4px; margin: .3em 0; padding: .2em .5em; }
details.step > summary { cursor: pointer; } details.step.failed { border-color: var(--bad); }
details.step.failed > summary { color: var(--bad); font-weight: bold; }
.label { color: var(--muted); font-size: 12px; } .hidden { display: none; }
.toolbar button, .toolbar select { margin-right: .5em; }
"""

SCRIPT = """
(function () {
  function all(sel) { return Array.prototype.slice.call(document.querySelectorAll(sel)); }
  var open = document.getElementById('expand-all'), close = document.getElementById('collapse-all');
  if (open) open.addEventListener('click', function () { all('details.step').forEach(function (d) { d.open = true; }); });
  if (close) close.addEventListener('click', function () { all('details.step').forEach(function (d) { d.open = false; }); });
  var pick = document.getElementById('node-filter');
  if (pick) pick.addEventListener('change', function () {
    all('.node-steps').forEach(function (s) {
      s.classList.toggle('hidden', pick.value !== '' && s.getAttribute('data-node') !== pick.value);
    });
  });
})();
"""


def render_html(run: LoadedRun) -> str:
    """The report of ``run`` (not damaged) as one HTML document."""
    state = run.state
    assert state is not None, "a damaged run has no report"
    policy = ("default-src 'none'; style-src " + _hash(STYLE) + "; script-src " + _hash(SCRIPT)
              + "; img-src data:; base-uri 'none'; form-action 'none'")
    start, end = state.started, max(last_time(run), state.started + 0.001)
    axis = TimeAxis(start, end)
    body = [_header(run, state), _summary(state), _timeline(run, state, axis)]
    if state.traffic and state.traffic.get("series"):
        body.append(_traffic(state, axis))
    body += [_decisions(state), _lb_actions(state), _pauses_and_run_steps(state), _warnings(state),
             _commands(run, state)]
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{esc(policy)}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>zdupgrade run {esc(state.run_id)}: {esc(run.status_text())}</title>",
        f'<meta name="generator" content="zdupgrade {esc(__version__)}">',
        f"<style>{STYLE}</style></head><body>", *body,
        f'<footer class="label">zdupgrade {esc(__version__)} report of run {esc(state.run_id)} '
        f"(read from {esc(run.source)})</footer>",
        f"<script>{SCRIPT}</script></body></html>", ""])


# --------------------------------------------------------------------------- sections

def _status_class(run: LoadedRun) -> str:
    state = run.state
    assert state is not None
    if state.status is None or state.ended is None:
        return "status-open"
    return "status-ok" if int(state.status) == 0 else "status-bad"


def _header(run: LoadedRun, state: RunState) -> str:
    facts = [("status", run.status_text()), ("started", stamp(state.started)), ("ended", stamp(state.ended)),
             ("duration", seconds(last_time(run) - state.started) + ("" if state.ended else "+")),
             ("by", f"{state.user}@{state.host} (zdupgrade {state.tool_version or '?'})"),
             ("command", "zdupgrade " + " ".join(state.argv)), ("topology", state.topology),
             ("profile", state.profile), ("load balancer", state.lb),
             ("upgrade", f"{state.old_install_dir} -> {state.new_install_dir}"),
             ("failed", ", ".join(failed_nodes(state)) or "-"), ("rolled back", ", ".join(rolled_back(state)) or "-")]
    if state.resumed:
        facts.append(("resumed", ", ".join(stamp(t) for t in state.resumed)))
    if run.problem:
        facts.append(("note", run.problem))
    rows = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in facts)
    return (f'<header><h1>zdupgrade run <code id="run-id">{esc(state.run_id)}</code></h1>'
            f'<p><span id="run-status" class="status {_status_class(run)}">{esc(run.status_text())}</span></p>'
            f'<dl class="facts">{rows}</dl></header>')


def _summary(state: RunState) -> str:
    headers = ["NODE"] + [p.value for p in UPGRADE_PHASES] + ["ROLLBACK"] + (["TIER"] if state.tiers else [])
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    rows = []
    for row in summary_rows(state):
        cells = [f"<th>{esc(row[0])}</th>"]
        for cell in row[1:]:
            kind = "passed" if cell.startswith("PASSED") else "failed" if cell.startswith("FAILED") else \
                "running" if cell == "RUNNING" else "none"
            cells.append(f'<td class="cell-{kind}">{esc(cell)}</td>')
        rows.append(f'<tr data-node="{esc(row[0])}">{"".join(cells)}</tr>')
    nodes = []
    for name in state.node_names:
        node = state.nodes[name]
        where = "already on new when the run began (the profile's upgraded check): left out" \
            if node.already_upgraded else "skipped (--limit)" if node.skipped else \
            f"on {node.version}, load balancer: {node.lb}"
        if node.not_serving is not None and not node.skipped:
            where += f", NOT SERVING when last checked ({node.not_serving})"
        windows = ", ".join(seconds(w["seconds"]) for w in node.out_windows)
        nodes.append(f"<li>{esc(name)}: {esc(where)}" + (f"; out of rotation {esc(windows)}" if windows else "")
                     + "</li>")
    return (f'<section id="summary"><h2>Summary</h2><table class="summary"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table><p class="label">{esc(NOT_RUN)}: not run</p>'
            f'<ul>{"".join(nodes)}</ul></section>')


class TimeAxis:
    """Maps wall-clock times of the run to x in the charts (shared by timeline and traffic)."""

    def __init__(self, start: float, end: float) -> None:
        self.start, self.end = start, max(end, start + 0.001)

    def x(self, at: float) -> float:
        span = self.end - self.start
        return LABEL + (min(max(at, self.start), self.end) - self.start) / span * (WIDTH - LABEL - 10)

    def ticks(self) -> list[float]:
        span = self.end - self.start
        step = next((s for s in (0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400)
                     if span / s <= 10), 28800.0)
        first = math.ceil(self.start / step) * step
        return [first + i * step for i in range(int((self.end - first) / step) + 1)]

    def svg(self, y: float, height: float) -> str:
        """Grid lines over ``height`` and time labels at ``y``."""
        parts = []
        for tick in self.ticks():
            x = self.x(tick)
            label = stamp(tick, date=False) if self.end - self.start >= 5 else f"+{tick - self.start:.1f}s"
            parts.append(f'<line class="grid" x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{height:.1f}"/>'
                         f'<text x="{x:.1f}" y="{y + 14:.1f}" text-anchor="middle">{esc(label)}</text>')
        parts.append(f'<line class="axis" x1="{LABEL}" y1="{y:.1f}" x2="{WIDTH - 10}" y2="{y:.1f}"/>')
        return "".join(parts)


def _bar(axis: TimeAxis, result: PhaseResult, label: str, end: float, y: float, who: str) -> str:
    stop = result.ended if result.ended is not None else end
    x0, x1 = axis.x(result.started), axis.x(stop)
    width = max(x1 - x0, 1.5)  # a 10 ms phase must still be seen
    outcome = result.outcome.value
    title = (f"{who} {label}: {result.cell()}, {stamp(result.started, date=False)} -> "
             f"{stamp(result.ended, date=False) if result.ended else 'not finished'} "
             f"({seconds(stop - result.started)})" + (f" - {result.message}" if result.message else ""))
    return (f'<rect class="phase phase-{css_name(label)} outcome-{css_name(outcome)}" data-phase="{esc(label)}" '
            f'data-outcome="{esc(outcome)}" data-start="{result.started:.3f}" data-end="{stop:.3f}" '
            f'x="{x0:.2f}" y="{y:.1f}" width="{width:.2f}" height="{BAR}"><title>{esc(title)}</title></rect>')


def _timeline(run: LoadedRun, state: RunState, axis: TimeAxis) -> str:
    end = axis.end
    rows = []
    names = list(state.node_names)
    for index, name in enumerate(names):
        node = state.nodes[name]
        y = index * ROW
        parts = [f'<text class="row-label" x="4" y="{y + BAR:.1f}">{esc(name)}</text>']
        results = [(p.value, node.phases[p]) for p in UPGRADE_PHASES if p in node.phases]
        if node.rollback is not None:
            results.append((Phase.ROLLBACK.value, node.rollback))
        for label, result in results:
            parts.append(_bar(axis, result, label, end, y + 3, name))
        windows: list[tuple[float, float | None]] = [(w["out"], w["in"]) for w in node.out_windows]
        if node.out_since is not None:
            windows.append((node.out_since, None))
        for out, back in windows:
            stop = back if back is not None else end
            x0 = axis.x(out)
            title = (f"{name} out of rotation {stamp(out, date=False)} -> "
                     f"{stamp(back, date=False) if back else 'not put back'} ({seconds(stop - out)})")
            parts.append(f'<rect class="out-window" data-out="{out:.3f}" data-in="{"" if back is None else f"{back:.3f}"}" '
                         f'x="{x0:.2f}" y="{y + BAR + 5:.1f}" width="{max(axis.x(stop) - x0, 1.5):.2f}" height="4">'
                         f"<title>{esc(title)}</title></rect>")
        if node.skipped:
            parts.append(f'<text class="label" x="{LABEL + 4}" y="{y + BAR:.1f}">skipped (--limit)</text>')
        skipped = ' data-skipped="true"' if node.skipped else ""
        rows.append(f'<g class="node-row" data-node="{esc(name)}"{skipped}>' + "".join(parts) + "</g>")
    if state.run_phases:
        y = len(names) * ROW
        parts = [f'<text class="row-label" x="4" y="{y + BAR:.1f}">run steps</text>']
        for label, result in state.run_phases.items():
            parts.append(_bar(axis, result, label.split()[0].upper(), end, y + 3, label))
        rows.append('<g class="run-row">' + "".join(parts) + "</g>")
    height = (len(names) + (1 if state.run_phases else 0)) * ROW
    legend = "".join(f'<span><i class="sw-{css_name(p.value)}"></i>{esc(p.value)}</span>'
                     for p in (*UPGRADE_PHASES, Phase.ROLLBACK))
    legend += ('<span><i class="sw-run"></i>before / after / gate</span><span><i class="sw-failed"></i>failed</span>'
               '<span><i class="sw-out"></i>out of rotation</span>')
    return (f'<section id="timeline"><h2>Timeline</h2><svg id="gantt" viewBox="0 0 {WIDTH} {height + AXIS}" '
            f'role="img" aria-label="phases per node over time">{axis.svg(height, height)}{"".join(rows)}</svg>'
            f'<p class="legend">{legend}</p></section>')


def _polyline(points: Sequence[tuple[float, float]], css: str) -> str:
    return f'<polyline class="{css}" points="' + " ".join(f"{x:.1f},{y:.1f}" for x, y in points) + '"/>'


def _traffic(state: RunState, axis: TimeAxis) -> str:
    traffic = state.traffic or {}
    series = traffic.get("series") or []
    interval = float(traffic.get("series_interval") or 1.0)
    base = float(traffic.get("started_at") or state.started)
    duration = float(traffic.get("duration") or 0.0)
    # the last interval may be cut short by the end of the probe: its rate is over what it covered
    rates = [p["sent"] / max(min(interval, duration - p["t"]) if duration > p["t"] else interval, 0.05)
             for p in series]
    top_rate = max(rates + [1.0]) * 1.1
    p99s = [p["p99_ms"] for p in series if p.get("p99_ms") is not None]
    top_p99 = max(p99s + [1.0]) * 1.1
    shades = "".join(
        f'<rect class="out-shade" x="{axis.x(w["out"]):.2f}" y="0" width="{max(axis.x(w["in"]) - axis.x(w["out"]), 1):.2f}" '
        f'height="{2 * CHART + 10}"/>'
        for name in state.node_names for w in state.nodes[name].out_windows)
    rate_points, p99_points, bars = [], [], []
    for point, rate in zip(series, rates):
        x = axis.x(base + point["t"] + interval / 2)
        rate_points.append((x, CHART - rate / top_rate * (CHART - 10)))
        if point.get("p99_ms") is not None:
            p99_points.append((x, 2 * CHART + 10 - point["p99_ms"] / top_p99 * (CHART - 10)))
        if point["failed"]:
            x0, x1 = axis.x(base + point["t"]), axis.x(base + point["t"] + interval)
            height = max(point["failed"] / interval / top_rate * (CHART - 10), 2)
            bars.append(f'<rect class="failures" data-t="{point["t"]}" data-failed="{point["failed"]}" '
                        f'x="{x0:.2f}" y="{CHART - height:.1f}" width="{max(x1 - x0, 1):.2f}" height="{height:.1f}">'
                        f'<title>{esc(point["failed"])} failed at +{esc(point["t"])}s</title></rect>')
    total = 2 * CHART + 10
    labels = (f'<text x="4" y="14">{esc(f"{top_rate / 1.1:.0f}")} req/s</text><text x="4" y="{CHART - 2}">0</text>'
              f'<text x="4" y="{CHART + 24}">p99 {esc(f"{top_p99 / 1.1:.1f}")} ms</text>'
              f'<text x="4" y="{total - 2}">0</text>')
    windows = "".join(f"<tr><td>{esc(w['label'])}</td><td>{esc(w['sent'])}</td><td>{esc(w['failed'])}</td>"
                      f"<td>{esc(_ms(w.get('p50_ms')))}</td><td>{esc(_ms(w.get('p99_ms')))}</td></tr>"
                      for w in traffic.get("windows") or [])
    failures = "".join(f"<li><code>{esc(f)}</code></li>" for f in traffic.get("first_failures") or [])
    return (f'<section id="traffic"><h2>Traffic</h2><p id="traffic-summary">{esc(traffic.get("summary_line", ""))}</p>'
            f'<svg id="traffic-chart" viewBox="0 0 {WIDTH} {total + AXIS}" role="img" '
            f'aria-label="requests per second, failures and p99 latency over time">{shades}{axis.svg(total, total)}'
            f'<line class="axis" x1="{LABEL}" y1="{CHART}" x2="{WIDTH - 10}" y2="{CHART}"/>{labels}'
            f'{_polyline(rate_points, "rate")}{"".join(bars)}{_polyline(p99_points, "p99")}</svg>'
            '<p class="legend"><span><i class="sw-rate"></i>requests/s</span><span><i class="sw-failures"></i>'
            'failed requests/s</span><span><i class="sw-p99"></i>p99 latency</span><span><i class="sw-out"></i>'
            'a node out of rotation</span></p>'
            + (f"<table><thead><tr><th>out of rotation</th><th>sent</th><th>failed</th><th>p50</th><th>p99</th>"
               f"</tr></thead><tbody>{windows}</tbody></table>" if windows else "")
            + (f"<p>First failures:</p><ul>{failures}</ul>" if failures else "") + "</section>")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def _table(section: str, title: str, headers: Iterable[str], rows: list[list[Any]], empty: str) -> str:
    if not rows:
        return f'<section id="{section}"><h2>{esc(title)}</h2><p>{esc(empty)}</p></section>'
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return (f'<section id="{section}"><h2>{esc(title)}</h2><table><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></section>")


def _decisions(state: RunState) -> str:
    rows = [[stamp(d.time, date=False), d.node, d.phase.value, d.classification.value, d.action,
             ", ".join(d.targets) or "-", d.reason] for d in state.decisions]
    return _table("decisions", "Decisions", ["time", "node", "phase", "failure", "action", "rolls back", "reason"],
                  rows, "No failure: the rollback policy was not asked.")


def _lb_actions(state: RunState) -> str:
    rows = [[stamp(a["started"], date=False), a["node"], a["action"], "ok" if a["ok"] else "FAILED",
             seconds(a["duration"]), a.get("message", "")] for a in state.lb_actions]
    return _table("lb", "Load balancer", ["time", "node", "action", "result", "took", "message"], rows,
                  f"No load-balancer action (hook: {state.lb}).")


def _pauses_and_run_steps(state: RunState) -> str:
    parts = []
    if state.tiers:
        parts.append(_table("tiers", "Tiers", ["tier", "nodes"], [[t, ", ".join(n)] for t, n in state.tiers.items()],
                            ""))
    if state.pauses:
        parts.append(_table("pauses", "Pauses", ["after wave", "from", "to", "answer", "by"],
                            [[p["wave"], stamp(p["started"], date=False), stamp(p["ended"], date=False),
                              p["answer"] or "still waiting", p["by"] or "-"] for p in state.pauses], ""))
    if state.run_phases:
        parts.append(_table("run-steps", "Run steps", ["step", "result", "from", "to", "message"],
                            [[label, r.cell(), stamp(r.started, date=False), stamp(r.ended, date=False), r.message]
                             for label, r in state.run_phases.items()], ""))
    return "".join(parts)


def _warnings(state: RunState) -> str:
    items = list(state.warnings) + [f"the run record is incomplete: {k} failed: {v}"
                                    for k, v in state.listener_failures.items()]
    if not items:
        return ""
    return ('<section id="warnings"><h2>Warnings</h2><ul>'
            + "".join(f'<li class="warning">{esc(w)}</li>' for w in items) + "</ul></section>")


def _commands(run: LoadedRun, state: RunState) -> str:
    if not run.has_output:
        return (f'<section id="commands"><h2>Commands</h2><p>The commands and their output are only in '
                f'journal.jsonl, which could not be read: {esc(run.problem)}</p></section>')
    steps = run.steps()
    lbs = [e for e in run.events if isinstance(e, ev.LbFinished)]
    groups: dict[str, list[ev.Event]] = {}
    for event in sorted([*steps, *lbs], key=lambda e: e.at):
        key = (event.node or (event.target if isinstance(event, ev.StepFinished) else "") or "control")
        groups.setdefault(key, []).append(event)
    order = [n for n in state.node_names if n in groups] + [k for k in groups if k not in state.node_names]
    number = {id(s): i for i, s in enumerate(steps)}
    failed = [s for s in steps if s.failure is not None]
    links = "".join(f'<li><a href="#step-{number[id(s)]}">{esc(s.node or s.target or "control")} {esc(s.phase)} '
                    f"{esc(s.name)}: {esc(s.message or s.failure)}</a></li>" for s in failed)
    options = "".join(f'<option value="{esc(k)}">{esc(k)}</option>' for k in order)
    parts = ['<section id="commands"><h2>Commands</h2>',
             (f'<p class="warning">Failed steps:</p><ul id="failed-steps">{links}</ul>' if failed else ""),
             '<p class="toolbar"><button type="button" id="expand-all">expand all</button>'
             '<button type="button" id="collapse-all">collapse all</button>'
             f'<select id="node-filter"><option value="">every node</option>{options}</select></p>']
    for key in order:
        parts.append(f'<div class="node-steps" data-node="{esc(key)}"><h3>{esc(key)}</h3>')
        for event in groups[key]:
            parts.append(_step(event, number.get(id(event))))
        parts.append("</div>")
    parts.append("</section>")
    return "".join(parts)


def _step(event: ev.Event, index: int | None) -> str:
    if isinstance(event, ev.LbFinished):
        output = event.details.get("output") if isinstance(event.details, dict) else None
        status = "ok" if event.ok else "FAILED"
        summary = (f"{stamp(event.at, date=False)} load balancer {event.action}: {status} ({seconds(event.duration)})"
                   + (f" - {event.message}" if event.message else ""))
        body = f"<pre class=\"output\">{esc(output)}</pre>" if output else "<p>no output</p>"
        return (f'<details class="step lb{"" if event.ok else " failed"}" data-phase="LB" '
                f'data-action="{esc(event.action)}"><summary>{esc(summary)}</summary>{body}</details>')
    assert isinstance(event, ev.StepFinished)
    status = "ok" if event.failure is None else event.failure.value.upper()
    code = "" if event.exit_code is None else f", exit {event.exit_code}"
    summary = (f"{stamp(event.at - event.duration, date=False)} {event.phase} · {event.name} · {event.kind} "
               f"({seconds(event.duration)}{code}): {status}" + (f" - {event.message}" if event.message else ""))
    parts = [f'<p class="label">command</p><pre class="command">{esc(event.command)}</pre>']
    if event.stdout:
        parts.append(f'<p class="label">stdout</p><pre class="stdout">{esc(event.stdout)}</pre>')
    if event.stderr:
        parts.append(f'<p class="label">stderr</p><pre class="stderr">{esc(event.stderr)}</pre>')
    if not event.stdout and not event.stderr and event.kind.value == "run":
        parts.append('<p class="label">no output</p>')
    return (f'<details class="step{" failed" if event.failure else ""}" id="step-{index}" '
            f'data-phase="{esc(event.phase.value)}" data-key="{esc(event.key)}"><summary>{esc(summary)}</summary>'
            f'{"".join(parts)}</details>')


def phase_outcomes(state: RunState) -> dict[str, dict[str, str]]:
    """node -> phase -> outcome, as the timeline draws them (for tests and tools)."""
    out: dict[str, dict[str, str]] = {}
    for name in state.node_names:
        node = state.nodes[name]
        cells = {p.value: r.outcome.value for p, r in node.phases.items() if p in UPGRADE_PHASES}
        if node.rollback is not None:
            cells[Phase.ROLLBACK.value] = node.rollback.outcome.value
        out[name] = cells
    return out

