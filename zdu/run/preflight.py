"""Preflight: before any change, check every node in parallel and report every problem at once.

Checks: the node is reachable and its host key accepted; the old and new install
dirs exist; ``sudo -n`` works where the profile uses sudo; /var/tmp has enough free
space (``--min-free-mb``); the load balancer answers and knows every node.  Nothing is changed on any node,
except that, given a :class:`~zdu.run.lock.FleetLock`, the same round trip takes the fleet lock
(the first node alone: two runs started together decide there, while the other nodes are
already being connected); the caller releases it if anything was found.
"""
from __future__ import annotations

import dataclasses
import re
import shlex
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

from zdu.errors import AuthError, HostKeyError, TransportError, ZduError
from zdu.transport.base import CommandHandler, group_bastion_errors
from zdu.lb.base import LoadBalancer
from zdu.model import Node
from zdu.planning.plan import Plan

if TYPE_CHECKING:
    from zdu.run.lock import FleetLock


@dataclass(frozen=True)
class Problem:
    """One thing preflight found wrong."""

    node: str | None          # None: the load balancer or the run as a whole
    kind: str                 # unreachable | host-key | auth | missing-dir | sudo | disk | unchecked | lb | capacity | locked
    #                           | upgraded (not a problem: the node already runs the new version, and is left out)
    message: str
    error: BaseException | None = field(default=None, compare=False, repr=False)   # a transport error

    def __str__(self) -> str:
        return f"{self.node}: {self.message}" if self.node else self.message


#: one line per check the node script prints: ``ZDU-CHECK <what> <result> [detail]``
_MARK = "ZDU-CHECK"
_LOCK_MARK = "ZDU-CHECK-LOCK"      # what follows is the fleet lock's answer
PREFLIGHT_TIMEOUT = 30.0


def check_script(plan: Plan, name: str, min_free_mb: int, check_dirs: bool, probe: bool = False) -> str:
    """Every check of one node in one shell command (one round trip); with ``probe``, the
    profile's ``upgraded`` check too (in a subshell of its own, its output dropped)."""
    lines = []
    upgraded = plan.node_plan(name).upgraded
    if probe and upgraded is not None:
        lines.append(f"if ( {upgraded[0]}\n) </dev/null >/dev/null 2>&1; then echo {_MARK} upgraded yes; "
                     f"else echo {_MARK} upgraded no; fi")
    if check_dirs:
        for label, path in (("old", plan.old_install_dir), ("new", plan.new_install_dir)):
            q = shlex.quote(path)
            lines.append(f"if test -d {q}; then r=ok; elif test -e {q}; then r=notdir; else r=missing; fi; "
                         f"echo {_MARK} dir-{label} $r")
    if _needs_sudo(plan, name):
        lines.append(f"if out=$(sudo -n true 2>&1); then echo {_MARK} sudo ok; "
                     f"else echo {_MARK} sudo fail \"$(printf '%s' \"$out\" | head -c 200 | tr '\\n' ' ')\"; fi")
    if min_free_mb > 0:
        lines.append(f"echo {_MARK} free \"$(df -Pm /var/tmp 2>/dev/null | awk 'NR==2 {{print $4}}')\"")
    lines.append(f"echo {_MARK} done")
    return "\n".join(lines)


