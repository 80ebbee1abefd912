"""Run status codes (the process exit status) and upgrade phases.

The phase codes keep the values of the Axway zero-downtime upgrade scripts so
that existing wrappers keep working; the others are zdupgrade's own.
"""
from __future__ import annotations

import enum


class Status(enum.IntEnum):
    """Outcome of a run; ``int(status)`` is the process exit status."""

    SUCCESS = 0
    USAGE_ERROR = 2          # bad command line (argparse's own code)
    BEFORE_FAILED = 69       # a before: step failed; no node was changed
    EXPORT_FAILED = 70
    UPGRADE_FAILED = 71
    PRE_APPLY_FAILED = 72
    APPLY_FAILED = 73
    POST_APPLY_FAILED = 74
    ROLLBACK_FAILED = 75
    NODE_UNREACHABLE = 76    # a node could not be reached before anything changed
    LOCKED = 77              # another run holds the fleet lock; nothing changed
    CONFIG_ERROR = 78        # bad topology, profile, directory or option; nothing was contacted
    RECORD_FAILED = 79       # the upgrade succeeded, but a log, run.json or another listener failed
    FATAL_ERROR = 80         # an internal error; the logs say what was done before it
    AFTER_FAILED = 81        # every node upgraded and back in traffic, but an after: step failed
    PARTIAL = 82             # the run went on past failed nodes (failure budget): they were rolled back
    ABORTED = 83             # the operator aborted the run at a pause (or the pause timed out)
    CAPACITY_REFUSED = 84    # a wave would have left too few nodes in service; it was not started
    DEGRADED = 85            # a node this run put back is not serving (the balancer shows it down or out)
    INTERRUPTED = 130        # Ctrl-C / SIGTERM; every node taken out was put back or reported

    def __str__(self) -> str:  # "Status.APPLY_FAILED", as in the Axway summary
        return f"Status.{self.name}"


class Phase(str, enum.Enum):
    """The per-node phases, in execution order, plus ROLLBACK."""

    EXPORT = "EXPORT"
    UPGRADE = "UPGRADE"
    PRE_APPLY = "PRE-APPLY"
    APPLY = "APPLY"
    POST_APPLY = "POST-APPLY"
    ROLLBACK = "ROLLBACK"
    BEFORE = "BEFORE"        # run-level: once, before any node is changed
    AFTER = "AFTER"          # run-level: once, at the end of a successful run
    GATE = "GATE"            # after a tier: must hold before the next tier starts

    def __str__(self) -> str:
        return self.value

    @property
    def failed_status(self) -> Status:
        """The run status when this phase fails."""
        return _FAILED[self]

    @property
    def is_offline(self) -> bool:
        """EXPORT and UPGRADE prepare the new version without touching the running one."""
        return self in (Phase.EXPORT, Phase.UPGRADE)

    @classmethod
    def parse(cls, text: str) -> "Phase":
        """Accept ``PRE-APPLY``, ``PRE_APPLY`` or ``pre-apply``."""
        key = text.strip().upper().replace("_", "-")
        for phase in cls:
            if phase.value == key:
                return phase
        raise ValueError(f"unknown phase {text!r} (expected one of: {', '.join(p.value for p in cls)})")


OFFLINE_PHASES: tuple[Phase, ...] = (Phase.EXPORT, Phase.UPGRADE)
ONLINE_PHASES: tuple[Phase, ...] = (Phase.PRE_APPLY, Phase.APPLY, Phase.POST_APPLY)
UPGRADE_PHASES: tuple[Phase, ...] = OFFLINE_PHASES + ONLINE_PHASES

_FAILED = {
    Phase.EXPORT: Status.EXPORT_FAILED,
    Phase.UPGRADE: Status.UPGRADE_FAILED,
    Phase.PRE_APPLY: Status.PRE_APPLY_FAILED,
    Phase.APPLY: Status.APPLY_FAILED,
    Phase.POST_APPLY: Status.POST_APPLY_FAILED,
    Phase.ROLLBACK: Status.ROLLBACK_FAILED,
    Phase.BEFORE: Status.BEFORE_FAILED,
    Phase.AFTER: Status.AFTER_FAILED,
    Phase.GATE: Status.POST_APPLY_FAILED,
}


class Outcome(str, enum.Enum):
    """How a phase, a rollback or a node ended (a cell of the summary table)."""

    PASSED = "PASSED"
    FAILED = "FAILED"
    RUNNING = "RUNNING"
    SKIPPED = "SKIPPED"

    def __str__(self) -> str:
        return self.value


class FailureKind(str, enum.Enum):
    """Why a step, a phase or a node failed; what the rollback policy is told."""

    FAILED = "failed"              # the command exited non-zero, or a health gate did not hold
    TIMEOUT = "timeout"            # the command outlived its timeout and was killed
    UNREACHABLE = "unreachable"    # the node stopped answering or dropped the connection
    LB = "lb"                      # the load balancer refused or failed an action
    INTERRUPTED = "interrupted"    # Ctrl-C, SIGTERM or SIGHUP
    ERROR = "error"                # an unexpected error inside zdupgrade while running the step

    def __str__(self) -> str:
        return self.value


class Version(str, enum.Enum):
    """Which installation a node runs, as far as the run knows."""

    OLD = "old"
    NEW = "new"
    UNKNOWN = "unknown"            # changed half-way: neither version can be vouched for

    def __str__(self) -> str:
        return self.value


class LbAction(str, enum.Enum):
    """What the load-balancer hook is asked to do."""

    DISABLE = "disable"
    ENABLE = "enable"

    def __str__(self) -> str:
        return self.value


class LbState(str, enum.Enum):
    """Where a node stands in the load balancer, as far as the run knows."""

    IN = "in"
    OUT = "out"
    TAKING_OUT = "taking-out"      # a disable was started and has not answered (yet)
    PUTTING_BACK = "putting-back"  # an enable was started and has not answered (yet)
    UNKNOWN = "unknown"            # an action failed and may have acted anyway

    def __str__(self) -> str:
        return self.value

    @property
    def certain(self) -> bool:
        return self in (LbState.IN, LbState.OUT)


class StepKind(str, enum.Enum):
    """What a profile step does."""

    RUN = "run"                    # a shell command on the node
    WAIT = "wait"                  # a health gate polled until it holds
    HTTP = "http"                  # one HTTP request

    def __str__(self) -> str:
        return self.value
