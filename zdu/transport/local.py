"""Run commands on the control machine itself (``transport: local`` nodes), via invoke.

Same result semantics as the SSH handler: a non-zero exit is a result; a command
that outlives its timeout gives ``exit_code=None, error="timeout"`` and is killed
together with everything it started (it runs in its own session / process group:
SIGTERM to the group, up to one second of grace, then SIGKILL to the group).
"""
from __future__ import annotations

import codecs
import collections
import os
import signal
import subprocess
import threading
import time
from typing import Any, Callable, Generator

from invoke import Config, Context
from invoke.exceptions import CommandTimedOut
from invoke.runners import Local

from zdu.model import CommandResult, Node, SshSettings
from zdu.planning.masking import truncation_note
from zdu.transport.base import CommandHandler

#: grace period between SIGTERM and SIGKILL when a command times out
KILL_GRACE = 1.0


#: characters kept from the start and from the end of each output stream; the middle of a
#: longer output is dropped (and says so), so a command printing gigabytes cannot exhaust the
#: control machine's memory or the logs
KEEP_HEAD = 1024 * 1024
KEEP_TAIL = 1024 * 1024


class OutputKeeper:
    """The first ``keep_head`` and last ``keep_tail`` characters of a stream of text pieces,
    in bounded memory; :meth:`parts` adds a note saying how much of the middle was dropped."""

    def __init__(self, keep_head: int = KEEP_HEAD, keep_tail: int = KEEP_TAIL) -> None:
        self.keep_head = keep_head
        self.keep_tail = keep_tail
        self._head: list[str] = []
        self._head_len = 0
        self._tail: collections.deque[str] = collections.deque()
        self._tail_len = 0
        self._dropped = 0

    def add(self, data: str) -> None:
        """Keep what belongs to the head or the tail of ``data``."""
        if self._head_len < self.keep_head:
            kept = data[: self.keep_head - self._head_len]
            self._head.append(kept)
            self._head_len += len(kept)
            data = data[len(kept):]
            if not data:
                return
        self._tail.append(data)
        self._tail_len += len(data)
        while self._tail and self._tail_len - len(self._tail[0]) >= self.keep_tail:
            self._tail_len -= len(self._tail[0])
            self._dropped += len(self._tail.popleft())

    def parts(self) -> list[str]:
        """The kept text: the head, a truncation note if anything was dropped, the tail."""
        rest = "".join(self._tail)
        dropped = self._dropped
        if len(rest) > self.keep_tail:
            dropped += len(rest) - self.keep_tail
            rest = rest[len(rest) - self.keep_tail:]
        out = list(self._head)
        if dropped:
            out.append(truncation_note(dropped))
        if rest:
            out.append(rest)
        return out

    def text(self) -> str:
        return "".join(self.parts())


class OutputCapture(OutputKeeper):
    """An :class:`OutputKeeper` fed with bytes: decoded incrementally (a multi-byte character
    split across two reads stays whole; invalid bytes become U+FFFD)."""

    def __init__(self, encoding: str = "utf-8", keep_head: int = KEEP_HEAD,
                 keep_tail: int = KEEP_TAIL) -> None:
        super().__init__(keep_head, keep_tail)
        self._decoder = codecs.getincrementaldecoder(encoding)("replace")

    def feed(self, data: bytes) -> None:
        text = self._decoder.decode(data)
        if text:
            self.add(text)

    def text(self) -> str:
        """Everything kept (flushes the decoder: call once the stream has ended)."""
        tail = self._decoder.decode(b"", final=True)
        if tail:
            self.add(tail)
        return super().text()


