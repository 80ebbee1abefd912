"""The traffic probe's per-second series (what the HTML report draws the traffic curve from)."""
from __future__ import annotations

import json

import pytest

from zdu.run.traffic import MAX_SERIES_POINTS, Sample, series_interval, summarize, time_series


def ok(planned: float, latency: float = 0.002) -> Sample:
    return Sample(planned, planned, latency, "ok", 200, "1.0")


def test_series_counts_each_second_by_planned_time() -> None:
    samples = [ok(i / 10) for i in range(10)] + [ok(1.0 + i / 5, 0.010) for i in range(5)]
    samples.append(Sample(2.5, None, 2.0, "timeout", error="expired"))
    points = time_series(samples, duration=3.0)
    assert [(p.t, p.sent, p.failed) for p in points] == [(0.0, 10, 0), (1.0, 5, 0), (2.0, 1, 1)]
    assert points[0].p99_ms == pytest.approx(2.0)
    assert points[1].p50_ms == pytest.approx(10.0)
    assert points[2].p99_ms == pytest.approx(2000.0)


def test_a_second_without_traffic_is_a_point_with_nothing_sent() -> None:
    points = time_series([ok(0.5), ok(2.5)], duration=3.0)
    assert [(p.sent, p.p99_ms) for p in points] == [(1, 2.0), (0, None), (1, 2.0)]


def test_long_runs_get_wider_intervals_and_at_most_max_points() -> None:
    assert series_interval(10) == 1.0
    assert series_interval(8 * 3600) == 8.0
    duration = 3 * MAX_SERIES_POINTS + 1
    samples = [ok(float(t)) for t in range(0, duration, 7)]
    report = summarize(samples, url="http://127.0.0.1/", target_rate=1.0, duration=duration)
    assert report.series_interval == 4.0
    assert len(report.series) <= MAX_SERIES_POINTS
    assert sum(p.sent for p in report.series) == len(samples)


def test_the_report_dict_carries_the_series_as_json() -> None:
    report = summarize([ok(0.1), Sample(0.2, 0.2, 0.001, "http-5xx", 503)], url="http://127.0.0.1/",
                       target_rate=2.0, duration=1.0)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["series_interval"] == 1.0
    assert data["series"] == [{"t": 0.0, "sent": 2, "failed": 1, "p50_ms": pytest.approx(1.5),
                               "p99_ms": pytest.approx(1.99)}]
