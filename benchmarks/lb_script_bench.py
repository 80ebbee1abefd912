"""Figures for the script load-balancer hook: per-action overhead and memory for loud hooks.

    python3 benchmarks/lb_script_bench.py [--runs 50] [--megabytes 200]

Prints (asserts nothing):
1. wall time of a trivial hook (``exit 0``) through ScriptLoadBalancer vs a bare
   ``subprocess.run`` of the same file: what the session, the pipe polling and the
   exit check cost per action;
2. peak Python heap (tracemalloc) and the control process's max RSS growth while a
   hook prints ``--megabytes`` MB: the output kept is bounded at 64 KiB.
"""
from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zdu.lb.script import ScriptLoadBalancer  # noqa: E402
from zdu.model import Node  # noqa: E402

NODE = Node("Node-A", "127.0.0.231", lb_server="node-a")


def script(folder: Path, body: str) -> Path:
    path = folder / f"hook{abs(hash(body))}.sh"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def timings(action: object, runs: int) -> tuple[float, float]:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        action()  # type: ignore[operator]
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return statistics.mean(samples), samples[int(len(samples) * 0.95) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--megabytes", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        trivial = script(folder, "exit 0\n")
        lb = ScriptLoadBalancer(str(trivial))
        mean, p95 = timings(lambda: lb.disable(NODE), args.runs)
        base_mean, base_p95 = timings(lambda: subprocess.run([str(trivial)], capture_output=True),
                                      args.runs)
        print(f"trivial hook, {args.runs} runs: ScriptLoadBalancer mean {mean:.1f} ms, p95 {p95:.1f} ms; "
              f"bare subprocess.run mean {base_mean:.1f} ms, p95 {base_p95:.1f} ms")

        loud = script(folder, f"head -c {args.megabytes * 1024 * 1024} /dev/zero | tr '\\0' x\n"
                              "echo; echo done\n")
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        tracemalloc.start()
        started = time.perf_counter()
        result = ScriptLoadBalancer(str(loud), timeout=600).enable(NODE)
        seconds = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rss_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
        print(f"hook printing {args.megabytes} MB: {seconds:.2f} s "
              f"({args.megabytes / seconds:.0f} MB/s), kept {len(result.details['output'])} bytes, "
              f"peak Python heap {peak / 1024:.0f} KiB, max RSS growth {rss_growth} KiB; "
              f"message {result.message!r}")


if __name__ == "__main__":
    main()
