"""The review commands on run folders of real lab runs under traffic: 3 OpenSSH nodes in Docker
running the sample gateway, HAProxy in front, ``--traffic`` through HAProxy for the whole run.

Made once for the module: a success, and a run where Node-B's new gateway refuses to start
(APPLY_FAILED: Node-B and Node-A rolled back).  Then ``runs`` / ``show`` / ``logs``, ``--junit``
validated, and the HTML report opened in headless Chromium: one timeline row per node with the
run's phases, out-of-rotation windows, and the traffic curve drawn from the run's time series.
"""
from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
import xmlschema

from tests.support.browser import Chromium
from zdu.cli.main import main
from zdu.lab.fleet import Lab
from zdu.report.review import load_run
from zdu.status import Status

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = xmlschema.XMLSchema(str(ROOT / "tests" / "data" / "junit" / "junit.xsd"))
RATE = 100


@dataclass
class LabRuns:
    log_dir: Path
    ids: dict[str, str]
    outs: dict[str, str]
    junit: dict[str, Path]


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main(list(argv), out=out, err=err)
    return int(status), out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def lab_runs(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabRuns]:
    work = tmp_path_factory.mktemp("review-lab")
    log_dir = work / "logs"
    config = lab.write_topology(work / "topology.yaml", lb="haproxy")
    ids, outs, junit = {}, {}, {}
    try:
        for which, fault, expected in (("success", None, Status.SUCCESS), ("rollback", "start", Status.APPLY_FAILED)):
            lab.reset()
            if fault:
                lab.inject_fault("Node-B", fault)
            before = set(p.name for p in log_dir.iterdir()) if log_dir.exists() else set()
            junit[which] = work / f"{which}.xml"
            code, out, err = cli("--old_install_dir", lab.product.old_install_dir, "--new_install_dir",
                                 lab.product.new_install_dir, "--config", str(config), "--log_dir", str(log_dir),
                                 "--traffic", f"{lab.frontend_url}/", "--traffic-rate", str(RATE),
                                 "--junit", str(junit[which]))
            assert code == int(expected), out + err
            (new,) = set(p.name for p in log_dir.iterdir()) - before
            ids[which], outs[which] = new, out + err
        yield LabRuns(log_dir, ids, outs, junit)
    finally:
        lab.reset()


def test_runs_and_show_on_lab_runs(lab_runs: LabRuns) -> None:
    code, out, err = cli("runs", "--log_dir", str(lab_runs.log_dir))
    assert code == 0, err
    lines = [line for line in out.splitlines() if re.match(r"\d{8}-", line)]
    assert [line.split()[0] for line in lines] == [lab_runs.ids["rollback"], lab_runs.ids["success"]]
    assert re.search(r"APPLY_FAILED \(73\)\s+Node-B\s+Node-A, Node-B\s*$", lines[0]), lines[0]
    assert "SUCCESS (0)" in lines[1] and "lab-gateway" in lines[1] and "/opt/gateway-1.0 -> /opt/gateway-2.0" in lines[1]
    code, out, err = cli("show", lab_runs.ids["success"], "--log_dir", str(lab_runs.log_dir))
    assert code == 0, err
    assert "Summary table (Status.SUCCESS)" in out
    assert re.search(r"traffic: \d+ sent, 0 failed", out)
    for node in ("Node-A", "Node-B", "Node-C"):
        assert re.search(rf"while {node} was out of rotation: \d+ sent, 0 failed", out), out
        assert re.search(rf"{node} disable: ok .*\n.*{node} enable: ok", out)
    code, out, err = cli("show", lab_runs.ids["rollback"], "--log_dir", str(lab_runs.log_dir))
    assert re.search(r"Node-B APPLY \(failed\): ROLLBACK_ALL -> rolls back Node-B, Node-A", out), out


