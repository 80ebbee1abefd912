#!/usr/bin/env python3
"""Benchmark: zdupgrade at fleet scale (prints figures; not a test).

    sudo python3 benchmarks/scale_bench.py [--nodes 100] [--serial 10] [--step 0.2] [--sim-nodes 1000]

1. **real sshd fleet**: ``--nodes`` plain OpenSSH servers on loopback (127.0.0.150-199, two ports
   per address; one host key each, one client key, each with a private /var/tmp in a mount
   namespace of its own, as separate machines would have), with the fleet's own known_hosts.
   a. preflight and the fleet lock of the whole fleet, in this process (``preflight`` with
      ``ssh.parallel``; ``FleetLock.acquire`` / ``release``): connections included;
   b. ``./zdupgrade`` as its own process: waves of ``--serial``, a profile of 5 steps per node
      (``sleep`` of ``--step`` s, times a per-node factor 0.5-1.5 so that waves have a slowest
      node) and the ``script`` load-balancer hook; the total time against the sum of the waves'
      slowest nodes (each node's time from run.json: its first online step to its enable), and
      the control process's peak RSS (``wait4``);
2. **simulated fleet**: ``--sim-nodes`` nodes that are not reached over SSH but answer every
   command after ``--latency`` s (a CommandHandler in this file, put in place of the SSH handler),
   through the whole program in this process (plan, preflight, lock, conductor, run folder with
   run.json and journal): the conductor's own time per step (wall time minus the nodes' latency,
   per step) and the process's peak RSS.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from tests.support.sshd import SshdServer, keygen  # noqa: E402
from zdu.model import CommandResult, Node  # noqa: E402
from zdu.transport.base import CommandHandler  # noqa: E402

PROFILE = {
    "name": "scale-bench",
    "description": "5 steps per node, each a sleep of {{ step }} s",
    "phases": {
        "PRE-APPLY": [{"name": "check", "run": "sleep {{ step }}"}],
        "APPLY": [{"name": "stop", "run": "sleep {{ step }}"}, {"name": "start", "run": "sleep {{ step }}"}],
        "POST-APPLY": [{"name": "status", "run": "sleep {{ step }}"},
                       {"name": "healthy", "wait": {"command": "sleep {{ step }}", "deadline": 30, "interval": 0.1}}],
    },
    "rollback": {"APPLY": ["true"]},
}


#: the install dirs preflight checks: the same on every "node" (they share this file system)
APP = (Path(tempfile.gettempdir()) / "zdu-scale-app-1", Path(tempfile.gettempdir()) / "zdu-scale-app-2")


def write(path: Path, data: Any) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def lb_hook(work: Path) -> Path:
    hook = work / "lb-hook.sh"
    hook.write_text("#!/bin/sh\nexit 0\n")
    hook.chmod(0o755)
    return hook


# --------------------------------------------------------------------------- 1. real sshd

#: sshd in a mount namespace of its own with a private /var/tmp: the nodes share this machine's
#: file system, but a real fleet's nodes each have their own /var/tmp (the fleet lock lives there).
#: root's ~/.bashrc there is an empty file: this machine's runs `pyenv init` (0.3 s of CPU per
#: login), which 100 "nodes" sharing 2 cores would all pay at once, and no real node does
PRIVATE_SSHD = r"""#!/bin/sh
# as sshd: -D -e -f CONFIG
dir=$(dirname "$4")/var-tmp
mkdir -p "$dir"
exec unshare -m "$0.inner" "$dir" "$@"
"""
PRIVATE_SSHD_INNER = r"""#!/bin/sh
mount --bind "$1" /var/tmp || exit 1
[ ! -e "$HOME/.bashrc" ] || mount --bind /dev/null "$HOME/.bashrc" || exit 1
shift
exec /usr/sbin/sshd "$@"
"""


def start_fleet(work: Path, count: int) -> tuple[list[SshdServer], Path, Path]:
    import tests.support.sshd as sshd
    wrapper = work / "sshd-private-var-tmp"
    for path, text in ((wrapper, PRIVATE_SSHD), (Path(f"{wrapper}.inner"), PRIVATE_SSHD_INNER)):
        path.write_text(text)
        path.chmod(0o755)
    sshd.SSHD = str(wrapper)
    key = keygen(work / "client_ed25519", "zdu-scale-bench")
    servers = [SshdServer(work / f"sshd{i}", host=f"127.0.0.{150 + i % 50}") for i in range(count)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        def start(server: SshdServer) -> None:
            (server.workdir / "authorized_keys").write_text(Path(f"{key}.pub").read_text())
            server.start()
        list(pool.map(start, servers))
    known = work / "known_hosts"
    known.write_text("".join(s.known_hosts_line() for s in servers))
    return servers, key, known


def fleet_topology(work: Path, servers: list[SshdServer], key: Path, known: Path, *, step: float,
                   serial: int, parallel: int) -> Path:
    rng = random.Random(42)
    nodes = [{"name": f"n{i:03d}", "host": s.host, "port": s.port, "lb_server": f"n{i:03d}",
              "vars": {"step": round(step * rng.uniform(0.5, 1.5), 3)}} for i, s in enumerate(servers)]
    return write(work / "topology.yaml", {
        "profile": str(write(work / "profile.yaml", PROFILE)),
        "ssh": {"user": "root", "key_file": str(key), "known_hosts": str(known), "host_key_policy": "strict",
                "connect_timeout": 10, "command_timeout": 60, "parallel": parallel, "config_file": None},
        "serial": serial,
        "load_balancer": {"type": "script", "path": str(lb_hook(work)), "timeout": 30},
        "nodes": nodes})


def preflight_and_lock(topology_path: Path) -> None:
    from zdu.config.profile import load_profile
    from zdu.config.topology import load_topology
    from zdu.lb.none import NoLoadBalancer
    from zdu.planning.plan import build_plan
    from zdu.run.lock import FleetLock, LockOwner
    from zdu.run.preflight import preflight
    from zdu.transport.pool import Connections
    topology = load_topology(str(topology_path))
    plan = build_plan(topology, load_profile(topology.profile, None), old_install_dir=str(APP[0]),
                      new_install_dir=str(APP[1]), run_id="scale-bench")
    connections = Connections(topology)
    cpu0 = _cpu()
    try:
        t0, machine0 = time.monotonic(), _machine_cpu()
        problems = preflight(plan, connections, NoLoadBalancer(), parallel=topology.ssh.parallel)
        t1, connect_cpu, connect_machine = time.monotonic(), _cpu() - cpu0, _machine_cpu() - machine0
        lock = FleetLock(topology.nodes, connections, LockOwner.current("scale-bench"),
                         lock_dir="/var/tmp/zdu-scale-bench/lock")
        taken = lock.acquire()
        t2 = time.monotonic()
        released = lock.release()
        t3 = time.monotonic()
        again = preflight(plan, connections, NoLoadBalancer(), parallel=topology.ssh.parallel)
        t4 = time.monotonic()
        # what a run does: the lock taken in the preflight round trip
        both = FleetLock(topology.nodes, connections, LockOwner.current("scale-bench-2"),
                         lock_dir="/var/tmp/zdu-scale-bench/lock", parallel=topology.ssh.parallel)
        folded = preflight(plan, connections, NoLoadBalancer(), parallel=topology.ssh.parallel, lock=both)
        t5 = time.monotonic()
        held = len(both.held)
        both.release()
    finally:
        connections.close()
    n = len(topology.nodes)
    print(f"  (this process used {_cpu() - cpu0:.1f} s of CPU for all of it; the nodes' sshd and shells "
          "run on the same 2 cores)")
    print(f"  preflight of {n} nodes (connecting, ssh.parallel {topology.ssh.parallel}): {t1 - t0:6.2f} s"
          f"   {len(problems)} problem(s)")
    print(f"    CPU while connecting: {connect_machine:.2f} s on the machine ({connect_machine / n * 1000:.0f} ms "
          f"per node), {connect_cpu:.2f} s of it this process ({connect_cpu / n * 1000:.0f} ms per node); the "
          f"rest is the nodes' sshd and shells, which a real fleet runs on its own CPUs: on "
          f"{os.cpu_count()} cores they alone take at least {(connect_machine - connect_cpu) / (os.cpu_count() or 1):.2f} s")
    print(f"  preflight again (connected):                  {t4 - t3:6.2f} s   {len(again)} problem(s)")
    print(f"  fleet lock: take {t2 - t1:.2f} s ({'taken' if taken else 'NOT taken'}), "
          f"release {t3 - t2:.2f} s ({len(released)} problem(s))")
    print(f"  preflight and the lock in one round trip (connected): {t5 - t4:6.2f} s   {len(folded)} problem(s), "
          f"{held} node(s) locked")


def per_command(topology_path: Path, count: int = 50) -> None:
    """One node, ``count`` trivial commands: through the shell session and one exec channel each."""
    from zdu.config.topology import load_topology
    from zdu.transport.ssh import SshHandler, SshPool
    topology = load_topology(str(topology_path))
    node = topology.nodes[0]
    for label, shell in (("shell session", True), ("exec channel per command", False)):
        handler = SshHandler(node, topology.ssh, pool=SshPool(), shell_session=shell)
        try:
            handler.run("true")
            t0 = time.monotonic()
            ok = all(handler.run("true").ok for _ in range(count))
            each = (time.monotonic() - t0) / count
        finally:
            handler.close()
        print(f"  one command (true) on one node, {label}: {each * 1000:.1f} ms{'' if ok else ' (FAILURES)'}")


def _machine_cpu() -> float:
    """CPU seconds this machine has spent (all cores, all processes), from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    busy = sum(fields[:8]) - fields[3] - fields[4]      # all but idle and iowait
    return busy / os.sysconf("SC_CLK_TCK")


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_fleet(topology_path: Path, work: Path, serial: int) -> None:
    argv = [sys.executable, str(ROOT / "zdupgrade"), "--config", str(topology_path), "--old_install_dir",
            str(APP[0]), "--new_install_dir", str(APP[1]), "--log_dir", str(work / "logs")]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    t0, wall0, machine0 = time.monotonic(), time.time(), _machine_cpu()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT))
    out = proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    total, machine = time.monotonic() - t0, _machine_cpu() - machine0
    record = json.loads(sorted((work / "logs").glob("*/run.json"))[-1].read_text())
    journal = [json.loads(line) for line in sorted((work / "logs").glob("*/journal.jsonl"))[-1].read_text().splitlines()]
    at = {e["type"]: e["at"] - wall0 for e in journal if e["type"] in ("RunOpened", "LockTaken", "RunStarted",
                                                                        "RunFinished", "LockReleased")}
    print("  in the run (s from the process start): " + ", ".join(f"{k} {v:.2f}" for k, v in at.items())
          + f", exit {total:.2f}")
    print(f"  ./zdupgrade: {total:.2f} s, exit {os.waitstatus_to_exitcode(status)}, "
          f"peak RSS {usage.ru_maxrss / 1024:.0f} MB, CPU {usage.ru_utime + usage.ru_stime:.1f} s "
          f"(the machine's, nodes and hook included: {machine:.1f} s of {total * (os.cpu_count() or 1):.1f} s)")
    if os.waitstatus_to_exitcode(status) != 0:
        print(out.decode(errors="replace")[-2000:])
        return
    slowest = 0.0
    names = list(record["nodes"])
    for wave in (names[i:i + serial] for i in range(0, len(names), serial)):
        times = []
        for name in wave:
            node = record["nodes"][name]
            phases = node["phases"]
            start = phases["PRE-APPLY"]["started"]
            end = max([phases["POST-APPLY"]["ended"], *[w["in"] for w in node["out_windows"]]])
            times.append(end - start)
        slowest += max(times)
    opened, finished = record["started"], record["ended"]
    print(f"  sum of the waves' slowest nodes: {slowest:.2f} s; total / that = x{total / slowest:.3f} "
          f"(inside the run, first event to last: {finished - opened:.2f} s, x{(finished - opened) / slowest:.3f})")