def _check_node(node: Node, handler: CommandHandler, plan: Plan, min_free_mb: int,
                check_dirs: bool, lock: "FleetLock | None" = None, probe: bool = False) -> list[Problem]:
    """All checks of one node in one round trip (and the fleet lock, given ``lock``); a check
    that could not run says so.  A node the profile's ``upgraded`` check finds on the new version
    (``probe``) is an ``upgraded`` entry, and its other checks do not matter: it is left out."""
    problems: list[Problem] = []
    checks = []
    if check_dirs:
        checks += [("dir-old", f"the old install dir {plan.old_install_dir!r}"),
                   ("dir-new", f"the new install dir {plan.new_install_dir!r}")]
    if _needs_sudo(plan, node.name):
        checks.append(("sudo", "sudo -n"))
    if min_free_mb > 0:
        checks.append(("free", "the free space under /var/tmp"))
    script = check_script(plan, node.name, min_free_mb, check_dirs, probe)
    if lock is not None:
        script += f"\necho {_LOCK_MARK}\n{lock.take_command()}"
    try:
        result = handler.run(script, timeout=PREFLIGHT_TIMEOUT)
    except TransportError as exc:
        return [_not_reached(node.name, exc)]
    checked, reached, lock_answer = result.stdout.partition(f"{_LOCK_MARK}\n")
    if lock is not None:
        if result.error or not reached:
            lock.attempted(node)         # the lock may have been taken: released with the rest
        else:
            problem = lock.settle(node, handler, dataclasses.replace(result, stdout=lock_answer))
            if problem:
                problems.append(Problem(None, "locked", problem))     # the message names the node
    found: dict[str, list[str]] = {}
    for line in checked.splitlines():
        words = line.split(" ", 3)
        if len(words) >= 2 and words[0] == _MARK:
            found[words[1]] = words[2:]
    if result.error or "done" not in found:
        why = (f"timed out after {PREFLIGHT_TIMEOUT:g} s" if result.error == "timeout" else
               "the connection was lost" if result.error else
               f"the check command failed (exit {result.exit_code}): "
               f"{(result.stderr or result.stdout).strip()[:200] or 'no output'}")
        missing = [what for key, what in checks if key not in found]
        return problems + [Problem(node.name, "unchecked", f"could not check {', '.join(missing) or 'the node'} on "
                                                          f"{node.name}: {why}")]
    if found.get("upgraded", [""])[0] == "yes":
        return problems + [Problem(node.name, "upgraded", f"{node.name} already runs the new version (the "
                                                          "profile's upgraded check exits 0): left out, not touched")]
    for key, label in (("dir-old", "old"), ("dir-new", "new")):
        if key in found and found[key][0] != "ok":
            path = plan.old_install_dir if label == "old" else plan.new_install_dir
            what = "is not a directory" if found[key][0] == "notdir" else "does not exist"
            problems.append(Problem(node.name, "missing-dir", f"{label} install dir {path!r} {what} on {node.host}"))
    if "sudo" in found and found["sudo"][0] != "ok":
        problems.append(Problem(node.name, "sudo", "the profile runs commands with sudo, but 'sudo -n true' "
                                f"fails as {node.user or 'the ssh user'}: {' '.join(found['sudo'][1:])[:200]}"))
    if "free" in found:
        free = found["free"][0] if found["free"] else ""
        if not free.isdigit():
            problems.append(Problem(node.name, "unchecked", f"could not check the free space under /var/tmp on "
                                                           f"{node.name}: df printed {free[:40]!r}"))
        elif int(free) < min_free_mb:
            problems.append(Problem(node.name, "disk", f"only {free} MB free under /var/tmp, need {min_free_mb} MB"))
    return problems


def _not_reached(name: str | None, exc: TransportError) -> Problem:
    """The problem of a node that could not be connected (or whose command could not run)."""
    kind = "host-key" if isinstance(exc, HostKeyError) else "auth" if isinstance(exc, AuthError) else "unreachable"
    return Problem(name, kind, exc.detail, exc)


def _needs_sudo(plan: Plan, name: str) -> bool:
    node_plan = plan.node_plan(name)
    steps = [s for steps in node_plan.phases.values() for s in steps] + \
        [s for steps in node_plan.rollback.values() for s in steps]
    return any(s.command and re.search(r"(^|[;&|(\s])sudo\s", s.command) for s in steps)


