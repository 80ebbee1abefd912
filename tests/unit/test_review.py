"""Reading run folders back (fast: the run folders are written by the real RunFolder listeners from
events made here): runs / show / logs views, damaged folders, run.json fallback, JUnit, the HTML
text, the event docs."""
from __future__ import annotations

import dataclasses
import html
import io
import json
import re
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import xmlschema

from zdu.cli.main import main
from zdu.report.html import render_html
from zdu.report.junit import junit_xml
from zdu.report.review import list_runs, load_run, state_from_record
from zdu.report.rundir import RunDir
from zdu.report.runfolder import RunFolder
from zdu.report.views import printable, render_logs, render_runs, render_show
from zdu.run import events as ev
from zdu.run.policy import Action
from zdu.run.state import Recorder, RunState
from zdu.status import FailureKind, LbAction, Outcome, Phase, Status, StepKind, Version

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = xmlschema.XMLSchema(str(ROOT / "tests" / "data" / "junit" / "junit.xsd"))
HOSTILE = "<script>alert(1)</script>\x1b[31mred\x1b[0m & \"quotes\" ]]> \x00\x07 </pre></details>"


def write_run(log_dir: Path, run_id: str, events: list[ev.Event], *, finish: bool = True) -> Path:
    """A run folder written by the real listeners (journal, run.log, node logs, run.json)."""
    opened = events[0]
    assert isinstance(opened, ev.RunOpened)
    run_dir = RunDir.create(log_dir, run_id)
    folder = RunFolder(run_dir)
    recorder = Recorder(RunState.opened(opened))
    for listener in folder.listeners(recorder):
        recorder.subscribe(listener)
    for event in events:
        recorder.emit(event)
    if finish:
        folder.write_json(recorder.snapshot().to_dict())
    folder.close()
    run_dir.close()
    return log_dir / run_id


def opened(run_id: str, at: float, nodes: tuple[str, ...] = ("A", "B")) -> ev.RunOpened:
    return ev.RunOpened(at=at, run_id=run_id, old_install_dir="/opt/gw-1", new_install_dir="/opt/gw-2",
                        profile="lab", topology="/etc/zdu/topology.yaml", node_names=nodes, lb="script",
                        invocation={"old_install_dir": "/opt/gw-1", "new_install_dir": "/opt/gw-2"},
                        plan_fingerprint="f", tool_version="0.1.0", user="ops", host="ctl",
                        argv=("--old_install_dir", "/opt/gw-1"))


def step(node: str, phase: Phase, name: str, at: float, *, code: int = 0, out: str = "", err: str = "",
         failure: FailureKind | None = None, message: str = "") -> list[ev.Event]:
    key = f"{node}/{phase.value}/{name}"
    return [ev.StepStarted(at=at, node=node, phase=phase, key=key, name=name, kind=StepKind.RUN, command=f"do {name}"),
            ev.StepFinished(at=at + 0.5, node=node, phase=phase, key=key, name=name, kind=StepKind.RUN,
                            command=f"do {name}", exit_code=code, failure=failure, duration=0.5, stdout=out,
                            stderr=err, message=message)]


def phase(node: str, ph: Phase, at: float, *, fail: bool = False, out: str = "") -> list[ev.Event]:
    events: list[ev.Event] = [ev.PhaseStarted(at=at, node=node, phase=ph, steps=1)]
    if fail:
        events += step(node, ph, "start new", at, code=3, out=out, err="it broke\n", failure=FailureKind.FAILED,
                       message="exit code 3: it broke")
        events.append(ev.PhaseFinished(at=at + 0.6, node=node, phase=ph, outcome=Outcome.FAILED, code=3,
                                       failure=FailureKind.FAILED, message="exit code 3: it broke"))
    else:
        events += step(node, ph, f"{ph.value.lower()} step", at, out=f"{node} {ph.value} ok\n")
        events.append(ev.PhaseFinished(at=at + 0.6, node=node, phase=ph, outcome=Outcome.PASSED, code=0))
    return events


