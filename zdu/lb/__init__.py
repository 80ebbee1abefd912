"""Load-balancer hooks: built-in ``none``, ``script``, ``haproxy``, or a custom one.

A custom hook is named in the topology by the name of an installed entry point
(group ``zdupgrade.load_balancers``) or by dotted path (``type: mypkg.lb:make``):
the callable gets the ``load_balancer`` options mapping and returns a
:class:`zdu.lb.base.LoadBalancer`.  It is loaded by :func:`zdu.plugins.load_callable`,
and not at all when ``load_code`` is false (``--dry-run``).  What it returns is
wrapped in a :class:`GuardedHook`: whatever its methods raise becomes the interface's own
answer (a refused check, a failed action, an unreadable balancer), never a traceback, and no
call may take longer than ``call_timeout`` seconds (zdupgrade's own option, not passed to the
factory; default :data:`CALL_TIMEOUT`): a plugin waiting on an API that never answers cannot
hang the run.
"""
from __future__ import annotations

import math
import sys
import threading
import time
from typing import Any, Callable, Mapping, Sequence

from zdu.errors import ConfigError, LoadBalancerError, ZduError
from zdu.lb.base import LbResult, LoadBalancer, refuse_control_characters, seconds_option
from zdu.model import LbSettings, Node
from zdu.plugins import describe_ref, exception_line, load_callable, raise_if_interrupt, safe_text
from zdu.transport.base import CommandHandler

__all__ = ["LbResult", "LoadBalancer", "GuardedHook", "UnloadedHook", "make_load_balancer", "ENTRY_POINT_GROUP"]

#: packages register hooks here: ``[options.entry_points] zdupgrade.load_balancers = f5 = mypkg.f5:make``
ENTRY_POINT_GROUP = "zdupgrade.load_balancers"

BUILT_IN = ("none", "script", "haproxy")
_SETTING = "load_balancer.type"

#: the longest one call of a custom hook may take (``load_balancer.call_timeout``), in seconds:
#: long enough for a drain the plugin waits out itself, short enough that a hung API call ends
CALL_TIMEOUT = 600.0


class HookTimeout(Exception):
    """A custom hook's call did not return within ``call_timeout`` (or an earlier one still runs)."""


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


def _raised(exc: BaseException) -> str:
    if not getattr(exc, "_zdu_from_worker", False):   # raised in a hook call's own thread: the plugin's
        raise_if_interrupt(exc)
    return exception_line(exc)


