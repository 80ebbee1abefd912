"""What one render may cost: CPU, memory and wall clock are bounded, with a clear TemplateError.

A profile's templates run on the control machine while the plan is built (also --dry-run):
nested loops, a huge ``**`` (jinja2 folded constants at compile time, beyond any timeout),
string growth by every route and a slow filter must end in an error naming the template.
"""
from __future__ import annotations

import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import zdu.planning.sandbox as sandbox
from zdu.config.profile import parse_profile
from zdu.errors import TemplateError
from zdu.planning.sandbox import MAX_ITERATIONS, MAX_TEXT
from zdu.planning.templates import check_syntax, render

LIMIT = f"builds a string of more than {MAX_TEXT:,} characters"
LOOPS = f"loops and range() take more than {MAX_ITERATIONS:,} iterations in one render"
NS = "{% set ns = namespace(s='ab') %}"

HOSTILE = [
    # id, template, message after "T: "
    ("nested-range", "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", LOOPS),
    ("range-sum", "{{ range(10**9)|sum }}", LOOPS),
    ("range-overflow", "{{ range(10**30)|length }}", LOOPS),
    ("loop-over-string", "{% for c in 'x' * 1000000 %}{% endfor %}", LOOPS),
    ("loop-over-list", "{% for a in big %}{% for b in big %}{% endfor %}{% endfor %}", LOOPS),
    ("power", "{{ 7 ** (10 ** 9) }}", "7 ** 1000000000 is too large (integers here are at most 4096 bits)"),
    ("power-of-var", "{{ n ** n }}", "is too large (integers here are at most 4096 bits)"),
    ("squaring", "{% set ns = namespace(n=3) %}{% for i in range(30) %}{% set ns.n = ns.n * ns.n %}{% endfor %}",
     "builds an integer of more than 4096 bits"),
    ("repeat-str", "{{ 'x' * 10 ** 9 }}", LIMIT),
    ("repeat-str-reversed", "{{ 10 ** 9 * 'x' }}", LIMIT),
    ("repeat-list", "{{ ['x'] * 10 ** 9 }}", "builds a list of more than 100,000 items"),
    ("concat-doubling", NS + "{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}", LIMIT),
    ("plus-doubling", NS + "{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}", LIMIT),
    ("set-block-doubling", NS + "{% for i in range(40) %}{% set ns.s %}{{ ns.s }}{{ ns.s }}{% endset %}{% endfor %}",
     LIMIT),
    ("macro-doubling", "{% macro m(x) %}{{ x }}{{ x }}{% endmacro %}" + "{{ " + "m(" * 30 + "'ab'" + ")" * 30 + " }}",
     LIMIT),
    ("output-loop", "{% for i in range(90000) %}{{ 'x' * 100 }}{% endfor %}", LIMIT),
    ("filter-center", "{{ 'x'|center(10 ** 9) }}", LIMIT),
    ("method-center", "{{ 'x'.center(10 ** 9) }}", LIMIT),
    ("method-zfill", "{{ '1'.zfill(10 ** 9) }}", LIMIT),
    ("indent", "{{ ('a\n' * 1000)|indent(10 ** 6) }}", LIMIT),
    ("indent-str", "{{ ('a\n' * 1000)|indent('x' * 10 ** 4) }}", LIMIT),
    ("filter-replace", "{{ ('a' * 1000)|replace('a', 'b' * 10000) }}", LIMIT),
    ("method-replace", "{{ ('a' * 1000).replace('a', 'b' * 10000) }}", LIMIT),
    ("replace-empty", "{{ ('a' * 1000).replace('', 'b' * 10000) }}", LIMIT),
    ("expandtabs", "{{ ('\t' * 100000).expandtabs(10 ** 6) }}", LIMIT),
    ("join-filter", "{{ (['x' * 100000] * 1000)|join }}", LIMIT),
    ("join-method", "{{ ('x' * 1000).join(['y' * 1000] * 10000) }}", LIMIT),
    ("qjoin", "{{ (['x' * 100000] * 1000)|qjoin }}", LIMIT),
    ("wordwrap", "{{ 'ab'|wordwrap(1, wrapstring='x' * 10 ** 6) }}", LIMIT),
    ("percent-width", "{{ '%0999999999d' % 1 }}", "builds a formatted string of more than"),
    ("percent-star", "{{ '%*d' % (10, 1) }}", "'%*' widths are not supported in templates"),
    ("format-filter", "{{ '%999999999s'|format('x') }}", "builds a formatted string of more than"),
    ("brace-width", "{{ '{:>999999999}'.format(1) }}", "builds a formatted string of more than"),
    ("brace-nested", "{{ '{:>{w}}'.format(1, w=10) }}", "nested '{...}' in a format spec is not supported"),
    ("urlencode-chain", "{{ ('%' * 200000)|urlencode|urlencode|urlencode }}", LIMIT),
    ("batch", "{{ [1]|batch(10 ** 9, 0)|list }}", "batch(1000000000) builds more than 100,000 lists"),
    ("slice", "{{ [1]|slice(10 ** 9)|list }}", "slice(1000000000) builds more than 100,000 lists"),
    ("recursion", "{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}", "calls nest more than 50 deep"),
    ("recursive-loop", "{% for x in [[1]] recursive %}{{ loop([[1]]) }}{% endfor %}", "calls nest more than 50 deep"),
    ("append", "{% set x = [] %}{{ x.append(1) }}", "access to attribute 'append' of 'list' object is unsafe"),
    ("lipsum", "{{ lipsum(10 ** 6) }}", "undefined variable: 'lipsum' is undefined"),
    ("big-result", "{{ big|join(' ') }}{{ big|join(' ') }}{{ big|join(' ') }}", LIMIT),
]