def rollback_run(run_id: str, t: float) -> list[ev.Event]:
    """A passes, then B fails in APPLY (output hostile); both are rolled back."""
    events: list[ev.Event] = [opened(run_id, t), ev.RunStarted(at=t, message="go")]
    for i, node in enumerate("AB"):
        events += phase(node, Phase.EXPORT, t + 1 + i) + phase(node, Phase.UPGRADE, t + 3 + i)
    for node, start in (("A", 10), ("B", 20)):
        events += phase(node, Phase.PRE_APPLY, t + start)
        events += [ev.LbStarted(at=t + start + 1, node=node, action=LbAction.DISABLE),
                   ev.LbFinished(at=t + start + 1.1, node=node, action=LbAction.DISABLE, ok=True, duration=0.1,
                                 message="disabled", details={"output": f"hook said {HOSTILE}"})]
        events += phase(node, Phase.APPLY, t + start + 2, fail=node == "B", out=HOSTILE)
        if node == "A":
            events += phase(node, Phase.POST_APPLY, t + start + 4)
            events += [ev.LbStarted(at=t + start + 5, node=node, action=LbAction.ENABLE),
                       ev.LbFinished(at=t + start + 5.1, node=node, action=LbAction.ENABLE, ok=True, duration=0.1)]
    events += [ev.Decided(at=t + 23, node="B", phase=Phase.APPLY, action=Action.ROLLBACK_ALL, reason="B failed; "
                          "undo B and A", failure=FailureKind.FAILED, targets=("B", "A")),
               ev.RollbacksPlanned(at=t + 23, order=("B", "A"))]
    for node, start in (("B", 24), ("A", 26)):
        events += [ev.RollbackStarted(at=t + start, node=node, undoing=Phase.APPLY, steps=1),
                   *step(node, Phase.ROLLBACK, "start old", t + start),
                   ev.RollbackFinished(at=t + start + 1, node=node, outcome=Outcome.PASSED, version=Version.OLD)]
    events += [ev.LbStarted(at=t + 28, node="B", action=LbAction.ENABLE),
               ev.LbFinished(at=t + 28.1, node="B", action=LbAction.ENABLE, ok=True, duration=0.1),
               ev.RunFinished(at=t + 30, status=Status.APPLY_FAILED, message="APPLY failed on B")]
    return events


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    log_dir = tmp_path / "logs"
    t = time.time() - 3600
    write_run(log_dir, "20260101-000000-000001", rollback_run("20260101-000000-000001", t))
    ok = [opened("20260101-000000-000002", t + 100), ev.RunStarted(at=t + 100, message="go")]
    for node in "AB":
        for i, ph in enumerate((Phase.EXPORT, Phase.UPGRADE, Phase.PRE_APPLY, Phase.APPLY, Phase.POST_APPLY)):
            ok += phase(node, ph, t + 101 + i)
    ok.append(ev.RunFinished(at=t + 110, status=Status.SUCCESS))
    write_run(log_dir, "20260101-000000-000002", ok)
    # killed mid-APPLY: no RunFinished, and nobody holds control.lock
    dead = [opened("20260101-000000-000003", t + 200), *phase("A", Phase.EXPORT, t + 201),
            ev.PhaseStarted(at=t + 203, node="A", phase=Phase.APPLY, steps=2)]
    write_run(log_dir, "20260101-000000-000003", dead, finish=False)
    return log_dir


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main(list(argv), out=out, err=err)
    return int(status), out.getvalue(), err.getvalue()


