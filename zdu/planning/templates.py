"""Rendering of profile command templates.

Every ``{{ value }}`` is shell-quoted (``shlex.quote``) unless it is marked raw
with ``{{ value|raw }}``: an install dir such as ``/opt/my gw; rm -rf /`` reaches
the node as one literal argument.  Undefined variables are an error
(``StrictUndefined``) caught before anything runs.
"""
from __future__ import annotations

import re
import shlex
from typing import Any, Mapping

import jinja2
import jinja2.sandbox

from zdu.errors import TemplateError


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


def _join(values: Any, sep: str = " ") -> Raw:
    """``{{ list|qjoin }}``: each element quoted, joined by spaces."""
    return Raw(sep.join(shlex.quote(str(v)) for v in values))


# Sandboxed: a profile is data from the operator, not code run on the control machine.
_ENV = jinja2.sandbox.SandboxedEnvironment(
    undefined=jinja2.StrictUndefined,
    finalize=_finalize,
    autoescape=False,
    keep_trailing_newline=False,
)
_ENV.filters["raw"] = _raw
_ENV.filters["qjoin"] = _join
_ENV.filters["q"] = lambda v: Raw(shlex.quote(str(v)))
_ENV.filters["ere"] = ere_escape

# Plain (unquoted) rendering, for values that are not shell text: URLs, regexes, paths polled
# from the control machine.
_PLAIN = jinja2.sandbox.SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)
_PLAIN.filters["raw"] = _raw
_PLAIN.filters["q"] = lambda v: shlex.quote(str(v))
_PLAIN.filters["ere"] = ere_escape


def render(template: str, context: Mapping[str, Any], *, where: str, shell: bool = True) -> str:
    """Render ``template`` with ``context``; ``where`` names the template in errors.

    ``shell=True`` quotes every substituted value for a POSIX shell.
    """
    env = _ENV if shell else _PLAIN
    try:
        return env.from_string(template).render(**context)
    except jinja2.UndefinedError as exc:
        raise TemplateError(f"{where}: undefined variable: {exc.message}") from None
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"{where}: template syntax error on line {exc.lineno}: {exc.message}") from None
    except jinja2.TemplateError as exc:
        raise TemplateError(f"{where}: {exc}") from None
    except RecursionError:
        raise TemplateError(f"{where}: the template recurses without end") from None
    except Exception as exc:  # {{ 1/0 }}, {{ '%d' % 'x' }}: the profile's error, not ours
        raise TemplateError(f"{where}: {type(exc).__name__} while rendering: {exc}") from None


def check_syntax(template: str, *, where: str) -> None:
    """Raise TemplateError if ``template`` does not parse (no context needed)."""
    try:
        _ENV.parse(template)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"{where}: template syntax error on line {exc.lineno}: {exc.message}") from None
