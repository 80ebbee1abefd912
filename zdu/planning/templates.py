"""Rendering of profile command templates.

Every ``{{ value }}`` is shell-quoted (``shlex.quote``) unless it is marked raw
with ``{{ value|raw }}``: an install dir such as ``/opt/my gw; rm -rf /`` reaches
the node as one literal argument.  Undefined variables are an error
(``StrictUndefined``) caught before anything runs.

Rendering is sandboxed (a profile is data from the operator, not code run on the control
machine) and bounded: ``zdu.planning.sandbox`` says what one render may cost.
"""
from __future__ import annotations

import functools
import re
import shlex
from typing import Any, Callable, Iterable, Mapping

import jinja2
from jinja2 import meta
from jinja2.exceptions import FilterArgumentError

from zdu.config.values import shorten
from zdu.errors import TemplateError
from zdu.planning.sandbox import BoundedSandbox, check_join, compile_template, meter, render_bounded


class Raw(str):
    """A string that is inserted into a command as it is, without quoting."""


def _finalize(value: Any) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, bool):
        value = "true" if value else "false"
    return shlex.quote(str(value))


def _raw(value: Any) -> Raw:
    return Raw(value)


def ere_escape(value: Any) -> str:
    """``{{ path|ere }}``: ``value`` as a literal in a POSIX extended regex (pgrep, grep -E)."""
    return re.sub(r"([.\[\]{}()\\*+?^$|])", r"\\\1", str(value))


def _join(values: Iterable[Any], sep: str = " ") -> Raw:
    """``{{ list|qjoin }}``: each element quoted, joined by spaces.

    A string is refused, not split into its characters (``rm -rf {{ dirs|qjoin }}`` with
    ``dirs: /opt/x`` would remove ``/``); so are bytes and mappings.  The message does not show
    the value (it may be a secret)."""
    if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Iterable):
        raise FilterArgumentError(
            f"the qjoin filter expects a list, got {_kind(values)} "
            "(use {{ value }} for a single value: it is quoted as one word)")
    items = list(meter(values))
    check_join(items, sep)
    return Raw(sep.join(shlex.quote(str(v)) for v in items))


def _kind(value: Any) -> str:
    """What ``value`` is, without showing it."""
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bytes):
        return "bytes"
    if isinstance(value, Mapping):
        return "a mapping"
    return f"a {type(value).__name__}"


# --------------------------------------------------------------------------- environments

_FILTERS: dict[str, Callable[..., Any]] = {
    "raw": _raw,
    "qjoin": _join,
    "q": lambda v: Raw(shlex.quote(str(v))),
    "ere": ere_escape,
}

_ENV = BoundedSandbox(finalize=_finalize, keep_trailing_newline=False)
_ENV.add_filters(_FILTERS)

# Plain (unquoted) rendering, for values that are not shell text: URLs, regexes, paths polled
# from the control machine.
_PLAIN = BoundedSandbox()
_PLAIN.add_filters({"raw": _raw, "q": lambda v: shlex.quote(str(v)), "ere": ere_escape})


def render(template: str, context: Mapping[str, Any], *, where: str, shell: bool = True) -> str:
    """Render ``template`` with ``context``; ``where`` names the template in errors.

    ``shell=True`` quotes every substituted value for a POSIX shell.  Errors never carry more
    than a bounded part of a value.
    """
    env = _ENV if shell else _PLAIN
    try:
        return render_bounded(env, template, context, where)
    except TemplateError:
        raise
    except jinja2.UndefinedError as exc:
        raise TemplateError(f"{where}: undefined variable: {shorten(str(exc.message))}") from None
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"{where}: template syntax error on line {exc.lineno}: {shorten(str(exc.message))}") from None
    except jinja2.TemplateError as exc:
        raise TemplateError(f"{where}: {shorten(str(exc))}") from None
    except RecursionError:
        raise TemplateError(f"{where}: the template recurses without end") from None
    except Exception as exc:  # {{ 1/0 }}, {{ '%d' % 'x' }}: the profile's error, not ours
        if isinstance(exc, TypeError) and "no loader" in str(exc):
            raise TemplateError(f"{where}: {{% include %}}, {{% import %}} and {{% extends %}} are not available: "
                                "a template cannot read other files") from None
        raise TemplateError(f"{where}: {type(exc).__name__} while rendering: {shorten(str(exc))}") from None


def check_syntax(template: str, *, where: str) -> None:
    """Raise TemplateError if ``template`` does not compile (no context needed): syntax errors,
    unknown filters and tests surface when the profile is loaded."""
    try:
        compile_template(_ENV, template)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"{where}: template syntax error on line {exc.lineno}: {shorten(str(exc.message))}") from None


@functools.lru_cache(maxsize=4096)
def referenced_names(template: str) -> frozenset[str] | None:
    """The names ``template`` reads from its context (None when it does not parse: rendering
    it reports why).  A template can reach the context only through names, so a render depends
    on the values of these and nothing else."""
    try:
        return frozenset(meta.find_undeclared_variables(_ENV.parse(template)))
    except jinja2.TemplateError:
        return None