def test_runs_lists_newest_first_with_status_and_nodes(logs: Path) -> None:
    (logs / "junk").mkdir(mode=0o700)                                   # not a run: listed as damaged
    bad = logs / "20260101-000000-000004"
    bad.mkdir(mode=0o700)
    (bad / "journal.jsonl").write_text('{"type": "RunOpened"\n')        # cut, no run.json
    code, out, err = cli("runs", "--log_dir", str(logs))
    assert code == 0, err
    lines = [line for line in out.splitlines() if re.match(r"\d{8}-|junk", line)]
    ids = [line.split()[0] for line in lines]
    # newest first by start; damaged ones (no start) last
    assert ids[:3] == ["20260101-000000-000003", "20260101-000000-000002", "20260101-000000-000001"]
    assert set(ids[3:]) == {"20260101-000000-000004", "junk"}
    by_id = dict(zip(ids, lines))
    assert "UNFINISHED" in by_id["20260101-000000-000003"] and "--resume" in by_id["20260101-000000-000003"]
    assert "SUCCESS (0)" in by_id["20260101-000000-000002"] and "ops@ctl" in by_id["20260101-000000-000002"]
    row = by_id["20260101-000000-000001"]
    assert "APPLY_FAILED (73)" in row and "topology.yaml" in row and "/opt/gw-1 -> /opt/gw-2" in row
    assert re.search(r"APPLY_FAILED \(73\)\s+B\s+A, B", row), row           # failed B; rolled back A, B
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}", row)     # date and time zone
    assert "DAMAGED" in by_id["20260101-000000-000004"] and "line 1" not in by_id["junk"]
    assert "DAMAGED: no journal.jsonl; no run.json" in by_id["junk"]
    assert "Traceback" not in out + err


def test_a_damaged_journal_falls_back_to_run_json(logs: Path) -> None:
    folder = logs / "20260101-000000-000001"
    text = (folder / "journal.jsonl").read_text().splitlines()
    text[5] = "{not json"
    (folder / "journal.jsonl").write_text("\n".join(text) + "\n")
    run = load_run(logs, "20260101-000000-000001")
    assert run.source == "run.json" and "line 6: not JSON" in run.problem
    assert run.state is not None and run.state.status is Status.APPLY_FAILED
    assert run.state.nodes["B"].phases[Phase.APPLY].outcome is Outcome.FAILED
    code, out, err = cli("show", "20260101-000000-000001", "--log_dir", str(logs))
    assert code == 0 and "from run.json" in out and "FAILED (3)" in out
    code, out, err = cli("logs", "20260101-000000-000001", "--log_dir", str(logs))
    assert code == 78 and "journal.jsonl" in err and "Traceback" not in err
    (folder / "run.json").write_text('{"run_id": 3}')
    run = load_run(logs, "20260101-000000-000001")
    assert run.damaged and "run.json: run.json.run_id: expected a str" in run.problem
    code, out, err = cli("show", "20260101-000000-000001", "--log_dir", str(logs))
    assert code == 78 and "is damaged" in err


def test_run_json_round_trips_to_the_same_state(logs: Path) -> None:
    run = load_run(logs, "20260101-000000-000001")
    assert run.state is not None
    data = json.loads((logs / "20260101-000000-000001" / "run.json").read_text())
    again = state_from_record(data)
    assert again.to_dict() == run.state.to_dict()


def test_show_has_decisions_phases_windows_and_lb_actions(logs: Path) -> None:
    code, out, err = cli("show", "--log_dir", str(logs), "20260101-000000-000001")
    assert code == 0, err
    assert "Summary table (Status.APPLY_FAILED)" in out
    assert re.search(r"B APPLY \(failed\): ROLLBACK_ALL -> rolls back B, A\n\s+reason: B failed; undo B and A", out)
    assert re.search(r"APPLY\s+\d\d:\d\d:\d\d -> \d\d:\d\d:\d\d\s+0\.60s\s+FAILED \(3\) - exit code 3: it broke", out)
    assert re.search(r"out of rotation \d\d:\d\d:\d\d -> \d\d:\d\d:\d\d \(4\.10s\)", out)   # A: disable asked at +11, back at +15.1
    assert re.search(r"B disable: ok \(0\.10s\) - disabled", out)
    # the latest run by default; an unfinished one says so, not FATAL_ERROR
    code, out, err = cli("show", "--log_dir", str(logs))
    assert code == 0 and "20260101-000000-000003" in out
    assert "Summary table (not finished)" in out and "FATAL" not in out and "UNFINISHED" in out


