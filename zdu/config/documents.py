"""Reading and checking topology and profile documents (YAML or JSON).

``read_document`` turns a file into plain data with bounded cost whatever the file holds:

- at most ``MAX_FILE_BYTES`` of strict UTF-8;
- YAML aliases may add at most ``MAX_ALIAS_VALUES`` values to what the file spells out (each
  use of an alias counts its whole expanded content, memoised per node, so the check itself is
  linear): a 629-byte "billion laughs" is refused before anything is built from it;
- nesting at most ``MAX_DEPTH`` levels, checked while composing (YAML) or by a bracket scan
  (JSON), never by waiting for a RecursionError;
- integers at most ``MAX_INT`` in magnitude: an integer of 5,000 digits is an error naming the
  field and the line, not Python's int->str ValueError from inside the loader;
- no string anywhere (keys included) holds a NUL or a lone surrogate (a byte that was not UTF-8).

``_Checker`` gives the typed accessors the topology and profile parsers share; every error names
the file and the field.  Identifier-like strings (names, hosts, users, paths, ...) may hold no
control character at all; text (command templates, variables) may hold any but NUL and lone
surrogates (values are shell-quoted).
Every message that shows a value shows it through ``describe_value``, which is bounded.
"""
from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

from zdu.config.values import (NUL_OR_SURROGATE, IntOutOfRange, check_text, describe_char, describe_value,
                               field_path, kind_of as _kind, shorten)
from zdu.errors import ConfigError
from zdu.model import frozen_map

__all__ = ["MAX_ALIAS_VALUES", "MAX_DEPTH", "MAX_FILE_BYTES", "MAX_INT", "check_text", "check_values",
           "describe_value", "field_path", "read_document", "shorten"]

MAX_FILE_BYTES = 10 * 1024 * 1024
MAX_ALIAS_VALUES = 100_000
MAX_DEPTH = 64
MAX_INT = 10**18

# Longest spelling of an integer within MAX_INT, underscores removed: 0b + 60 binary digits.
# Longer ones are out of range without converting them (int() of 10**7 digits is quadratic).
_INT_TEXT_MAX = 64


# --------------------------------------------------------------------------- loading

class _DocumentError(Exception):
    """A problem found while loading; ``read_document`` adds the file name (and "the topology"
    before a ``message`` that is about the whole document: ``subject=True``)."""

    def __init__(self, message: str, line: int | None = None, *, subject: bool = False) -> None:
        super().__init__(message)
        self.message, self.line, self.subject = message, line, subject


try:
    from yaml.cyaml import CParser
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    CParser = None

if CParser is not None:
    class _SafeBase(Composer, CParser, SafeConstructor, Resolver):  # type: ignore[misc]
        """SafeLoader with libyaml's scanner and parser (4x faster on a 1,000-node topology);
        composing stays in Python, where _StrictLoader checks nesting and aliases."""

        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            SafeConstructor.__init__(self)  # type: ignore[no-untyped-call]
            Resolver.__init__(self)  # type: ignore[no-untyped-call]
            Composer.__init__(self)  # type: ignore[no-untyped-call]
else:  # pragma: no cover - PyYAML built without libyaml
    _SafeBase = yaml.SafeLoader  # type: ignore[misc,assignment]


_Loader: Any = yaml.SafeLoader if TYPE_CHECKING else object