class GuardedHook(LoadBalancer):
    """A custom hook as the run sees it: each method keeps the interface's contract whatever the
    plugin's code raises (``SystemExit``, ``GeneratorExit``, its own BaseException subclasses too;
    a KeyboardInterrupt only when it cannot be the operator's, see
    :func:`zdu.plugins.raise_if_interrupt`):

    * ``validate`` raises ConfigError, ``check`` and ``serving`` LoadBalancerError (a ZduError
      of the plugin's own passes as it is);
    * ``disable`` / ``enable`` return a failed LbResult -- the gate records the node's place in
      the balancer as unknown, since the hook may have acted before it raised -- and what they
      return is made an LbResult the record can hold (:func:`_sane_result`): ``ok`` not a bool
      (``"no"`` is truthy) is a failure, a message that is not text is made text, a duration that
      is not a finite number of seconds is measured (a NaN in run.json made the run folder
      "damaged"), details that are not JSON are reduced to what is;
    * ``serving`` answers None or a mapping with a true/false for every node asked about; any other
      answer (a list, ``"no"``, which is truthy, a node left out) is LoadBalancerError, so the
      capacity guard never counts a node from an answer it cannot read; ``healthy`` the same, a
      short text allowed in place of False (a plugin without ``healthy`` is asked ``serving``);
    * ``describe`` falls back to the generic line; ``close`` ignores what it raises (one line on
      stderr naming the exception's type: its message, which may hold a secret, is not printed);
    * ``check``, ``serving``, ``healthy``, ``disable``, ``enable`` and ``close`` each run in a thread of their
      own, waited for at most ``call_timeout`` seconds: a call still running then is a refused
      check, an unreadable balancer, a failed action (the node's place in the balancer unknown)
      or an ignored close.  Python code cannot be stopped from outside, so that call is left
      running (a daemon thread: it does not keep the process alive), and while it runs the hook
      is not called again: every later call fails at once, naming the call that hangs, rather
      than act beside it.
    """

    def __init__(self, hook: LoadBalancer, ref: str, call_timeout: float = CALL_TIMEOUT) -> None:
        self.hook = hook
        self.ref = ref
        self.call_timeout = call_timeout
        self._hung: list[tuple[str, threading.Thread, float]] = []    # what, its thread, since
        self._hung_lock = threading.Lock()
        try:
            name = hook.name
        except BaseException as exc:  # noqa: BLE001 - a property of the plugin's that raises
            raise_if_interrupt(exc)
            name = "custom"
        self.name = name if isinstance(name, str) and name else "custom"

    def __getattr__(self, attr: str) -> Any:
        if attr == "hook":                  # not set yet (copy, pickle): no recursion
            raise AttributeError(attr)
        return getattr(self.hook, attr)     # the plugin's own attributes, for its own callers

    def _what(self, method: str) -> str:
        return f"hook {self.ref!r}: {method}() raised"

    def _bounded(self, what: str, call: Callable[[], Any]) -> Any:
        """``call()`` in a thread of its own, waited for ``call_timeout`` s: its answer, or what it
        raised re-raised here; HookTimeout if it did not return in time (it is left running, and
        marks the hook hung) or if an earlier call still hangs."""
        with self._hung_lock:
            # calls of one wave's nodes run at once: each one that hung counts until it returns
            self._hung = [h for h in self._hung if h[1].is_alive()]
            if self._hung:
                earlier, _, since = self._hung[0]
                raise HookTimeout(f"hook {self.ref!r}: {what} was not called: its {earlier}, started "
                                  f"{time.monotonic() - since:.0f} s ago, has not returned (call_timeout "
                                  f"{self.call_timeout:g} s), and the hook is not called beside it")
        outcome: list[tuple[bool, Any]] = []

        def target() -> None:
            try:
                outcome.append((True, call()))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                outcome.append((False, exc))
        thread = threading.Thread(target=target, name=f"zdu-hook-{what}", daemon=True)
        started = time.monotonic()
        thread.start()
        thread.join(self.call_timeout)
        if not outcome:
            with self._hung_lock:
                self._hung.append((what, thread, started))
            raise HookTimeout(f"hook {self.ref!r}: {what} did not return within {self.call_timeout:g} s "
                              "(load_balancer.call_timeout); it is left running, and the hook is not "
                              "called again while it does")
        returned, value = outcome[0]
        if returned:
            return value
        try:       # no signal reaches that thread: never a Ctrl-C (object's setattr: a frozen
            object.__setattr__(value, "_zdu_from_worker", True)      # exception class has its own)
        except Exception:  # noqa: BLE001 - left unmarked: read as it was before hook calls had threads
            pass
        raise value

    def validate(self, nodes: Sequence[Node]) -> None:
        try:
            self.hook.validate(nodes)
        except ZduError:
            raise
        except BaseException as exc:  # noqa: BLE001 - see the class docstring
            raise ConfigError(f"{_SETTING}: {self._what('validate')} {_raised(exc)}") from None

    def check(self, nodes: Sequence[Node]) -> None:
        try:
            self._bounded("check()", lambda: self.hook.check(nodes))
        except HookTimeout as exc:
            raise LoadBalancerError(str(exc)) from None
        except ZduError:
            raise
        except BaseException as exc:  # noqa: BLE001
            raise LoadBalancerError(f"{self._what('check')} {_raised(exc)}") from None

    def disable(self, node: Node) -> LbResult:
        return self._act("disable", node)

    def enable(self, node: Node) -> LbResult:
        return self._act("enable", node)

    def _act(self, action: str, node: Node) -> LbResult:
        started = time.monotonic()
        act = self.hook.disable if action == "disable" else self.hook.enable
        try:
            result = self._bounded(f"{action}() of {node.name}", lambda: act(node))
            return _sane_result(result, time.monotonic() - started)
        except HookTimeout as exc:
            return LbResult(False, str(exc), time.monotonic() - started)
        except BaseException as exc:  # noqa: BLE001 - a failed action, never a crashed run
            return LbResult(False, _raised(exc), time.monotonic() - started)

    def serving(self, nodes: Sequence[Node]) -> Mapping[str, bool] | None:
        return self._read("serving", self.hook.serving, nodes)

    def healthy(self, nodes: Sequence[Node]) -> Mapping[str, bool | str] | None:
        """The plugin's ``healthy`` (a plugin without one: its ``serving``), bounded and read as
        ``serving`` is, a short text allowed in place of False."""
        method = getattr(self.hook, "healthy", None)
        return self._read("healthy", method if callable(method) else self.hook.serving, nodes, texts=True)

    def _read(self, name: str, method: Callable[[Sequence[Node]], Any], nodes: Sequence[Node],
              texts: bool = False) -> Any:
        """``method(nodes)`` bounded, its answer read by :func:`_read_serving`; anything else it
        does (a hang, a raise, an answer that cannot be read) is LoadBalancerError."""
        try:
            return _read_serving(self._bounded(f"{name}()", lambda: method(nodes)), nodes,
                                 f"hook {self.ref!r}: {name}() answered", texts=texts)
        except HookTimeout as exc:
            raise LoadBalancerError(str(exc)) from None
        except ZduError:
            raise
        except BaseException as exc:  # noqa: BLE001 - in the hook, or in the mapping it returned
            raise LoadBalancerError(f"{self._what(name)} {_raised(exc)}") from None

    def describe(self, action: str, node: Node) -> str:
        try:
            line = self.hook.describe(action, node)
            if isinstance(line, str):
                return line
        except BaseException as exc:  # noqa: BLE001
            raise_if_interrupt(exc)
        return super().describe(action, node)

    def close(self) -> None:
        try:
            self._bounded("close()", self.hook.close)
        except HookTimeout as exc:
            sys.stderr.write(f"zdupgrade: warning: load-balancer {exc} (ignored)\n")
        except BaseException as exc:  # noqa: BLE001 - the run is over; its status stands
            raise_if_interrupt(exc)
            sys.stderr.write(f"zdupgrade: warning: load-balancer {self._what('close')} "
                             f"{type(exc).__name__} (ignored)\n")


