"""Terminal injection: text from nodes, hooks and exceptions never drives the operator's terminal.

A failed step's message quotes the last line of its stderr; a node that prints
``ESC[1G ESC[2K`` followed by a line of its own could overwrite the FAILED line with "ok", set
the window title (OSC 0), plant a hyperlink (OSC 8) or reverse text (U+202E).  Every console
line, the live view, the summary table and the run log show such characters as escapes.
"""
from __future__ import annotations

import io

from zdu.cli.console import Console
from zdu.cli.live import LiveView, PlainProgress
from zdu.report.runfolder import progress_line
from zdu.report.summary import render_summary
from zdu.run import events as ev
from zdu.run.state import RunState
from zdu.status import FailureKind, LbAction, Phase, StepKind

HOSTILE = ("\x1b[1G\x1b[2K12:00:00 [A] APPLY   start: ok (0.10s)\x1b]0;pwned\x07"
           "\x1b]8;;http://evil/\x1b\\link\x1b]8;;\x1b\\\u202eexe.txt\r12:00:00 [A] APPLY PASSED (0)"
           "\n12:00:01 [A] POST-APPLY PASSED (0)\x9b2J")
RAW = ("\x1b", "\x07", "\r", "\u202e", "\x9b")


def _failed_step() -> ev.StepFinished:
    return ev.StepFinished(node="A", phase=Phase.APPLY, key="k", name="start", kind=StepKind.RUN, command="x",
                           exit_code=1, failure=FailureKind.FAILED, message="exit code 1: " + HOSTILE)


def _clean(text: str) -> None:
    for char in RAW:
        assert char not in text, (char, text)


def test_progress_lines_escape_what_nodes_and_hooks_print() -> None:
    hook = ev.LbFinished(node="A", action=LbAction.ENABLE, ok=False, message=HOSTILE)
    for event in (_failed_step(), hook, ev.Warned(message=HOSTILE), ev.Noted(message=HOSTILE)):
        line = progress_line(event)
        assert line is not None
        _clean(line)
        assert "\n" not in line            # one event, one line: no forged "PASSED" line below it
    assert "FAILED" in (progress_line(_failed_step()) or "")


def test_preflight_problems_stay_one_line_each() -> None:
    line = progress_line(ev.PreflightFailed(problems=("a\nb" + HOSTILE, "c"), status=0))  # type: ignore[arg-type]
    assert line is not None and len(line.splitlines()) == 2
    _clean(line)


def test_plain_console_and_console_writes_are_escaped() -> None:
    out = io.StringIO()
    console = Console(out, out)
    PlainProgress(console.line)(_failed_step(), None)  # type: ignore[arg-type]
    console.error("internal error: " + HOSTILE)
    _clean(out.getvalue())


def test_live_view_prints_above_and_draws_cells_escaped() -> None:
    out = io.StringIO()
    console = Console(out, out)
    view = LiveView(console, [["A"]], ["A"], no_color=True)
    view.print_above(HOSTILE + "\n")
    view(ev.StepStarted(node="A", phase=Phase.APPLY, key="k", name="st\x1b]0;x\x07ep", kind=StepKind.RUN,
                        command="x"), None)  # type: ignore[arg-type]
    view.stop()
    view.rich.print(view.render())
    text = out.getvalue()
    for char in ("\x07", "\r", "\u202e", "\x9b"):
        assert char not in text
    assert "\x1b]" not in text and "\x1b[2K" not in text and "\x1b[1G" not in text


def test_summary_reasons_and_warnings_cannot_forge_a_status_line() -> None:
    state = RunState(run_id="r", old_install_dir="/o", new_install_dir="/n", profile="p", topology="t",
                     node_names=())
    state.warnings.append("hook said: " + HOSTILE + "\nStatus 0 (SUCCESS) after 1.0s")
    summary = render_summary(state)
    _clean(summary)
    assert not any(line.startswith("Status 0") for line in summary.splitlines())


def test_summary_table_cells_are_escaped_and_stay_aligned() -> None:
    name = "B\x1b]0;t\x07"
    state = RunState(run_id="r", old_install_dir="/o", new_install_dir="/n", profile="p", topology="t",
                     node_names=["A", name])
    state.tiers = {"t\u202e1": ["A", name]}
    summary = render_summary(state)
    _clean(summary)
    table = [line for line in summary.splitlines() if line.startswith("| ")][1:]   # below the title line
    assert len({len(line) for line in table}) == 1, table      # every row as wide as the header


def test_a_console_on_a_stdout_that_is_not_utf8_goes_on_writing() -> None:
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="ascii", write_through=True)
    console = Console(out, out)
    console.line("node said: caf\u00e9 \ufffd")
    console.line("after")
    assert console.lost is None
    assert raw.getvalue().decode("ascii") == "node said: caf\\xe9 \\ufffd\nafter\n"


def test_the_events_stream_is_ascii_json_with_the_same_values() -> None:
    import json

    from zdu.report.junit import EventStream
    lines: list[str] = []
    EventStream(lines.append)(ev.Warned(message=HOSTILE), None)  # type: ignore[arg-type]
    assert lines[0].isascii() and lines[0].endswith("\n") and lines[0].count("\n") == 1
    assert json.loads(lines[0])["message"] == HOSTILE


def test_bidi_marks_and_zero_width_characters_are_shown_as_escapes() -> None:
    """U+200E/U+200F/U+061C reorder what follows as U+202E does, and zero-width characters hide
    text (a node name that looks like another); letters of any script stay as they are."""
    from zdu.report.text import one_line_text, printable
    hidden = "gw\u200b1 \u200eok\u200f \u061cx \u2060y \ufeffz \u200cj\u200dk"
    shown = printable(hidden)
    assert shown == "gw\\u200b1 \\u200eok\\u200f \\u061cx \\u2060y \\ufeffz \\u200cj\\u200dk"
    assert one_line_text("ünï € 日本 ok\u200e") == "ünï € 日本 ok\\u200e"
