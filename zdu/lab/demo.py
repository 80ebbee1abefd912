"""``zdupgrade --lab``: the main job on the embedded default.

Brings up the local lab (3 OpenSSH nodes in Docker behind a real HAProxy), sends
traffic through HAProxy for the whole run, upgrades every node from the lab
gateway 1.0 to 2.0 with the ``haproxy`` hook, prints the summary with the traffic
line, and tears the lab down.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any, Callable

from zdu.status import Status


def run_lab(args: argparse.Namespace, console: Any, run: Callable[[argparse.Namespace], Status]) -> Status:
    """Run ``run(args)`` against a lab brought up for it; the lab is removed afterwards."""
    if args.config:
        console.error("--lab brings up its own fleet and writes its topology; leave out --config")
        return Status.USAGE_ERROR
    from zdu.lab.fleet import Lab, placement_from_env

    console.line("lab: starting 3 OpenSSH nodes (Docker, host network) and HAProxy ...")
    try:
        lab = Lab(**placement_from_env()).start()
    except Exception as exc:  # docker missing, image build failing, port taken: say it plainly
        console.error(f"cannot start the lab: {type(exc).__name__}: {exc} "
                      "(the lab needs root, Docker and HAProxy: run scripts/setup.sh)")
        return Status.FATAL_ERROR
    try:
        with tempfile.TemporaryDirectory(prefix="zdu-lab-topology-") as tmp:
            config = lab.write_topology(Path(tmp) / "topology.yaml", lb="haproxy")
            console.line(f"lab: up; HAProxy frontend {lab.frontend_url}, runtime API {lab.haproxy_socket}")
            args.config = str(config)
            args.traffic = args.traffic or f"{lab.frontend_url}/"
            status = run(args)
            console.line("lab: after the run: " + ", ".join(
                f"{n.name} runs {'+'.join(lab.running_versions(n.name)) or 'nothing'}" for n in lab.nodes))
            return status
    finally:
        lab.close()
        console.line("lab: torn down")
