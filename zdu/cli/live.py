"""What the operator sees while a run goes on, and the CI outputs beside it.

:class:`Outputs` makes the recorder's listeners for the console and for ``--junit`` /
``--events``:

- on a terminal (stdout is a TTY, ``TERM`` is not ``dumb``, no ``--plain``): a live per-node
  view drawn with rich -- node, wave, phase, current step, elapsed time, load-balancer state --
  redrawn four times a second, with the progress lines scrolling above it;
- otherwise (a pipe, a CI log, ``--plain``): the plain progress lines, one per event;
- ``-q``: only warnings, failures and the summary; ``-v``: also every command as it starts and
  every note;
- ``NO_COLOR`` (set and not empty) turns colour off.

At a pause the live view stops, so that the prompt and what the operator types are plain text;
it starts again when the pause ends.  Whatever the console prints meanwhile (the run's first
line, signals, errors) goes above the view.  A terminal that went away (EIO after SIGHUP) stops
the view quietly; the run goes on (the run log has everything).
"""
from __future__ import annotations

import argparse
import io
import os
import threading
import time
from typing import IO, TYPE_CHECKING, Any, Callable, Mapping, Sequence, TextIO, cast

from ..config.values import describe_value
from ..errors import ConfigError
from ..report.runfolder import progress_line, short
from ..report.text import one_line_text, printable
from ..run import events as ev
from ..run.state import Listener, RunState, RunView
from ..status import Outcome
from .console import Console

if TYPE_CHECKING:
    from ..report.junit import EventStream, JunitWriter

#: how often the live view is redrawn (its elapsed times tick)
REFRESH_PER_SECOND = 4


def wants_live(out: TextIO, args: argparse.Namespace, env: Mapping[str, str]) -> bool:
    """Whether the live view is drawn: a terminal, not dumb, and neither --plain nor -q."""
    try:
        tty = out.isatty()
    except (AttributeError, ValueError, OSError):
        tty = False
    return (tty and env.get("TERM", "") != "dumb" and not getattr(args, "plain", False)
            and not getattr(args, "quiet", False))


# --------------------------------------------------------------------------- plain lines

QUIET = (ev.Warned, ev.PreflightFailed, ev.RunFinished, ev.Decided, ev.LbRefused)


def shown(event: ev.Event, verbosity: int) -> bool:
    """Whether the plain console shows ``event`` at ``verbosity`` (-1 quiet, 0, 1 verbose)."""
    if verbosity < 0:
        if isinstance(event, (ev.PhaseFinished, ev.RollbackFinished)):
            return event.outcome is Outcome.FAILED
        if isinstance(event, ev.StepFinished):
            return event.failure is not None
        if isinstance(event, ev.LbFinished):
            return not event.ok
        return isinstance(event, QUIET)
    return True


def line_of(event: ev.Event, verbosity: int, stamp: Callable[[float], str] = short) -> str | None:
    """The console line of ``event`` at ``verbosity`` (None: nothing)."""
    if not shown(event, verbosity):
        return None
    if verbosity > 0 and isinstance(event, ev.StepStarted):
        where = f"[{event.node or event.target or 'control'}]"
        return one_line_text(f"{stamp(event.at)} {where} {event.phase}   {event.name} ({event.kind}): $ {event.command}")
    return progress_line(event, stamp)


class PlainProgress:
    """Listener: one line per event on the console."""

    name = "console"

    def __init__(self, write: Callable[[str], None], verbosity: int = 0) -> None:
        self.write, self.verbosity = write, verbosity

    def __call__(self, event: ev.Event, view: RunView) -> None:
        line = line_of(event, self.verbosity)
        if line is not None:
            self.write(line)


# --------------------------------------------------------------------------- the live view

class _Row:
    __slots__ = ("phase", "phase_started", "step", "step_started", "status", "lb", "ended")

    def __init__(self) -> None:
        self.phase = ""
        self.phase_started: float | None = None
        self.step = ""
        self.step_started: float | None = None
        self.status = "waiting"
        self.lb = "in"
        self.ended: float | None = None


