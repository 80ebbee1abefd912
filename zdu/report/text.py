"""Text from nodes, hooks and exceptions made safe to show (a leaf module: no zdu imports).

A command's output, a hook's answer or an exception's message may hold terminal control
sequences (``ESC [2J``, an OSC title or hyperlink, ``CR`` or ``ESC [1G ESC [2K`` writing over the
line that said FAILED), bidi overrides (U+202E) and marks, zero-width characters or line separators.  :func:`printable` shows
them as escapes (``\\x1b``) instead of letting them reach the operator's terminal;
:func:`one_line_text` also shows a newline as ``\\n``, so that one event stays one line and no
text can forge a line of its own (``12:00:00 [B] APPLY PASSED``).
"""
from __future__ import annotations

import re

#: C0 and C1 controls, DEL, line separators, bidi embeddings, overrides, isolates and marks
#: (U+061C, U+200E, U+200F), and the invisible zero-width characters (U+200B-U+200D, U+2060, U+FEFF)
_INVISIBLE = r"\x7f-\x9f\u061c\u200b-\u200f\u2028\u2029\u202a-\u202e\u2060\u2066-\u2069\ufeff"
_CONTROL = re.compile(r"\r\n|[\x00-\x08\x0b-\x1f" + _INVISIBLE + "]")
_CONTROL_OR_NEWLINE = re.compile(r"[\x00-\x08\x0a-\x1f" + _INVISIBLE + "]")


def _escape(match: re.Match[str]) -> str:
    return repr(match.group())[1:-1]


def printable(text: str) -> str:
    """``text`` with control characters (but tab and newline) shown as escapes; CRLF becomes LF."""
    return _CONTROL.sub(lambda m: "\n" if m.group() == "\r\n" else _escape(m), text)


def one_line_text(text: str) -> str:
    """``text`` as one line: every control character shown as an escape, newlines too (tab kept)."""
    return _CONTROL_OR_NEWLINE.sub(_escape, text)
