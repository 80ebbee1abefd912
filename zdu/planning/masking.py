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

    def __bool__(self) -> bool:
        return self._pattern is not None

    def __call__(self, text: str) -> str:
        """``text`` with every secret replaced."""
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(MASK, text)

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