class IncrementalDecodeMixin:
    """Decode output with an incremental decoder and bigger reads, and keep only the head and
    the tail of a huge output (:class:`OutputKeeper`).

    invoke decodes every 1000-byte chunk on its own, which turns a multi-byte
    UTF-8 character split across two chunks into two replacement characters.
    Invalid bytes still become U+FFFD; nothing raises.
    """

    read_chunk_size = 64 * 1024
    encoding: str
    keep_head = KEEP_HEAD
    keep_tail = KEEP_TAIL

    def _handle_output(self, buffer_: list[str], hide: bool, output: Any, reader: Callable[[int], bytes | None]) -> None:
        keeper = OutputKeeper(self.keep_head, self.keep_tail)
        for data in self.read_proc_output(reader):  # type: ignore[attr-defined]
            keeper.add(data)
        buffer_.extend(keeper.parts())

    def read_proc_output(self, reader: Callable[[int], bytes | None]) -> Generator[str, None, None]:
        decoder = codecs.getincrementaldecoder(self.encoding)("replace")
        while True:
            data = reader(self.read_chunk_size)
            if not data:
                break
            text = decoder.decode(data)
            if text:
                yield text
        tail = decoder.decode(b"", final=True)
        if tail:
            yield tail


class TimeoutKillMixin:
    """Make invoke's timeout kill synchronous and unambiguous.

    invoke calls ``kill`` from its timer thread and decides "timed out" by checking
    whether that thread is still alive, so a kill that takes a moment (TERM, grace,
    KILL) races with the command's own exit and the timeout can go unreported.  Here
    ``timed_out`` is true as soon as the kill began, and ``stop`` (run's ``finally``)
    waits until the kill is complete, so nothing is left behind when ``run`` returns.
    Subclasses implement ``_terminate``.
    """

    _kill_wait = KILL_GRACE + 5.0

    def kill(self) -> None:
        self._zdu_killing = True
        self._zdu_killed = getattr(self, "_zdu_killed", None) or threading.Event()
        try:
            self._terminate()
        finally:
            self._zdu_killed.set()

    def _terminate(self) -> None:
        raise NotImplementedError

    @property
    def timed_out(self) -> bool:
        return getattr(self, "_zdu_killing", False) or super().timed_out  # type: ignore[misc]

    def stop(self) -> None:
        super().stop()  # type: ignore[misc]
        if getattr(self, "_zdu_killing", False):
            self._zdu_killed.wait(self._kill_wait)


class _GroupKillingLocal(TimeoutKillMixin, IncrementalDecodeMixin, Local):
    """invoke's Local runner, but the command gets its own process group and no stdin."""

    def start(self, command: str, shell: str, env: dict[str, Any]) -> None:
        # stdin=DEVNULL: a command that reads stdin sees EOF instead of hanging;
        # start_new_session: on timeout we kill the whole group, not just the shell.
        self.process = subprocess.Popen(
            command, shell=True, executable=shell, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True)

    def close_proc_stdin(self) -> None:  # stdin is /dev/null already
        return None

    def _terminate(self) -> None:
        pgid = self.process.pid
        _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + KILL_GRACE
        while self.process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        # SIGKILL the group even if the shell is gone: children may linger
        _signal_group(pgid, signal.SIGKILL)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class LocalHandler(CommandHandler):
    """Runs commands through the local shell (``/bin/bash -c``), one process per command.

    ``open``/``close`` are no-ops.  ``env`` adds to the control machine's environment.
    """

    def __init__(self, node: Node, settings: SshSettings | None = None, **_: Any) -> None:
        super().__init__(node)
        self.settings = settings or SshSettings()
        config = Config(lazy=True, overrides={"runners": {"local": _GroupKillingLocal}})
        self._context = Context(config=config)

    def open(self) -> None:
        """Nothing to connect to."""

    def close(self) -> None:
        """Nothing to disconnect."""

    def run(self, command: str, *, timeout: float | None = None,
            env: dict[str, str] | None = None) -> CommandResult:
        """Run ``command`` locally; see :class:`CommandHandler.run`."""
        limit = timeout or self.settings.command_timeout
        started = time.time()
        t0 = time.monotonic()
        try:
            result = self._context.run(
                command, hide=True, warn=True, in_stream=False, pty=False, timeout=limit,
                env=dict(env or {}), encoding="utf-8")
        except CommandTimedOut as exc:
            return CommandResult(command, None, exc.result.stdout, exc.result.stderr,
                                 started, time.monotonic() - t0, error="timeout")
        assert result is not None               # only None for disown/asynchronous runs
        return CommandResult(command, result.exited, result.stdout, result.stderr,
                             started, time.monotonic() - t0)
