"""Bounded jinja2 sandbox: what rendering one profile template may cost.

A profile's template runs on the control machine while the plan is built (also for
--dry-run), so what one render may cost is bounded.  Each bound is checked before the work
that would exceed it where that work is a single C call (2 ** 10**9, 'x' * 10**9,
center(10**9)), otherwise as it goes:

- every string a template builds, and the rendered result: at most MAX_TEXT characters
  (operators, ``~``, filters, method calls, {% set %} blocks and macros all go through one
  bounded join or a check of their result);
- lists a template builds: at most MAX_ITEMS elements; integers: at most MAX_INT_BITS bits;
- loop iterations plus range() items, nested loops included: MAX_ITERATIONS per render;
- calls (macros, recursive loops) nested at most MAX_CALL_DEPTH deep;
- wall clock: RENDER_SECONDS per render (SIGALRM on the main thread, interrupting even a
  long filter; elsewhere checked at each of the steps above).

``BoundedSandbox`` is the environment; ``render_bounded`` renders in it within the bounds,
raising TemplateError naming the template when one is exceeded, or when the result holds a
NUL or a lone surrogate (a string literal can spell both; no command can carry them).
"""
from __future__ import annotations

import contextvars
import functools
import math
import re
import signal
import string
import threading
import time
import types
from typing import Any, Callable, Iterable, Iterator, Mapping, cast

import jinja2
import jinja2.filters
import jinja2.sandbox
from jinja2 import nodes
from jinja2.runtime import LoopContext
from jinja2.visitor import NodeTransformer

from zdu.config.values import describe_char, describe_value, first_bad_char
from zdu.errors import TemplateError

MAX_TEXT = 1024 * 1024
MAX_ITEMS = 100_000
MAX_ITERATIONS = 100_000
MAX_INT_BITS = 4096
MAX_CALL_DEPTH = 50
RENDER_SECONDS = 5.0


class _LimitExceeded(Exception):
    """A render went beyond one of the bounds; the message says which."""


class _Timeout(BaseException):
    """Raised into a render that ran out of time (a BaseException, so no ``except Exception``
    inside jinja2 or a filter swallows it)."""


class _Budget:
    """What is left for the render in progress (one per render, in a context variable)."""

    __slots__ = ("deadline", "iterations", "depth")

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.iterations = MAX_ITERATIONS
        self.depth = 0

    def tick(self, iterations: int = 0) -> None:
        if time.monotonic() > self.deadline:
            raise _Timeout()
        if iterations:
            self.iterations -= iterations
            if self.iterations < 0:
                raise _LimitExceeded(f"loops and range() take more than {MAX_ITERATIONS:,} iterations "
                                     "in one render")


_BUDGET: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("zdu_template_budget", default=None)


def _budget() -> _Budget:
    budget = _BUDGET.get()
    if budget is None:
        raise RuntimeError("templates are rendered through zdu.planning.templates.render")
    return budget


def _text_limit(size: int, what: str = "a string") -> None:
    if size > MAX_TEXT:
        raise _LimitExceeded(f"builds {what} of more than {MAX_TEXT:,} characters")


def _bounded(value: Any) -> Any:
    """``value`` if it is within the bounds (what an operator, filter or call returned)."""
    if isinstance(value, str):
        _text_limit(len(value))
    elif isinstance(value, (list, tuple)):
        if len(value) > MAX_ITEMS:
            raise _LimitExceeded(f"builds a list of more than {MAX_ITEMS:,} items")
    elif isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise _LimitExceeded(f"builds an integer of more than {MAX_INT_BITS} bits")
    return value


def _size_limit(value: Any, count: int) -> None:
    """``value`` repeated ``count`` times would stay within the bounds."""
    if isinstance(value, str):
        _text_limit(len(value) * count)
    elif isinstance(value, (list, tuple)) and len(value) * count > MAX_ITEMS:
        raise _LimitExceeded(f"builds a list of more than {MAX_ITEMS:,} items")


