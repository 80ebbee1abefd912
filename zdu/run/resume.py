"""Finding and checking the run ``--resume`` continues.

The journal (``journal.jsonl``) is the source of truth: replaying it rebuilds the state the run
had when its control process died.  Everything read from the run folder is checked: an edited
or corrupt journal is a clear error, not a crash; only the invocation keys zdupgrade itself
writes are taken, with their types.  A run whose control process is still alive (it holds the
folder's ``control.lock``) is refused.
"""
from __future__ import annotations

import errno
import fcntl
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ..errors import ConfigError, LockError
from ..report.rundir import RunDir
from ..report.runfolder import JOURNAL, RUN_JSON, read_journal
from ..status import FailureKind, Outcome, Status
from .state import RunState, replay

CONTROL_LOCK = "control.lock"

#: what a run records of its command line, and the type of each value (None allowed)
INVOCATION: Mapping[str, tuple[type, ...]] = {
    "old_install_dir": (str,), "new_install_dir": (str,), "config": (str,), "profile": (str,),
    "serial": (str,), "rollback_policy": (str,), "host_key_policy": (str,), "traffic": (str,),
    "traffic_rate": (int, float), "min_free_mb": (int,), "cwd": (str,), "limit": (str,),
    "inventory": (str,), "pause_after_wave": (list,),
}


@dataclass
class Previous:
    """A run to resume."""

    run_dir: RunDir
    state: RunState
    invocation: dict[str, Any]
    repair: tuple[str, ...] = ()      # a finished run: the nodes it left broken or out of traffic
    #: a finished run that died before it gave its fleet lock back (its nodes all fine)
    lock_only: bool = False

    @property
    def holds_lock(self) -> bool:
        """The run took its fleet lock and never gave it back (it died first)."""
        return self.state.lock is not None and "released" not in self.state.lock


def needs_repair(state: RunState) -> list[str]:
    """Nodes a finished run left behind: a rollback that failed, a version nobody can vouch for,
    or out of the load balancer."""
    broken = []
    for name in state.active_nodes:
        node = state.nodes[name]
        failed_rollback = node.rollback is not None and node.rollback.outcome.value == "FAILED"
        if failed_rollback or node.version.value == "unknown" or node.lb.value != "in":
            broken.append(name)
    return broken


