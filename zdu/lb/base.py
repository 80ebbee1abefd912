"""The load-balancer hook interface.

A hook takes a node out of traffic before the disruptive part of its upgrade
(``disable``: drain, then stop sending) and puts it back once it is healthy
(``enable``).  ``validate`` refuses, without contacting anything, node values the
hook could not pass on safely; ``check`` runs before anything changes and refuses,
with a clear message, a load balancer that cannot be reached or does not know a
node; ``serving`` reads which nodes the balancer sends traffic to; ``healthy`` whether
nodes put back are still in rotation and passing the balancer's own health check.
"""
from __future__ import annotations

import abc
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from zdu.config.values import describe_value
from zdu.errors import ConfigError
from zdu.model import Node


@dataclass(frozen=True)
class LbResult:
    """The outcome of one hook action."""

    ok: bool
    message: str = ""
    duration: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)


class LoadBalancer(abc.ABC):
    """Base class of every load-balancer hook."""

    #: the name shown in plans and logs
    name: str = "lb"

    def validate(self, nodes: Sequence[Node]) -> None:
        """Raise ConfigError for a node value this hook cannot use; contacts nothing.

        Called before the plan is printed or any node is contacted (``--dry-run`` too).
        """

    def check(self, nodes: Sequence[Node]) -> None:
        """Raise LoadBalancerError if the hook cannot act on every node; change nothing."""

    @abc.abstractmethod
    def disable(self, node: Node) -> LbResult:
        """Take ``node`` out of traffic, waiting for it to drain; never raises for a refusal."""

    @abc.abstractmethod
    def enable(self, node: Node) -> LbResult:
        """Put ``node`` back in traffic, waiting until the balancer sees it healthy."""

    def serving(self, nodes: Sequence[Node]) -> Mapping[str, bool] | None:
        """Which of ``nodes`` the balancer sends traffic to now (node name -> in service
        and healthy); read-only.  ``None`` when this hook cannot tell (the default).

        A hook that can tell but cannot reach its balancer raises LoadBalancerError.
        """
        return None

    def healthy(self, nodes: Sequence[Node]) -> Mapping[str, bool | str] | None:
        """Whether each of ``nodes`` -- put back by this run earlier -- is still in rotation and
        healthy as the balancer sees it: node name -> True, or False / a short text saying what
        the balancer shows instead ("DOWN", "MAINT").  Read-only; ``None`` when this hook cannot
        tell.  The run asks before each wave and at its end: a node that passed its checks and
        died afterwards (a new version crashing under load) stops the run before another node is
        taken out (status 85).

        The default is :meth:`serving`; a hook whose ``serving`` is a capacity view (HAProxy: a
        backup server or weight 0 adds no capacity, yet is healthy) answers more precisely.
        A hook that can tell but cannot reach its balancer raises LoadBalancerError.
        """
        return self.serving(nodes)

    def describe(self, action: str, node: Node) -> str:
        """One line for ``--dry-run``: what ``action`` on ``node`` will do."""
        return f"{self.name} {action} {node.lb_name}"

    def close(self) -> None:
        """Release connections (idempotent)."""


def refuse_control_characters(value: Any, where: str) -> None:
    """ConfigError if a string anywhere in ``value`` (mappings and lists walked, keys
    included) holds a control character: a newline ends a runtime-API command, a NUL
    cannot pass through exec, and neither belongs in a name, path or address."""
    if isinstance(value, str):
        for index, char in enumerate(value):
            if unicodedata.category(char) == "Cc":
                raise ConfigError(f"{where}: control character {char!r} at position {index} "
                                  f"in {value!r}")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            refuse_control_characters(key, where)
            refuse_control_characters(item, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            refuse_control_characters(item, f"{where}[{index}]")


def seconds_option(options: Mapping[str, Any], key: str, default: float, lo: float, hi: float) -> float:
    """The number of seconds ``load_balancer.<key>`` gives (``default`` when absent): at least
    ``lo`` (above 0 when ``lo`` is 0) and at most ``hi``; ConfigError naming it otherwise (a bool,
    text, NaN and infinity included: no deadline or socket timeout can hold them)."""
    value = options.get(key, default)
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not ((value >= lo) if lo else (value > 0)) or not value <= hi:   # NaN fails both
        above = f"at least {lo:g}" if lo else "above 0"
        raise ConfigError(f"load_balancer.{key}: expected a number of seconds {above} and at most {hi:g}, "
                          f"got {describe_value(value)}")
    return float(value)
