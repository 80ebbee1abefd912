"""Pauses: the run waits for the operator, who answers on the terminal or from another shell.

At a pause the run prints what it did and waits.  On a terminal it asks (``continue`` /
``abort`` / ``abort --keep``); whether or not there is one, ``zdupgrade continue [RUN_ID]`` or
``zdupgrade abort [RUN_ID]`` from another shell answers it: they write ``pause.answer`` in the
run folder, which the waiting run polls.  Without an answer within ``pause_timeout`` the
stated action is taken.  An interrupt ends the pause like any other safe point.
"""
from __future__ import annotations

import fcntl
import getpass
import json
import os
import queue
import select
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, TextIO

from ..errors import ConfigError
from ..report.rundir import RunDir
from ..run.conductor import PauseAnswer, PauseRequest
from .console import Console

ANSWER_FILE = "pause.answer"
ANSWER_LOCK = "pause.answer.lock"      # held while an answer is left (two shells at once)
ANSWERS = ("continue", "abort", "abort-keep")
POLL = 0.2


def who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def write_answer(run_dir: RunDir, wave: int | None, answer: str) -> None:
    """What ``zdupgrade continue`` / ``abort`` leave for the waiting run."""
    if answer not in ANSWERS:
        raise ConfigError(f"unknown answer {answer!r}")
    data = {"answer": answer, "wave": wave, "by": who(), "at": time.time()}
    run_dir.write_atomic(ANSWER_FILE, (json.dumps(data) + "\n").encode())


def _answer_data(run_dir: RunDir, name: str, wave: int) -> dict[str, Any] | None:
    """The answer in ``name`` if it is one, for the pause after ``wave`` (None otherwise)."""
    if not run_dir.exists(name):
        return None
    try:
        data: Any = json.loads(run_dir.read_text(name, limit=4096))
    except (ValueError, ConfigError, OSError):
        return None
    if not isinstance(data, dict) or data.get("answer") not in ANSWERS:
        return None
    if data.get("wave") not in (None, wave):
        return None
    return data


def _by(data: dict[str, Any]) -> str:
    return f"{str(data.get('by'))[:100]} (zdupgrade {str(data['answer']).split('-')[0]})"


def read_answer(run_dir: RunDir, wave: int) -> PauseAnswer | None:
    """The answer left for the pause after ``wave`` (None: none yet, or for another pause)."""
    data = _answer_data(run_dir, ANSWER_FILE, wave)
    return None if data is None else PauseAnswer(str(data["answer"]), _by(data))


@dataclass(frozen=True)
class Left:
    """What ``leave_answer`` did: ``left`` (the answer is in the folder), ``same`` (that answer
    was given already: nothing written) or ``replaced`` (a dead run's earlier answer replaced);
    ``earlier`` is the answer found there before, as the run records it."""

    outcome: str
    earlier: PauseAnswer | None = None


def leave_answer(run_dir: RunDir, wave: int, answer: str, *, alive: bool, since: float) -> Left:
    """Leave ``answer`` for the pause after ``wave`` -- one answer per pause.

    ``zdupgrade continue`` and ``zdupgrade abort`` from two shells at the same moment must not
    both be told they were obeyed: under a lock on the run folder, an answer already waiting
    for this pause (or one the live run took since the pause began, ``since``: the pause's start
    or the resume that came back to it) stops a different one with a ConfigError, and the same
    one is not written twice.  A run whose process is gone takes nothing until ``--resume``: a
    new answer replaces the one left earlier."""
    if answer not in ANSWERS:
        raise ConfigError(f"unknown answer {answer!r}")
    fd = run_dir.open_fd(ANSWER_LOCK)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        waiting = _answer_data(run_dir, ANSWER_FILE, wave)
        taken = _answer_data(run_dir, ANSWER_FILE + ".used", wave) if waiting is None and alive else None
        if taken is not None and not _number(taken.get("at")) >= since:
            taken = None                       # the answer to an earlier pause, or to a run that died since
        earlier = waiting or taken
        if earlier is not None and (alive or earlier["answer"] == answer):
            found = PauseAnswer(str(earlier["answer"]), _by(earlier))
            if earlier["answer"] == answer:
                return Left("same", found)
            raise ConfigError(
                f"run {run_dir.dir.name}, paused after wave {wave}, "
                + ("has an answer waiting already" if waiting is not None else "took an answer already")
                + f": {found.answer} (by {found.by}); yours ({answer}) was not left")
        write_answer(run_dir, wave, answer)
        if earlier is not None:
            return Left("replaced", PauseAnswer(str(earlier["answer"]), _by(earlier)))
        return Left("left")
    finally:
        os.close(fd)                           # and the lock with it


def withdraw_answer(run_dir: RunDir, wave: int, answer: str) -> None:
    """Take back ``answer`` left for the pause after ``wave`` (the run ended that pause otherwise):
    left there, it would answer nothing, and mislead whoever reads the folder."""
    fd = run_dir.open_fd(ANSWER_LOCK)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        waiting = _answer_data(run_dir, ANSWER_FILE, wave)
        if waiting is not None and waiting["answer"] == answer:
            run_dir.remove(ANSWER_FILE)
    finally:
        os.close(fd)


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else float("-inf")