def preflight(plan: Plan, handlers: Callable[[Node], CommandHandler], lb: LoadBalancer, *,
              parallel: int = 8, min_free_mb: int = 0, check_dirs: bool = True,
              stop: Callable[[], bool] = lambda: False, lock: "FleetLock | None" = None,
              probe: bool = False) -> list[Problem]:
    """Every problem found, in topology order (empty: good to go).  Nodes not yet checked when
    ``stop()`` turns true are skipped (the caller sees the interrupt).

    With ``lock``, each node's round trip also takes the fleet lock: the first node alone, then
    the others, unless the first was locked by another run (then the others are only checked).
    The others are connected while the first node's round trip is under way (connecting changes
    nothing); their round trips wait for its answer.
    A node that another run holds is a ``locked`` problem; the caller releases what was taken."""
    nodes: Sequence[Node] = [p.node for p in plan.nodes]
    problems: list[Problem] = []
    taking = lock
    first_alone = lock is not None and len(nodes) > 1
    ahead = first_alone and parallel > 1      # connect the others while the first one decides
    decided = threading.Event()               # the first node's lock answer is in
    abandoned = threading.Event()             # the first node's check raised: leave the others
    if not first_alone:
        decided.set()

    def check(node: Node) -> list[Problem]:
        return [] if stop() else _check_node(node, handlers(node), plan, min_free_mb, check_dirs, taking, probe)

    def after_the_first(node: Node) -> list[Problem]:
        if ahead and not decided.is_set() and not stop():
            try:
                handlers(node).open()
            except TransportError as exc:     # what the check's own connect would have said
                return [_not_reached(node.name, exc)]
        decided.wait()
        return [] if abandoned.is_set() else check(node)
    errors: list[tuple[str, BaseException]] = []
    results: list[list[Problem]] = []
    first = 1 if first_alone else 0
    # the first node is checked in this thread: with the pool, ssh.parallel connections at most
    with ThreadPoolExecutor(max_workers=max(1, min(parallel - first, len(nodes) - first))) as pool:
        later = [pool.submit(after_the_first, node) for node in nodes[first:]]
        if first_alone:
            try:
                results.append(check(nodes[0]))
                if any(p.kind == "locked" for p in results[0]):
                    taking = None                 # the other run won: touch nothing else
            except BaseException:
                abandoned.set()
                raise
            finally:
                decided.set()
        results += [future.result() for future in later]
        for node, found in zip(nodes, results):
            for problem in found:
                if problem.kind in ("unreachable", "host-key", "auth") and problem.error is not None:
                    errors.append((node.name, problem.error))
                else:
                    problems.append(problem)
    # one line per failed bastion ("nodes behind it: ..."), not one per node
    lines, rest = group_bastion_errors(errors)
    problems[:0] = [Problem(None, "unreachable", line) for line in lines] + \
        [_not_reached(name, exc) if isinstance(exc, TransportError) else Problem(name, "unreachable", str(exc))
         for name, exc in rest]
    if stop():
        return problems
    try:
        lb.check(plan.backend_nodes)       # the whole backend, --limit or not
    except ZduError as exc:
        problems.append(Problem(None, "lb", f"load balancer: {exc}"))
    return problems


def capacity_problems(plan: Plan, lb: LoadBalancer) -> list[Problem]:
    """The capacity guard, checked for every wave against what the load balancer shows now:
    a wave that would leave too few nodes serving is reported before anything changes."""
    from .walk import Walker, capacity
    if plan.min_in_service is None and all(t.min_in_service is None for t in plan.tiers):
        return []
    try:
        serving = lb.serving(list(plan.backend_nodes))
    except ZduError as exc:
        return [Problem(None, "capacity", f"capacity guard: cannot read the load balancer: {exc}")]
    source = "per the load balancer"
    if serving is None:
        serving, source = {n.name: True for n in plan.backend_nodes}, "assuming every node serves: the hook cannot tell"
    problems = []
    for wave in Walker(plan).waves():
        check = capacity(plan, wave, serving)
        if check is not None and check[0] < check[1]:
            left, want, scope = check
            down = [n for n in scope if not serving.get(n)]
            problems.append(Problem(None, "capacity", (
                f"capacity guard: wave {wave.number} ({', '.join(wave.nodes)}) would leave {left} of {len(scope)} "
                f"node(s) in service, at least {want} must ({source}"
                + (f"; not serving now: {', '.join(down)}" if down else "") + ")")))
    return problems


def out_of_rotation(plan: Plan, lb: LoadBalancer) -> list[str]:
    """Nodes of this run the load balancer shows not serving before anything changed (an
    operator's MAINT, a node DOWN); [] when the hook cannot tell or cannot be read (the
    checks above said so)."""
    try:
        serving = lb.serving(list(plan.backend_nodes))
    except Exception:  # noqa: BLE001 - for a warning only: a plugin hook's bug must not stop the run here
        return []
    if serving is None:
        return []
    return [p.node.name for p in plan.nodes if p.node.name in serving and not serving[p.node.name]]
