"""The fleet lock: two operators cannot upgrade the same nodes at once.

Agentless: the lock is a directory created atomically (``mkdir``) on every node
of the topology, over the same SSH connection the run uses, holding
``owner.json`` (run id, user, control host, pid, start time, message).  It is
taken before any change, by preflight (:func:`zdu.run.preflight.preflight` sends
:meth:`FleetLock.take_command` with its checks: one round trip per node for both, and no
moment between the checks and the lock for another run to slip in), or by
:meth:`FleetLock.acquire` alone: one command that creates the directory or prints its owner,
the first node alone -- two runs started at the same moment decide there, and the loser
touches nothing else -- then the others in parallel (``parallel`` at a time).  If any node is
already locked (or preflight found anything), the locks just taken are released and every
holder is reported.  Release is one round trip per node, in parallel.
A run resumed with ``--resume`` takes its own lock back.  A lock whose owner is
gone (SIGKILLed run, crashed laptop) stays until an operator passes
``--break-lock``, having checked that no other upgrade is running.
"""
from __future__ import annotations

import datetime as _dt
import getpass
import json
import os
import shlex
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

from zdu.errors import LockError, TransportError
from zdu.transport.base import CommandHandler
from zdu.model import CommandResult, Node

LOCK_DIR = "/var/tmp/zdupgrade/lock"
#: what the take command prints when the lock directory exists but holds no owner.json
NO_OWNER = "ZDU-LOCK-NO-OWNER"


@dataclass(frozen=True)
class LockOwner:
    """Who holds (or wants) the lock."""

    run_id: str
    user: str
    host: str
    pid: int
    started: str
    message: str = ""

    @classmethod
    def current(cls, run_id: str, message: str = "") -> "LockOwner":
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = str(os.getuid())
        return cls(run_id=run_id, user=user, host=socket.gethostname(), pid=os.getpid(),
                   started=_dt.datetime.now().astimezone().isoformat(timespec="seconds"), message=message)

    def describe(self) -> str:
        text = f"run {self.run_id} by {self.user}@{self.host} (pid {self.pid}) since {self.started}"
        return text + (f", message: {self.message!r}" if self.message else "")

    def is_stale(self) -> bool:
        """True when the owner ran on this machine and its process is gone."""
        if self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False


def _parse_owner(text: str) -> LockOwner | None:
    try:
        data: Any = json.loads(text)
        return LockOwner(**{k: data[k] for k in LockOwner.__dataclass_fields__ if k in data})
    except (ValueError, TypeError, KeyError):
        return None


