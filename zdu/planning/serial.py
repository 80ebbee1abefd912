"""``serial``: how many nodes each wave of the online phases takes, ansible-style, and where to pause.

One parser for the topology's ``serial:`` (an int, a string or a list) and for ``--serial``
(``"1,50%"``)::

    serial: 2                      # waves of 2 nodes
    serial: "30%"                  # 30% of the nodes, rounded down, at least 1
    serial: [1, 5, "50%"]          # 1 node, then 5, then half the fleet per wave (the last repeats)
    serial: [1, pause, "25%", "100%"]   # 1 node, pause for the operator, then 25%, then the rest

``pause`` stops after the wave made by the entry before it; it goes between two sizes (not
first, not last, not twice in a row).  ``Serial`` is an immutable tuple of its entries: ``int``
counts, ``Percent`` (``"30%"``) and the ``PAUSE`` marker (``"pause"``).
"""
from __future__ import annotations

import math
import re
from typing import Any, Iterable, Sequence, Union

from zdu.config.values import check_text, describe_value, kind_of as _kind
from zdu.errors import ConfigError

MAX_COUNT = 100_000

_PERCENT = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*%")
_COUNT = re.compile(r"[0-9]+")


class Percent(str):
    """A wave size as a share of the fleet, written ``"30%"``: ``total * 30 / 100`` rounded down,
    at least 1.  A ``str`` (its text is what was written) so that a Serial is also the list of
    strings and counts that older callers expect."""

    __slots__ = ()

    def __new__(cls, number: str) -> "Percent":
        return super().__new__(cls, f"{number}%")

    @property
    def value(self) -> float:
        """The percentage as a number (30.0 for "30%")."""
        return float(self[:-1])

    def size(self, total: int) -> int:
        """Nodes per wave for a fleet of ``total``."""
        return max(1, math.floor(total * self.value / 100))

    def __getnewargs__(self) -> tuple[str]:  # type: ignore[override]
        return (self[:-1],)

    def __repr__(self) -> str:
        return f"Percent({self[:-1]!r})"


class _Pause(str):
    """The ``pause`` entry (one instance, ``PAUSE``): stop for the operator after the wave before it."""

    __slots__ = ()
    _instance: "_Pause | None" = None

    def __new__(cls) -> "_Pause":
        if cls._instance is None:
            cls._instance = super().__new__(cls, "pause")
        return cls._instance

    def __repr__(self) -> str:
        return "PAUSE"

    def __reduce__(self) -> str:
        return "PAUSE"


PAUSE = _Pause()

Entry = Union[int, Percent, _Pause]


class Serial(tuple[Entry, ...]):
    """The entries of a ``serial`` setting, checked (use ``parse_serial`` for user input)."""

    __slots__ = ()

    def __new__(cls, entries: Iterable[Entry] = (1,)) -> "Serial":
        items = tuple(entries)
        for entry in items:
            if entry is not PAUSE and (isinstance(entry, bool) or not isinstance(entry, (int, Percent))
                                       or isinstance(entry, int) and not 1 <= entry <= MAX_COUNT):
                raise ValueError(f"not a serial entry: {describe_value(entry)}")
        problem = _misplaced_pause(items)
        if problem is not None:
            raise ValueError(f"entry {problem[0]}: {problem[1]}")
        return super().__new__(cls, items)

    @property
    def sizes(self) -> tuple[int | Percent, ...]:
        """The wave sizes, pauses left out; the last one repeats."""
        return tuple(e for e in self if not isinstance(e, _Pause))

    def waves(self, names: Sequence[str]) -> tuple[tuple[str, ...], ...]:
        """``names`` cut into waves, in order: entry i makes wave i; the last size repeats."""
        sizes = self.sizes
        total = len(names)
        waves: list[tuple[str, ...]] = []
        pos = 0
        while pos < total:
            spec = sizes[min(len(waves), len(sizes) - 1)]
            size = spec if isinstance(spec, int) else spec.size(total)
            waves.append(tuple(names[pos:pos + size]))
            pos += size
        return tuple(waves)

    def pauses(self, names: Sequence[str], *, last: bool = True) -> frozenset[int]:
        """Indices of the waves after which the run pauses.  Never after the run's last wave;
        ``last=False`` says more waves follow these (a later tier's): then a pause after their
        last one is kept -- it comes before the next tier."""
        count = len(self.waves(names))
        result: set[int] = set()
        wave = -1
        for entry in self:
            if entry is PAUSE:
                if 0 <= wave < (count - 1 if last else count):
                    result.add(wave)
            else:
                wave += 1
        return frozenset(result)

    def __str__(self) -> str:
        return ",".join(str(e) for e in self)

    def __repr__(self) -> str:
        return f"Serial({str(self)!r})"


def parse_serial(value: Any, where: str) -> Serial:
    """A ``serial`` from the topology (int, string or list) or from ``--serial`` ("1,pause,50%").

    ``where`` names the setting in errors ("topology.yaml: serial", "--serial"); an entry of a
    list is named ``where[i]``.  Raises ConfigError.
    """
    if isinstance(value, str) and "," in value:
        items: list[Any] = value.split(",")
        listed = True
    elif isinstance(value, (list, tuple)):
        items, listed = list(value), True
    else:
        items, listed = [value], False
    if not items:
        raise ConfigError(f"{where}: expected a count, a percentage like '30%' or a non-empty list of those")
    entries = [_entry(item, f"{where}[{i}]" if listed else where) for i, item in enumerate(items)]
    problem = _misplaced_pause(entries)
    if problem is not None:
        index, message = problem
        raise ConfigError(f"{where}[{index}]: {message}" if listed else f"{where}: {message}")
    return Serial(entries)


def _misplaced_pause(entries: Sequence[Entry]) -> tuple[int, str] | None:
    """(index, what is wrong) for the first pause out of place; None if the entries are fine."""
    for i, entry in enumerate(entries):
        if entry is not PAUSE:
            continue
        if i == 0:
            return (i, "a pause comes after a wave size ('1,pause,50%'), not first")
        if entries[i - 1] is PAUSE:
            return (i, "two pauses in a row")
        if i == len(entries) - 1:
            return (i, "a pause cannot be last: the last size repeats until every node is placed; "
                       "put the pause between two sizes")
    if not entries:
        return (0, "expected a count, a percentage like '30%' or a non-empty list of those")
    return None


def _entry(item: Any, where: str) -> Entry:
    if isinstance(item, bool) or not isinstance(item, (int, str)):
        raise ConfigError(f"{where}: expected a count, a percentage like '30%' or 'pause', "
                          f"got {_kind(item)}")
    if isinstance(item, int):
        if not 1 <= item <= MAX_COUNT:
            raise ConfigError(f"{where}: a count must be 1-{MAX_COUNT}, got {describe_value(item)}")
        return item
    text = check_text(item, where, identifier=False).strip()
    if text.lower() == "pause":
        return PAUSE
    percent = _PERCENT.fullmatch(text)
    if percent:
        if not 0 < float(percent.group(1)) <= 100:
            raise ConfigError(f"{where}: a percentage must be above 0 and at most 100, got {describe_value(item)}")
        return Percent(percent.group(1))
    if _COUNT.fullmatch(text):
        if len(text) > len(str(MAX_COUNT)):
            raise ConfigError(f"{where}: a count must be 1-{MAX_COUNT}, got {describe_value(item)}")
        return _entry(int(text), where)
    if not text:
        raise ConfigError(f"{where}: empty entry")
    raise ConfigError(f"{where}: expected a count, a percentage like '30%' or 'pause', got {_kind(item)}")

