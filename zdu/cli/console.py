"""Where the CLI writes: stdout/stderr by default, StringIO in tests.

Writes never raise: after SIGHUP (the operator's SSH session dropped) the terminal answers
EIO, and a closed pipe answers EPIPE; the run must still reach a safe stop and write its logs.
The console then falls silent and says so in the run log.

Writes never hold up a run either, once :meth:`Console.start_writer` was called (an upgrade run
does): a terminal stopped with Ctrl-S, ``zdupgrade ... | less`` not scrolled, a CI log reader
that stalls -- each leaves a write blocked on a full pipe or terminal, and the run's thread
with it, a node out of the load balancer meanwhile.  The lines then wait in memory (up to
:data:`MAX_QUEUED` characters; past that they are dropped, and counted in a line when the console
is read again) and a writer thread of their own writes them; :meth:`Console.drain` waits for
them at the end.
"""
from __future__ import annotations

import collections
import os
import stat
import threading
from typing import TextIO

from ..report.text import printable

#: characters the console holds for a terminal or pipe that is not being read
MAX_QUEUED = 16 * 1024 * 1024


class Console:
    """Thread-safe line output that tolerates a vanished terminal."""

    def __init__(self, out: TextIO | None, err: TextIO | None, *, gap_notes: bool = True) -> None:
        self.out, self.err = out, err
        #: whether a line says where lines were dropped (not in a stream of JSON lines)
        self.gap_notes = gap_notes
        self.dropped = 0                    #: lines dropped in all
        # reentrant: a signal handler (zdu.cli.signals) may write while the main thread is in here
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self.lost: str | None = None        #: why the console stopped (None: it works)
        #: what the writer thread has to write: text, or a count of the lines dropped there
        self._queue: collections.deque[tuple[TextIO, str | list[int]]] = collections.deque()
        self._queued = 0
        self._gap: list[int] | None = None
        self._writer: threading.Thread | None = None
        self._closing = False

    # ------------------------------------------------------------------ writing

    def _write(self, stream: TextIO | None, text: str) -> None:
        self.raw(stream, printable(text))   # no control sequence from a node reaches the terminal

    def raw(self, stream: TextIO | None, text: str) -> None:
        """``text`` to ``stream`` as it is (the live view's own drawing): at once, or queued for
        the writer thread when it runs."""
        if stream is None:                  # Python's stream of a closed descriptor
            return
        if getattr(stream, "immediate", False):
            # the live view's "above the table": drawn now, in order with the view's own lines (its
            # drawing comes back here, queued); not under the lock, which rich's thread may wait for
            if self.lost is None:
                self._put(stream, text)
            return
        with self._lock:
            if self.lost is not None:
                return
            if self._writer is None:
                self._put(stream, text)
                return
            if self._queued + len(text) > MAX_QUEUED:
                if self._gap is None:           # where the lines are missing: said there
                    self._gap = [0]
                    self._queue.append((stream, self._gap))
                    self._wake.notify_all()
                self._gap[0] += text.count("\n") or 1
                self.dropped += text.count("\n") or 1
                return
            self._gap = None
            self._queue.append((stream, text))
            self._queued += len(text)
            self._wake.notify_all()

    def _put(self, stream: TextIO, text: str) -> bool:
        """Write and flush ``text``; on a failure mark the console lost.  Whether it was written."""
        try:
            try:
                stream.write(text)
            except UnicodeEncodeError:      # a stdout that is not UTF-8 (PYTHONIOENCODING=ascii)
                encoding = getattr(stream, "encoding", None) or "ascii"
                stream.write(text.encode(encoding, "backslashreplace").decode(encoding))
            stream.flush()
            return True
        except (OSError, ValueError) as exc:   # EIO after SIGHUP, EPIPE, closed file
            with self._lock:
                self.lost = self.lost or f"{type(exc).__name__}: {exc}"
                self._queue.clear()
                self._queued = 0
                self._gap = None
            return False

    def line(self, text: str) -> None:
        self._write(self.out, text + "\n")

    def write(self, text: str) -> None:
        self._write(self.out, text)

    def error(self, text: str) -> None:
        self._write(self.err, f"zdupgrade: error: {text}\n")

    def err_line(self, text: str) -> None:
        self._write(self.err, text + "\n")

    # ------------------------------------------------------------------ the writer thread

    def start_writer(self) -> None:
        """From now on a write only queues its text, and a thread writes it (see the module
        docstring) -- where a write could block: a terminal, a pipe, a FIFO, a socket.  Idempotent."""
        with self._lock:
            if self._writer is not None or not any(_may_block(s) for s in (self.out, self.err)):
                return
            self._closing = False
            self._writer = threading.Thread(target=self._run_writer, name="zdupgrade-console", daemon=True)
            self._writer.start()

    def drain(self) -> None:
        """Wait until everything queued is written (or the console is lost), stop the writer thread;
        later writes are written at once again."""
        with self._lock:
            writer = self._writer
            if writer is None:
                return
            self._closing = True
            self._wake.notify_all()
        writer.join()
        with self._lock:
            self._writer = None
            self._closing = False

    def _run_writer(self) -> None:
        while True:
            with self._wake:
                while not self._queue and not self._closing:
                    self._wake.wait()
                if not self._queue:
                    return                          # closing, and nothing is left
                stream, item = self._queue.popleft()
                if isinstance(item, list):
                    if item is self._gap:
                        self._gap = None
                    if not self.gap_notes:
                        continue
                    text = (f"[zdupgrade: {item[0]} console line(s) dropped while the console was not being "
                            "read; run.log has them]\n")
                else:
                    text = item
                    self._queued -= len(item)
                    while self._queue and self._queue[0][0] is stream and isinstance(self._queue[0][1], str) \
                            and len(text) < 65536:
                        more = self._queue.popleft()[1]
                        assert isinstance(more, str)
                        text += more                # one write for lines that came together
                        self._queued -= len(more)
            self._put(stream, text)


def _may_block(stream: TextIO | None) -> bool:
    """Whether a write to ``stream`` can wait on a reader: a terminal, a pipe or FIFO, a socket
    (a regular file, /dev/null or a StringIO does not)."""
    if stream is None:
        return False
    try:
        mode = os.fstat(stream.fileno()).st_mode
    except (AttributeError, ValueError, OSError):
        return False
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        return True
    try:
        return stat.S_ISCHR(mode) and stream.isatty()
    except (ValueError, OSError):
        return False
