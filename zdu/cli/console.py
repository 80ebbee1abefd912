"""Where the CLI writes: stdout/stderr by default, StringIO in tests.

Writes never raise: after SIGHUP (the operator's SSH session dropped) the terminal answers
EIO, and a closed pipe answers EPIPE; the run must still reach a safe stop and write its logs.
The console then falls silent and says so in the run log.
"""
from __future__ import annotations

import threading
from typing import TextIO

from ..report.text import printable


class Console:
    """Thread-safe line output that tolerates a vanished terminal."""

    def __init__(self, out: TextIO | None, err: TextIO | None) -> None:
        self.out, self.err = out, err
        self._lock = threading.Lock()
        self.lost: str | None = None        #: why the console stopped (None: it works)

    def _write(self, stream: TextIO | None, text: str) -> None:
        with self._lock:
            if self.lost is not None or stream is None:     # None: Python's stream of a closed descriptor
                return
            text = printable(text)              # no control sequence from a node reaches the terminal
            try:
                try:
                    stream.write(text)
                except UnicodeEncodeError:      # a stdout that is not UTF-8 (PYTHONIOENCODING=ascii)
                    encoding = getattr(stream, "encoding", None) or "ascii"
                    stream.write(text.encode(encoding, "backslashreplace").decode(encoding))
                stream.flush()
            except (OSError, ValueError) as exc:   # EIO after SIGHUP, EPIPE, closed file
                self.lost = f"{type(exc).__name__}: {exc}"

    def line(self, text: str) -> None:
        self._write(self.out, text + "\n")

    def write(self, text: str) -> None:
        self._write(self.out, text)

    def error(self, text: str) -> None:
        self._write(self.err, f"zdupgrade: error: {text}\n")

    def err_line(self, text: str) -> None:
        self._write(self.err, text + "\n")
