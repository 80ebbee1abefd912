"""``--limit PATTERN``: which nodes a run covers, with Ansible's host-pattern rules.

A pattern is a list of terms separated by commas (or, without commas, by colons, as
Ansible still accepts).  Each term is a node name, a group name, a glob (``web*``,
``gw-?``, ``db[0-3]``) or a regex (``~gw-(eu|us)-\\d+``, matched from the start), with an
optional subscript on a group (``gateways[0]``, ``gateways[1:3]``, ``gateways[-1]``).
``all`` and ``*`` are every node.  Terms apply in Ansible's order whatever the order
written: first the plain terms (union), then the ``&term`` ones (intersection), then the
``!term`` ones (exclusion); with only ``&``/``!`` terms the start is ``all``.  A term that
matches a group name selects that group's nodes; a term that matches no group, or that is
a glob or regex, also selects the nodes whose names match it.

``@FILE`` (a retry file, say) reads FILE's lines as more terms, as Ansible does: each line is
one term (not split on commas or colons), blank lines skipped; errors name the file and line.

Stricter than Ansible on purpose: a term that matches nothing (a typo in a comma list) is
a :class:`~zdu.errors.ConfigError`, and so is a pattern that selects no node, naming the
term; Ansible only warns.

A node's groups are its ``group`` and its ``roles``, plus ``all`` (and ``ungrouped`` when
it has neither); an inventory can pass its exact group map instead
(:attr:`zdu.config.inventory.Inventory.groups`).
"""
from __future__ import annotations

import fnmatch
import ipaddress
import os
import re
from typing import Any, Iterable, Mapping, Protocol, Sequence

from zdu.config.values import bounded_int, describe_value
from zdu.errors import ConfigError

# used with fullmatch ("$" would also match before a final newline); digits are ASCII ("\d" is not)
_SUBSCRIPT = re.compile(r"(.+)\[(?:(-?[0-9]+)|([0-9]+)([:-])([0-9]*))\]", re.S)
_HOST_PORT = re.compile(r"[\w.-]+:[0-9]+")
#: the largest subscript taken (no group has more hosts than an inventory can hold)
MAX_SUBSCRIPT = 10**9
_RANGE = re.compile(r"\[[^\]]*:[^\]]*\]")
#: the largest ``@FILE`` read (a retry file of 100,000 host names is ~2 MB)
MAX_LIMIT_FILE_BYTES = 4 * 1024 * 1024


class NodeLike(Protocol):
    """What :func:`select` needs of a node (:class:`zdu.model.Node` has it)."""

    @property
    def name(self) -> str: ...
    @property
    def group(self) -> str: ...
    @property
    def roles(self) -> tuple[str, ...] | Sequence[str]: ...


def split_pattern(pattern: str) -> list[str]:
    """The terms of ``pattern``: split on commas, else on colons (not inside ``[...]``,
    not in an IPv6 address, a ``host:port`` or a ``[x:y]`` range), blanks dropped."""
    if "," in pattern:
        terms = pattern.split(",")
    elif _single(pattern.strip()):
        terms = [pattern]
    else:
        terms = re.findall(r"(?:[^\s:\[\]]|\[[^\]]*\])+", pattern)
    return [t.strip() for t in terms if t.strip()]


def _single(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]").split("]:")[0])
        return True
    except ValueError:
        pass
    return bool(_HOST_PORT.fullmatch(text)) or bool(_RANGE.search(text)) and ":" not in _RANGE.sub("", text)


def groups_of(nodes: Sequence[NodeLike]) -> dict[str, list[str]]:
    """``group -> node names`` (topology order) from each node's group and roles."""
    groups: dict[str, list[str]] = {"all": [], "ungrouped": []}
    for node in nodes:
        groups["all"].append(node.name)
        mine = [g for g in (node.group, *node.roles) if g]
        if not mine:
            groups["ungrouped"].append(node.name)
        for g in dict.fromkeys(mine):
            groups.setdefault(g, []).append(node.name)
    return groups


