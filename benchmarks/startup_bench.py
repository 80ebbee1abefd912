#!/usr/bin/env python3
"""Benchmark: what a run pays before its first node command (prints figures; not a test).

    python3 benchmarks/startup_bench.py [--runs 15] [--tree PATH]

Issue 12: on the lab's 3-node rolling flow most of zdupgrade's own time is the process start
and its imports.  Each figure is from fresh interpreters, ``--runs`` of each, as the fastest and
the median (this machine is shared: the fastest is the code's, the median the minute's):

1. the interpreter alone (``python3 -c pass``, with this machine's site-packages hooks);
2. the interpreter plus the modules a run imports before the conductor starts (the command line,
   the planner, the conductor, the run folder, the console's outputs, the haproxy hook and the
   SSH transport with paramiko), and how many modules that is.

``--tree`` (repeatable) measures other checkouts (``git worktree add /tmp/old COMMIT``), their
runs interleaved with each other's, to compare commits on the same minutes.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

RUN_PATH = """
import time
t = time.perf_counter()
import zdu.cli.main, zdu.cli.upgrade, zdu.cli.live, zdu.cli.pause, zdu.run.conductor, zdu.run.preflight
import zdu.run.lock, zdu.run.resume, zdu.report.runfolder, zdu.lb.haproxy, zdu.plugins, zdu.run.policy
import zdu.transport.ssh
import argparse, io
from zdu.cli.console import Console
from zdu.cli.live import Outputs
Outputs(argparse.Namespace(quiet=False, verbose=False, junit=None, events=None, plain=True),
        Console(io.StringIO(), io.StringIO()), {})
import sys
print(time.perf_counter() - t, len(sys.modules))
"""


def _timed(argv: list[str], tree: Path) -> float:
    import time
    start = time.perf_counter()
    subprocess.run(argv, check=True, cwd=str(tree), env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"})
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--tree", type=Path, action="append",
                        help="a checkout to measure (repeatable; default: this one)")
    args = parser.parse_args()
    trees = [t.resolve() for t in (args.tree or [ROOT])]
    for tree in trees:
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree / "zdu")], check=True,
                       stdout=subprocess.DEVNULL)
    bare: dict[Path, list[float]] = {t: [] for t in trees}
    imports: dict[Path, list[float]] = {t: [] for t in trees}
    counts: dict[Path, set[int]] = {t: set() for t in trees}
    for _ in range(args.runs):
        for tree in trees:
            bare[tree].append(_timed([sys.executable, "-c", "pass"], tree))
            out = subprocess.run([sys.executable, "-c", RUN_PATH], check=True, capture_output=True, text=True,
                                 cwd=str(tree), env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"}).stdout.split()
            imports[tree].append(float(out[0]))
            counts[tree].add(int(out[1]))
    for tree in trees:
        print(f"tree {tree}, {args.runs} runs")
        print(f"  interpreter start:  fastest {min(bare[tree]) * 1000:.0f} ms, median {statistics.median(bare[tree]) * 1000:.0f} ms")
        print(f"  run-path imports:   fastest {min(imports[tree]) * 1000:.0f} ms, median "
              f"{statistics.median(imports[tree]) * 1000:.0f} ms  ({', '.join(str(c) for c in sorted(counts[tree]))} modules)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
