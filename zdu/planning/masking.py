"""Masking of secrets in text zdupgrade did not render itself.

What zdupgrade renders (commands, wait targets, the plan) is masked exactly at render time: the
template is rendered a second time with every secret value replaced by ``******`` (see
:mod:`zdu.planning.templates`), so no other text is touched.  Text that comes from elsewhere --
a command's output, a hook's output, an error message -- can only be searched: :class:`Masker`
replaces every occurrence of each secret value, in the forms a secret takes when it is quoted
for a shell, URL-encoded or JSON-escaped.

A secret of fewer than :data:`SUBSTRING_MIN` characters is replaced only where it stands as a
token of its own (not inside a longer run of letters and digits), so a short value does not
garble every log line that happens to contain it; a longer one is replaced wherever it occurs.

A command's output longer than what is kept of it loses its middle to a note
(:data:`TRUNCATION_NOTE`, written by :class:`zdu.transport.local.OutputKeeper`); a secret the cut
went through leaves its start just before the note and its end just after it, where no search for
the whole value finds them: those pieces (of :data:`CUT_PIECE_MIN` characters or more) are
replaced too.
"""
from __future__ import annotations

import json
import re
import shlex
import urllib.parse
from typing import Any, Iterable

MASK = "******"
#: secrets at least this long are replaced wherever they occur; shorter ones as whole tokens
SUBSTRING_MIN = 8
#: the note :class:`zdu.transport.local.OutputKeeper` puts where it dropped the middle of an output
TRUNCATION_NOTE = re.compile(r"\n\[\.\.\. zdupgrade: \d+ (?:characters|bytes) of output truncated here \.\.\.\]\n")


def truncation_note(dropped: int, unit: str = "characters") -> str:
    """The note put where ``dropped`` characters (or bytes) of an output were left out; the
    masker replaces the pieces of a secret it cuts (see :data:`TRUNCATION_NOTE`)."""
    return f"\n[... zdupgrade: {dropped} {unit} of output truncated here ...]\n"
#: the shortest piece of a cut secret that is replaced (one character would be replaced at every cut
#: whose neighbour happens to be the secret's first or last character)
CUT_PIECE_MIN = 2
#: a piece of a secret made only of these (a quote that opens its shell-quoted form) is no piece of it
_QUOTES = frozenset("'\"\\")


def _forms(secret: str) -> set[str]:
    """The spellings of ``secret`` that may appear in output or messages."""
    forms = {secret, shlex.quote(secret), secret.replace("'", "'\"'\"'"),
             urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret),
             json.dumps(secret)[1:-1], repr(secret)[1:-1]}
    return {f for f in forms if f}


class Masker:
    """Replaces secret values in free text with ``******``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = frozenset(s for s in secrets if s)
        forms = sorted({f for s in self.secrets for f in _forms(s)}, key=len, reverse=True)
        long = [re.escape(f) for f in forms if len(f) >= SUBSTRING_MIN]
        short = [re.escape(f) for f in forms if len(f) < SUBSTRING_MIN]
        parts = long + [rf"(?<![A-Za-z0-9]){f}(?![A-Za-z0-9])" for f in short]
        self._pattern = re.compile("|".join(parts)) if parts else None
        #: (form, short) for the pieces a truncation leaves on either side of its note
        self._cut_forms = [(f, len(f) < SUBSTRING_MIN) for s in self.secrets for f in _forms(s)
                           if len(f) > CUT_PIECE_MIN]

    def __bool__(self) -> bool:
        return self._pattern is not None

    def __call__(self, text: str) -> str:
        """``text`` with every secret replaced."""
        if self._pattern is None or not text:
            return text
        text = self._pattern.sub(MASK, text)
        if "zdupgrade: " in text and "truncated here" in text:
            text = self._mask_cuts(text)
        return text

    def _mask_cuts(self, text: str) -> str:
        """``text`` with the pieces of a secret cut by a truncation note replaced: the longest
        start of a secret's form ending just before each note, the longest end of one just after."""
        segments = TRUNCATION_NOTE.split(text)
        notes = TRUNCATION_NOTE.findall(text)
        out: list[str] = []
        for index, segment in enumerate(segments):
            if index:                            # after a note: the end of a secret may start it
                cut = self._piece(segment, head=False)
                if cut:
                    segment = MASK + segment[cut:]
            if index < len(notes):               # before a note: the start of one may end it
                cut = self._piece(segment, head=True)
                if cut:
                    segment = segment[:len(segment) - cut] + MASK
                out += [segment, notes[index]]
            else:
                out.append(segment)
        return "".join(out)

    def _piece(self, text: str, *, head: bool) -> int:
        """How many characters at the end (``head``: the text before a cut) or the start of
        ``text`` are a proper start (or end) of a secret's form; 0 for none."""
        best = 0
        for form, short in self._cut_forms:
            for size in range(min(len(form) - 1, len(text)), max(best, CUT_PIECE_MIN - 1), -1):
                piece = form[:size] if head else form[len(form) - size:]
                if set(piece) <= _QUOTES:
                    break
                if not (text.endswith(piece) if head else text.startswith(piece)):
                    continue
                if short:        # a short secret's piece must stand apart on its outer side
                    outer = text[len(text) - size - 1:len(text) - size] if head else text[size:size + 1]
                    if outer.isalnum():
                        continue
                best = size
                break
        return best

    def data(self, value: Any) -> Any:
        """``value`` (JSON-like: dicts, lists, strings) with every string masked."""
        if self._pattern is None:
            return value
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            return {k: self.data(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self.data(v) for v in value)
        return value

    def union(self, other: "Masker") -> "Masker":
        return Masker(self.secrets | other.secrets)


NO_SECRETS = Masker()
