"""``serial``: one parser for the topology and --serial, ansible's wave rules, and pauses."""
from __future__ import annotations

import copy
import math
import pickle
import re
from pathlib import Path

import pytest

from zdu.config.topology import load_topology
from zdu.errors import ConfigError
from zdu.planning.serial import PAUSE, Percent, Serial, parse_serial

NAMES = [f"n{i}" for i in range(1, 11)]


def old_compute_waves(names: list[str], serial: object) -> tuple[tuple[str, ...], ...]:
    """The rules as plan.compute_waves applied them before the one parser (reference)."""
    specs = list(serial) if isinstance(serial, (list, tuple)) else [serial]
    waves, pos, i = [], 0, 0
    while pos < len(names):
        spec = specs[min(i, len(specs) - 1)]
        if isinstance(spec, int):
            size = spec
        else:
            match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*%\s*", str(spec))
            assert match
            size = max(1, math.floor(len(names) * float(match.group(1)) / 100))
        waves.append(tuple(names[pos:pos + size]))
        pos += size
        i += 1
    return tuple(waves)


SPECS: list[object] = [1, 2, 3, 7, 100, "30%", "50%", "12.5%", "100%", "1%", "99.9%", [1, "50%"], [1, 2, 3],
                       [2, "25%", 1], ["10%", "90%"], [1, 1, 1, 1, "100%"], " 40 % "]


@pytest.mark.parametrize("spec", SPECS, ids=[str(s) for s in SPECS])
@pytest.mark.parametrize("count", [0, 1, 2, 3, 5, 10])
def test_waves_are_those_of_the_old_rules(spec: object, count: int) -> None:
    names = NAMES[:count]
    serial = parse_serial(spec, "serial")
    assert serial.waves(names) == old_compute_waves(names, spec)
    # and the old planner still accepts a Serial as it is (until it calls Serial.waves itself)
    assert old_compute_waves(names, serial) == serial.waves(names)


def test_plan_case_waves() -> None:
    """tests/unit/data/plan/waves: serial [1, "50%"] over five nodes."""
    assert parse_serial([1, "50%"], "serial").waves(NAMES[:5]) == (("n1",), ("n2", "n3"), ("n4", "n5"))


@pytest.mark.parametrize("value,entries", [
    (2, (2,)),
    ("30%", (Percent("30"),)),
    ("7", (7,)),
    ([1, "50%"], (1, Percent("50"))),
    ("1,50%", (1, Percent("50"))),
    (" 1 , 2 ,12.5%", (1, 2, Percent("12.5"))),
    ("1,pause,25%,100%", (1, PAUSE, Percent("25"), Percent("100"))),
    ([1, "PAUSE", 2], (1, PAUSE, 2)),
])
def test_parse_forms(value: object, entries: tuple[object, ...]) -> None:
    serial = parse_serial(value, "--serial")
    assert tuple(serial) == entries and isinstance(serial, Serial)


def test_cli_string_and_yaml_list_are_the_same() -> None:
    assert parse_serial("1,pause,25%,100%", "--serial") == parse_serial([1, "pause", "25%", "100%"], "serial")
    serial = parse_serial([1, "pause", "12.5%", 3], "serial")
    assert str(serial) == "1,pause,12.5%,3" and parse_serial(str(serial), "--serial") == serial
    assert repr(serial) == "Serial('1,pause,12.5%,3')"


def test_pause_after_the_wave_of_the_entry_before_it() -> None:
    serial = parse_serial("1,pause,25%,100%", "--serial")
    eight = NAMES[:8]
    assert serial.waves(eight) == (("n1",), ("n2", "n3"), ("n4", "n5", "n6", "n7", "n8"))
    assert serial.pauses(eight) == frozenset({0})
    serial = parse_serial([1, "pause", 2, "pause", 3], "serial")
    assert serial.waves(NAMES) == (("n1",), ("n2", "n3"), ("n4", "n5", "n6"), ("n7", "n8", "n9"), ("n10",))
    assert serial.pauses(NAMES) == frozenset({0, 1})


def test_no_pause_after_the_last_wave() -> None:
    serial = parse_serial([1, "pause", 1, "pause", 5], "serial")
    assert serial.pauses(NAMES[:3]) == frozenset({0, 1})
    assert serial.pauses(NAMES[:2]) == frozenset({0})      # wave 1 is the last: nothing to wait for
    assert serial.pauses(NAMES[:1]) == frozenset()
    assert serial.pauses([]) == frozenset() and serial.waves([]) == ()
    assert parse_serial(3, "serial").pauses(NAMES) == frozenset()


