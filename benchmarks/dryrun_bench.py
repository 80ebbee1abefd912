#!/usr/bin/env python3
"""Benchmark: ``./zdupgrade --dry-run`` of a generated fleet (prints figures; not a test).

    python3 benchmarks/dryrun_bench.py [--nodes 1000] [--runs 3]

Writes a topology of ``--nodes`` nodes (the reference Axway topology's settings, waves of 10) for
the built-in ``axway`` profile (20 templates, one secret from the environment) and for
``lab-gateway``; times ``./zdupgrade --dry-run`` as a process (best of ``--runs``, wall and CPU,
bytecode cached as in an installed copy), then the parts in this process: loading the topology,
building the plan, formatting it; then whether planning is linear in nodes: the plan of the
axway profile built for 250 to 4,000 nodes (``--linear``, best of 3 each), per node.  No lab, no root.
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def topology(path: Path, count: int, profile: str) -> Path:
    base = yaml.safe_load((ROOT / "config" / "topology.yaml").read_text())
    base.update(profile=profile, serial=10)
    base["nodes"] = [{"name": f"node-{i:04d}", "host": f"10.1.{i // 250}.{i % 250 + 1}", "group": "Gateway",
                      "roles": ["gateway", "node-manager"], "lb_server": f"gw-{i:04d}",
                      "vars": {"instance": f"Gateway{i}"}} for i in range(count)]
    if profile != "axway":
        base.pop("vars", None)
    path.write_text(yaml.safe_dump(base, sort_keys=False))
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--linear", default="250,500,1000,2000,4000",
                        help="node counts to plan for, to show the cost per node (empty: skip)")
    args = parser.parse_args()
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "zdu")], check=True,
                   stdout=subprocess.DEVNULL)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["AXWAY_ADMIN_PASSWORD"] = "bench-secret"
    print(f"{os.cpu_count()} CPU(s), load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="zdu-dryrun-") as tmp:
        for profile in ("axway", "lab-gateway"):
            path = topology(Path(tmp) / f"{profile}.yaml", args.nodes, profile)
            argv = [sys.executable, str(ROOT / "zdupgrade"), "--config", str(path), "--old_install_dir",
                    "/opt/Axway-7.5.3", "--new_install_dir", "/opt/Axway-7.7", "--dry-run"]
            best = (float("inf"), 0.0, 0)
            for _ in range(args.runs):
                t0 = time.monotonic()
                proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
                out = proc.stdout.read() if proc.stdout else b""
                _, status, usage = os.wait4(proc.pid, 0)
                wall = time.monotonic() - t0
                if os.waitstatus_to_exitcode(status) != 0:
                    print(out.decode(errors="replace")[-1000:])
                    return 1
                best = min(best, (wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss))
            lines = out.count(b"\n")
            print(f"  {profile:12s} {args.nodes} nodes: ./zdupgrade --dry-run {best[0]:.2f} s wall, "
                  f"{best[1]:.2f} s CPU, peak RSS {best[2] / 1024:.0f} MB, {lines} lines of plan")
            parts(path, profile)
        if args.linear:
            linear(Path(tmp), [int(n) for n in args.linear.split(",")])
    return 0


def linear(tmp: Path, counts: list[int]) -> None:
    """build_plan's time per node for each of ``counts`` nodes (templates already compiled)."""
    from zdu.config.profile import load_profile
    from zdu.config.topology import load_topology
    from zdu.planning.plan import build_plan
    profile = load_profile("axway", None)
    print("  build_plan, axway profile (best of 3; linear when the time per node stays flat):")
    first = None
    for count in counts:
        topo = load_topology(str(topology(tmp / f"linear-{count}.yaml", count, "axway")))
        best = float("inf")
        for _ in range(3):
            t0 = time.process_time()
            build_plan(topo, profile, old_install_dir="/opt/Axway-7.5.3", new_install_dir="/opt/Axway-7.7",
                       run_id="bench", env=os.environ)
            best = min(best, time.process_time() - t0)
        per_node = best / count * 1e6
        first = first or per_node
        print(f"    {count:5d} nodes: {best:6.3f} s CPU, {per_node:5.0f} us per node (x{per_node / first:.2f})")


def parts(path: Path, profile_name: str) -> None:
    os.environ["AXWAY_ADMIN_PASSWORD"] = "bench-secret"
    from zdu.config.profile import load_profile
    from zdu.config.topology import load_topology
    from zdu.planning.plan import build_plan, format_plan
    t0 = time.perf_counter()
    topo = load_topology(str(path))
    t1 = time.perf_counter()
    profile = load_profile(profile_name, None)
    plan = build_plan(topo, profile, old_install_dir="/opt/Axway-7.5.3", new_install_dir="/opt/Axway-7.7",
                      run_id="bench", env=os.environ)
    t2 = time.perf_counter()
    format_plan(plan)
    t3 = time.perf_counter()
    print(f"    in this process: load topology {t1 - t0:.3f} s, build plan {t2 - t1:.3f} s, "
          f"format {t3 - t2:.3f} s (max RSS so far {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)")


if __name__ == "__main__":
    sys.exit(main())