def test_logs_filters_and_failed_first_and_escapes(logs: Path) -> None:
    code, out, err = cli("logs", "20260101-000000-000001", "B", "--phase", "apply", "--log_dir", str(logs))
    assert code == 0, err
    assert out.count("==> ") == 1 and "==> B APPLY [start new] run" in out and "exit 3: FAILED" in out
    assert "\x1b" not in out and "\\x1b[31mred" in out and "\\x00\\x07" in out   # terminal-safe
    assert "--- stderr\nit broke" in out
    code, out, err = cli("logs", "20260101-000000-000001", "--failed", "--log_dir", str(logs))
    blocks = out.split("==> ")[1:]
    assert blocks[0].startswith("B APPLY [start new]") and len(blocks) > 10
    code, out, err = cli("logs", "20260101-000000-000001", "A", "--phase", "LB", "--log_dir", str(logs))
    assert out.count("==> A load balancer") == 2 and "hook said <script>" in out
    # `logs NODE`: the latest run
    code, out, err = cli("logs", "A", "--log_dir", str(logs))
    assert code == 0 and "A EXPORT" in out and "B EXPORT" not in out
    code, out, err = cli("logs", "20260101-000000-000001", "Z", "--log_dir", str(logs))
    assert code == 78 and "has no node 'Z' (nodes: A, B)" in err
    code, out, err = cli("logs", "20260101-000000-000001", "--phase", "NOPE", "--log_dir", str(logs))
    assert code == 78 and "--phase: unknown phase 'NOPE'" in err