@pytest.mark.parametrize("value,message", [
    (0, "serial: a count must be 1-100000, got 0"),
    (100_001, "serial: a count must be 1-100000, got 100001"),
    ("99999999", "serial: a count must be 1-100000, got '99999999'"),
    ("0%", "serial: a percentage must be above 0 and at most 100, got '0%'"),
    ("150%", "serial: a percentage must be above 0 and at most 100, got '150%'"),
    ("-5%", "serial: expected a count, a percentage like '30%' or 'pause', got a string ('-5%')"),
    ("lots", "serial: expected a count, a percentage like '30%' or 'pause', got a string ('lots')"),
    ("٣", "serial: expected a count, a percentage like '30%' or 'pause', got a string ('٣')"),
    (True, "serial: expected a count, a percentage like '30%' or 'pause', got a boolean (True)"),
    (1.5, "serial: expected a count, a percentage like '30%' or 'pause', got a number (1.5)"),
    (None, "serial: expected a count, a percentage like '30%' or 'pause', got nothing (null)"),
    ({"a": 1}, "serial: expected a count, a percentage like '30%' or 'pause', got a mapping"),
    ([], "serial: expected a count, a percentage like '30%' or a non-empty list of those"),
    ([1, "lots"], "serial[1]: expected a count, a percentage like '30%' or 'pause', got a string ('lots')"),
    ([1, [2]], "serial[1]: expected a count, a percentage like '30%' or 'pause', got a list"),
    ("pause", "serial: a pause comes after a wave size ('1,pause,50%'), not first"),
    ("pause,1", "serial[0]: a pause comes after a wave size ('1,pause,50%'), not first"),
    ("1,pause", "serial[1]: a pause cannot be last: the last size repeats until every node is placed"),
    ([1, "pause", "pause", 2], "serial[2]: two pauses in a row"),
    ("1,,2", "serial[1]: empty entry"),
    ("1,", "serial[1]: empty entry"),
    ("1,2\x00", "serial[1]: '2\\x00' contains a NUL byte"),
    ("x" * 1000, "serial: expected a count, a percentage like '30%' or 'pause', got a string ('xxxx"),
])
def test_bad_serial(value: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_serial(value, "serial")
    assert str(info.value).startswith(message), str(info.value)
    assert len(str(info.value)) < 300


def test_serial_is_immutable_typed_and_checked() -> None:
    serial = Serial((1, PAUSE, Percent("50")))
    assert serial.sizes == (1, Percent("50")) and Percent("50").value == 50.0 and Percent("50").size(5) == 2
    assert Percent("50") == "50%" and str(PAUSE) == "pause" and repr(PAUSE) == "PAUSE"
    assert hash(serial) == hash(Serial((1, PAUSE, Percent("50"))))
    with pytest.raises(TypeError):
        serial[0] = 2  # type: ignore[index]
    assert Serial() == Serial((1,))
    for bad in ((), (PAUSE, 1), (1, PAUSE), (1, PAUSE, PAUSE, 2), ("50%",), (0,), (True,)):
        with pytest.raises(ValueError):
            Serial(bad)  # type: ignore[arg-type]
    for clone in (copy.deepcopy(serial), pickle.loads(pickle.dumps(serial))):
        assert clone == serial and clone[1] is PAUSE and isinstance(clone[2], Percent)


def test_topology_serial(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("serial: [1, pause, '50%']\nnodes:\n" + "".join(
        f"  - {{name: n{i}, host: 10.0.0.{i}}}\n" for i in range(1, 6)))
    topo = load_topology(path)
    assert topo.serial == Serial((1, PAUSE, Percent("50")))
    names = [n.name for n in topo.nodes]
    assert topo.serial.waves(names) == (("n1",), ("n2", "n3"), ("n4", "n5")) and topo.serial.pauses(names) == {0}
    path.write_text("nodes:\n  - {name: a, host: 10.0.0.1}\n")
    assert load_topology(path).serial == Serial((1,))
    path.write_text("serial: [1, pause]\nnodes:\n  - {name: a, host: 10.0.0.1}\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}: serial[1]: a pause cannot be last")):
        load_topology(path)