def _check_power(base: Any, exponent: Any) -> None:
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1:
        if exponent * math.log2(abs(base)) > MAX_INT_BITS:
            raise _LimitExceeded(f"{describe_value(base)} ** {describe_value(exponent)} is too large "
                                 f"(integers here are at most {MAX_INT_BITS} bits)")


def _check_repeat(left: Any, right: Any) -> None:
    for seq, count in ((left, right), (right, left)):
        if isinstance(count, int) and not isinstance(seq, int) and count > 0:
            _size_limit(seq, count)


def _check_sum(left: Any, right: Any) -> None:
    if isinstance(left, str) and isinstance(right, str):
        _text_limit(len(left) + len(right))
    elif isinstance(left, (list, tuple)) and isinstance(right, (list, tuple)):
        if len(left) + len(right) > MAX_ITEMS:
            raise _LimitExceeded(f"builds a list of more than {MAX_ITEMS:,} items")


# "%[(key)][flags][width][.precision]type": a width or precision is an allocation
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[#0 +-]*(\*|\d+)?(?:\.(\*|\d+))?")


def _check_percent_format(fmt: str) -> None:
    for match in _PERCENT_SPEC.finditer(fmt):
        for number in match.groups():
            if number == "*":
                raise _LimitExceeded("'%*' widths are not supported in templates; write the width")
            if number is not None and (len(number) > 7 or int(number) > MAX_TEXT):
                _text_limit(MAX_TEXT + 1, "a formatted string")


def _check_brace_format(fmt: str) -> None:
    for _, _, spec, _ in string.Formatter().parse(fmt):
        if spec and "{" in spec:
            raise _LimitExceeded("nested '{...}' in a format spec is not supported in templates")
        for number in re.findall(r"\d+", spec or ""):
            if len(number) > 7 or int(number) > MAX_TEXT:
                _text_limit(MAX_TEXT + 1, "a formatted string")


def check_join(items: list[Any], sep: str) -> None:
    size = len(sep) * max(len(items) - 1, 0)
    for item in items:
        size += len(item) if isinstance(item, str) else len(str(item))
        _text_limit(size)


def _check_replace(text: Any, old: Any, new: Any, count: Any = -1) -> None:
    if isinstance(text, str) and isinstance(old, str) and isinstance(new, str) and len(new) > len(old):
        hits = text.count(old) if old else len(text) + 1
        if isinstance(count, int) and count >= 0:
            hits = min(hits, count)
        _text_limit(len(text) + hits * (len(new) - len(old)))


def _check_str_method(method: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> tuple[Any, ...]:
    """Check a call of a ``str`` method that can make a large string; may return new ``args``."""
    text, name = method.__self__, method.__name__
    if name in ("center", "ljust", "rjust", "zfill") and args and isinstance(args[0], int):
        _text_limit(args[0])
    elif name == "expandtabs":
        size = args[0] if args and isinstance(args[0], int) else kwargs.get("tabsize", 8)
        if isinstance(size, int):
            _text_limit(len(text) + text.count("\t") * size)
    elif name == "replace" and len(args) >= 2:
        _check_replace(text, *args[:3])
    elif name == "join" and args:
        items = list(meter(args[0]))
        check_join(items, text)
        return (items, *args[1:])
    elif name == "translate" and args and isinstance(args[0], Mapping):
        longest = max((len(v) for v in args[0].values() if isinstance(v, str)), default=1)
        _text_limit(len(text) * max(longest, 1))
    return args


def meter(iterable: Any) -> Iterator[Any]:
    """``iterable``, each item counted against the render's iterations."""
    budget = _budget()
    for item in iterable:
        budget.tick(1)
        yield item


def _range(*args: int) -> range:
    """``range`` whose length is counted against the render's iterations when it is made."""
    numbers = range(*args)
    try:
        length = len(numbers)
    except OverflowError:
        length = MAX_ITERATIONS + 1
    _budget().tick(length)
    return numbers


def _bounded_filter(func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` with its result bounded (a chain of expanding filters stops at the first step
    beyond the bound: ``|urlencode`` triples a string each time)."""

    @functools.wraps(func)  # keeps jinja2's pass_context / pass_eval_context marker
    def bounded(*args: Any, **kwargs: Any) -> Any:
        _budget().tick()
        return _bounded(func(*args, **kwargs))

    return bounded


# jinja2's filters that take a size: the same filters, their size checked first

def _center(value: str, width: int = 80) -> str:
    if isinstance(width, int):
        _text_limit(width)
    return jinja2.filters.do_center(value, width)


def _indent(s: str, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
    per_line = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
    if isinstance(s, str):
        _text_limit(len(s) + (s.count("\n") + 2) * per_line)
    return jinja2.filters.do_indent(s, width, first, blank)


@jinja2.pass_eval_context
def _replace(eval_ctx: Any, s: str, old: str, new: str, count: int | None = None) -> str:
    _check_replace(s, old, new, count)
    return jinja2.filters.do_replace(eval_ctx, s, old, new, count)


@jinja2.pass_eval_context
def _join_filter(eval_ctx: Any, value: Iterable[Any], d: str = "", attribute: str | int | None = None) -> str:
    items = list(meter(value))
    if attribute is None and isinstance(d, str):
        check_join(items, d)
    return jinja2.filters.sync_do_join(eval_ctx, items, d, attribute)


@jinja2.pass_environment
def _wordwrap(environment: Any, s: str, width: int = 79, break_long_words: bool = True,
              wrapstring: str | None = None, break_on_hyphens: bool = True) -> str:
    wrap = wrapstring if wrapstring is not None else environment.newline_sequence
    if isinstance(s, str) and isinstance(width, int) and width > 0 and isinstance(wrap, str):
        _text_limit(len(s) + (len(s) // width + 1) * len(wrap))
    return jinja2.filters.do_wordwrap(environment, s, width, break_long_words, wrapstring, break_on_hyphens)


def _format(value: str, *args: Any, **kwargs: Any) -> str:
    if isinstance(value, str):
        _check_percent_format(value)
    return jinja2.filters.do_format(value, *args, **kwargs)


def _check_count(name: str, count: Any) -> None:
    if isinstance(count, int) and count > MAX_ITEMS:
        raise _LimitExceeded(f"{name}({count}) builds more than {MAX_ITEMS:,} lists")


def _batch(value: Iterable[Any], linecount: int, fill_with: Any = None) -> Iterator[list[Any]]:
    _check_count("batch", linecount)
    return jinja2.filters.do_batch(value, linecount, fill_with)


def _slice(value: Any, slices: int, fill_with: Any = None) -> Iterator[list[Any]]:
    _check_count("slice", slices)
    return jinja2.filters.sync_do_slice(value, slices, fill_with)


_SIZED_FILTERS: dict[str, Callable[..., Any]] = {
    "center": _center, "indent": _indent, "replace": _replace, "join": _join_filter,
    "wordwrap": _wordwrap, "format": _format, "batch": _batch, "slice": _slice,
}


def _environment_call(method: str, arg: nodes.Node, *, lineno: int) -> nodes.Call:
    """The node of ``environment.<method>(arg)`` (through the sandbox's bounded ``call``)."""
    return nodes.Call(nodes.EnvironmentAttribute(method, lineno=lineno), [cast(nodes.Expr, arg)], [], None, None,
                      lineno=lineno)


class _Bounder(NodeTransformer):
    """Rewrites a parsed template so that each for-loop iterable is counted (``meter``) and
    ``a ~ b`` is joined within the bound (``concat``; jinja2's own join does not look)."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = _environment_call("meter", node.iter, lineno=node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return _environment_call("concat", nodes.List(node.nodes, lineno=node.lineno), lineno=node.lineno)


class BoundedSandbox(jinja2.sandbox.ImmutableSandboxedEnvironment):
    """The sandbox with the bounds above.  Immutable: a template cannot grow a list or a dict
    in place (``.append``, ``.update``), it can only build new, bounded values."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **options: Any) -> None:
        super().__init__(undefined=jinja2.StrictUndefined, autoescape=False, **options)
        self.globals["range"] = _range
        self.globals.pop("lipsum", None)  # n paragraphs of filler text: nothing a command needs

    def add_filters(self, filters: Mapping[str, Callable[..., Any]]) -> None:
        """Register ``filters``; every filter (jinja2's own included) gets its result bounded."""
        self.filters.update(_SIZED_FILTERS)
        self.filters.update(filters)
        for name, func in list(self.filters.items()):
            if not getattr(func, "_zdu_bounded", False):
                wrapped = _bounded_filter(func)
                wrapped._zdu_bounded = True  # type: ignore[attr-defined]
                self.filters[name] = wrapped

    def meter(self, iterable: Any) -> Any:
        """The iterable of a for loop: a range was counted when it was made, the rest per item."""
        return iterable if type(iterable) is range else meter(iterable)

    def concat(self, parts: Iterable[Any]) -> str:  # type: ignore[override]
        """Join rendered pieces (the result, {% set %} blocks, macros, ``~``) within MAX_TEXT."""
        budget = _budget()
        pieces: list[str] = []
        size = 0
        for piece in parts:
            text = piece if isinstance(piece, str) else str(piece)
            size += len(text)
            _text_limit(size)
            pieces.append(text)
            budget.tick()
        return "".join(pieces)

    def call_binop(self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any) -> Any:
        _budget().tick()
        if operator == "**":
            _check_power(left, right)
        elif operator == "*":
            _check_repeat(left, right)
        elif operator == "+":
            _check_sum(left, right)
        elif operator == "%" and isinstance(left, str):
            _check_percent_format(left)
        return _bounded(self.binop_table[operator](left, right))

    def call(self, context: jinja2.runtime.Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        budget = _budget()
        budget.tick()
        if isinstance(obj, (types.BuiltinMethodType, types.MethodType)) and isinstance(
                getattr(obj, "__self__", None), str):
            args = _check_str_method(obj, args, kwargs)
        elif isinstance(obj, LoopContext) and args:  # loop(children) in a recursive for
            args = (meter(args[0]), *args[1:])
        budget.depth += 1
        try:
            if budget.depth > MAX_CALL_DEPTH:
                raise _LimitExceeded(f"calls nest more than {MAX_CALL_DEPTH} deep")
            return _bounded(super().call(context, obj, *args, **kwargs))
        finally:
            budget.depth -= 1

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapper = super().wrap_str_format(value)
        if wrapper is not None:
            _check_brace_format(value.__self__)
        return wrapper


class _Alarm:
    """SIGALRM after ``seconds`` raises _Timeout into the render (main thread only; elsewhere,
    and when another timer would fire first, the render relies on the budget's deadline).

    The previous handler and timer are put back whichever comes first: the render's end or the
    alarm (which restores them itself before raising, so an alarm that lands in ``__exit__``
    cannot leave our handler behind)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.active = False

    def __enter__(self) -> "_Alarm":
        if threading.current_thread() is not threading.main_thread():
            return self
        self.old_delay, self.old_interval = signal.getitimer(signal.ITIMER_REAL)
        self.previous = signal.getsignal(signal.SIGALRM)
        if self.previous is None or (self.old_delay and self.old_delay <= self.seconds):
            return self
        self.started = time.monotonic()
        self.active = True
        signal.signal(signal.SIGALRM, self._fire)
        signal.setitimer(signal.ITIMER_REAL, self.seconds)
        return self

    def _fire(self, signum: int, frame: types.FrameType | None) -> None:
        if self.active:
            self._restore()
            raise _Timeout()

    def _restore(self) -> None:
        if not self.active:
            return
        self.active = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self.previous)
        if self.old_delay:
            left = self.old_delay - (time.monotonic() - self.started)
            signal.setitimer(signal.ITIMER_REAL, max(left, 1e-6), self.old_interval)

    def __exit__(self, *exc: object) -> None:
        self._restore()


class _AlarmSession:
    """One SIGALRM handler for many renders (a 1,000-node plan renders thousands of templates):
    inside the session a render only arms the timer and disarms it, two system calls, instead of
    saving and restoring the handler and the timer each time (a third of a render's cost).

    Active only in the main thread, with no other timer pending and a Python-level handler to
    put back; otherwise each render brings its own :class:`_Alarm`."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.active = False
        self.armed = False

    def __enter__(self) -> "_AlarmSession":
        global _SESSION
        if _SESSION is not None or threading.current_thread() is not threading.main_thread():
            return self
        delay, _interval = signal.getitimer(signal.ITIMER_REAL)
        self.previous = signal.getsignal(signal.SIGALRM)
        if delay or self.previous is None:
            return self
        signal.signal(signal.SIGALRM, self._fire)
        self.active = True
        _SESSION = self
        return self

    def _fire(self, signum: int, frame: types.FrameType | None) -> None:
        if self.armed:
            self.armed = False
            raise _Timeout()

    def render(self) -> "_ArmedRender":
        return _ArmedRender(self)

    def __exit__(self, *exc: object) -> None:
        global _SESSION
        if not self.active:
            return
        self.armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self.previous)
        self.active = False
        _SESSION = None


class _ArmedRender:
    """One render inside an :class:`_AlarmSession`: the timer runs for its duration only."""

    __slots__ = ("session",)

    def __init__(self, session: _AlarmSession) -> None:
        self.session = session

    def __enter__(self) -> None:
        self.session.armed = True
        signal.setitimer(signal.ITIMER_REAL, self.session.seconds)

    def __exit__(self, *exc: object) -> None:
        self.session.armed = False      # first: an alarm landing now finds nothing to interrupt
        signal.setitimer(signal.ITIMER_REAL, 0)


_SESSION: _AlarmSession | None = None


def render_session() -> _AlarmSession:
    """A context for rendering many templates in a row (:func:`build_plan`): the same bounds,
    one signal handler for all of them."""
    return _AlarmSession(RENDER_SECONDS)


@functools.lru_cache(maxsize=1024)
def compile_template(env: BoundedSandbox, template: str) -> jinja2.Template:
    """Parse, bound and compile ``template`` once (a fleet renders each template per node)."""
    tree = _Bounder().visit(env.parse(template))
    # the globals as a plain dict: jinja2's ChainMap is walked key by key in Python at every render
    # (a fifth of a 1,000-node plan's rendering); nothing adds globals once the sandbox is made
    return env.template_class.from_code(env, env.compile(tree), dict(env.make_globals(None)))


def render_bounded(env: BoundedSandbox, template: str, context: Mapping[str, Any], where: str) -> str:
    """Render within the bounds; TemplateError naming ``where`` when one is exceeded."""
    token = _BUDGET.set(_Budget(RENDER_SECONDS))
    try:
        session = _SESSION
        alarm = session.render() if session is not None and threading.current_thread() is threading.main_thread() \
            else _Alarm(RENDER_SECONDS)
        with alarm:
            # Template.render(**context) without its two extra copies of the context and its
            # traceback rewriting (errors are caught by type below): half the cost of a render
            compiled = compile_template(env, template)
            variables = context if type(context) is dict else dict(context)
            text = env.concat(compiled.root_render_func(compiled.new_context(variables)))
    except _Timeout:
        raise TemplateError(f"{where}: took longer than {RENDER_SECONDS:g} s to render") from None
    except _LimitExceeded as exc:
        raise TemplateError(f"{where}: {exc}") from None
    except MemoryError:
        raise TemplateError(f"{where}: ran out of memory while rendering") from None
    finally:
        _BUDGET.reset(token)
    # a string literal can spell any character: "\udce9" cannot be encoded for the node (the SSH
    # handler raised UnicodeEncodeError mid-APPLY), "\x00" cannot be part of a shell word
    bad = first_bad_char(text)
    if bad >= 0:
        raise TemplateError(f"{where}: the rendered text {describe_char(text, bad, reveal=False)} "
                            "(shown neither in part nor whole: it may hold a secret)")
    return text
