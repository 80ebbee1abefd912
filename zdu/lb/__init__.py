"""Load-balancer hooks: built-in ``none``, ``script``, ``haproxy``, or a custom one.

A custom hook is named in the topology by the name of an installed entry point
(group ``zdupgrade.load_balancers``) or by dotted path (``type: mypkg.lb:make``):
the callable gets the ``load_balancer`` options mapping and returns a
:class:`zdu.lb.base.LoadBalancer`.  It is loaded by :func:`zdu.plugins.load_callable`,
and not at all when ``load_code`` is false (``--dry-run``).
"""
from __future__ import annotations

from typing import Callable, Sequence

from zdu.errors import ConfigError, LoadBalancerError, ZduError
from zdu.lb.base import LbResult, LoadBalancer, refuse_control_characters
from zdu.model import LbSettings, Node
from zdu.plugins import describe_ref, load_callable
from zdu.transport.base import CommandHandler

__all__ = ["LbResult", "LoadBalancer", "UnloadedHook", "make_load_balancer", "ENTRY_POINT_GROUP"]

#: packages register hooks here: ``[options.entry_points] zdupgrade.load_balancers = f5 = mypkg.f5:make``
ENTRY_POINT_GROUP = "zdupgrade.load_balancers"

BUILT_IN = ("none", "script", "haproxy")
_SETTING = "load_balancer.type"


class UnloadedHook(LoadBalancer):
    """Stands in for a custom hook that was deliberately not imported (``--dry-run``).

    It describes what would be loaded; every action refuses.
    """

    name = "custom"

    def __init__(self, ref: str, description: str) -> None:
        self.ref = ref
        self.description = description

    def _refusal(self) -> str:
        return f"custom hook {self.description} was not loaded (--dry-run): it cannot act"

    def check(self, nodes: Sequence[Node]) -> None:
        raise LoadBalancerError(self._refusal())

    def disable(self, node: Node) -> LbResult:
        return LbResult(False, self._refusal())

    def enable(self, node: Node) -> LbResult:
        return LbResult(False, self._refusal())

    def describe(self, action: str, node: Node) -> str:
        return f"custom hook {self.description} (not loaded by --dry-run): {action} {node.lb_name}"


def make_load_balancer(settings: LbSettings, *,
                       handler_factory: Callable[[str], CommandHandler] | None = None,
                       load_code: bool = True) -> LoadBalancer:
    """Build the hook a topology names; ConfigError for bad options (nothing contacted).

    With ``load_code=False`` a custom hook is neither imported nor called: an
    :class:`UnloadedHook` describes it.  Built-in hooks are always built, so their
    option errors show in ``--dry-run`` too.
    """
    refuse_control_characters(dict(settings.options), "load_balancer")
    if settings.type == "none":
        from zdu.lb.none import NoLoadBalancer
        if settings.options:
            raise ConfigError(f"load_balancer: type none takes no options (got {', '.join(settings.options)})")
        return NoLoadBalancer()
    if settings.type == "script":
        from zdu.lb.script import ScriptLoadBalancer
        return ScriptLoadBalancer.from_options(settings.options)
    if settings.type == "haproxy":
        from zdu.lb.haproxy import from_options
        return from_options(settings.options, handler_factory=handler_factory)
    if not load_code:
        return UnloadedHook(settings.type, describe_ref(settings.type, setting=_SETTING,
                                                        group=ENTRY_POINT_GROUP))
    factory = load_callable(settings.type, setting=_SETTING, group=ENTRY_POINT_GROUP)
    try:
        hook = factory(dict(settings.options))
    except ZduError as exc:  # the factory's own clear refusal of its options
        raise ConfigError(f"{_SETTING}: hook {settings.type!r}: {exc}") from None
    except (Exception, SystemExit) as exc:  # a bug in the factory
        raise ConfigError(f"{_SETTING}: hook {settings.type!r} failed to build: "
                          f"{type(exc).__name__}: {exc}") from None
    if not isinstance(hook, LoadBalancer):
        raise ConfigError(f"{_SETTING}: hook {settings.type!r} returned {type(hook).__name__}, "
                          "not a zdu.lb.base.LoadBalancer")
    return hook
