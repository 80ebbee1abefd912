"""Events the conductor emits; logs, run.json and the console subscribe."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from zdu.status import Phase

# kinds
RUN_STARTED = "run_started"
PHASE_STARTED = "phase_started"
PHASE_FINISHED = "phase_finished"
STEP_STARTED = "step_started"
STEP_FINISHED = "step_finished"
LB_STARTED = "lb_started"
LB_ACTION = "lb_action"
DECISION = "decision"
ROLLBACK_STARTED = "rollback_started"
ROLLBACK_FINISHED = "rollback_finished"
WARNING = "warning"
INFO = "info"
RUN_FINISHED = "run_finished"


@dataclass(frozen=True)
class Event:
    """Something that happened during a run."""

    kind: str
    node: str | None = None
    phase: Phase | None = None
    message: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    time: float = field(default_factory=time.time)


Listener = Callable[[Event], None]


class EventBus:
    """Fans events out to listeners; a failing listener never stops the upgrade."""

    def __init__(self, listeners: list[Listener] | None = None) -> None:
        self.listeners: list[Listener] = list(listeners or [])
        self.listener_errors: list[str] = []
        self._lock = threading.RLock()

    def subscribe(self, listener: Listener) -> None:
        self.listeners.append(listener)

    def emit(self, event: Event) -> None:
        with self._lock:  # nodes work in parallel; listeners see one event at a time
            self._emit(event)

    def _emit(self, event: Event) -> None:
        for listener in self.listeners:
            try:
                listener(event)
            except Exception as exc:  # a full disk must not abandon a half-upgraded fleet
                self.listener_errors.append(f"{getattr(listener, '__name__', type(listener).__name__)}: {exc}")