class ControlLock:
    """Held (flock) by the process that drives a run, for as long as it lives."""

    def __init__(self, run_dir: RunDir) -> None:
        self.rundir = run_dir
        self.path = run_dir.path(CONTROL_LOCK)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock; LockError naming the live owner if another process holds it."""
        fd = self.rundir.open_fd(CONTROL_LOCK)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            owner = os.pread(fd, 200, 0).decode(errors="replace").strip()
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise LockError(f"run {self.path.parent.name} is still being driven by a live zdupgrade "
                                f"process ({owner or 'pid unknown'}); refusing to run it twice. Stop that "
                                "process (Ctrl-C) or wait for it to end, then --resume") from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)


def find_run(log_dir: Path, run_id: str, *, option: str = "--resume") -> RunDir:
    """The folder of ``run_id`` (the latest run when empty), opened safely; ConfigError if there
    is none."""
    if not run_id:
        runs = sorted(p.parent.name for p in log_dir.glob(f"*/{JOURNAL}"))
        if not runs:
            raise ConfigError(f"{option}: no run under {log_dir}/")
        run_id = runs[-1]
    run_dir = RunDir.open_existing(log_dir, run_id)
    if not run_dir.exists(JOURNAL):
        run_dir.close()
        raise ConfigError(f"{option} {run_id}: no run record ({JOURNAL}) in {log_dir / run_id}")
    return run_dir


def load_previous(run_dir: RunDir) -> Previous:
    """Replay the run's journal and check it can be resumed; ConfigError saying why not."""
    path = run_dir.path(JOURNAL)
    try:
        state = replay(read_journal(run_dir.read_text(JOURNAL)))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the run record: {exc}") from None
    except (ValueError, KeyError, TypeError, AssertionError) as exc:
        raise ConfigError(f"{path}: the run record is damaged or was edited ({str(exc)[:300]}); "
                          "not resuming") from None
    invocation = check_invocation(state.invocation, path)
    recorded = _recorded_events(run_dir, state.run_id)
    if recorded > state.events:
        # run.json is fsynced at every write, the journal is not: after a power loss the journal
        # can end earlier, and resuming from it would run again what the run had done
        raise ConfigError(f"{path}: the journal holds {state.events} events but {RUN_JSON} counts {recorded}: "
                          "it lost its end (a power loss?), and resuming from it would run steps again "
                          "that were done; not resuming. `zdupgrade show` shows what run.json recorded")
    if state.status is not None and state.ended is not None:
        broken = needs_repair(state)
        if broken and state.lock is not None:
            return Previous(run_dir, state, invocation, repair=tuple(broken))
        if Previous(run_dir, state, invocation).holds_lock:
            return Previous(run_dir, state, invocation, lock_only=True)
        if after_left(state):
            return Previous(run_dir, state, invocation)      # the resume runs the after: steps
        from ..report.summary import rerun_hint
        hint = rerun_hint(state)
        raise ConfigError(f"run {state.run_id} already finished with {state.status.name} "
                          f"({int(state.status)}); nothing to resume" + (f". {hint}" if hint else ""))
    if not any(n.phases or n.rollback for n in state.nodes.values()) and state.lock is None:
        raise ConfigError(f"{run_dir.dir}: run {state.run_id} never started changing nodes "
                          "(it stopped in preflight); start a new run instead")
    return Previous(run_dir, state, invocation)


def after_left(state: RunState) -> bool:
    """Every node made it and the after: steps are still to do: the run was interrupted before
    they began, or one of them failed (AFTER_FAILED: a resume runs the failed one and the rest,
    once its cause is fixed; those that passed are not run again), or none ran because a node
    put back was not serving at the end (DEGRADED: a resume checks again first)."""
    done = state.run_phases.get("after")
    if done is None or done.outcome is not Outcome.FAILED:
        return False
    return (state.status is Status.AFTER_FAILED or
            (state.status is Status.INTERRUPTED and done.classification is FailureKind.INTERRUPTED) or
            # not run: a node put back was not serving at the end (DEGRADED); the resume checks again
            (state.status is Status.DEGRADED and done.classification is FailureKind.LB))


def _recorded_events(run_dir: RunDir, run_id: str) -> int:
    """How many events the run's run.json says it holds (0 when it is missing, unreadable or
    another run's)."""
    import json
    try:
        data = json.loads(run_dir.read_text(RUN_JSON))
    except (OSError, ValueError):
        return 0
    if not isinstance(data, dict) or data.get("run_id") != run_id:
        return 0
    count = data.get("events")
    return count if isinstance(count, int) and not isinstance(count, bool) else 0


def check_invocation(raw: Mapping[str, Any], where: Path) -> dict[str, Any]:
    """Only the keys zdupgrade writes, each of its type; ConfigError for anything else."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: the run's invocation is not a mapping; not resuming")
    checked: dict[str, Any] = {}
    for key, value in raw.items():
        types = INVOCATION.get(key)
        if types is None:
            raise ConfigError(f"{where}: unexpected invocation field {str(key)[:40]!r} (edited?); not resuming")
        if value is not None and (isinstance(value, bool) or not isinstance(value, types)):
            raise ConfigError(f"{where}: invocation field {key!r} has the wrong type; not resuming")
        if isinstance(value, str) and ("\x00" in value or len(value) > 4096):
            raise ConfigError(f"{where}: invocation field {key!r} is not a usable value; not resuming")
        checked[key] = value
    for key in ("old_install_dir", "new_install_dir"):
        if not isinstance(checked.get(key), str):
            raise ConfigError(f"{where}: the invocation lacks {key}; not resuming")
    return checked