class _StrictChecks(_Loader):  # type: ignore[misc]
    """Refuses duplicate keys, deep nesting, alias bombs and huge integers (mixed into a loader)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._open: set[str] = set()       # anchors whose node is being composed
        self._sizes: dict[int, int] = {}   # id(node) -> values it expands to (alias targets only)
        self._alias_values = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent):
            if event.anchor in self._open:   # the alias is inside what it names
                raise _DocumentError(f"the alias *{shorten(event.anchor, 40)} refers to the node "
                                     "that contains it", event.start_mark.line + 1)
            node: yaml.Node = super().compose_node(parent, index)  # type: ignore[no-untyped-call]
            self._alias_values += self._size(node)
            if self._alias_values > MAX_ALIAS_VALUES:
                raise _DocumentError(f"expands to more than {MAX_ALIAS_VALUES:,} values through YAML "
                                     "aliases (each use of an alias counts all it contains)",
                                     event.start_mark.line + 1, subject=True)
            return node
        anchor = getattr(event, "anchor", None)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _DocumentError(f"is nested more than {MAX_DEPTH} levels deep", event.start_mark.line + 1,
                                     subject=True)
            if anchor is not None:
                self._open.add(anchor)
            return super().compose_node(parent, index)  # type: ignore[no-untyped-call, no-any-return]
        finally:
            self._depth -= 1
            if anchor is not None:
                self._open.discard(anchor)

    def _size(self, root: yaml.Node) -> int:
        """The values ``root`` expands to, aliases inside it counted in full; computed only for
        the nodes an alias names (not for every node: a 1,000-node topology composes a third
        faster), without recursion (aliases of aliases nest deeper than the document)."""
        sizes = self._sizes
        stack: list[tuple[yaml.Node, bool]] = [(root, False)]
        while stack:
            node, children_done = stack.pop()
            if id(node) in sizes:
                continue
            children = _children(node)
            if children_done:
                sizes[id(node)] = 1 + sum(sizes[id(child)] for child in children)
            else:
                stack.append((node, True))
                stack.extend((child, False) for child in children if id(child) not in sizes)
        return sizes[id(root)]

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # "<<: *defaults": the base class merges
                continue
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            try:
                duplicate = key in seen
            except TypeError:  # unhashable key: let the base class report it
                break
            if duplicate:
                raise _DocumentError(f"duplicate key {describe_value(key)}: each field may appear once",
                                     key_node.start_mark.line + 1)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def construct_bounded_int(self, node: yaml.ScalarNode) -> int | IntOutOfRange:
        text = str(self.construct_scalar(node)).replace("_", "")  # type: ignore[no-untyped-call]
        line = node.start_mark.line + 1
        if len(text.lstrip("+-")) > _INT_TEXT_MAX:
            return IntOutOfRange(len(text.lstrip("+-")), line)
        value = int(self.construct_yaml_int(node))  # type: ignore[no-untyped-call]
        return IntOutOfRange(len(str(abs(value))), line) if abs(value) > MAX_INT else value


class _StrictLoader(_StrictChecks, _SafeBase):
    """The checks on libyaml's parser (when PyYAML has it)."""


class _StrictPyLoader(_StrictChecks, yaml.SafeLoader):  # type: ignore[misc]
    """The checks on PyYAML's own parser: what explains a document libyaml refused (its messages
    are the ones users see, whichever parser found the problem)."""


for _loader in (_StrictLoader, _StrictPyLoader):
    _loader.add_constructor("tag:yaml.org,2002:int", _StrictChecks.construct_bounded_int)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [item for pair in node.value for item in pair]
    return []


def _json_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DocumentError(f"duplicate key {describe_value(key)}: each field may appear once")
        result[key] = value
    return result


def _json_int(text: str) -> int | IntOutOfRange:
    digits = len(text.lstrip("-"))
    if digits > _INT_TEXT_MAX:
        return IntOutOfRange(digits, None)
    value = int(text)
    return IntOutOfRange(digits, None) if abs(value) > MAX_INT else value


_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_BRACKET_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def _json_depth(text: str) -> int:
    """How deep the brackets of a JSON text nest (strings skipped), without recursion."""
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    return max(itertools.accumulate(map(_BRACKET_STEP.__getitem__, brackets)), default=0)