# --------------------------------------------------------------------------- 2. simulated

class LatencyHandler(CommandHandler):
    """A node that answers every command after ``latency`` s, as a node that ran it would:
    preflight's checks pass, the lock is taken, a node-side gate holds at its first check."""

    latency = 0.02
    commands = 0
    _count = threading.Lock()

    def open(self) -> None:
        """Nothing to connect."""

    def close(self) -> None:
        """Nothing to close."""

    def run(self, command: str, *, timeout: float | None = None,
            env: dict[str, str] | None = None) -> CommandResult:
        started = time.time()
        time.sleep(self.latency)
        with LatencyHandler._count:
            LatencyHandler.commands += 1
        if "ZDU-CHECK" in command:
            out = "ZDU-CHECK dir-old ok\nZDU-CHECK dir-new ok\nZDU-CHECK done\n"
        elif "ZDU-LOCK-ACQUIRED" in command:
            out = "ZDU-LOCK-ACQUIRED\n"
        else:
            out = ""
        err = "\n\x1ezdu-wait:1\n" if command.startswith("# zdu node-side wait:") else ""
        return CommandResult(command, 0, out, err, started, self.latency)


def simulated(count: int, serial: int, latency: float, parallel: int) -> None:
    import zdu.transport as transport
    from zdu.cli.main import main
    LatencyHandler.latency = latency
    work = Path(tempfile.mkdtemp(prefix="zdu-scale-sim-"))
    nodes = [{"name": f"n{i:04d}", "host": f"127.{1 + i // 62500}.{i // 250 % 250}.{i % 250 + 1}",
              "vars": {"step": 0}} for i in range(count)]
    topology = write(work / "topology.yaml", {
        "profile": str(write(work / "profile.yaml", PROFILE)),
        "ssh": {"user": "root", "known_hosts": str(work / "known_hosts"), "parallel": parallel, "config_file": None},
        "serial": serial, "load_balancer": {"type": "none"}, "nodes": nodes})
    real = transport.make_handler
    transport.make_handler = lambda node, settings, **kw: LatencyHandler(node)  # type: ignore[assignment]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = io.StringIO()
    try:
        t0 = time.monotonic()
        status = main(["--config", str(topology), "--old_install_dir", "/opt/app-1", "--new_install_dir", "/opt/app-2",
                       "--log_dir", str(work / "logs")], out=out, err=out)
        total = time.monotonic() - t0
    finally:
        transport.make_handler = real  # type: ignore[assignment]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if getattr(status, "value", status) != 0:
        print(out.getvalue()[-2000:])
    steps = 5 * count
    waves = -(-count // serial)
    # the time the nodes themselves take: preflight and lock (parallel at a time), then per wave
    # 5 commands one after the other on each node (its nodes in parallel)
    batches = -(-count // parallel)
    ideal = batches * latency + (1 + batches) * latency + waves * 5 * latency
    print(f"  {count} simulated nodes, waves of {serial} ({waves} waves), {latency * 1000:g} ms per command: "
          f"{getattr(status, 'name', status)} in {total:.2f} s, {LatencyHandler.commands} commands")
    print(f"  the nodes' own time (latency on the critical path): {ideal:.2f} s; the rest, "
          f"{total - ideal:.2f} s, is zdupgrade's: {(total - ideal) / steps * 1000:.2f} ms per step "
          f"({steps} steps), {(total - ideal) / waves * 1000:.1f} ms per wave")
    size = sum(p.stat().st_size for p in (work / "logs").glob("*/*"))
    print(f"  peak RSS of this process {peak / 1024:.0f} MB (before the run {before / 1024:.0f} MB); "
          f"run folder {size / 1e6:.1f} MB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--serial", type=int, default=10)
    parser.add_argument("--parallel", type=int, default=20, help="ssh.parallel (default 20)")
    parser.add_argument("--step", type=float, default=0.2, help="seconds per step, times 0.5-1.5 per node")
    parser.add_argument("--sim-nodes", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.02, help="simulated seconds per command")
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--skip-sim", action="store_true")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPU(s), load average {os.getloadavg()[0]:.1f}")
    for app in APP:
        app.mkdir(exist_ok=True)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "zdu")], check=True, stdout=subprocess.DEVNULL)
    if not args.skip_real:
        with tempfile.TemporaryDirectory(prefix="zdu-scale-") as tmp:
            work = Path(tmp)
            print(f"\n1. {args.nodes} plain sshd nodes on loopback")
            t0 = time.monotonic()
            servers, key, known = start_fleet(work, args.nodes)
            print(f"  (fleet started in {time.monotonic() - t0:.1f} s)")
            try:
                path = fleet_topology(work, servers, key, known, step=args.step, serial=args.serial,
                                      parallel=args.parallel)
                per_command(path)
                preflight_and_lock(path)
                run_fleet(path, work, args.serial)
            finally:
                for server in servers:
                    server.stop()
    if not args.skip_sim:
        print("\n2. simulated fleet (no SSH)")
        simulated(args.sim_nodes, args.serial, args.latency, args.parallel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