def _sane_result(result: Any, measured: float) -> LbResult:
    """A plugin's answer as an LbResult the gate and the record can hold (see GuardedHook)."""
    if not isinstance(result, LbResult):
        return LbResult(False, f"the hook returned {type(result).__name__}, not an LbResult", measured)
    message = result.message
    if message is None:
        message = ""
    elif isinstance(message, (bytes, bytearray)):
        message = bytes(message).decode(errors="replace")
    elif not isinstance(message, str):
        message = safe_text(message)
    duration = result.duration
    if isinstance(duration, bool) or not isinstance(duration, (int, float)) or not math.isfinite(duration) \
            or not 0 <= duration < 86400 * 366:
        duration = measured
    details = _json_data(result.details, 0)
    if not isinstance(details, dict):
        details = {"details": details}
    if not isinstance(result.ok, bool):
        return LbResult(False, f"the hook answered ok={type(result.ok).__name__}, not true/false"
                               + (f": {message}" if message else ""), float(duration), details)
    return LbResult(result.ok, message, float(duration), details)


def _json_data(value: Any, depth: int) -> Any:
    """``value`` reduced to what JSON holds (finite numbers; str keys); anything else as text."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if depth >= 20:
        return "<nested too deep>"
    if isinstance(value, Mapping):
        try:
            return {(key if isinstance(key, str) else safe_text(key)): _json_data(item, depth + 1)
                    for key, item in value.items()}
        except BaseException as exc:  # noqa: BLE001 - a mapping of the plugin's that raises
            raise_if_interrupt(exc)
            return f"<{type(value).__name__}>"
    if isinstance(value, (list, tuple)):
        return [_json_data(item, depth + 1) for item in value]
    return safe_text(value)


def _read_serving(answer: Any, nodes: Sequence[Node], what: str, *,
                  texts: bool = False) -> Any:
    """``answer`` as a plain dict with a bool for every one of ``nodes`` (with ``texts``, a str
    is taken too: what the balancer shows, made one line; whole, since the run masks secrets in
    it before it cuts it); LoadBalancerError if not."""
    if answer is None:
        return None
    if not isinstance(answer, Mapping):
        raise LoadBalancerError(f"{what} a {type(answer).__name__}, not a mapping of node name to true/false")
    result: dict[str, bool | str] = {}
    for node in nodes:
        if node.name not in answer:
            raise LoadBalancerError(f"{what} nothing for node {node.name!r}")
        value = answer[node.name]
        if texts and isinstance(value, str):
            result[node.name] = " ".join(value.split()) or False
            continue
        if not isinstance(value, bool):
            raise LoadBalancerError(f"{what} a {type(value).__name__} for node {node.name!r}, not true/false"
                                    + (" or a text" if texts else ""))
        result[node.name] = value
    return result


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
    options = dict(settings.options)
    call_timeout = seconds_option(options, "call_timeout", CALL_TIMEOUT, 0.1, 86400.0)
    options.pop("call_timeout", None)
    if not load_code:
        return UnloadedHook(settings.type, describe_ref(settings.type, setting=_SETTING,
                                                        group=ENTRY_POINT_GROUP))
    factory = load_callable(settings.type, setting=_SETTING, group=ENTRY_POINT_GROUP)
    try:
        hook = factory(options)
    except ZduError as exc:  # the factory's own clear refusal of its options
        raise ConfigError(f"{_SETTING}: hook {settings.type!r}: {exc}") from None
    except BaseException as exc:  # a bug in the factory
        raise ConfigError(f"{_SETTING}: hook {settings.type!r} failed to build: {_raised(exc)}") from None
    if not isinstance(hook, LoadBalancer):
        raise ConfigError(f"{_SETTING}: hook {settings.type!r} returned {type(hook).__name__}, "
                          "not a zdu.lb.base.LoadBalancer")
    return GuardedHook(hook, settings.type, call_timeout)