@pytest.mark.parametrize("template,message", [c[1:] for c in HOSTILE], ids=[c[0] for c in HOSTILE])
def test_hostile_template_is_refused_quickly(template: str, message: str) -> None:
    context = {"big": ["y" * 40] * 10_000, "n": 10**18}
    started = time.monotonic()
    with pytest.raises(TemplateError) as info:
        render(template, context, where="T")
    assert time.monotonic() - started < 2
    assert str(info.value).startswith("T: ") and message in str(info.value), str(info.value)


def test_within_the_bounds_works() -> None:
    assert render("{{ 2 ** 64 }} {{ 10 ** 18 * 10 }}", {}, where="T", shell=False) == "18446744073709551616 10000000000000000000"
    assert len(render("{{ 'x' * (1024 * 1024) }}", {}, where="T")) == MAX_TEXT
    assert len(render("{{ 'x y' * (1024 * 1024 // 3 - 1) }}", {}, where="T")) == (MAX_TEXT // 3 - 1) * 3 + 2
    with pytest.raises(TemplateError, match=LIMIT):  # the quotes make the result one too long
        render("{{ 'x y' * (1024 * 1024 // 3) }}", {}, where="T")
    assert render("{% for i in range(99999) %}{% endfor %}ok", {}, where="T") == "ok"
    assert render("{% for i in range(300) %}{% for j in range(300) %}{% endfor %}{% endfor %}x", {}, where="T",
                  shell=False) == "x"
    assert render("{{ '%05d|%-4s|%.2f' % (42, 'a', 1.5) }} {{ '{:>6}'.format('b') }}", {}, where="T",
                  shell=False) == "00042|a   |1.50      b"
    assert render("{{ (['a', 'b']|map('upper'))|join(',') }} {{ [3, 1, 2]|sort|list }} {{ 'a' ~ 1 ~ 'b' }}", {},
                  where="T", shell=False) == "A,B [1, 2, 3] a1b"
    assert render("{% macro m(x) %}<{{ x }}>{% endmacro %}{{ m(m('y')) }}", {}, where="T", shell=False) == "<<y>>"
    assert render("{% for x in tree recursive %}{{ x.n }}{{ loop(x.c) }}{% endfor %}",
                  {"tree": [{"n": 1, "c": [{"n": 2, "c": []}]}]}, where="T", shell=False) == "12"
    assert render("{% for x in items %}{{ loop.index }}/{{ loop.length }}{{ ',' if not loop.last }}{% endfor %}",
                  {"items": ["a", "b", "c"]}, where="T", shell=False) == "1/3,2/3,3/3"


def test_quoting_and_filters_are_unchanged() -> None:
    ctx = {"v": "a b'c", "items": ["x y", "z"], "path": "/opt/a.b(1)"}
    assert render("echo {{ v }}", ctx, where="T") == "echo 'a b'\"'\"'c'"
    assert render("echo {{ v|raw }}", ctx, where="T") == "echo a b'c"
    assert render("echo {{ items|qjoin }}", ctx, where="T") == "echo 'x y' z"
    assert render("echo {{ 'p=' ~ v|q }}", ctx, where="T") == "echo 'p='\"'\"'a b'\"'\"'\"'\"'\"'\"'\"'\"'c'\"'\"''"
    assert render("grep -E {{ path|ere }}", ctx, where="T") == "grep -E '/opt/a\\.b\\(1\\)'"
    assert render("{{ flag }} {{ n }}", {"flag": True, "n": 5}, where="T") == "true 5"
    assert render("{{ v|q }} {{ path|ere }}", ctx, where="T", shell=False) == "'a b'\"'\"'c' /opt/a\\.b\\(1\\)"


@pytest.mark.parametrize("literal,what", [("\\udce9", "is not valid UTF-8 text (at position "),
                                          ("\\ud800", "is not valid UTF-8 text (at position "),
                                          ("\\x00", "contains a NUL byte (position ")])
def test_rendered_text_holds_no_bad_character(literal: str, what: str) -> None:
    """Hostile case 15's class: a character that is not UTF-8 (here spelled by a string literal)
    made the SSH handler raise UnicodeEncodeError mid-APPLY; it is refused while planning."""
    for template in ('echo {{ "%s" }}' % literal, 'echo {{ "%s"|raw }}' % literal, 'x{{ "a" ~ "%s" }}' % literal):
        with pytest.raises(TemplateError) as info:
            render(template, {}, where="T")
        assert str(info.value).startswith("T: the rendered text ") and what in str(info.value)
    # a secret that is not UTF-8 (an {env:} value read with surrogateescape) is not shown
    with pytest.raises(TemplateError) as info:
        render("login {{ pw }}", {"pw": "s3cr\udce4t"}, where="T")
    assert "s3cr" not in str(info.value) and "0xe4" not in str(info.value)
    assert render('printf "a\\tb\\n" {{ "\\t\\r\\x1b" }}', {}, where="T") == "printf \"a\\tb\\n\" '\t\r\x1b'"


def test_error_messages_carry_no_whole_value() -> None:
    big = "x" * 100_000
    for template in ("{{ {}[v] }}", "{{ v.nope }}", "{{ dict(a=1)[v] }}", "{{ v + 1 }}", "{{ undefined_name ~ v }}"):
        with pytest.raises(TemplateError) as info:
            render(template, {"v": big}, where="T")
        assert len(str(info.value)) < 500, (template, str(info.value)[:200])


def test_wall_clock_bound_on_the_main_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """One slow filter call (textwrap over 300 kB, ~0.2 s) in a loop: SIGALRM ends the render."""
    monkeypatch.setattr(sandbox, "RENDER_SECONDS", 0.5)
    template = "{% for i in range(1000) %}{{ (big|wordwrap(3))|length }}{% endfor %}"
    started = time.monotonic()
    with pytest.raises(TemplateError, match=r"^T: took longer than 0\.5 s to render$"):
        render(template, {"big": "ab " * 100_000}, where="T")
    assert time.monotonic() - started < 1.5
    assert signal.getsignal(signal.SIGALRM) is signal.SIG_DFL
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_wall_clock_bound_inside_a_render_session(monkeypatch: pytest.MonkeyPatch) -> None:
    """build_plan renders under one session handler: a slow render is still ended at its bound,
    the next render in the session gets its own full bound, and the handler is put back after."""
    monkeypatch.setattr(sandbox, "RENDER_SECONDS", 0.5)
    slow = "{% for i in range(1000) %}{{ (big|wordwrap(3))|length }}{% endfor %}"
    with sandbox.render_session() as session:
        assert session.active and signal.getsignal(signal.SIGALRM) is not signal.SIG_DFL
        started = time.monotonic()
        with pytest.raises(TemplateError, match=r"^T: took longer than 0\.5 s to render$"):
            render(slow, {"big": "ab " * 100_000}, where="T")
        assert time.monotonic() - started < 1.5
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)     # disarmed between renders
        time.sleep(0.6)                                               # longer than one bound
        assert render("{% for i in range(3) %}{{ (big|wordwrap(3))|length }}{% endfor %}",
                      {"big": "ab " * 2_000}, where="T") == "5999" * 3
    assert signal.getsignal(signal.SIGALRM) is signal.SIG_DFL
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_a_render_session_steps_aside_for_a_pending_timer() -> None:
    previous = signal.signal(signal.SIGALRM, lambda signum, frame: None)
    try:
        signal.setitimer(signal.ITIMER_REAL, 30.0)
        with sandbox.render_session() as session:
            assert not session.active                       # each render brings its own _Alarm
            assert render("{{ 1 + 1 }}", {}, where="T") == "2"
        assert 29.0 < signal.getitimer(signal.ITIMER_REAL)[0] <= 30.0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_wall_clock_bound_in_another_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """No signals off the main thread: the deadline is checked at each loop step and filter."""
    monkeypatch.setattr(sandbox, "RENDER_SECONDS", 0.5)
    errors: list[str] = []

    def work() -> None:
        try:
            render("{% for i in range(1000) %}{{ (big|wordwrap(3))|length }}{% endfor %}",
                   {"big": "ab " * 100_000}, where="T")
        except TemplateError as exc:
            errors.append(str(exc))

    started = time.monotonic()
    thread = threading.Thread(target=work)
    thread.start()
    thread.join(10)
    assert errors == ["T: took longer than 0.5 s to render"]
    assert time.monotonic() - started < 2


