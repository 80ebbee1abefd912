"""The one place where zdupgrade imports code named by a user: hooks and policies.

A *ref* is one of

* the name of an installed entry point in a group (``f5`` in ``zdupgrade.load_balancers``),
* ``package.module:attr`` (``attr`` may be dotted: ``module:Class.factory``), or
* ``package.module.attr``.

:func:`load_callable` imports it and returns the callable; every way that can fail --
bad syntax, a module that is missing or raises while it is imported, a missing
attribute, something that is not callable -- is a :class:`zdu.errors.ConfigError`
naming the setting and the ref.  :func:`describe_ref` says what a ref points at
*without importing anything*, which is what ``--dry-run`` uses: a topology is data,
and printing its plan must not run code it names.
"""
from __future__ import annotations

import importlib
import re
import signal
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from zdu.errors import ConfigError

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

__all__ = ["PluginRef", "parse_ref", "describe_ref", "load_callable", "raise_if_interrupt", "exception_line",
           "safe_text"]

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_DOTTED = rf"{_IDENT}(?:\.{_IDENT})*"
_COLON_REF = re.compile(rf"({_DOTTED}):({_DOTTED})")
_DOT_REF = re.compile(rf"({_DOTTED})\.({_IDENT})")
_EXTRAS = re.compile(r"\s*\[[^\]]*\]\s*$")


@dataclass(frozen=True)
class PluginRef:
    """A parsed ref: where the callable lives, and the entry point it came from (if any)."""

    ref: str
    module: str
    attr: str                        # dotted attribute path inside ``module``
    entry_point: EntryPoint | None = None

    @property
    def target(self) -> str:
        """``module:attr``, the canonical spelling."""
        return f"{self.module}:{self.attr}"

    def describe(self) -> str:
        """``mypkg.lb:make``, or ``f5 (entry point zdupgrade.load_balancers: mypkg.f5:make)``."""
        if self.entry_point is not None:
            return f"{self.ref} (entry point {self.entry_point.group}: {self.target})"
        return self.target if self.ref == self.target else f"{self.ref} ({self.target})"


def raise_if_interrupt(exc: BaseException) -> None:
    """Re-raise ``exc`` if it may be the operator's Ctrl-C; return if it can only be the plugin's.

    Plugin code may raise anything, BaseException subclasses included (``SystemExit``,
    ``GeneratorExit``, its own): each is the plugin's failure, reported as such, never a traceback
    or a silent exit.  A ``KeyboardInterrupt`` is the exception: while Python's own SIGINT handler
    is in place, in the main thread, it may be a real Ctrl-C, and stays one.  During a run,
    zdupgrade's handlers take SIGINT (``zdu.cli.signals``), and a worker thread never gets one,
    so a KeyboardInterrupt there is the plugin's.
    """
    if (isinstance(exc, KeyboardInterrupt) and threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
        raise exc


def safe_text(value: Any) -> str:
    """``str(value)``, or ``<Type>`` when a plugin's ``__str__`` raises or returns no text."""
    try:
        text = str(value)
    except BaseException as exc:  # noqa: BLE001 - plugin code
        raise_if_interrupt(exc)
        return f"<{type(value).__name__}>"
    return text if isinstance(text, str) else f"<{type(value).__name__}>"


def exception_line(exc: BaseException) -> str:
    """``Type: message`` on one line: a line break in a plugin's message could forge a line of
    the error output (``zdupgrade: error: ...`` escapes other control characters, not those)."""
    text = safe_text(exc).replace("\r", "\\r").replace("\n", "\\n")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _find_entry_point(name: str, group: str | None) -> EntryPoint | None:
    if group is None:
        return None
    # reads installed distributions' metadata files only; no plugin code runs here (imported here:
    # a run with the built-in hooks and policy does not pay for importlib.metadata at its start)
    from importlib.metadata import entry_points
    for ep in entry_points(group=group):
        if ep.name == name:
            return ep
    return None


def parse_ref(ref: Any, *, setting: str, group: str | None = None) -> PluginRef:
    """Parse ``ref`` without importing it; ConfigError for a bad spelling.

    An installed entry point of ``group`` wins over a dotted path of the same spelling.
    """
    if not isinstance(ref, str) or not ref.strip():
        raise ConfigError(f"{setting}: expected an entry point name or package.module:function, "
                          f"got {ref!r}")
    ep = _find_entry_point(ref, group)
    if ep is not None:
        # "module:attr [extra, ...]" is the packaging spec's form too: the extras name nothing to load
        match = _COLON_REF.fullmatch(_EXTRAS.sub("", ep.value).replace(" ", ""))
        if not match:
            raise ConfigError(f"{setting}: entry point {ref!r} of {group} has an unusable value "
                              f"{ep.value!r} (expected package.module:attr)")
        return PluginRef(ref, match.group(1), match.group(2), ep)
    match = _COLON_REF.fullmatch(ref) or _DOT_REF.fullmatch(ref)
    if not match:
        where = f"an installed entry point of {group}, " if group else ""
        raise ConfigError(f"{setting}: {ref!r} is not {where}package.module:function "
                          "or package.module.function")
    return PluginRef(ref, match.group(1), match.group(2))


def describe_ref(ref: Any, *, setting: str, group: str | None = None) -> str:
    """What ``ref`` names, in one phrase, without importing it (ConfigError for bad syntax)."""
    return parse_ref(ref, setting=setting, group=group).describe()


def load_callable(ref: str, *, setting: str, group: str | None = None) -> Callable[..., Any]:
    """Import ``ref`` (see the module docstring) and return the callable it names.

    ``setting`` names where the ref came from (``load_balancer.type``,
    ``--rollback-policy``) and starts every error message.  Raises ConfigError only.
    """
    parsed = parse_ref(ref, setting=setting, group=group)
    what = f"{setting}: cannot load {ref!r}"
    try:
        obj: Any = importlib.import_module(parsed.module)
    except ModuleNotFoundError as exc:
        missing = f"no module named {exc.name!r}" if exc.name else str(exc)
        if exc.name and not (parsed.module + ".").startswith(exc.name + "."):
            missing += f" (imported by {parsed.module})"
        raise ConfigError(f"{what}: {missing}") from None
    except BaseException as exc:  # a plugin whose import fails is a config problem
        raise_if_interrupt(exc)
        raise ConfigError(f"{what}: importing {parsed.module!r} raised {exception_line(exc)}") from None
    walked = parsed.module
    for part in parsed.attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"{what}: {walked} has no attribute {part!r}") from None
        except BaseException as exc:  # a module __getattr__ that raises
            raise_if_interrupt(exc)
            raise ConfigError(f"{what}: reading {walked}.{part} raised {exception_line(exc)}") from None
        walked = f"{walked}.{part}"
    if not callable(obj):
        raise ConfigError(f"{what}: {parsed.target} is a {type(obj).__name__}, not a callable")
    return obj  # type: ignore[no-any-return]