def read_document(path: Path, *, what: str) -> Any:
    """Parse a YAML or JSON file (by suffix) into checked plain data.

    Raises ConfigError naming the file (and the line, where the parser knows it) for anything
    unreadable, malformed or beyond the bounds described in this module's docstring.
    """
    check_text(str(path), f"the {what} file name", identifier=True)
    try:
        if not path.exists():
            raise ConfigError(f"{shorten(str(path))}: {what} file not found")
        if not path.is_file():
            raise ConfigError(f"{path}: {what} path is not a file")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ConfigError(f"{path}: {what} file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MB")
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: {what} file is not valid UTF-8 (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{shorten(str(path))}: cannot read {what} file: {exc.strerror}") from None
    if len(text) > MAX_FILE_BYTES:  # grew since stat (a pipe, a file being written)
        raise ConfigError(f"{path}: {what} file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MB")
    try:
        data = _parse(path, text)
    except _DocumentError as exc:
        where = f" (line {exc.line})" if exc.line else ""
        subject = f"the {what} " if exc.subject else ""
        raise ConfigError(f"{path}: {subject}{exc.message}{where}") from None
    check_values(data, str(path))
    return data


def _parse(path: Path, text: str) -> Any:
    if path.suffix.lower() == ".json":
        if _json_depth(text) > MAX_DEPTH:
            raise _DocumentError(f"is nested more than {MAX_DEPTH} levels deep", subject=True)
        try:
            return json.loads(text, object_pairs_hook=_json_pairs, parse_int=_json_int)
        except json.JSONDecodeError as exc:
            raise _DocumentError(f"JSON syntax error at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
        except RecursionError:  # not reached: the bracket scan bounds the depth first
            raise _DocumentError(f"is nested more than {MAX_DEPTH} levels deep", subject=True) from None
    try:
        try:
            return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)
        except yaml.YAMLError:
            if _StrictLoader is _StrictPyLoader:
                raise
            return yaml.load(text, Loader=_StrictPyLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise _DocumentError(f"YAML syntax error{where}: {shorten(str(exc.problem))}") from None
    except yaml.YAMLError as exc:
        raise _DocumentError(f"YAML error: {shorten(str(exc))}") from None
    except ValueError as exc:  # a scalar PyYAML cannot convert (a date out of range, ...)
        raise _DocumentError(f"YAML value error: {shorten(str(exc))}") from None


_Path = tuple[Any, Any] | None  # (parent path, key or [index]); built into text only for a message


def _path_text(path: _Path) -> str:
    parts: list[Any] = []
    while path is not None:
        path, part = path
        parts.append(part)
    where = ""
    for part in reversed(parts):
        where = f"{where}[{part[0]}]" if isinstance(part, list) else field_path(where, part)
    return where or "top level"


def check_values(data: Any, source: str) -> None:
    """Refuse, naming the field, any NUL, lone surrogate or out-of-range integer in ``data``.

    Iterative, and each container is visited once however often it is referenced.
    """
    seen: set[int] = set()
    stack: list[tuple[Any, _Path]] = [(data, None)]
    while stack:
        value, path = stack.pop()
        kind = type(value)
        if kind is str or isinstance(value, str):
            bad = NUL_OR_SURROGATE.search(value)
            if bad is not None:
                raise ConfigError(f"{source}: {_path_text(path)}: {describe_value(value, 40)} "
                                  f"{describe_char(value, bad.start())}")
        elif kind is int or kind is IntOutOfRange or (isinstance(value, int) and kind is not bool):
            if kind is IntOutOfRange or abs(value) > MAX_INT:
                line = f" (line {value.line})" if kind is IntOutOfRange and value.line else ""
                raise ConfigError(f"{source}: {_path_text(path)}: {describe_value(value)} is out of "
                                  f"range{line}: integers here are at most 10**18 in magnitude")
        elif kind is dict or isinstance(value, Mapping):
            if id(value) in seen:
                continue
            seen.add(id(value))
            for key, item in reversed(list(value.items())):
                bad = NUL_OR_SURROGATE.search(key) if isinstance(key, str) else None
                if bad is not None:
                    raise ConfigError(f"{source}: {_path_text(path)}: the key {describe_value(key, 40)} "
                                      f"{describe_char(key, bad.start())}")
                child = (path, key)
                stack.append((item, child))
                stack.append((key, child))
        elif kind is list or isinstance(value, (list, tuple, set, frozenset)):
            if id(value) in seen:
                continue
            seen.add(id(value))
            stack.extend((item, (path, [i])) for i, item in reversed(list(enumerate(value))))


# --------------------------------------------------------------------------- typed accessors

class _Checker:
    """Small typed accessors whose errors name the file and the field path."""

    def __init__(self, source: str) -> None:
        self.source = source

    def document(self, data: Any, what: str, allowed: set[str], required: tuple[str, ...], *,
                 values_checked: bool = False) -> Mapping[str, Any]:
        """The top level of a topology or profile: a mapping of known fields with the required ones.
        ``values_checked``: ``data`` is :func:`read_document`'s, whose values were checked already."""
        if data is None:
            raise ConfigError(f"{self.source}: the {what} file is empty")
        if not values_checked:
            check_values(data, self.source)
        top = self.mapping(data, "top level")
        self.known(top, allowed, "top level")
        for field in required:
            if field not in top:
                raise self.fail("top level", f"missing required field {field!r}")
        return top

    def fail(self, where: str, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: {where}: {message}")

    def mapping(self, value: Any, where: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(where, f"expected a mapping, got {_kind(value)}")
        for key in value:
            if not isinstance(key, str):
                raise self.fail(where, f"keys must be strings, got {describe_value(key)}")
        return value

    def known(self, value: Mapping[str, Any], allowed: set[str], where: str) -> None:
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise self.fail(where, f"unknown field {describe_value(unknown[0])} "
                                   f"(allowed: {', '.join(sorted(allowed))})")

    def text(self, value: str, where: str, *, identifier: bool = True) -> str:
        """``check_text`` with this file's name in the message."""
        return check_text(value, f"{self.source}: {where}", identifier=identifier)

    def string(self, value: Any, where: str, *, pattern: re.Pattern[str] | None = None,
               hint: str = "", text: bool = False) -> str:
        """A non-empty string; an identifier (no control characters) unless ``text``."""
        if not isinstance(value, str) or not value:
            raise self.fail(where, f"expected a non-empty string, got {_kind(value)}")
        self.text(value, where, identifier=not text)
        if pattern is not None and not pattern.fullmatch(value):
            raise self.fail(where, f"invalid value {describe_value(value)}{(': ' + hint) if hint else ''}")
        return value

    def integer(self, value: Any, where: str, lo: int, hi: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(where, f"expected an integer {lo}-{hi}, got {_kind(value)}")
        if not lo <= value <= hi:
            raise self.fail(where, f"expected an integer {lo}-{hi}, got {describe_value(value)}")
        return value

    def number(self, value: Any, where: str, lo: float, hi: float) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(where, f"expected a number, got {_kind(value)}")
        if not lo <= value <= hi:
            raise self.fail(where, f"expected a number between {lo:g} and {hi:g}, got {describe_value(value)}")
        return float(value)

    def choice(self, value: Any, where: str, choices: tuple[str, ...]) -> str:
        if not isinstance(value, str) or value not in choices:
            raise self.fail(where, f"expected one of {', '.join(choices)}, got {describe_value(value)}")
        return value

    def string_list(self, value: Any, where: str) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.fail(where, f"expected a list of strings, got {_kind(value)}")
        for i, item in enumerate(value):
            self.text(item, f"{where}[{i}]")
        return tuple(value)

    def vars(self, value: Any, where: str) -> Mapping[str, Any]:
        """Template variables: a scalar, a flat list of scalars, or ``{env: NAME}``."""
        data = self.mapping(value, where)
        for key, item in data.items():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                raise self.fail(field_path(where, key), "variable names must be identifiers (letters, digits, _)")
            self._var_value(item, f"{where}.{key}")
        return frozen_map(data)

    def _var_value(self, item: Any, where: str) -> None:
        if isinstance(item, Mapping):
            if set(item) != {"env"} or not isinstance(item["env"], str) or not item["env"]:
                raise self.fail(where, "a variable is a string, number, boolean, a list of those, "
                                       "or {env: NAME} (from the control machine's environment)")
            self.text(item["env"], f"{where}.env")
            if "=" in item["env"]:
                raise self.fail(f"{where}.env", f"invalid environment variable name {describe_value(item['env'])}")
            return
        items = item if isinstance(item, list) else [item]
        for i, scalar in enumerate(items):
            at = f"{where}[{i}]" if isinstance(item, list) else where
            if scalar is not None and not isinstance(scalar, (str, int, float, bool)):
                raise self.fail(where, f"a variable is a string, number, boolean or a list of those, "
                                       f"got {_kind(scalar)}")
            if isinstance(scalar, str):
                self.text(scalar, at, identifier=False)

    def field(self, where: str, key: str) -> str:
        """How this file names field ``key`` of ``where`` in a message: ``where.key``."""
        return f"{where}.{key}" if where else key

    def optional(self, data: Mapping[str, Any], key: str, where: str,
                 parse: Callable[[Any, str], Any], default: Any) -> Any:
        if key not in data or data[key] is None:
            return default
        return parse(data[key], self.field(where, key))