class _SafeFile(io.TextIOBase):
    """The terminal for rich, written through the zdu console (so that a terminal that is not
    read does not hold up the run: see zdu.cli.console); a write that fails (EIO, EPIPE) marks it
    lost instead of raising."""

    def __init__(self, console: Console, stream: TextIO, on_lost: Callable[[str], None]) -> None:
        self.console, self.stream, self.on_lost, self.lost = console, stream, on_lost, False

    def write(self, text: str) -> int:
        if not self.lost:
            self.console.raw(self.stream, text)     # written and flushed, or queued for the writer
            self._check()
        return len(text)

    def flush(self) -> None:
        if not self.lost:
            self._check()

    def _check(self) -> None:
        if self.console.lost is not None:
            self.lost = True
            self.on_lost(self.console.lost)

    def isatty(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        """The terminal's: rich draws with ASCII boxes where it is not UTF-8 (LC_ALL=C without
        Python's UTF-8 coercion), instead of box characters the console could only show as
        ``\u2503`` escapes, six times as wide as the terminal allows."""
        return getattr(self.stream, "encoding", None) or "utf-8"


class _Above(io.TextIOBase):
    """What the zdu console writes while the live view runs: printed above the view."""

    #: the console writes here at once, not through its writer thread (see Console.raw)
    immediate = True

    def __init__(self, view: "LiveView") -> None:
        self.view = view

    def write(self, text: str) -> int:
        self.view.print_above(text)
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return True


class LiveView:
    """Listener: a per-node table (phase, step, elapsed, wave, load balancer) kept on screen."""

    name = "console"

    def __init__(self, console: Console, waves: Sequence[Sequence[str]], nodes: Sequence[str], *,
                 verbosity: int = 0, no_color: bool = False, clock: Callable[[], float] = time.time) -> None:
        from rich.console import Console as RichConsole
        self.console = console
        self.real_out, self.real_err = console.out, console.err
        self.verbosity = verbosity
        self.clock = clock
        self.wave_of = {name: i + 1 for i, wave in enumerate(waves) for name in wave}
        self.waves = len(waves)
        self.rows: dict[str, _Row] = {name: _Row() for name in nodes}
        self.run_id = ""
        self.started: float | None = None
        self.current_wave = 0
        self.paused = ""
        self.finished = ""
        self._lock = threading.RLock()
        self._file = _SafeFile(console, console.out, self._lost)
        self.rich = RichConsole(file=cast(IO[str], self._file), force_terminal=True, no_color=no_color, highlight=False,
                                soft_wrap=False, emoji=False, markup=False, _environ=_sizing_environ(console.out))
        self._live: Any = None

    # -- start / stop

    def start(self) -> None:
        from rich.live import Live
        with self._lock:
            if self._live is not None or self._file.lost:
                return
            self._live = Live(get_renderable=self.render, console=self.rich, refresh_per_second=REFRESH_PER_SECOND,
                              transient=False, redirect_stdout=False, redirect_stderr=False, auto_refresh=True)
            self._live.start()
            above = cast(TextIO, _Above(self))
            self.console.out, self.console.err = above, above

    def stop(self) -> None:
        """Stop redrawing (the last table stays on screen); the console writes plainly again."""
        with self._lock:
            live, self._live = self._live, None
            self.console.out, self.console.err = self.real_out, self.real_err
        if live is not None:
            try:
                live.stop()
            except (OSError, ValueError):
                pass

    def _lost(self, why: str) -> None:
        self.console.lost = self.console.lost or why
        threading.Thread(target=self.stop, daemon=True).start()

    def print_above(self, text: str) -> None:
        from rich.text import Text
        if self._file.lost:
            return
        # soft_wrap: the terminal wraps a long line itself; rich would cut it with a newline of its
        # own, and a run folder's path or a --limit hint copied from the screen would be broken
        self.rich.print(Text(printable(text)), end="", soft_wrap=True)

    # -- events

    def __call__(self, event: ev.Event, view: RunView) -> None:
        with self._lock:
            self._apply(event, view)
        line = self._line(event)
        if line is not None:
            if self._live is not None:
                self.print_above(line + "\n")
            else:
                self.console.line(line)
        if isinstance(event, ev.Paused):
            self.stop()
        elif isinstance(event, ev.PauseEnded):
            self.start()
        elif isinstance(event, ev.RunFinished):
            self.stop()
        elif self._live is None and not self.finished and not self.paused:
            self.start()

    def _line(self, event: ev.Event) -> str | None:
        # the table shows what runs now; above it go the results, failures and decisions
        if self.verbosity < 1 and isinstance(event, (ev.StepFinished, ev.PhaseStarted)) \
                and getattr(event, "failure", None) is None:
            return None
        return line_of(event, self.verbosity)

    def _apply(self, event: ev.Event, view: RunView) -> None:
        if isinstance(event, ev.RunOpened):
            self.run_id, self.started = event.run_id, event.at
        elif isinstance(event, ev.RunStarted):
            self.run_id = self.run_id or view.run_id
            self.started = self.started or event.at
        elif isinstance(event, ev.Paused):
            self.paused = f"PAUSED after wave {event.wave}"
        elif isinstance(event, ev.PauseEnded):
            self.paused = ""
        elif isinstance(event, ev.RunFinished):
            self.finished = f"{event.status.name} ({int(event.status)})"
        row = self.rows.get(event.node or "")
        if row is None:
            return
        if isinstance(event, ev.PhaseStarted):
            row.phase, row.phase_started, row.step, row.status = event.phase.value, event.at, "", "running"
            row.ended = None
            if event.phase.value in ("PRE-APPLY", "APPLY", "POST-APPLY"):
                self.current_wave = max(self.current_wave, self.wave_of.get(event.node or "", 0))
        elif isinstance(event, ev.RollbackStarted):
            row.phase, row.phase_started, row.step, row.status = "ROLLBACK", event.at, "", "rolling back"
            row.ended = None
        elif isinstance(event, ev.StepStarted):
            row.step, row.step_started = event.name, event.at
        elif isinstance(event, ev.StepFinished):
            row.step_started = None
            if event.failure is not None:
                row.step = f"{event.name}: {event.failure.value.upper()}"
        elif isinstance(event, (ev.PhaseFinished, ev.RollbackFinished)):
            row.status = event.outcome.value
            row.ended = event.at
            if event.outcome is Outcome.PASSED:
                row.step = ""
        elif isinstance(event, ev.LbStarted):
            row.lb = "taking out" if event.action.value == "disable" else "putting back"
        elif isinstance(event, ev.LbFinished):
            row.lb = ("out" if event.action.value == "disable" else "in") if event.ok else "UNKNOWN"

    # -- drawing (called by rich's refresh thread)

    def render(self) -> Any:
        try:
            return self._render()
        except Exception as exc:  # noqa: BLE001 - a drawing bug must not reach the run (rich's thread)
            from rich.text import Text
            return Text(f"(live view: {type(exc).__name__}: {exc}; the run log has everything)")

    def _render(self) -> Any:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text
        with self._lock:
            now = self.clock()
            title = f"zdupgrade run {self.run_id}"
            if self.started:
                title += f" - {_elapsed(now - self.started)}"
            if self.waves:
                title += f" - wave {self.current_wave or '-'}/{self.waves}"
            if self.paused:
                title += f" - {self.paused}"
            if self.finished:
                title += f" - {self.finished}"
            table = Table(expand=False, show_edge=True)
            for column in ("NODE", "WAVE", "PHASE", "STEP", "ELAPSED", "LB", "STATE"):
                table.add_column(column, no_wrap=True, overflow="ellipsis",
                                 max_width=40 if column == "STEP" else None)
            for name, row in self.rows.items():
                elapsed = _elapsed((row.ended or now) - row.phase_started) if row.phase_started else "-"
                if row.step_started and not row.ended:
                    elapsed += f" (step {_elapsed(now - row.step_started)})"
                style = {"FAILED": "bold red", "PASSED": "green", "running": "yellow",
                         "rolling back": "bold magenta"}.get(row.status, "")
                table.add_row(Text(one_line_text(name)), Text(str(self.wave_of.get(name, "-"))), Text(row.phase or "-"),
                              Text(one_line_text(row.step or "-")), Text(elapsed), Text(row.lb, style="red" if row.lb != "in" else ""),
                              Text(row.status, style=style))
            return Group(Text(one_line_text(title), style="bold"), table)


#: COLUMNS / LINES taken from the environment only when the terminal has no size of its own
#: (a pseudo-terminal left at 0x0), and only within these bounds
_SANE_SIZE = {"COLUMNS": (20, 10000), "LINES": (5, 10000)}


def _sizing_environ(stream: TextIO) -> dict[str, str]:
    """The environment rich sizes the live view from: ``os.environ`` without COLUMNS and LINES
    where the terminal tells its own size.  rich takes COLUMNS / LINES before the terminal's size
    and keeps them for good: ``COLUMNS=0`` drew nothing at all (every progress line of the run
    lost), ``LINES=1`` a table cut to "...", and a COLUMNS wider than the terminal a table the
    terminal wraps, so that each redraw moves the cursor up too few lines and leaves copies of
    the table behind.  The terminal's own size also follows a resize."""
    environ = dict(os.environ)
    try:
        columns, lines = os.get_terminal_size(stream.fileno())
    except (AttributeError, ValueError, OSError):
        columns = lines = 0
    for key, real in (("COLUMNS", columns), ("LINES", lines)):
        value = environ.get(key)
        if value is None:
            continue
        low, high = _SANE_SIZE[key]
        if real > 0 or not (value.isascii() and value.isdigit() and low <= int(value) <= high):
            del environ[key]
    return environ


def _elapsed(value: float) -> str:
    value = max(0.0, value)
    if value < 60:
        return f"{value:.1f}s"
    minutes, seconds = divmod(int(value), 60)
    return f"{minutes}m{seconds:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


# --------------------------------------------------------------------------- all outputs of a run

class Outputs:
    """The console listener (live view or plain lines) and the CI outputs of one run."""

    def __init__(self, args: argparse.Namespace, console: Console, env: Mapping[str, str], *,
                 waves: Sequence[Sequence[str]] = (), nodes: Sequence[str] = (),
                 events_out: TextIO | None = None) -> None:
        # the CI outputs' modules (and the review views they print with) only when asked for:
        # a run without --junit / --events does not pay their import at its start
        self.console = console
        verbosity = -1 if getattr(args, "quiet", False) else (1 if getattr(args, "verbose", False) else 0)
        self.live: LiveView | None = None
        self.progress: Listener
        if wants_live(console.out, args, env):
            self.live = LiveView(console, waves, nodes, verbosity=verbosity, no_color=bool(env.get("NO_COLOR")))
            self.progress = self.live
        else:
            self.progress = PlainProgress(console.line, verbosity)
        self.junit: JunitWriter | None = None
        if getattr(args, "junit", None):
            from ..report.junit import JunitWriter
            self.junit = JunitWriter(args.junit)
        if self.junit is not None:   # refused now, before anything is touched, not at the end
            folder = os.path.dirname(os.path.abspath(self.junit.path))
            if not os.path.isdir(folder) or os.path.isdir(self.junit.path):
                raise ConfigError(f"--junit {describe_value(self.junit.path)}: "
                                  + ("is a directory" if os.path.isdir(self.junit.path) else
                                     f"the folder {describe_value(folder)} does not exist"))
        self._events_file: TextIO | None = None
        self.events: EventStream | None = None
        target = getattr(args, "events", None)
        if target:
            from ..report.junit import EventStream
            from ..report.output import open_private
        #: --events -: written by a writer thread of its own, so that a reader that stalls does not
        #: hold up the run (see zdu.cli.console); waited for in finish()
        self._events_console: Console | None = None
        if target == "-":
            out = events_out or console.out
            self._events_console = Console(out, out, gap_notes=False)
            self._events_console.start_writer()
            self.events = EventStream(self._events_line)
        elif target:
            self._events_file = open_private(target, option="--events")
            self.events = EventStream(self._events_file.write)
        self._done = False

    def listeners(self) -> list[Listener]:
        """Subscribe these to the recorder (CI outputs first: they must see every event)."""
        out: list[Listener] = [x for x in (self.events, self.junit) if x is not None]
        return out + [self.progress]

    def finish(self, state: RunState) -> dict[str, str]:
        """The run is over: stop the live view, write the JUnit report (once), close the events
        file.  Returns what could not be written, by output ("junit", "events"); empty when all was."""
        if self.live is not None:
            self.live.stop()
        if self._done:
            return {}
        self._done = True
        problems: dict[str, str] = {}
        if self.junit is not None:
            try:
                self.junit.write(state)
            except Exception as exc:  # noqa: BLE001 - the run's own outcome must still be reported
                problems["junit"] = f"{type(exc).__name__}: {exc}"[:500]
        if self._events_file is not None:
            try:
                self._events_file.close()
            except OSError as exc:
                problems["events"] = f"{type(exc).__name__}: {exc}"[:500]
        stream = self._events_console
        if stream is not None:
            stream.drain()                  # the record: its reader gets every line written so far
            if stream.lost is not None:
                problems["events"] = stream.lost[:500]
            elif stream.dropped:
                problems["events"] = (f"{stream.dropped} event line(s) dropped: the reader of --events - "
                                      "did not keep up")
        return problems

    def _events_line(self, text: str) -> None:
        assert self._events_console is not None
        if self._events_console.lost is not None:       # the recorder says the listener failed
            raise OSError(f"--events -: {self._events_console.lost}")
        self._events_console.raw(self._events_console.out, text)

