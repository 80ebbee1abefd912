"""Load-balancer hooks: built-in ``none``, ``script``, ``haproxy``, or a custom one.

A custom hook is named in the topology by the name of an installed entry point
(group ``zdupgrade.load_balancers``) or by dotted path (``type: mypkg.lb:make``):
the callable gets the ``load_balancer`` options mapping and returns a
:class:`zdu.lb.base.LoadBalancer`.
"""
from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Callable

from zdu.errors import ConfigError
from zdu.transport.base import CommandHandler
from zdu.model import LbSettings
from zdu.lb.base import LbResult, LoadBalancer

__all__ = ["LbResult", "LoadBalancer", "make_load_balancer", "ENTRY_POINT_GROUP"]

#: packages register hooks here: ``[options.entry_points] zdupgrade.load_balancers = f5 = mypkg.f5:make``
ENTRY_POINT_GROUP = "zdupgrade.load_balancers"


def make_load_balancer(settings: LbSettings, *,
                       handler_factory: Callable[[str], CommandHandler] | None = None) -> LoadBalancer:
    """Build the hook a topology names; ConfigError for bad options (nothing contacted)."""
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
    plugins = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    try:
        if settings.type in plugins:
            factory = plugins[settings.type].load()
        else:
            module_name, sep, attr = settings.type.partition(":")
            if not sep:
                module_name, _, attr = settings.type.rpartition(".")
            factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"load_balancer.type: cannot load hook {settings.type!r}: {exc}") from None
    hook = factory(dict(settings.options))
    if not isinstance(hook, LoadBalancer):
        raise ConfigError(f"load_balancer.type: {settings.type!r} did not return a LoadBalancer")
    return hook