class _Lines:
    """One reader of the terminal for the whole run (a thread).

    It reads bytes and decodes them leniently (a stray non-UTF-8 byte is not a crash that ends
    terminal answers), and reads only while the run is in the terminal's foreground: a run sent to
    the background (``zdupgrade ... &``) that read its terminal would be stopped by SIGTTIN, and
    then neither ``zdupgrade continue`` nor the pause timeout could end the pause."""

    def __init__(self, stream: TextIO) -> None:
        self.queue: queue.SimpleQueue[str] = queue.SimpleQueue()
        thread = threading.Thread(target=self._read, args=(stream,), name="zdu-tty", daemon=True)
        thread.start()

    def _read(self, stream: TextIO) -> None:
        try:
            fd = stream.fileno()
        except (AttributeError, OSError, ValueError):
            fd = -1
        try:
            if fd < 0:
                for line in iter(stream.readline, ""):
                    self.queue.put(line)
            else:
                self._read_fd(fd)
        except (OSError, ValueError, UnicodeError):
            pass                                   # no more terminal answers; the run folder still works

    def _read_fd(self, fd: int) -> None:
        pending = b""
        while True:
            if not _foreground(fd):
                time.sleep(POLL)
                continue
            if not select.select([fd], [], [], POLL)[0] or not _foreground(fd):
                continue
            data = os.read(fd, 4096)
            if not data:                           # end of input: Ctrl-D on a terminal, or a closed pipe
                if pending:
                    self.queue.put(pending.decode("utf-8", "replace"))
                    pending = b""
                if not os.isatty(fd):
                    return
                time.sleep(POLL)
                continue
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                self.queue.put(line.decode("utf-8", "replace") + "\n")


def _foreground(fd: int) -> bool:
    """Whether reading ``fd`` cannot stop the process with SIGTTIN (it is not our controlling
    terminal, or we are in its foreground process group)."""
    try:
        return os.tcgetpgrp(fd) == os.getpgrp()
    except OSError:
        return True


class OperatorPauser:
    """Asks the terminal (if there is one) and watches the run folder for an answer."""

    def __init__(self, run_dir: RunDir, console: Console, *, stdin: TextIO | None = None,
                 interactive: bool | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.run_dir = run_dir
        self.console = console
        self.stdin = stdin or sys.stdin
        self.interactive = self.stdin.isatty() if interactive is None else interactive
        self.clock = clock
        self._lines: _Lines | None = None

    def __call__(self, request: PauseRequest, stop: Callable[[], bool]) -> PauseAnswer:
        # what was typed before this pause asked (type-ahead during a wave, a second "continue"
        # typed at the pause before) answers nothing: only an answer to this question counts
        stale = self._discard_typed()
        done = ", ".join(request.done) or "none yet"
        failed = (f"; rolled back within the failure budget: {', '.join(request.rolled_back)}"
                  if request.rolled_back else "")
        self.console.line(f"\n=== PAUSED after wave {request.wave} of {request.waves} (upgraded so far: {done}"
                          f"{failed}) ===")
        self.console.line(f"    zdupgrade continue {request.run_id}   |   zdupgrade abort {request.run_id} [--keep]"
                          f"   (from any shell); in {request.timeout:g}s: {request.on_timeout}")
        if self.interactive:
            if self._in_foreground():
                self.console.line("    or type here: continue | abort | abort --keep")
            else:                       # read only once in the foreground (no SIGTTIN)
                self.console.line("    (this run is in the background of its terminal: `fg` to type an answer here)")
            if self._lines is None:
                self._lines = _Lines(self.stdin)
            if stale:
                self.console.line(f"    (ignored what was typed before this pause: {', '.join(stale)[:80]})")
        # an answer left for this pause before it began (a resumed run) counts; an older one does not
        deadline = self.clock() + request.timeout
        while True:
            answer = read_answer(self.run_dir, request.wave)
            if answer is not None:
                self._consume()
                return answer
            if self._lines is not None:
                typed = self._typed()
                if typed is not None:
                    return typed
            if stop():
                return PauseAnswer("interrupted", "a signal")
            if self.clock() >= deadline:
                return PauseAnswer(request.on_timeout, f"the {request.timeout:g}s pause timeout")
            time.sleep(POLL)

    def _in_foreground(self) -> bool:
        try:
            return _foreground(self.stdin.fileno())
        except (OSError, ValueError):       # no file descriptor (a test's stream): nothing stops it
            return True

    def _discard_typed(self) -> list[str]:
        """Drop the lines typed before this pause (the words of those that were not empty): the
        reader's queue, and on the first pause what waits in the terminal's input (a flush,
        only in the foreground: there it cannot stop the run with SIGTTOU)."""
        stale: list[str] = []
        if self._lines is None:
            if self.interactive and self._in_foreground():
                import termios
                try:
                    termios.tcflush(self.stdin.fileno(), termios.TCIFLUSH)
                except (termios.error, OSError, ValueError, AttributeError):
                    pass                    # not a terminal (a pipe, a test's stream): nothing waits there
            return stale
        while True:
            try:
                line = self._lines.queue.get_nowait()
            except queue.Empty:
                return stale
            word = " ".join(line.split())
            if word:
                stale.append(repr(word[:40]))

    def _typed(self) -> PauseAnswer | None:
        assert self._lines is not None
        while True:
            try:
                line = self._lines.queue.get_nowait()
            except queue.Empty:
                return None
            word = " ".join(line.split()).lower()
            answer = {"continue": "continue", "c": "continue", "abort": "abort", "a": "abort",
                      "abort --keep": "abort-keep", "abort keep": "abort-keep"}.get(word)
            if answer is not None:
                return PauseAnswer(answer, f"{who()} (terminal)")
            if word:
                self.console.line(f"    not an answer: {word[:40]!r}; type continue, abort or abort --keep")

    def _consume(self) -> None:
        try:
            self.run_dir.write_atomic(ANSWER_FILE + ".used", self.run_dir.read_text(ANSWER_FILE).encode())
            self.run_dir.remove(ANSWER_FILE)
        except (OSError, ConfigError):
            pass
