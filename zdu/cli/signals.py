"""Interrupts: SIGINT, SIGTERM and SIGHUP all mean "stop at the next safe point".

Installed before anything touches a node, so an interrupt during preflight or while taking
the fleet lock stops cleanly too.  The first signal sets the run's stop event and says what
will happen; later ones say loudly what killing the process now would leave behind.
SIGHUP (the terminal or the operator's SSH session went away) is handled like SIGTERM: the
run stops safely instead of dying mid-APPLY.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Any, Iterator

from .console import Console

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextmanager
def stop_on_signals(stop: threading.Event, console: Console) -> Iterator[None]:
    """Within the block, the signals set ``stop`` instead of killing the process."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    count = 0

    def handler(signum: int, frame: Any) -> None:
        nonlocal count
        count += 1
        stop.set()
        name = signal.Signals(signum).name
        if count == 1:
            console.line(f"\n*** {name}: stopping at the next safe point; nodes taken out of the load "
                         "balancer will be put back (or rolled back per policy). "
                         "Interrupt again only if you accept nodes left out of traffic. ***")
        else:
            console.line(f"*** {name} again: still finishing the safe stop. Killing zdupgrade now may leave "
                         "a node OUT OF THE LOAD BALANCER or half-upgraded; `zdupgrade --resume` repairs "
                         "that from run.json. ***")

    previous = {}
    for sig in SIGNALS:
        try:
            previous[sig] = signal.signal(sig, handler)
        except (OSError, ValueError):  # pragma: no cover - not settable here
            pass
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
