"""Pure statistics of the traffic probe: percentiles, windows, report, versions."""
from __future__ import annotations

import json

import pytest

from zdu.run.traffic import Sample, Window, body_version, percentile, summarize, window_stats


@pytest.mark.parametrize("values, q, expected", [
    ([], 50, None),
    ([7.0], 0, 7.0),
    ([7.0], 99, 7.0),
    ([1.0, 2.0], 50, 1.5),
    ([3.0, 1.0, 2.0], 50, 2.0),                 # unsorted input
    ([1.0, 2.0, 3.0, 4.0], 0, 1.0),
    ([1.0, 2.0, 3.0, 4.0], 100, 4.0),
    ([1.0, 2.0, 3.0, 4.0], 25, 1.75),           # (n-1)*q = 0.75 -> 1 + 0.75
    (list(range(1, 101)), 99, 99.01),
    (list(range(1, 101)), 50, 50.5),
])
def test_percentile_linear_interpolation(values: list[float], q: float,
                                         expected: float | None) -> None:
    result = percentile(values, q)
    assert result == (None if expected is None else pytest.approx(expected))


def test_percentile_rejects_out_of_range() -> None:
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_percentile_of_one_slow_request_in_a_hundred() -> None:
    values = [0.001] * 99 + [2.0]
    assert percentile(values, 50) == pytest.approx(0.001)
    assert percentile(values, 99) == pytest.approx(0.001 + (2.0 - 0.001) * 0.01)
    assert percentile(values, 100) == 2.0


def ok(planned: float, latency: float = 0.002, version: str | None = "1.0") -> Sample:
    return Sample(planned, planned, latency, "ok", 200, version)


def test_summarize_counts_every_outcome_and_version() -> None:
    samples = [ok(i / 100) for i in range(96)] + [
        Sample(0.96, 0.96, 0.001, "connect", error="ConnectionRefusedError"),
        Sample(0.97, 0.97, 2.0, "timeout", error="timed out"),
        Sample(0.98, 0.98, 0.003, "http-5xx", 503),
        Sample(0.99, None, 2.1, "timeout", error="waited longer than the timeout"),
    ]
    samples[10] = ok(0.10, version="2.0")
    report = summarize(samples, url="http://127.0.0.1/", target_rate=100.0, duration=1.0)

    assert report.sent == 100
    assert report.failed == 4
    assert dict(report.by_outcome) == {"ok": 96, "connect": 1, "timeout": 2, "http-5xx": 1,
                                       "other": 0}
    assert dict(report.versions) == {"1.0": 95, "2.0": 1}
    assert report.achieved_rate == 100.0
    assert report.late == 1                                # the one never sent
    assert report.p50_ms == pytest.approx(2.0)
    assert report.max_ms == pytest.approx(2100.0)
    assert len(report.first_failures) == 4
    assert report.summary_line() == ("traffic: 100 sent, 4 failed, p50 2.0 ms, p99 2001.0 ms, "
                                     "100.0 req/s (connect 1, timeout 2, http-5xx 1)")


def test_summary_line_of_a_clean_run() -> None:
    report = summarize([ok(i / 200, 0.0021) for i in range(400)], url="u", target_rate=200,
                       duration=2.0)
    assert report.summary_line() == "traffic: 400 sent, 0 failed, p50 2.1 ms, p99 2.1 ms, 200.0 req/s"


def test_empty_report() -> None:
    report = summarize([], url="u", target_rate=200, duration=0.0)
    assert (report.sent, report.failed, report.p50_ms, report.achieved_rate) == (0, 0, None, 0.0)
    assert report.summary_line() == "traffic: 0 sent, 0 failed, p50 -, p99 -, 0.0 req/s"


def test_windows_take_the_samples_planned_inside() -> None:
    samples = [ok(t / 10, latency=0.001) for t in range(30)]               # 0.0 .. 2.9 s
    samples[15] = Sample(1.5, 1.5, 0.5, "http-5xx", 502)
    closed = window_stats(samples, Window("Node-A", 1.0, 2.0), now=3.0)
    assert (closed.sent, closed.failed, closed.by_outcome["http-5xx"]) == (11, 1, 1)
    assert closed.max_ms == pytest.approx(500.0)
    still_open = window_stats(samples, Window("Node-B", 2.5), now=2.75)
    assert still_open.sent == 3 and still_open.end is None                 # 2.5, 2.6, 2.7


def test_to_dict_is_json_ready() -> None:
    report = summarize([ok(0.0), ok(0.5, version="2.0")], url="u", target_rate=2, duration=1.0,
                       windows=[Window("Node-A", 0.0, 0.6)], marks=[("disabled", 0.2)])
    data = json.loads(json.dumps(report.to_dict()))
    assert data["sent"] == 2 and data["versions"] == {"1.0": 1, "2.0": 1}
    assert data["windows"][0]["label"] == "Node-A" and data["windows"][0]["sent"] == 2
    assert data["marks"] == [{"label": "disabled", "at": 0.2}]


@pytest.mark.parametrize("body, version", [
    (b'{"version": "7.7.0"}', "7.7.0"),
    (b' {"version": 2}', "2"),
    (b'{"name": "gw"}', None),
    (b'{"version": {"major": 7}}', None),
    (b'["version"]', None),
    (b"<html>version</html>", None),
    (b"{not json", None),
    (b"", None),
])
def test_body_version(body: bytes, version: str | None) -> None:
    assert body_version(body) == version