def select(pattern: str, nodes: Sequence[NodeLike],
           groups: Mapping[str, Sequence[str]] | None = None, *, where: str = "--limit"
           ) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(selected, skipped)`` node names, both in topology order.

    ``groups`` maps group names to their node names (in the order subscripts count);
    by default :func:`groups_of`.  Raises ConfigError naming ``where`` and the term.
    """
    if not isinstance(pattern, str) or not pattern.strip():
        raise ConfigError(f"{where}: expected a pattern (node or group names, globs, "
                          "~regex, !exclude, &intersect, comma-separated)")
    names = [n.name for n in nodes]
    known = set(names)
    group_map = {g: [h for h in members if h in known]
                 for g, members in (groups if groups is not None else groups_of(nodes)).items()}
    group_map.setdefault("all", list(names))
    terms: list[tuple[str, str]] = []                       # (term, where it was written)
    for term in split_pattern(pattern):
        terms += _limit_file(term[1:], where) if term[0] == "@" else [(term, where)]
    if not terms:
        raise ConfigError(f"{where}: {pattern!r} holds no pattern")
    ordered = ([t for t in terms if t[0][0] not in "!&"] or [("all", where)]) + \
        [t for t in terms if t[0][0] == "&"] + [t for t in terms if t[0][0] == "!"]
    chosen: dict[str, None] = {}                            # ordered, O(1) membership
    for term, at in ordered:
        if term in known:
            matched = [term]
        else:
            matched = _match(term.lstrip("!&") if term[0] in "!&" else term, names,
                             group_map, at)
        if not matched:
            raise ConfigError(f"{at}: {term!r} matches no node or group "
                              f"({_known(names, group_map)})")
        if term[0] == "!":
            drop = set(matched)
            chosen = {n: None for n in chosen if n not in drop}
        elif term[0] == "&":
            keep = set(matched)
            chosen = {n: None for n in chosen if n in keep}
        else:
            chosen.update(dict.fromkeys(matched))
    if not chosen:
        raise ConfigError(f"{where}: {pattern!r} selects no node")
    picked = set(chosen)
    return (tuple(n for n in names if n in picked), tuple(n for n in names if n not in picked))


def _match(term: str, names: list[str], groups: Mapping[str, Sequence[str]], where: str
           ) -> list[str]:
    if not term:
        raise ConfigError(f"{where}: an empty term after '!' or '&'")
    if term.startswith("@"):
        raise ConfigError(f"{where}: {term!r}: a limit file (@FILE) cannot be negated or "
                          "intersected (put the '!' or '&' on the lines in it)")
    expr, subscript = (term, None) if term.startswith("~") else _split_subscript(term, where)
    try:
        regex = re.compile(expr[1:]) if expr.startswith("~") else \
            re.compile(fnmatch.translate(expr))
    except re.error as exc:
        raise ConfigError(f"{where}: {term!r} is not a valid regex: {exc}") from None
    # a dict: ordered and O(1) membership ("h not in a list" made 'w*' over 100,000 hosts 98 s)
    found: dict[str, None] = {}
    matching_groups = [g for g in groups if regex.match(g)]
    for g in matching_groups:
        found.update(dict.fromkeys(groups[g]))
    if not matching_groups or expr.startswith("~") or any(c in expr for c in ".?*["):
        found.update((h, None) for h in names if h not in found and regex.match(h))
    results = list(found)
    if subscript is None or not results:
        return results
    start, end = subscript
    try:
        if not end:                     # [n], or Ansible's [n:0]
            return [results[start]]
        stop = len(results) - 1 if end == -1 else end
        if start >= len(results):
            raise IndexError(start)
        return results[start:stop + 1]
    except IndexError:
        raise ConfigError(f"{where}: {term!r}: the subscript is out of range "
                          f"({len(results)} nodes match {expr!r})") from None


def _limit_file(name: str, where: str) -> list[tuple[str, str]]:
    """The terms of ``--limit @FILE``: its lines, stripped, blank ones skipped."""
    if not name:
        raise ConfigError(f"{where}: '@' without a file name")
    shown = describe_value(name, 200)[1:-1] if len(name) > 200 else name
    if os.path.exists(name) and not os.path.isfile(name):   # before open(): a FIFO would block it
        raise ConfigError(f"{where}: @{shown}: not a file")
    try:
        with open(name, "rb") as handle:
            data = handle.read(MAX_LIMIT_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{where}: @{shown}: limit file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{where}: @{shown}: not a file") from None
    except OSError as exc:
        raise ConfigError(f"{where}: @{shown}: cannot read the limit file: {exc.strerror}") from None
    if len(data) > MAX_LIMIT_FILE_BYTES:
        raise ConfigError(f"{where}: @{shown}: the limit file is larger than "
                          f"{MAX_LIMIT_FILE_BYTES // (1024 * 1024)} MB")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where}: @{shown}: the limit file is not valid UTF-8 (byte {exc.start})") from None
    out: list[tuple[str, str]] = []
    for number, line in enumerate(text.split("\n"), 1):
        term = line.strip()
        if not term:
            continue
        if term[0] == "@" or any(c in term for c in "\x00\r"):
            raise ConfigError(f"{where}: @{shown} line {number}: {describe_value(term, 60)} is not a host "
                              "pattern")
        out.append((term, f"{where}: @{shown} line {number}"))
    return out


def _split_subscript(term: str, where: str) -> tuple[str, tuple[int, int | None] | None]:
    match = _SUBSCRIPT.fullmatch(term)
    if not match:
        return term, None
    expr, index, start, _, end = match.groups()
    numbers = [bounded_int(text, -MAX_SUBSCRIPT, MAX_SUBSCRIPT) for text in (index, start, end) if text]
    if None in numbers:
        raise ConfigError(f"{where}: {describe_value(term)}: the subscript is out of range "
                          f"(at most {MAX_SUBSCRIPT:,})")
    if index:
        return expr, (numbers[0], None)
    return expr, (numbers[0], numbers[1] if end else -1)


def _known(names: Iterable[str], groups: Mapping[str, Any], most: int = 12) -> str:
    items = list(names)
    group_names = [g for g in groups if g not in ("all", "ungrouped")]
    text = "nodes: " + ", ".join(items[:most]) + (", ..." if len(items) > most else "")
    if group_names:
        text += "; groups: " + ", ".join(group_names[:most]) + (", ..." if len(group_names) > most else "")
    return text
