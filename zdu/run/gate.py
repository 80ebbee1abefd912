"""The load-balancer gate: the only way a node leaves or rejoins traffic.

Every call is recorded before it is made (``LbStarted``: a run killed mid-action knows the
node's place in the balancer is uncertain) and after (``LbFinished``), with the hook's messages
masked.  A hook that raises is a failed action, never a crashed run.

The gate refuses to put back a node that is not on a known version whose health was checked
(:func:`may_serve`): a node whose rollback failed, or that was changed half-way, or whose new
version did not pass POST-APPLY, stays out and is reported.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from ..lb.base import LbResult, LoadBalancer
from ..planning.plan import Plan
from ..status import ONLINE_PHASES, FailureKind, LbAction, LbState, Outcome, Phase, Version
from . import events as ev
from .state import NodeState, Recorder


@dataclass(frozen=True)
class LbOutcome:
    """How a gate action ended."""

    ok: bool
    message: str = ""
    refused: bool = False          # the gate did not call the hook: the node may not serve


def may_serve(node: NodeState) -> tuple[bool, str]:
    """Whether ``node`` may take traffic again, and if not, why."""
    if node.version is Version.UNKNOWN:
        return False, "it was changed half-way and runs no known version"
    if node.rollback is not None and node.rollback.outcome is not Outcome.PASSED:
        return False, "its rollback did not pass"
    if node.version is Version.NEW:
        post = node.phases.get(Phase.POST_APPLY)
        if post is None or post.outcome is not Outcome.PASSED:
            return False, "the new version did not pass POST-APPLY and its smoke checks"
        return True, ""
    # the old version: untouched (nothing past PRE-APPLY ran), or rolled back successfully
    entered = [p for p in ONLINE_PHASES[1:] if p in node.phases]
    if entered and (node.rollback is None or node.rollback.outcome is not Outcome.PASSED):
        return False, "it was changed and not rolled back"
    return True, ""


#: the longest load-balancer message kept (a script hook's is its output's whole last line)
MESSAGE_LIMIT = 1000


class LbGate:
    """Takes nodes out of traffic and puts them back, through the run's load-balancer hook."""

    def __init__(self, plan: Plan, recorder: Recorder, lb: LoadBalancer) -> None:
        self.plan = plan
        self.recorder = recorder
        self.lb = lb

    def take_out(self, name: str) -> LbOutcome:
        """Disable ``name`` (drain, then out of rotation)."""
        return self._call(name, LbAction.DISABLE)

    def put_back(self, name: str) -> LbOutcome:
        """Enable ``name`` if it may serve; otherwise refuse (the node stays out)."""
        node = self.recorder.node(name)
        allowed, why = may_serve(node)
        if not allowed:
            message = f"{name} stays OUT OF THE LOAD BALANCER: {why}"
            self.recorder.emit(ev.LbRefused(node=name, message=message))
            return LbOutcome(False, message, refused=True)
        return self._call(name, LbAction.ENABLE)

    def restore(self) -> list[str]:
        """End of run: put back every node still out that may serve; take out (again) every node
        that may not serve but might be in rotation.  Return the nodes left out of traffic."""
        left_out: list[str] = []
        for name in self.recorder.query(lambda s: s.active_nodes):
            node = self.recorder.node(name)
            if node.lb is LbState.IN:
                continue
            allowed, why = may_serve(node)
            if allowed:
                self.recorder.emit(ev.Warned(node=name, message=f"{name} is still out of the load balancer at "
                                                                f"the end of the run; putting it back"))
                if self._call(name, LbAction.ENABLE).ok:
                    continue
                self.recorder.emit(ev.Warned(node=name, message=f"!!! {name} is OUT OF THE LOAD BALANCER: "
                                                                "enable failed; put it back by hand once it "
                                                                "is healthy"))
            else:
                if node.lb is not LbState.OUT and node.last_failure is not FailureKind.UNREACHABLE:
                    # it may be taking traffic: a broken node must not serve
                    self._call(name, LbAction.DISABLE)
                self.recorder.emit(ev.Warned(node=name, message=f"!!! {name} is OUT OF THE LOAD BALANCER: {why}; "
                                                                "repair it, then put it back (or --resume)"))
            left_out.append(name)
        return left_out

    def returned(self) -> list[str]:
        """The nodes of this run it put back into the load balancer (in it now, enabled by the run)."""
        return self.recorder.query(lambda s: [n for n in s.active_nodes if s.nodes[n].lb is LbState.IN
                                              and s.nodes[n].lb_calls.get("enable", 0) > 0])

    def check_serving(self, wave: int | None, *, quiet: bool = False) -> list[str]:
        """Ask the balancer whether every node this run put back (its place IN, enabled by the run)
        is still in rotation and healthy -- before wave ``wave``, or at the end (None) -- and
        record the answer; the nodes that are not.  A hook that cannot tell checks nothing; one
        that cannot be read is a warning (each put-back was confirmed healthy when it was made).
        ``quiet`` (a look during a soak): an answer that every node serves is not recorded, and
        an unreadable balancer is left to the check at the soak's end."""
        names = self.returned()
        if not names:
            return []
        when = f"before wave {wave}" if wave is not None else "at the end of the run"
        try:
            answer = self.lb.healthy([self.plan.node_plan(n).node for n in names])
        except Exception as exc:  # noqa: BLE001 - a hook bug included: a warning, never a crashed run
            if quiet:
                return []
            self.recorder.emit(ev.Warned(message=self.plan.mask(
                f"cannot read the load balancer {when} to check that the nodes put back still serve "
                f"({', '.join(names)}): {type(exc).__name__}: {exc}; check them by hand")))
            return []
        if answer is None:
            return []
        said = [(n, answer.get(n, True)) for n in names]
        bad = [(n, "the node not serving" if why is False else str(why)) for n, why in said if why is not True]
        if not bad:
            if not quiet:
                self.recorder.emit(ev.ServingChecked(wave=wave, checked=tuple(names)))
            return []
        versions = self.recorder.query(lambda s: {n: s.nodes[n].version for n, _ in bad})
        then = ("the run stops here: no other node is taken out" if wave is not None else
                "the run is not a success")
        reasons = tuple(self.plan.mask(why)[:MESSAGE_LIMIT] for _, why in bad)
        self.recorder.emit(ev.ServingChecked(
            wave=wave, checked=tuple(names), not_serving=tuple(n for n, _ in bad), reasons=reasons,
            message=f"not serving {when}: " + "; ".join(f"{n}: {why}" for (n, _), why in zip(bad, reasons))))
        for (name, _), why in zip(bad, reasons):
            version = "the new version" if versions[name] is Version.NEW else "the old version"
            self.recorder.emit(ev.Warned(node=name, message=(
                f"!!! {name} is NOT SERVING {when}, although this run put it back healthy: the load balancer "
                f"shows {why}, and sends it no traffic. It runs {version}; {then}. Look at it now (its "
                "service's own log); nothing was rolled back")))
        return [n for n, _ in bad]

    def _call(self, name: str, action: LbAction) -> LbOutcome:
        node = self.plan.node_plan(name).node
        self.recorder.emit(ev.LbStarted(node=name, action=action))
        started = time.monotonic()
        try:
            result = self.lb.disable(node) if action is LbAction.DISABLE else self.lb.enable(node)
            if not isinstance(result, LbResult):
                raise TypeError(f"the hook returned {type(result).__name__}, not an LbResult")
        except Exception as exc:  # noqa: BLE001 - a hook bug is a failed action, not a crashed run
            result = LbResult(False, f"{type(exc).__name__}: {exc}", time.monotonic() - started)
        mask = self.plan.masker
        message = mask(result.message)
        if len(message) > MESSAGE_LIMIT:        # cut once masked (see zdu.lb.script)
            message = message[:MESSAGE_LIMIT] + " [...]"
        self.recorder.emit(ev.LbFinished(node=name, action=action, ok=result.ok, message=message,
                                         duration=result.duration, details=mask.data(ev.jsonable(result.details))))
        return LbOutcome(result.ok, message)
