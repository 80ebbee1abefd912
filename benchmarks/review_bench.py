"""Reading runs back at scale: replaying a big journal, show, logs, the HTML report, JUnit, and
``zdupgrade runs`` over many run folders.  Prints figures; asserts nothing.

    python3 benchmarks/review_bench.py                 # 100 nodes x 20 steps, 8 KiB output each; 200 runs
    python3 benchmarks/review_bench.py --nodes 300 --runs 500

The run folders are written by the real RunFolder listeners from synthetic events (a
one-hour run with traffic), in a temporary directory removed at the end.
"""
from __future__ import annotations

import argparse
import io
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.unit.test_review import opened, write_run  # noqa: E402
from zdu.cli.main import main  # noqa: E402
from zdu.report.html import render_html  # noqa: E402
from zdu.report.junit import junit_xml  # noqa: E402
from zdu.report.review import list_runs, load_run  # noqa: E402
from zdu.report.views import render_logs, render_show  # noqa: E402
from zdu.run import events as ev  # noqa: E402
from zdu.status import UPGRADE_PHASES, LbAction, Outcome, Status, StepKind  # noqa: E402


def big_run(run_id: str, nodes: int, steps: int, output: int) -> list[ev.Event]:
    names = tuple(f"gw{i:03d}" for i in range(nodes))
    t = time.time() - 3600
    events: list[ev.Event] = [opened(run_id, t, names)]
    per_node = 3600 / nodes
    text = ("x" * 79 + "\n") * (output // 80)
    for n, name in enumerate(names):
        at = t + n * per_node
        for phase in UPGRADE_PHASES:
            events.append(ev.PhaseStarted(at=at, node=name, phase=phase, steps=steps // 5))
            for s in range(steps // 5):
                key = f"{name}/{phase.value}/{s}"
                events.append(ev.StepStarted(at=at, node=name, phase=phase, key=key, name=f"step {s}",
                                             kind=StepKind.RUN, command=f"run {s}"))
                events.append(ev.StepFinished(at=at + 0.1, node=name, phase=phase, key=key, name=f"step {s}",
                                              kind=StepKind.RUN, command=f"run {s}", exit_code=0, duration=0.1,
                                              stdout=text))
                at += 0.1
            events.append(ev.PhaseFinished(at=at, node=name, phase=phase, outcome=Outcome.PASSED, code=0))
            if phase.value == "PRE-APPLY":
                events += [ev.LbStarted(at=at, node=name, action=LbAction.DISABLE),
                           ev.LbFinished(at=at + 0.2, node=name, action=LbAction.DISABLE, ok=True, duration=0.2)]
        events += [ev.LbStarted(at=at, node=name, action=LbAction.ENABLE),
                   ev.LbFinished(at=at + 0.2, node=name, action=LbAction.ENABLE, ok=True, duration=0.2)]
    series = [{"t": float(i), "sent": 200, "failed": 0, "p50_ms": 2.0, "p99_ms": 9.0} for i in range(3600)]
    events.append(ev.TrafficMeasured(at=t + 3600, report={"summary_line": "traffic: 720000 sent, 0 failed",
                                                          "series": series, "series_interval": 1.0,
                                                          "started_at": t, "duration": 3600.0, "windows": []}))
    events.append(ev.RunFinished(at=t + 3601, status=Status.SUCCESS))
    return events


def timed(label: str, fn, *args):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    result = fn(*args)
    print(f"  {label:<42} {time.perf_counter() - start:7.2f} s")
    return result


def main_bench() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--steps", type=int, default=20, help="steps per node (over the 5 phases)")
    parser.add_argument("--output", type=int, default=8192, help="bytes of stdout per step")
    parser.add_argument("--runs", type=int, default=200, help="run folders for `zdupgrade runs`")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="zdu-review-bench-"))
    try:
        log_dir = work / "logs"
        events = big_run("20260101-000000-000000", args.nodes, args.steps, args.output)
        folder = timed(f"write the run folder ({len(events)} events)", write_run, log_dir, "20260101-000000-000000",
                       events)
        size = (folder / "journal.jsonl").stat().st_size
        print(f"  journal.jsonl: {size / 2**20:.1f} MiB, run.json: {(folder / 'run.json').stat().st_size / 2**20:.1f} MiB")
        run = timed("read + replay the journal", load_run, log_dir, "20260101-000000-000000")
        assert run.state is not None
        show = timed("render show", render_show, run)
        logs = timed("render logs (every step)", render_logs, run)
        page = timed("render the HTML report", render_html, run)
        junit = timed("render JUnit", junit_xml, run.state, run.steps())
        print(f"  show {len(show) / 1024:.0f} KiB, logs {len(logs) / 2**20:.1f} MiB, "
              f"report {len(page) / 2**20:.1f} MiB, junit {len(junit) / 2**20:.1f} MiB")
        out = io.StringIO()
        start = time.perf_counter()
        main(["report", "-o", str(work / "r.html"), "--log_dir", str(log_dir)], out=out)
        print(f"  {'zdupgrade report (CLI, file written)':<42} {time.perf_counter() - start:7.2f} s")
        small = big_run("x", 3, 15, 200)
        for i in range(1, args.runs):
            rid = f"20260102-000000-{i:06d}"
            small[0] = opened(rid, small[0].at + i, small[0].node_names)  # type: ignore[attr-defined]
            write_run(log_dir, rid, small)
        found = timed(f"list_runs over {args.runs} folders", list_runs, log_dir)
        assert len(found) == args.runs
        start = time.perf_counter()
        main(["runs", "--log_dir", str(log_dir)], out=out)
        print(f"  {'zdupgrade runs (CLI) over ' + str(args.runs) + ' folders':<42} {time.perf_counter() - start:7.2f} s")
        print(f"  peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main_bench()