class FleetLock:
    """Take and release the lock on every node."""

    def __init__(self, nodes: Sequence[Node], handlers: Callable[[Node], CommandHandler], owner: LockOwner,
                 *, break_lock: bool = False, lock_dir: str = LOCK_DIR, parallel: int = 16) -> None:
        self.nodes = list(nodes)
        self.handlers = handlers
        self.owner = owner
        self.break_lock = break_lock
        self.lock_dir = lock_dir
        self.parallel = max(1, parallel)
        self.held: list[Node] = []
        self.broken: list[str] = []
        self._mutex = threading.Lock()

    def acquire(self, stop: Callable[[], bool] = lambda: False) -> bool:
        """Lock every node or none; LockError naming each holder.  False (and nothing held) when
        ``stop()`` became true on the way (an interrupt)."""
        def take(node: Node) -> str | None:
            if stop():
                return None
            try:
                return self._take(node)
            except TransportError as exc:
                return f"{node.name}: cannot take the lock: {exc.detail}"

        first, rest = self.nodes[:1], self.nodes[1:]
        problems = [p for p in map(take, first) if p]
        if not problems and rest:
            with ThreadPoolExecutor(max_workers=min(self.parallel, len(rest))) as pool:
                problems = [p for p in pool.map(take, rest) if p]
        if problems:
            self.release()
            raise LockError("the fleet is locked by another run; nothing was changed:\n  - "
                            + "\n  - ".join(problems))
        if stop():
            self.release()
            return False
        return True

    def _hold(self, node: Node) -> None:
        with self._mutex:
            self.held.append(node)

    def take_command(self) -> str:
        """The shell command that takes the lock on a node: it prints ``ZDU-LOCK-ACQUIRED``, or
        the holder's owner.json.  Preflight sends it with its checks (one round trip for both)."""
        owner_json = json.dumps(asdict(self.owner))
        path = shlex.quote(self.lock_dir)
        owner_file = shlex.quote(f"{self.lock_dir}/owner.json")
        parent = shlex.quote(os.path.dirname(self.lock_dir))
        # one process on the node where the parent exists (the test is a builtin): 100 nodes'
        # shells spawn 100 fewer.  umask 022 (a builtin, in the command's own shell): the lock's
        # directories and owner.json are writable by their owner alone whatever the umask the
        # command inherits (a local node's is the control process's: under umask 000 any user
        # of the machine could have replaced owner.json or removed another run's lock)
        return (f"umask 022; {{ [ -d {parent} ] || mkdir -p {parent}; }} && "
                f"if mkdir {path} 2>/dev/null; then printf '%s' {shlex.quote(owner_json)} > {owner_file} "
                f"&& echo ZDU-LOCK-ACQUIRED; else cat {owner_file} 2>/dev/null || echo {NO_OWNER}; fi")

    def settle(self, node: Node, handler: CommandHandler, result: CommandResult) -> str | None:
        """Finish taking the lock on ``node`` from what :meth:`take_command` printed there
        (``result``): None when this run holds it now, else the problem.  Breaking a lock or
        taking this run's own lock back costs one more round trip."""
        try:
            return self._take(node, handler, result)
        except TransportError as exc:
            return f"{node.name}: cannot take the lock: {exc.detail}"

    def attempted(self, node: Node) -> None:
        """``node`` was sent :meth:`take_command` and its answer was lost: :meth:`release` tries it
        too (it removes only a lock of this run)."""
        self._hold(node)

    def _take(self, node: Node, handler: CommandHandler | None = None,
              first: CommandResult | None = None) -> str | None:
        handler = handler or self.handlers(node)
        owner_json = json.dumps(asdict(self.owner))
        path = shlex.quote(self.lock_dir)
        owner_file = shlex.quote(f"{self.lock_dir}/owner.json")
        command = self.take_command()
        for attempt in range(2):
            result = first if attempt == 0 and first is not None else handler.run(command, timeout=30)
            if result.exit_code != 0:
                return f"{node.name}: cannot take the lock ({self.lock_dir}): exit {result.exit_code}: " \
                       f"{result.stderr.strip()[:200]}"
            out = result.stdout.strip()
            if out.endswith("ZDU-LOCK-ACQUIRED"):
                self._hold(node)
                return None
            if out.endswith(NO_OWNER):
                # another run between its mkdir and its owner.json, or a directory that is not a
                # lock at all (lock_dir naming the operator's own directory): never removed, not
                # even with --break-lock
                return (f"{node.name}: {self.lock_dir} exists on {node.host} but holds no owner.json: "
                        "another run may be taking the lock at this moment, or it is not a zdupgrade "
                        "lock (check the topology's lock_dir); it was not touched. If it is a lock "
                        "left by a run killed while taking it, remove it by hand")
            holder = _parse_owner(out)
            if holder is not None and holder.run_id == self.owner.run_id and holder.pid != self.owner.pid \
                    and not (holder.host == self.owner.host and holder.is_stale()) and not self.break_lock:
                where = "on this machine" if holder.host == self.owner.host else f"on {holder.host}, which cannot be checked from here"
                return (f"{node.name}: this run's lock is held by another zdupgrade process that may still be "
                        f"alive (pid {holder.pid} {where}); refusing to drive the node twice. If that process is "
                        "gone, rerun with --break-lock")
            if holder is not None and holder.run_id == self.owner.run_id:
                if (holder.pid, holder.host) != (self.owner.pid, self.owner.host):
                    # our own lock, left by this run before it died: resume.  Replaced whole (a
                    # rename), never truncated first: nodes that share this directory (one
                    # machine) read it meanwhile
                    temp = shlex.quote(f"{self.lock_dir}/.owner.json.{self.owner.pid}")
                    rewrite = handler.run(f"umask 022; {{ printf '%s' {shlex.quote(owner_json)} > {temp} && "
                                          f"mv -f {temp} {owner_file}; }} || {{ rm -f {temp}; false; }}", timeout=30)
                    if rewrite.exit_code != 0:
                        # held but naming the dead process, the lock would look stale to the next
                        # resume of this run, which would then drive the node alongside this one
                        return (f"{node.name}: cannot take this run's lock back ({self.lock_dir}): exit "
                                f"{rewrite.exit_code}: {rewrite.stderr.strip()[:200]}")
                self._hold(node)  # or this process took it already, for a node on the same machine
                return None
            described = holder.describe() if holder else "an unknown owner (no owner.json: being taken now?)"
            if self.break_lock and attempt == 0:
                with self._mutex:
                    self.broken.append(f"{node.name}: {described}")
                handler.run(f"rm -rf {path}", timeout=30)
                continue
            stale = " -- STALE: that process no longer exists" if holder and holder.is_stale() else ""
            return (f"{node.name}: locked by {described}{stale} ({self.lock_dir} on {node.host}). "
                    "If that run is dead and nobody else is upgrading these nodes, rerun with --break-lock")
        return f"{node.name}: could not take the lock after breaking it"

    def keep(self) -> None:
        """Leave every lock as it is, :meth:`release` then gives nothing back: a refused
        ``--resume`` keeps the dead run's lock, so the fleet it left half-done stays its own."""
        with self._mutex:
            self.held = []

    def release(self) -> list[str]:
        """Release the locks this run holds (only if still ours), in parallel; return the problems."""
        owner_file = shlex.quote(f"{self.lock_dir}/owner.json")
        # ours if owner.json (one line, as take_command writes it) starts with this run's id: read
        # and matched by the shell's builtins, so only the rm is a process
        mine = shlex.quote('{"run_id": ' + json.dumps(self.owner.run_id) + ",")
        command = (f"o=; {{ IFS= read -r o || [ -n \"$o\" ]; }} <{owner_file} 2>/dev/null && "
                   f"case $o in {mine}*) rm -rf {shlex.quote(self.lock_dir)} ;; esac; true")

        def give_back(node: Node) -> str | None:
            try:
                result = self.handlers(node).run(command, timeout=30)
            except TransportError as exc:
                return (f"{node.name}: lock not released ({exc.detail}); remove {self.lock_dir} "
                        "there once the node is back")
            return f"{node.name}: lock not released: exit {result.exit_code}" if result.exit_code != 0 else None

        order = {n.name: i for i, n in enumerate(self.nodes)}
        with self._mutex:
            held, self.held = sorted(self.held, key=lambda n: -order.get(n.name, 0)), []
        if not held:
            return []
        with ThreadPoolExecutor(max_workers=min(self.parallel, len(held))) as pool:
            return [p for p in pool.map(give_back, held) if p]
