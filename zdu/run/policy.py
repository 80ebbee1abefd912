"""Rollback policies: after a failure, what to do.

A policy is any callable ``(FailureContext) -> Decision``; the default is
:func:`default_policy`.  Users replace it with ``--rollback-policy
module.path:function``.  Policies are pure: they look at the context and decide.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Callable, Mapping

from zdu.plugins import describe_ref, load_callable
from zdu.status import FailureKind, Phase


class Action(str, enum.Enum):
    """What the conductor does after a failure."""

    ABORT = "ABORT"                  # stop; roll nothing back (nodes taken out go back in)
    ROLLBACK_NODE = "ROLLBACK_NODE"  # roll back the failed node only, then stop
    ROLLBACK_ALL = "ROLLBACK_ALL"    # roll back the failed node and every switched node, newest first
    CONTINUE = "CONTINUE"            # leave the failed node as it is and go on with the next node

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Decision:
    """A policy's answer, with the reason written in the summary."""

    action: Action
    reason: str


@dataclass(frozen=True)
class FailureContext:
    """What a policy knows when it is asked."""

    node: str
    phase: Phase
    classification: FailureKind                  # a str enum: compares equal to "failed", "timeout", ...
    message: str
    exit_code: int | None
    switched: tuple[str, ...]                    # nodes whose APPLY started, oldest first (failed node excluded)
    results: Mapping[str, Mapping[Phase, str]]   # node -> phase -> "PASSED" | "FAILED" (phases run so far)
    #: the other failures of the same wave (nodes of a wave run in parallel); each is decided too
    others: tuple[str, ...] = ()


Policy = Callable[[FailureContext], Decision]


def default_policy(ctx: FailureContext) -> Decision:
    """The built-in policy.

    - EXPORT / UPGRADE failed: nothing running was changed, so abort without rollback.
    - PRE-APPLY / APPLY / POST-APPLY failed: roll back the failed node and every node
      already switched, newest first, so the fleet ends on one (the old) version.
    - Interrupted (Ctrl-C, SIGTERM): roll back the node being changed, if any, and stop;
      nodes already upgraded stay upgraded (each node still runs exactly one version).
    """
    if ctx.classification is FailureKind.INTERRUPTED:
        if ctx.phase in (Phase.APPLY, Phase.POST_APPLY):
            return Decision(Action.ROLLBACK_NODE, f"interrupted during {ctx.phase} on {ctx.node}: rolling back "
                                                  f"{ctx.node} only; nodes already upgraded stay on the new version")
        return Decision(Action.ABORT, f"interrupted during {ctx.phase} on {ctx.node}: no running node "
                                      "was being changed, nothing to roll back")
    if ctx.phase.is_offline:
        return Decision(Action.ABORT, f"{ctx.phase} failed on {ctx.node} ({ctx.classification}); "
                                      "no running node was changed, nothing to roll back")
    others = f" and {len(ctx.switched)} switched node(s): {', '.join(reversed(ctx.switched))}" if ctx.switched else ""
    return Decision(Action.ROLLBACK_ALL, f"{ctx.phase} failed on {ctx.node} ({ctx.classification}); "
                                         f"rolling back {ctx.node}{others} so every node runs the old version")


def rollback_node_only(ctx: FailureContext) -> Decision:
    """Alternative policy: roll back just the failed node, keep switched nodes on the new version."""
    if ctx.phase.is_offline:
        return default_policy(ctx)
    return Decision(Action.ROLLBACK_NODE, f"{ctx.phase} failed on {ctx.node}; rolling back {ctx.node} only")


#: packages may register policies here: ``zdupgrade.rollback_policies = careful = mypkg.pol:careful``
POLICY_GROUP = "zdupgrade.rollback_policies"


def load_policy(ref: str | None) -> Policy:
    """``None``/``default`` → default_policy; ``node-only`` → rollback_node_only; an entry point
    name of :data:`POLICY_GROUP`, ``package.module:function`` or ``package.module.function`` →
    that callable (ConfigError naming the option if it cannot be loaded)."""
    if ref in (None, "", "default"):
        return default_policy
    if ref == "node-only":
        return rollback_node_only
    assert ref is not None
    return load_callable(ref, setting="--rollback-policy", group=POLICY_GROUP)  # type: ignore[return-value]


def describe_policy(ref: str | None) -> str:
    """What ``--rollback-policy`` names, for --dry-run, without importing anything."""
    if ref in (None, "", "default"):
        return "default"
    if ref == "node-only":
        return "node-only"
    assert ref is not None
    return describe_ref(ref, setting="--rollback-policy", group=POLICY_GROUP) + " (not loaded by --dry-run)"
