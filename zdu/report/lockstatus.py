"""``zdupgrade lock status``: who holds the fleet lock on which node, read-only.

Each node of the topology is asked (over the connection a run would use, at most
``ssh.parallel`` at once) for ``<lock_dir>/owner.json`` -- the file :class:`zdu.run.lock.FleetLock`
writes when it takes the lock.  Nothing is created, changed or removed.
"""
from __future__ import annotations

import json
import shlex
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from typing import Any, Callable, Sequence

from tabulate import tabulate

from ..errors import TransportError
from ..model import Node
from ..run.lock import NO_OWNER, LockOwner
from ..transport.base import CommandHandler

FREE = "ZDU-LOCK-FREE"
TIMEOUT = 30.0


@dataclass(frozen=True)
class NodeLock:
    """What one node says about the fleet lock."""

    node: str
    state: str                      # free | locked | unknown
    owner: LockOwner | None = None
    detail: str = ""                # why unknown, or what is odd about the lock
    stale: bool = False             # its owner ran on this machine and its process is gone


def read_command(lock_dir: str) -> str:
    """The read-only shell command that shows the lock of one node."""
    path = shlex.quote(lock_dir)
    owner = shlex.quote(f"{lock_dir}/owner.json")
    return (f"if [ -d {path} ]; then if [ -f {owner} ]; then head -c 65536 {owner}; "
            f"else echo {NO_OWNER}; fi; else echo {FREE}; fi")


def parse_owner(text: str) -> LockOwner | None:
    """The owner in ``owner.json``'s text; None if it is not one."""
    try:
        data: Any = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    names = {f.name for f in fields(LockOwner)}
    try:
        owner = LockOwner(**{k: v for k, v in data.items() if k in names})
    except TypeError:
        return None
    if not isinstance(owner.pid, int) or not all(isinstance(getattr(owner, n), str) for n in names - {"pid"}):
        return None
    return owner


def read_lock(node: Node, handler: CommandHandler, lock_dir: str) -> NodeLock:
    """Ask one node; transport problems become ``unknown`` with the reason."""
    try:
        result = handler.run(read_command(lock_dir), timeout=TIMEOUT)
    except TransportError as exc:
        return NodeLock(node.name, "unknown", detail=f"cannot reach the node: {exc.detail}")
    if result.error:
        return NodeLock(node.name, "unknown", detail=f"the check {result.error}")
    if result.exit_code != 0:
        last = (result.stderr.strip().splitlines() or [""])[-1][:200]
        return NodeLock(node.name, "unknown", detail=f"the check failed (exit {result.exit_code}) {last}".strip())
    out = result.stdout.strip()
    if out == FREE:
        return NodeLock(node.name, "free")
    if out == NO_OWNER:
        return NodeLock(node.name, "locked", detail=f"{lock_dir} exists without owner.json (being taken now, "
                                                    "or left by a run killed while taking it)")
    owner = parse_owner(out)
    if owner is None:
        return NodeLock(node.name, "locked", detail=f"{lock_dir}/owner.json does not say who holds it")
    return NodeLock(node.name, "locked", owner, stale=owner.is_stale())


def lock_status(nodes: Sequence[Node], handlers: Callable[[Node], CommandHandler], lock_dir: str, *,
                parallel: int = 4, on_interrupt: Callable[[], object] | None = None) -> list[NodeLock]:
    """Every node's lock, in node order.  On Ctrl-C ``on_interrupt()`` is called before the
    reads in flight are waited for (to stop their connects' retries and cut them short)."""
    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(nodes) or 1))) as pool:
        try:
            return list(pool.map(lambda n: read_lock(n, handlers(n), lock_dir), nodes))
        except KeyboardInterrupt:
            if on_interrupt is not None:
                on_interrupt()
            raise


HEADERS = ["NODE", "LOCK", "RUN", "OWNER", "PID", "SINCE", "MESSAGE"]


def render_lock_status(locks: Sequence[NodeLock], lock_dir: str) -> str:
    """The table of ``zdupgrade lock status``, then one line per problem."""
    from .views import one_line
    rows = []
    notes = []
    for lock in locks:
        owner = lock.owner
        state = lock.state + (" (STALE: its process is gone)" if lock.stale else "")
        if owner is None:
            rows.append([lock.node, state, "-", "-", "-", "-", "-"])
        else:
            rows.append([lock.node, state, one_line(owner.run_id, 40), one_line(f"{owner.user}@{owner.host}", 50),
                         str(owner.pid), one_line(owner.started, 30), one_line(owner.message, 60) or "-"])
        if lock.detail:
            notes.append(f"{lock.node}: {one_line(lock.detail, 300)}")
    held = sorted({lock.owner.run_id for lock in locks if lock.owner})
    lines = [f"fleet lock ({lock_dir}):", tabulate(rows, headers=HEADERS, tablefmt="simple", disable_numparse=True)]
    lines += notes
    free = sum(1 for lock in locks if lock.state == "free")
    lines.append(f"{free} of {len(locks)} node(s) free" + (f"; held by run(s) {', '.join(held)}" if held else ""))
    return "\n".join(lines)
