"""Interrupts: SIGINT, SIGTERM and SIGHUP all mean "stop at the next safe point".

Installed before anything touches a node, so an interrupt during preflight or while taking
the fleet lock stops cleanly too.  The first signal sets the run's stop event and says what
will happen; later ones say loudly what killing the process now would leave behind.
SIGHUP (the terminal or the operator's SSH session went away) is handled like SIGTERM: the
run stops safely instead of dying mid-APPLY.  A SIGHUP or SIGINT that was already *ignored* when
zdupgrade started stays ignored, as Unix tools do: ``nohup zdupgrade ...`` asked for the run to
outlive the terminal, and a background job of a script (``zdupgrade ... &``) is not the
terminal's to interrupt.  SIGTERM always stops at a safe point.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Any, Iterator

from .console import Console

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: left ignored when zdupgrade was started with them ignored (nohup, a script's background job)
KEEP_IGNORED = (signal.SIGINT, signal.SIGHUP)


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
        if sig in KEEP_IGNORED and signal.getsignal(sig) is signal.SIG_IGN:
            continue
        try:
            previous[sig] = signal.signal(sig, handler)
        except (OSError, ValueError):  # pragma: no cover - not settable here
            pass
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
