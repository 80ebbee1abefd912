"""``--junit FILE``: the run as a JUnit XML report, for CI systems (Jenkins, GitLab, GitHub Actions...).

One ``<testsuite>`` for the run; in it one ``<testcase>`` per node x phase (``classname`` =
``zdupgrade.NODE``, ``name`` = the phase), one for the node's ROLLBACK when one ran, one per
run-level step (before, after, tier gates) and preflight, and a last ``zdupgrade.run`` /
``status`` case that fails unless the run succeeded -- so a CI job shows red for a LOCKED or
CAPACITY_REFUSED run too.  A failed phase's ``<failure>`` carries the phase's message as
``message``, its classification (failed, timeout, unreachable, lb, interrupted, error) as
``type``, and the command and full output of its failed steps as text.  A phase that never ran
is ``<skipped>``; one that started and never finished (the run was interrupted or its process
died) is an ``<error>``.  The format is the Ant / Surefire one those CI systems read (the test
suite validates it against ``tests/data/junit/junit.xsd``).
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import re
import xml.etree.ElementTree as ET
from typing import Callable, Sequence

from ..planning.masking import truncation_note
from ..run import events as ev
from ..run.state import PhaseResult, RunState, RunView
from ..status import UPGRADE_PHASES, Outcome, Phase
from .output import write_private
from .views import printable

# characters XML 1.0 cannot carry at all (after printable() escaped the controls)
_NOT_XML = re.compile("[\ud800-\udfff\ufffe\uffff]")


def xml_text(text: object) -> str:
    """``text`` as characters XML 1.0 allows (controls shown as escapes, the rest replaced)."""
    return _NOT_XML.sub("\ufffd", printable(str(text)))


def _step_text(step: ev.StepFinished) -> str:
    code = "none" if step.exit_code is None else str(step.exit_code)
    parts = [f"step {step.name} ({step.kind}): {step.failure or 'ok'}, exit code {code}, {step.duration:.3f}s"
             + (f" - {step.message}" if step.message else ""), f"$ {step.command}"]
    if step.stdout:
        parts.append("--- stdout\n" + step.stdout.rstrip("\n"))
    if step.stderr:
        parts.append("--- stderr\n" + step.stderr.rstrip("\n"))
    return "\n".join(parts)


def _time(result: PhaseResult | None, end: float) -> str:
    if result is None:
        return "0.000"
    return f"{max(0.0, (result.ended or end) - result.started):.3f}"


class _Suite:
    def __init__(self, suite: ET.Element) -> None:
        self.suite = suite
        self.tests = self.failures = self.errors = self.skipped = 0

    def case(self, classname: str, name: str, time: str, *, failure: tuple[str, str, str] | None = None,
             error: tuple[str, str] | None = None, skipped: str | None = None, out: str = "") -> None:
        case = ET.SubElement(self.suite, "testcase", classname=xml_text(classname), name=xml_text(name), time=time)
        self.tests += 1
        if failure is not None:
            message, kind, text = failure
            element = ET.SubElement(case, "failure", message=xml_text(message), type=xml_text(kind))
            element.text = xml_text(text)
            self.failures += 1
        elif error is not None:
            element = ET.SubElement(case, "error", message=xml_text(error[0]), type=xml_text(error[1]))
            self.errors += 1
        elif skipped is not None:
            ET.SubElement(case, "skipped", message=xml_text(skipped))
            self.skipped += 1
        if out:
            ET.SubElement(case, "system-out").text = xml_text(out)


def junit_xml(state: RunState, steps: Sequence[ev.StepFinished], *, end: float | None = None) -> str:
    """The JUnit XML document of a run (``steps``: its finished steps, with output)."""
    end = end or state.ended or max([state.started, *(s.at for s in steps)])
    by_phase: dict[tuple[str, Phase], list[ev.StepFinished]] = {}
    for step in steps:
        by_phase.setdefault((step.node or step.target or "control", step.phase), []).append(step)
    stamp = _dt.datetime.fromtimestamp(state.started).astimezone().replace(tzinfo=None).isoformat(timespec="seconds")
    root = ET.Element("testsuites", name="zdupgrade")
    suite = ET.SubElement(root, "testsuite", name=xml_text(f"zdupgrade run {state.run_id}"), timestamp=stamp,
                          hostname=xml_text(state.host or "-"))
    properties = ET.SubElement(suite, "properties")
    status = state.status
    for key, value in (("run_id", state.run_id), ("status", status.name if status is not None else "NOT_FINISHED"),
                       ("status_code", "" if status is None else str(int(status))),
                       ("old_install_dir", state.old_install_dir), ("new_install_dir", state.new_install_dir),
                       ("profile", state.profile), ("topology", state.topology), ("user", state.user),
                       ("tool_version", state.tool_version)):
        ET.SubElement(properties, "property", name=key, value=xml_text(value))
    cases = _Suite(suite)
    if state.preflight_problems:
        cases.case("zdupgrade.run", "preflight", "0.000",
                   failure=(f"preflight found {len(state.preflight_problems)} problem(s); nothing was changed",
                            "preflight", "\n".join(state.preflight_problems)))
    for label, run_result in state.run_phases.items():
        run_phase = _run_phase(label)
        inside = [s for s in steps if s.phase is run_phase
                  and run_result.started - 0.001 <= s.at <= (run_result.ended or end) + 0.001]
        _phase_case(cases, "zdupgrade.run", label, run_result, inside, end)
    for name in state.node_names:
        node = state.nodes[name]
        for phase in UPGRADE_PHASES:
            result = node.phases.get(phase)
            if node.skipped:
                cases.case(f"zdupgrade.{name}", phase.value, "0.000", skipped="left out of the run (--limit)")
            elif result is None:
                cases.case(f"zdupgrade.{name}", phase.value, "0.000", skipped="not run: the run stopped before it")
            else:
                _phase_case(cases, f"zdupgrade.{name}", phase.value, result, by_phase.get((name, phase), []), end)
        if node.rollback is not None:
            _phase_case(cases, f"zdupgrade.{name}", Phase.ROLLBACK.value, node.rollback,
                        by_phase.get((name, Phase.ROLLBACK), []), end)
    total = f"{max(0.0, end - state.started):.3f}"
    if status is None:
        cases.case("zdupgrade.run", "status", total, error=("the run did not finish (interrupted, or its process "
                                                            "died): zdupgrade --resume " + state.run_id, "unfinished"))
    elif int(status) != 0:
        cases.case("zdupgrade.run", "status", total,
                   failure=(f"the run ended with {status.name} ({int(status)})", status.name,
                            "\n".join(state.warnings) or status.name))
    else:
        cases.case("zdupgrade.run", "status", total)
    for element, attrs in ((suite, cases), (root, cases)):
        element.set("tests", str(attrs.tests))
        element.set("failures", str(attrs.failures))
        element.set("errors", str(attrs.errors))
        element.set("time", total)
    suite.set("skipped", str(cases.skipped))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _run_phase(label: str) -> Phase:
    word = label.split()[0].upper()
    return Phase(word) if word in ("BEFORE", "AFTER", "GATE") else Phase.GATE


def _phase_case(cases: _Suite, classname: str, name: str, result: PhaseResult, steps: list[ev.StepFinished],
                end: float) -> None:
    time = _time(result, end)
    commands = "\n".join(f"{s.name}: {s.failure or 'ok'} ({s.duration:.2f}s) $ {s.command}" for s in steps)
    if result.outcome is Outcome.FAILED:
        failed = [s for s in steps if s.failure is not None] or steps[-1:]
        text = "\n\n".join(_step_text(s) for s in failed) or result.message
        cases.case(classname, name, time, failure=(result.message or f"{name} failed", str(result.classification
                                                                                          or "failed"), text),
                   out=commands)
    elif result.outcome is Outcome.RUNNING:
        cases.case(classname, name, time, error=(f"{name} did not finish (the run was interrupted or its process died)",
                                                 "unfinished"), out=commands)
    elif result.outcome is Outcome.SKIPPED:
        cases.case(classname, name, time, skipped=result.message or "skipped", out=commands)
    else:
        cases.case(classname, name, time, out=commands)


#: the most of each stream of a failed step the JUnit report keeps (its start and its end)
JUNIT_OUTPUT = 64 * 1024


def _bounded(text: str) -> str:
    """The start (a quarter) and the end of ``text`` with the truncation note between (the text
    is masked already: the cut cannot leave a piece of a secret)."""
    if len(text) <= JUNIT_OUTPUT:
        return text
    head = JUNIT_OUTPUT // 4
    tail = JUNIT_OUTPUT - head
    return text[:head] + truncation_note(len(text) - JUNIT_OUTPUT) + text[-tail:]


class JunitWriter:
    """Listener that keeps the run's finished steps; ``write`` puts the report in ``path``.

    Output of steps that passed is dropped as they come (the report shows their commands only),
    so a long run does not keep every command's output in memory twice."""

    name = "junit"

    def __init__(self, path: str) -> None:
        self.path = path
        self.steps: list[ev.StepFinished] = []
        self.written = False

    def __call__(self, event: ev.Event, view: RunView) -> None:
        if isinstance(event, ev.StepFinished):
            if event.failure is None and (event.stdout or event.stderr):
                event = dataclasses.replace(event, stdout="", stderr="")
            elif len(event.stdout) > JUNIT_OUTPUT or len(event.stderr) > JUNIT_OUTPUT:
                # a failed step keeps the start and the end of each stream (errors come last): a
                # fleet failing with megabytes each must not hold them all (the node logs have all)
                event = dataclasses.replace(event, stdout=_bounded(event.stdout), stderr=_bounded(event.stderr))
            self.steps.append(event)

    def write(self, state: RunState) -> None:
        """Write the report (again: the last call wins); ConfigError if the file cannot be written."""
        write_private(self.path, junit_xml(state, self.steps).encode("utf-8"), option="--junit")
        self.written = True


class EventStream:
    """Listener for ``--events``: every event as one JSON line (the journal's format)."""

    name = "events"

    def __init__(self, write: Callable[[str], object], flush: Callable[[], object] = lambda: None) -> None:
        self._write, self._flush = write, flush

    def __call__(self, event: ev.Event, view: RunView) -> None:
        import json
        # ASCII: the same JSON values as the journal's, and no bidi or C1 control character from a
        # node reaches a terminal that shows the stream (--events -)
        self._write(json.dumps(event.to_json(), default=str) + "\n")
        self._flush()

