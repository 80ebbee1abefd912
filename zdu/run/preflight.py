"""Preflight: before any change, check every node in parallel and report every problem at once.

Checks: the node is reachable and its host key accepted; the old and new install
dirs exist; ``sudo -n`` works where the profile uses sudo; /var/tmp has enough free
space (``--min-free-mb``); the load balancer answers and knows every node.  Nothing is changed on any node.
"""
from __future__ import annotations

import re
import shlex
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Sequence

from zdu.errors import TransportError, ZduError
from zdu.transport.base import CommandHandler
from zdu.lb.base import LoadBalancer
from zdu.model import Node
from zdu.planning.plan import Plan


@dataclass(frozen=True)
class Problem:
    """One thing preflight found wrong."""

    node: str | None          # None: the load balancer or the run as a whole
    kind: str                 # unreachable | host-key | auth | missing-dir | disk | lb
    message: str

    def __str__(self) -> str:
        return f"{self.node}: {self.message}" if self.node else self.message


def _check_node(node: Node, handler: CommandHandler, plan: Plan, min_free_mb: int,
                check_dirs: bool) -> list[Problem]:
    problems: list[Problem] = []
    try:
        handler.open()
        for label, path in (("old", plan.old_install_dir), ("new", plan.new_install_dir)) if check_dirs else ():
            result = handler.run(f"test -d {shlex.quote(path)}", timeout=30)
            if result.exit_code != 0:
                problems.append(Problem(node.name, "missing-dir",
                                        f"{label} install dir {path!r} does not exist on {node.host}"))
        if _needs_sudo(plan, node.name):
            result = handler.run("sudo -n true", timeout=30)
            if result.exit_code != 0:
                problems.append(Problem(node.name, "sudo", "the profile runs commands with sudo, but "
                                        f"'sudo -n true' fails as {node.user or 'the ssh user'}: "
                                        f"{(result.stderr or result.stdout).strip()[:200]}"))
        if min_free_mb > 0:
            result = handler.run("df -Pm /var/tmp | awk 'NR==2 {print $4}'", timeout=30)
            free = result.stdout.strip()
            if result.exit_code == 0 and free.isdigit() and int(free) < min_free_mb:
                problems.append(Problem(node.name, "disk",
                                        f"only {free} MB free under /var/tmp, need {min_free_mb} MB"))
    except TransportError as exc:
        kind = {"HostKeyError": "host-key", "AuthError": "auth"}.get(type(exc).__name__, "unreachable")
        problems.append(Problem(node.name, kind, exc.detail))
    return problems


def _needs_sudo(plan: Plan, name: str) -> bool:
    node_plan = plan.node_plan(name)
    steps = [s for steps in node_plan.phases.values() for s in steps] + \
        [s for steps in node_plan.rollback.values() for s in steps]
    return any(s.command and re.search(r"(^|[;&|(\s])sudo\s", s.command) for s in steps)


def preflight(plan: Plan, handlers: Callable[[Node], CommandHandler], lb: LoadBalancer, *,
              parallel: int = 8, min_free_mb: int = 0, check_dirs: bool = True,
              stop: Callable[[], bool] = lambda: False) -> list[Problem]:
    """Every problem found, in topology order (empty: good to go).  Nodes not yet checked when
    ``stop()`` turns true are skipped (the caller sees the interrupt)."""
    nodes: Sequence[Node] = [p.node for p in plan.nodes]
    problems: list[Problem] = []

    def check(node: Node) -> list[Problem]:
        return [] if stop() else _check_node(node, handlers(node), plan, min_free_mb, check_dirs)
    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(nodes)))) as pool:
        for found in pool.map(check, nodes):
            problems.extend(found)
    if stop():
        return problems
    try:
        lb.check(nodes)
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
        serving = lb.serving([p.node for p in plan.nodes])
    except ZduError as exc:
        return [Problem(None, "capacity", f"capacity guard: cannot read the load balancer: {exc}")]
    source = "the load balancer"
    if serving is None:
        serving, source = {n: True for n in plan.node_names}, "assuming every node serves (the hook cannot tell)"
    problems = []
    for wave in Walker(plan).waves():
        check = capacity(plan, wave, serving)
        if check is not None and check[0] < check[1]:
            left, want, scope = check
            down = [n for n in scope if not serving.get(n)]
            problems.append(Problem(None, "capacity", (
                f"capacity guard: wave {wave.number} ({', '.join(wave.nodes)}) would leave {left} of {len(scope)} "
                f"node(s) in service, at least {want} must (per {source}"
                + (f"; not serving now: {', '.join(down)}" if down else "") + ")")))
    return problems