def test_previous_alarm_handler_and_timer_are_put_back() -> None:
    fired: list[int] = []
    previous = signal.signal(signal.SIGALRM, lambda signum, frame: fired.append(signum))
    try:
        signal.setitimer(signal.ITIMER_REAL, 30.0)
        assert render("{{ 1 + 1 }}", {}, where="T") == "2"
        handler = signal.getsignal(signal.SIGALRM)
        assert callable(handler) and handler.__name__ == "<lambda>"  # type: ignore[union-attr]
        left, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 29.0 < left <= 30.0
        # a timer due before the render's own bound is left alone: it fires, with its handler
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        render("{% for i in range(20) %}{{ (big|wordwrap(3))|length }}{% endfor %}", {"big": "ab " * 5_000},
               where="T")
        deadline = time.monotonic() + 2
        while not fired and time.monotonic() < deadline:
            time.sleep(0.01)
        assert fired == [signal.SIGALRM]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_check_syntax_compiles() -> None:
    """Compile-time problems (an unknown filter or test) surface when the profile is loaded."""
    with pytest.raises(TemplateError, match=r"^p: template syntax error on line 1: No filter named 'shell'"):
        check_syntax("echo {{ x|shell }}", where="p")
    with pytest.raises(TemplateError, match=r"No test named 'nonsense'"):
        check_syntax("{{ x is nonsense }}", where="p")
    check_syntax("{{ 7 ** (10 ** 9) }}", where="p")  # compiles at once: ** is not folded any more
    with pytest.raises(TemplateError, match=r"p\.yaml: phases\.EXPORT\[0\]\.run: .*No filter named 'shell'"):
        parse_profile({"name": "p", "phases": {"EXPORT": ["echo {{ x|shell }}"]}}, source="p.yaml")