def test_logs_of_the_failed_start(lab_runs: LabRuns) -> None:
    code, out, err = cli("logs", lab_runs.ids["rollback"], "Node-B", "--failed", "--log_dir", str(lab_runs.log_dir))
    assert code == 0, err
    first = out.split("==> ")[1]
    assert first.startswith("Node-B APPLY [") and ": FAILED" in first.splitlines()[0], first[:500]
    assert "$ " in first and "/opt/gateway-2.0" in first
    code, out, err = cli("logs", lab_runs.ids["success"], "Node-A", "--phase", "LB", "--log_dir", str(lab_runs.log_dir))
    assert out.count("==> Node-A load balancer") == 2 and "disable: ok" in out and "enable: ok" in out


def test_junit_of_lab_runs_validates(lab_runs: LabRuns) -> None:
    for which in ("success", "rollback"):
        SCHEMA.validate(str(lab_runs.junit[which]))
    cases = {(c.get("classname"), c.get("name")): c for c in ET.parse(lab_runs.junit["rollback"]).getroot().iter("testcase")}
    failure = cases[("zdupgrade.Node-B", "APPLY")].find("failure")
    assert failure is not None and failure.get("type") == "failed" and "$ " in (failure.text or "")
    assert cases[("zdupgrade.Node-A", "ROLLBACK")].find("failure") is None
    assert cases[("zdupgrade.Node-C", "APPLY")].find("skipped") is not None


CHART = """(() => {
  const svg = document.getElementById('traffic-chart');
  if (!svg) return null;
  const rate = svg.querySelector('polyline.rate'), p99 = svg.querySelector('polyline.p99');
  return {rate: rate.points.numberOfItems, p99: p99.points.numberOfItems,
          width: rate.getBoundingClientRect().width, failures: svg.querySelectorAll('rect.failures').length,
          shades: svg.querySelectorAll('rect.out-shade').length,
          summary: document.getElementById('traffic-summary').textContent};
})()"""


def test_report_in_chromium_timeline_and_traffic(lab_runs: LabRuns, tmp_path: Path) -> None:
    with Chromium(tmp_path) as browser:
        for which in ("success", "rollback"):
            target = tmp_path / f"{which}.html"
            code, out, err = cli("report", lab_runs.ids[which], "-o", str(target), "--log_dir", str(lab_runs.log_dir))
            assert code == 0, err
            run = load_run(lab_runs.log_dir, lab_runs.ids[which])
            assert run.state is not None and run.state.traffic is not None
            page = browser.open(target)
            assert page.evaluate("window.__violations") == []
            rows = page.evaluate("""Array.from(document.querySelectorAll('#gantt g.node-row')).map(g => [g.dataset.node,
                Array.from(g.querySelectorAll('rect.phase')).filter(r => r.getBoundingClientRect().width > 0)
                  .map(r => r.dataset.phase + ' ' + r.dataset.outcome),
                g.querySelectorAll('rect.out-window').length])""")
            expected: list[Any] = []
            for name in run.state.node_names:
                node = run.state.nodes[name]
                phases = [f"{p.value} {r.outcome.value}" for p, r in node.phases.items()]
                if node.rollback:
                    phases.append(f"ROLLBACK {node.rollback.outcome.value}")
                expected.append([name, phases, len(node.out_windows)])
            assert rows == expected, which
            chart = page.evaluate(CHART)
            series = run.state.traffic["series"]
            # one point per second of traffic: a lab run now takes 2-4 s, so at least 2 (a line)
            assert chart["rate"] == chart["p99"] == len(series) >= 2, chart
            assert chart["width"] > 300
            windows = sum(len(run.state.nodes[n].out_windows) for n in run.state.node_names)
            assert chart["shades"] == windows > 0
            assert chart["summary"] == run.state.traffic["summary_line"]
            assert chart["failures"] == sum(1 for p in series if p["failed"])
            if which == "success":
                assert rows == [[n, [f"{p} PASSED" for p in ("EXPORT", "UPGRADE", "PRE-APPLY", "APPLY", "POST-APPLY")], 1]
                                for n in ("Node-A", "Node-B", "Node-C")]
                assert chart["failures"] == 0 and sum(p["sent"] for p in series) == run.state.traffic["sent"]
                page.screenshot(tmp_path / "success.png")
            else:
                assert rows[1][1][-1] == "ROLLBACK PASSED" and "APPLY FAILED" in rows[1][1]
                assert rows[2][1] == ["EXPORT PASSED", "UPGRADE PASSED"]
