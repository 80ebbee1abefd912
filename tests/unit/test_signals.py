"""Which signals stop a run at a safe point: SIGINT, SIGTERM and SIGHUP, except a SIGHUP or SIGINT
that was ignored when zdupgrade started (``nohup``, a script's background job) -- it stays ignored.
Each case runs in a fresh process whose dispositions are set as the shell would set them."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json, os, signal, sys, threading, time
from zdu.cli.console import Console
from zdu.cli.signals import stop_on_signals
stop = threading.Event()
console = Console(sys.stderr, sys.stderr)
result = {}
with stop_on_signals(stop, console):
    for name in sys.argv[1:]:
        os.kill(os.getpid(), getattr(signal, name))
        time.sleep(0.05)
        result[name] = stop.is_set()
        stop.clear()
print(json.dumps(result))
"""


def probe(*signals: str, ignored: tuple[signal.Signals, ...] = ()) -> dict[str, bool]:
    def preexec() -> None:
        for sig in ignored:
            signal.signal(sig, signal.SIG_IGN)
    proc = subprocess.run([sys.executable, "-c", PROBE, *signals], cwd=ROOT, capture_output=True, text=True,
                          timeout=30, preexec_fn=preexec)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_every_signal_stops_the_run_at_a_safe_point() -> None:
    assert probe("SIGINT", "SIGTERM", "SIGHUP") == {"SIGINT": True, "SIGTERM": True, "SIGHUP": True}


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGINT])
def test_a_signal_ignored_at_start_stays_ignored(sig: signal.Signals) -> None:
    # under nohup a hang-up neither stops the run nor kills it (the probe lives to answer)
    assert probe(sig.name, "SIGTERM", ignored=(sig,)) == {sig.name: False, "SIGTERM": True}


def test_sigterm_stops_the_run_even_when_it_was_ignored() -> None:
    assert probe("SIGTERM", ignored=(signal.SIGTERM,)) == {"SIGTERM": True}