def test_views_on_missing_runs_and_bad_ids(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli("runs", "--log_dir", str(tmp_path / "none"))     # a typo'd --log_dir: said
    assert code == 78 and f"--log_dir {tmp_path / 'none'}: no such directory" in err
    (tmp_path / "empty").mkdir()
    code, out, err = cli("runs", "--log_dir", str(tmp_path / "empty"))
    assert code == 0 and out.strip() == "no runs"
    code, out, err = cli("show", "--log_dir", str(tmp_path / "none"))
    assert code == 78 and "no run under" in err
    code, out, err = cli("show", "../etc", "--log_dir", str(tmp_path))
    assert code == 78 and "invalid run id" in err
    code, out, err = cli("report", "--log_dir", str(tmp_path))
    assert code == 2 and "the following arguments are required: -o/--output" in capsys.readouterr().err


def test_the_latest_run_is_a_run_not_the_last_folder_by_name(logs: Path, tmp_path: Path) -> None:
    """`show` without a run id: the newest run that can be read, not a folder sorting after it
    (zzz-notes, a backup copy); a --log_dir holding no run at all (/etc, say) is said so."""
    (logs / "zzz-notes").mkdir(mode=0o700)
    code, out, err = cli("show", "--log_dir", str(logs))
    assert code == 0 and "zzz-notes" not in out + err, err
    other = tmp_path / "etc"
    for name in ("ssh", "zsh"):
        (other / name).mkdir(parents=True)
    code, out, err = cli("show", "--log_dir", str(other))
    assert code == 78 and "no run under" in err and "2 other folder(s) there, none a run of zdupgrade" in err


def test_junit_validates_and_carries_failures(logs: Path) -> None:
    run = load_run(logs, "20260101-000000-000001")
    assert run.state is not None
    text = junit_xml(run.state, run.steps())
    SCHEMA.validate(text)
    root = ET.fromstring(text)
    cases = {(c.get("classname"), c.get("name")): c for c in root.iter("testcase")}
    assert {name for (cls, name) in cases if cls == "zdupgrade.A"} == \
        {"EXPORT", "UPGRADE", "PRE-APPLY", "APPLY", "POST-APPLY", "ROLLBACK"}
    failure = cases[("zdupgrade.B", "APPLY")].find("failure")
    assert failure is not None and failure.get("type") == "failed" and failure.get("message") == "exit code 3: it broke"
    assert "$ do start new" in (failure.text or "") and "<script>alert(1)</script>" in (failure.text or "")
    assert "\\x1b[31m" in (failure.text or "") and "\\x00" in (failure.text or "")
    assert cases[("zdupgrade.B", "POST-APPLY")].find("skipped") is not None
    assert cases[("zdupgrade.run", "status")].find("failure").get("type") == "APPLY_FAILED"  # type: ignore[union-attr]
    suite = root.find("testsuite")
    assert suite is not None
    assert int(suite.get("tests", 0)) == len(cases)
    assert int(suite.get("failures", 0)) == sum(1 for c in cases.values() if c.find("failure") is not None) == 2
    # an unfinished run: its running phase is an error, and so is the run
    dead = load_run(logs, "20260101-000000-000003")
    assert dead.state is not None
    text = junit_xml(dead.state, dead.steps())
    SCHEMA.validate(text)
    root = ET.fromstring(text)
    errors = {(c.get("classname"), c.get("name")) for c in root.iter("testcase") if c.find("error") is not None}
    assert errors == {("zdupgrade.A", "APPLY"), ("zdupgrade.run", "status")}


def test_the_schema_refuses_what_ci_would_refuse() -> None:
    good = ('<testsuites><testsuite name="s" tests="1" failures="0" errors="0" time="1.0">'
            '<testcase classname="c" name="n" time="0.5"/></testsuite></testsuites>')
    SCHEMA.validate(good)
    for bad in (good.replace('tests="1"', 'tests="one"'), good.replace('time="0.5"', 'time="-1"'),
                good.replace('<testcase classname="c" name="n" time="0.5"/>',
                             '<testcase classname="c" name="n" time="0.5"><failure/><error/></testcase>'),
                good.replace(' name="n"', "")):
        assert not SCHEMA.is_valid(bad), bad


def test_html_escapes_hostile_output_and_has_no_external_reference(logs: Path) -> None:
    run = load_run(logs, "20260101-000000-000001")
    page = render_html(run)
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;/pre&gt;&lt;/details&gt;" in page and "&amp; &quot;quotes&quot;" in page
    assert "\x1b" not in page and "\x00" not in page
    assert page.count("<script>") == 1                               # ours only
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:|//)""", page)
    assert "default-src 'none'" in html.unescape(page)
    assert page.count('class="node-row"') == 2


def test_printable_shows_controls_and_keeps_text() -> None:
    assert printable("a\tb\nc") == "a\tb\nc"
    assert printable("x\r\ny") == "x\ny"
    assert printable("\x1b]0;title\x07") == "\\x1b]0;title\\x07"
    assert printable("\u202eevil") == "\\u202eevil"
    assert printable("héllo ✓") == "héllo ✓"


def test_every_event_and_field_is_documented() -> None:
    doc = (ROOT / "docs" / "run-json.md").read_text()
    sections = dict(re.findall(r"^### `(\w+)`\n(.*?)(?=^### |^## |\Z)", doc, re.S | re.M))
    base = {f.name for f in dataclasses.fields(ev.Event)}
    assert set(ev.Event.registry) <= set(sections), set(ev.Event.registry) - set(sections)
    for name, cls in ev.Event.registry.items():
        documented = set(re.findall(r"^\| `(\w+)` \|", sections[name], re.M))
        fields = {f.name for f in dataclasses.fields(cls)} - base
        assert fields == documented, (name, fields ^ documented)
    every = doc.split("### Every event", 1)[1].split("###", 1)[0]
    assert base | {"type"} <= set(re.findall(r"^\| `(\w+)` \|", every, re.M))


def test_every_run_json_field_is_documented() -> None:
    doc = (ROOT / "docs" / "run-json.md").read_text()
    table = doc.split("## run.json", 1)[1].split("## Events", 1)[0]
    documented = set(re.findall(r"`(\w+)`", table))
    state = RunState(run_id="r", old_install_dir="/a", new_install_dir="/b", profile="p", topology="t",
                     node_names=["A"])
    data = state.to_dict()
    assert set(data) <= documented, set(data) - documented
    assert set(data["nodes"]["A"]) <= documented, set(data["nodes"]["A"]) - documented
