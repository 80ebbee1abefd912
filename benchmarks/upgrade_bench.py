#!/usr/bin/env python3
"""Benchmark: health gates vs the Axway fixed-wait model on the 3-node lab (prints figures; not a test).

    python3 benchmarks/upgrade_bench.py [--rate 250] [--skip-axway] [--skip-rollback]

Brings up its own lab (3 OpenSSH nodes in Docker + HAProxy) on placement that no test session
uses (127.0.0.201-203, frontend 18205, runtime API 19905, containers ``zdu-bench-*``), then:

1. upgrades it 1.0 -> 2.0 with the shipped ``lab-gateway`` profile (health gates), the ``haproxy``
   hook and probe traffic through HAProxy;
2. resets the lab and does the same with ``benchmarks/axway-fixed-wait.yaml`` (every gate replaced
   by fixed sleeps: 10 s after a stop, 30 s after a start, like the Axway scripts);
3. resets the lab and runs the gated upgrade with the ``health`` fault on Node-B: how long the
   rollback of each node takes.

Per node it prints the time out of rotation (run.json ``out_windows``: disable done -> enable done)
and the time from disable to enable as HAProxy saw it (polled ``show servers state``: the server
leaves READY/UP -> it is READY and UP again, which includes the drain); per run the total time
and the traffic (sent, failed, p50, p99).  Needs root, Docker and HAProxy (scripts/setup.sh).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

from zdu.cli.main import main  # noqa: E402
from zdu.lab.fleet import Lab  # noqa: E402
from zdu.status import Status  # noqa: E402

OLD, NEW = "/opt/gateway-1.0", "/opt/gateway-2.0"
AXWAY_PROFILE = Path(__file__).resolve().parent / "axway-fixed-wait.yaml"


class RotationWatch:
    """Polls HAProxy's ``show servers state``; records when each server leaves and re-enters
    rotation (READY and UP = admin state 0, operational state 2)."""

    def __init__(self, lab: Lab, interval: float = 0.05) -> None:
        self.lab = lab
        self.interval = interval
        self.spans: dict[str, list[tuple[float, float | None]]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "RotationWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.time()
            try:
                states = self.lab.server_states()
            except OSError:
                states = {}
            for server, row in states.items():
                in_rotation = row.get("srv_admin_state") == "0" and row.get("srv_op_state") == "2"
                spans = self.spans.setdefault(server, [])
                if not in_rotation and (not spans or spans[-1][1] is not None):
                    spans.append((now, None))
                elif in_rotation and spans and spans[-1][1] is None:
                    spans[-1] = (spans[-1][0], now)
            self._stop.wait(self.interval)

    def seconds(self, server: str) -> list[float]:
        return [round(end - start, 3) for start, end in self.spans.get(server, []) if end is not None]


def run_upgrade(lab: Lab, work: Path, *, rate: float, profile: Path | None = None) -> dict[str, Any]:
    config = lab.write_topology(work / "topology.yaml", lb="haproxy")
    argv = ["--old_install_dir", OLD, "--new_install_dir", NEW, "--config", str(config),
            "--log_dir", str(work / "logs"), "--traffic", f"{lab.frontend_url}/", "--traffic-rate", str(rate)]
    if profile is not None:
        argv += ["--profile", str(profile)]
    out = io.StringIO()
    with RotationWatch(lab) as watch:
        start = time.monotonic()
        status = main(argv, out=out, err=out)
        total = time.monotonic() - start
    runs = sorted((work / "logs").glob("*/run.json"))
    if not runs:
        raise SystemExit(f"no run.json; output:\n{out.getvalue()}")
    record = json.loads(runs[-1].read_text())
    return {"status": status, "total": total, "record": record, "watch": watch, "output": out.getvalue()}


def report(title: str, lab: Lab, result: dict[str, Any]) -> dict[str, float]:
    record, watch = result["record"], result["watch"]
    traffic = record.get("traffic") or {}
    print(f"\n== {title}: {result['status'].name}, total {result['total']:.1f} s")
    print(f"   {'node':<8} {'out of rotation (run.json)':>28} {'disable->enable (HAProxy)':>27}")
    figures: dict[str, float] = {"total": result["total"]}
    outs, spans = [], []
    for node in lab.nodes:
        windows = [round(w["seconds"], 3) for w in record["nodes"][node.name]["out_windows"]]
        seen = watch.seconds(node.lb_server)
        outs += windows
        spans += seen
        print(f"   {node.name:<8} {', '.join(f'{s:.3f} s' for s in windows) or '-':>28} "
              f"{', '.join(f'{s:.3f} s' for s in seen) or '-':>27}")
    figures["out_mean"] = sum(outs) / len(outs) if outs else 0.0
    figures["span_mean"] = sum(spans) / len(spans) if spans else 0.0
    print(f"   traffic: {traffic.get('sent')} sent, {traffic.get('failed')} failed, "
          f"p50 {traffic.get('p50_ms')} ms, p99 {traffic.get('p99_ms')} ms, "
          f"{traffic.get('achieved_rate', 0):.1f} req/s")
    return figures


def main_bench(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=250.0, help="probe requests/s (default 250)")
    parser.add_argument("--skip-axway", action="store_true", help="skip the fixed-wait run (~2 min)")
    parser.add_argument("--skip-rollback", action="store_true", help="skip the rollback run")
    parser.add_argument("--first-host", type=int, default=201, help="node i on 127.0.0.(N+i) (default 201)")
    parser.add_argument("--haproxy-port", type=int, default=18205)
    parser.add_argument("--haproxy-admin-port", type=int, default=19905)
    args = parser.parse_args(argv)

    print(f"zdupgrade upgrade benchmark: 3-node lab, haproxy hook, {args.rate:g} req/s probe, "
          f"{os.cpu_count()} CPU(s)")
    with tempfile.TemporaryDirectory(prefix="zdu-bench-") as tmp, \
            Lab(first_host=args.first_host, haproxy_port=args.haproxy_port,
                haproxy_admin_port=args.haproxy_admin_port, name_prefix="zdu-bench") as lab:
        work = Path(tmp)
        gated = report("health gates (lab-gateway profile)", lab,
                       run_upgrade(lab, work / "gated", rate=args.rate))
        if not args.skip_axway:
            lab.reset()
            fixed = report("Axway fixed-wait model (10 s after stop, 30 s after start)", lab,
                           run_upgrade(lab, work / "axway", rate=args.rate, profile=AXWAY_PROFILE))
            print("\n== comparison (fixed-wait / gated)")
            for key, label in (("total", "total run time"), ("out_mean", "mean time out of rotation"),
                               ("span_mean", "mean disable->enable (HAProxy)")):
                ratio = fixed[key] / gated[key] if gated[key] else float("nan")
                print(f"   {label:<32} {gated[key]:7.2f} s vs {fixed[key]:7.2f} s   x{ratio:.1f}")
        if not args.skip_rollback:
            lab.reset()
            lab.inject_fault("Node-B", "health")
            result = run_upgrade(lab, work / "rollback", rate=args.rate)
            report("gated upgrade, fault 'health' on Node-B (POST-APPLY fails, rollback)", lab, result)
            nodes = result["record"]["nodes"]
            failed = nodes["Node-B"]["phases"].get("POST-APPLY", {})
            for name in ("Node-B", "Node-A"):
                rollback = nodes[name].get("rollback") or {}
                if rollback.get("ended"):
                    print(f"   rollback of {name}: {rollback['ended'] - rollback['started']:.2f} s "
                          f"({rollback['outcome']})")
            if failed.get("ended"):
                print(f"   (the failing POST-APPLY of Node-B itself took "
                      f"{failed['ended'] - failed['started']:.2f} s: the /health gate's 10 s deadline)")
            if result["status"] is not Status.POST_APPLY_FAILED:
                print(f"   unexpected status {result['status'].name}")
    return 0


if __name__ == "__main__":
    sys.exit(main_bench())