_MEMORY_CHILD = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (768 * 2**20, 768 * 2**20))
from zdu.planning.templates import render
from zdu.errors import TemplateError
failures = 0
for template in sys.argv[1:]:
    try:
        render(template, {"big": ["y" * 40] * 10000}, where="T")
    except TemplateError:
        pass
    else:
        failures += 1
print(failures, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def test_hostile_templates_stay_within_memory() -> None:
    """All the hostile templates in one process limited to 768 MB of address space."""
    proc = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, *[c[1] for c in HOSTILE]], capture_output=True,
                          text=True, timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stderr[-2000:]
    failures, max_rss_kb = map(int, proc.stdout.split())
    assert failures == 0
    assert max_rss_kb < 300_000, max_rss_kb
    assert resource.RLIM_INFINITY  # (the limit above is the child's, not this process's)


@pytest.mark.parametrize("template", ["{% include '/etc/passwd' %}", "{% import 'x' as y %}ok",
                                      "{% extends 'base' %}", "{% from 'x' import y %}ok"])
def test_a_template_cannot_read_other_files_and_says_so(template: str) -> None:
    with pytest.raises(TemplateError, match=r"^T: \{% include %\}, \{% import %\} and \{% extends %\} are not "
                                            r"available: a template cannot read other files$"):
        render(template, {}, where="T")
