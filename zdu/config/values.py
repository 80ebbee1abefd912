"""Values in messages and clean text: bounded descriptions, control characters, bad UTF-8.

Every error message that shows a value shows it through ``describe_value`` (bounded, whatever
the value: a 1 MB string, a shared-reference bomb of 10**9 elements, a 5,000-digit integer).
``check_text`` refuses what no shell, file name or terminal should receive.
"""
from __future__ import annotations

import ipaddress

import re
from typing import Any, Mapping

from zdu.errors import ConfigError

#: refused in any text: NUL (no shell word, file name or environment value can hold it) and
#: lone surrogates (a byte that was not UTF-8: no command can be encoded with one).  Other
#: characters in text (templates, variables) reach the node shell-quoted, byte for byte.
NUL_OR_SURROGATE = re.compile("[\x00\ud800-\udfff]")
#: identifiers (names, hosts, users, paths, options) hold no control character at all, not even
#: a tab or a newline (C0, DEL and C1)
_IDENT_BAD = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


class IntOutOfRange:
    """Stands for an integer literal too large to keep (the loaders return it; the document
    check reports it by field and line)."""

    __slots__ = ("digits", "line")

    def __init__(self, digits: int, line: int | None) -> None:
        self.digits, self.line = digits, line


def describe_value(value: Any, limit: int = 80) -> str:
    """A short, bounded description of ``value`` for an error message.

    Strings and bytes are shown with ``repr`` up to ``limit`` characters; containers by their
    size only (a shared-reference bomb never reaches ``repr``); huge integers by their digit count.
    """
    if isinstance(value, (str, bytes)):
        if len(value) <= limit:
            return repr(value)
        unit = "characters" if isinstance(value, str) else "bytes"
        return f"{value[:limit]!r}... ({len(value):,} {unit})"
    if value is None or isinstance(value, (bool, float)):
        return repr(value)
    if isinstance(value, int):
        if value.bit_length() <= 200:
            return repr(value)
        return f"an integer of about {int(value.bit_length() * 0.30103) + 1:,} digits"
    if isinstance(value, IntOutOfRange):
        return f"an integer of {value.digits:,} digits"
    if isinstance(value, Mapping):
        return f"a mapping of {len(value):,} keys"
    if isinstance(value, (list, tuple, set, frozenset)):
        return f"a list of {len(value):,} items"
    return f"a {type(value).__name__}"


def shorten(text: str, limit: int = 300) -> str:
    """``text`` cut to ``limit`` characters (for messages that quote an exception's text)."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


_PLAIN_KEY = re.compile(r"[\x21-\x7e]{1,80}")  # printable ASCII, no space


def field_path(where: str, key: Any) -> str:
    """``where.key`` for an error message; a key that is long or not plain is shown quoted."""
    name = key if isinstance(key, str) and _PLAIN_KEY.fullmatch(key) else describe_value(key, 40)
    return f"{where}.{name}" if where else name


def describe_char(value: str, index: int, *, reveal: bool = True) -> str:
    """What is wrong with the character at ``index`` of ``value`` (for ``check_text``'s messages).

    ``reveal=False`` leaves out which character it is (the text may hold a secret)."""
    code = ord(value[index])
    if 0xD800 <= code <= 0xDFFF:
        if not reveal:
            return f"is not valid UTF-8 text (at position {index})"
        if code >= 0xDC80 and code <= 0xDCFF:  # os.fsdecode / surrogateescape: U+DC80 + the byte
            return f"is not valid UTF-8 text (undecodable byte 0x{code - 0xDC00:02x} at position {index})"
        return f"is not valid UTF-8 text (lone surrogate U+{code:04X} at position {index})"
    if code == 0:
        return f"contains a NUL byte (position {index}), which no shell or file name can hold"
    if not reveal:
        return f"contains a control character at position {index}"
    names = {9: "a tab", 10: "a newline", 13: "a carriage return", 27: "an escape character"}
    return f"contains {names.get(code, 'a control character')} (U+{code:04X}) at position {index}"


def check_text(value: str, where: str, *, identifier: bool = False, reveal: bool = True) -> str:
    """``value`` if it is clean text, else ConfigError ``"{where}: ..."``.

    Always refused: NUL and lone surrogates (a byte that was not UTF-8, as argv and the
    environment carry them).  With ``identifier=True`` (names, hosts, paths, options) every
    control character too: C0 (tab and newline included), DEL and C1.  ``reveal=False`` keeps
    the value and the character out of the message (for secrets: ``{env: NAME}`` values).
    """
    index = first_bad_char(value, identifier=identifier)
    if index >= 0:
        shown = f"{describe_value(value, 40)} " if reveal else "the value "
        raise ConfigError(f"{where}: {shown}{describe_char(value, index, reveal=reveal)}")
    return value


def first_bad_char(value: str, *, identifier: bool = False) -> int:
    """Index of the first character ``check_text`` refuses in ``value``, or -1."""
    bad = (_IDENT_BAD if identifier else NUL_OR_SURROGATE).search(value)
    return -1 if bad is None else bad.start()


def kind_of(value: Any) -> str:
    """What ``value`` is, for "expected X, got ..." messages (bounded)."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({value})"
    if isinstance(value, (int, float, IntOutOfRange)):
        return f"a number ({describe_value(value)})"
    if isinstance(value, str):
        return f"a string ({describe_value(value)})"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    return type(value).__name__


#: an integer as text: ASCII digits only (``str.isdigit`` takes '²' and '٣', which ``int`` refuses or
#: reads), at most 18 of them (``int`` of a 5,000-digit string is a ValueError, and quadratic)
_DIGITS = re.compile(r"[0-9]{1,18}")
_SIGNED = re.compile(r"-?[0-9]{1,18}")


def bounded_int(value: Any, lo: int, hi: int) -> int | None:
    """``value`` (an int, or its ASCII decimal text: a '-' only where ``lo`` is negative, no
    blanks, no '+') if it is an integer from ``lo`` to ``hi``, else None (the caller says what is
    wrong, and where).  A boolean is not an integer here."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and (_SIGNED if lo < 0 else _DIGITS).fullmatch(value):
        number = int(value)
    else:
        return None
    return number if lo <= number <= hi else None


def port_number(value: Any) -> int | None:
    """``value`` as a TCP port (1-65535: an int, or its ASCII digits), else None."""
    return bounded_int(value, 1, 65535)


#: a user name for ssh: no whitespace, and not an option for any command that receives it
USER_NAME = re.compile(r"[^\s-][^\s]{0,255}")

_HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,252}")
_HOST_ALIAS = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,252}")


def valid_host(host: str, *, alias: bool = False) -> bool:
    """A host name (letters, digits, '.', '-'; with ``alias`` also '_', as ssh_config aliases
    may have) or an IP address.  An IPv6 scope id (``fe80::1%eth0``) is refused: Python's
    ipaddress takes any text after the ``%``."""
    if "%" in host:
        return False
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pattern = _HOST_ALIAS if alias else _HOST_NAME
        return bool(pattern.fullmatch(host)) and ".." not in host


def valid_user(user: str) -> bool:
    """A user name ssh may log in as: no whitespace or control character, not starting with
    '-' (an option to any command that receives it), at most 256 characters."""
    return bool(USER_NAME.fullmatch(user)) and user.isprintable()
