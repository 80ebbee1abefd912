"""The traffic probe behind ``--traffic URL``: steady GETs that count every failure.

Open-loop: request *i* is planned at ``start + i / rate`` whatever happened to
the requests before it.  A dispatcher thread puts each planned request on a
queue and a pool of worker threads sends them.  When every worker is busy a
request waits in the queue and is sent late; its latency is still measured
from its *planned* time, and one that has waited longer than ``timeout``
counts as a "timeout" without being sent -- a slow server cannot make the probe
send fewer requests and so look better than it is (coordinated omission).

Outcomes: ``ok`` (2xx/3xx), ``connect`` (refused / unreachable / connect
timeout), ``timeout`` (no complete answer within ``timeout`` of the planned
time), ``http-5xx``, ``other`` (4xx, connection dropped mid-answer, bad
response).  When the body is JSON with a ``"version"`` it is recorded, so a
run shows which versions served.

Usage::

    with TrafficProbe("http://127.0.0.1:18080/", rate=200) as probe:
        with probe.window("Node-A"):
            ...                      # disable -> upgrade -> enable
    print(probe.report().summary_line())
"""
from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import queue
import socket
import sys
import threading
import time
import urllib.parse
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator, Literal, Mapping, Sequence

Outcome = Literal["ok", "connect", "timeout", "http-5xx", "other"]
OUTCOMES: tuple[str, ...] = ("ok", "connect", "timeout", "http-5xx", "other")


# ---------------------------------------------------------------------------- records

@dataclass(frozen=True, slots=True)
class Sample:
    """One planned request.  Times are seconds since the probe started."""

    planned: float
    sent: float | None          # None: expired in the queue, never sent
    latency: float              # completion - planned (so lateness counts)
    outcome: str
    status: int | None = None
    version: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


@dataclass(frozen=True)
class Window:
    """A named span of the run (e.g. one node's disable -> enable)."""

    label: str
    start: float
    end: float | None = None     # None: still open


@dataclass(frozen=True)
class WindowStats:
    """Traffic whose planned time fell inside one window."""

    label: str
    start: float
    end: float | None
    sent: int
    failed: int
    by_outcome: Mapping[str, int]
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    versions: Mapping[str, int]


@dataclass(frozen=True)
class SeriesPoint:
    """The traffic planned in one interval of the run (``t`` seconds after the probe started,
    for ``TrafficReport.series_interval`` seconds): what the report's traffic curve is drawn from."""

    t: float
    sent: int
    failed: int
    p50_ms: float | None
    p99_ms: float | None


@dataclass(frozen=True)
class TrafficReport:
    """What the probe saw.  ``sent`` counts every planned request that is finished
    (answered, failed, or expired waiting for a worker)."""

    url: str
    target_rate: float
    duration: float
    sent: int
    failed: int
    by_outcome: Mapping[str, int]
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    achieved_rate: float
    late: int                                     # sent >= late_threshold after planned
    versions: Mapping[str, int]
    windows: tuple[WindowStats, ...] = ()
    marks: tuple[tuple[str, float], ...] = ()
    started_at: float = 0.0                       # time.time() at start
    first_failures: tuple[str, ...] = field(default=())
    #: requests planned per interval (requests/s = sent / series_interval), oldest first
    series: tuple[SeriesPoint, ...] = ()
    series_interval: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict for run.json."""
        data = asdict(self)
        data["by_outcome"] = dict(self.by_outcome)
        data["versions"] = dict(self.versions)
        data["windows"] = [dict(asdict(w), by_outcome=dict(w.by_outcome),
                                versions=dict(w.versions)) for w in self.windows]
        data["marks"] = [{"label": label, "at": at} for label, at in self.marks]
        data["first_failures"] = list(self.first_failures)
        data["series"] = [asdict(p) for p in self.series]
        return data

    def summary_line(self) -> str:
        """E.g. ``traffic: 12034 sent, 0 failed, p50 2.1 ms, p99 9.8 ms, 200.1 req/s``."""
        line = (f"traffic: {self.sent} sent, {self.failed} failed, p50 {_ms(self.p50_ms)}, "
                f"p99 {_ms(self.p99_ms)}, {self.achieved_rate:.1f} req/s")
        bad = {k: v for k, v in self.by_outcome.items() if k != "ok" and v}
        if bad:
            line += " (" + ", ".join(f"{k} {v}" for k, v in bad.items()) + ")"
        return line


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


# ---------------------------------------------------------------------------- pure stats

def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100) of ``values`` by linear interpolation between
    closest ranks (numpy's default); None for no values.  ``values`` need not be sorted."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _counts(samples: Sequence[Sample]) -> tuple[dict[str, int], dict[str, int]]:
    outcomes = {name: 0 for name in OUTCOMES}
    versions: dict[str, int] = {}
    for s in samples:
        outcomes[s.outcome] = outcomes.get(s.outcome, 0) + 1
        if s.version is not None:
            versions[s.version] = versions.get(s.version, 0) + 1
    return outcomes, versions


def _latency_ms(samples: Sequence[Sample], q: float) -> float | None:
    value = percentile([s.latency for s in samples], q)
    return None if value is None else round(value * 1000.0, 3)


def window_stats(samples: Sequence[Sample], window: Window, now: float) -> WindowStats:
    """Stats of the samples planned inside ``window`` (an open window ends at ``now``)."""
    end = now if window.end is None else window.end
    inside = [s for s in samples if window.start <= s.planned <= end]
    outcomes, versions = _counts(inside)
    return WindowStats(window.label, window.start, window.end, len(inside),
                       len(inside) - outcomes["ok"], outcomes, _latency_ms(inside, 50),
                       _latency_ms(inside, 99), _latency_ms(inside, 100), versions)


#: at most this many points in a report's series: a long run gets wider intervals
MAX_SERIES_POINTS = 3600


def series_interval(duration: float) -> float:
    """The interval of the series: one second, or wider so that a long run keeps at most
    :data:`MAX_SERIES_POINTS` points (an 8-hour run: 8 s)."""
    return float(max(1, math.ceil(duration / MAX_SERIES_POINTS))) if duration > 0 else 1.0


def time_series(samples: Sequence[Sample], duration: float, interval: float = 1.0) -> tuple[SeriesPoint, ...]:
    """Samples bucketed by planned time into ``interval``-second points covering ``duration``
    (empty intervals are points with nothing sent, so a gap in the traffic shows as one)."""
    count = max(1, math.ceil(duration / interval)) if duration > 0 else (1 if samples else 0)
    buckets: list[list[Sample]] = [[] for _ in range(count)]
    for s in samples:
        index = min(count - 1, max(0, int(s.planned // interval)))
        buckets[index].append(s)
    points = []
    for i, bucket in enumerate(buckets):
        failed = sum(1 for s in bucket if not s.ok)
        points.append(SeriesPoint(round(i * interval, 3), len(bucket), failed,
                                  _latency_ms(bucket, 50), _latency_ms(bucket, 99)))
    return tuple(points)


def summarize(samples: Sequence[Sample], *, url: str, target_rate: float, duration: float,
              windows: Sequence[Window] = (), marks: Sequence[tuple[str, float]] = (),
              started_at: float = 0.0, late_threshold: float = 0.05) -> TrafficReport:
    """Build the report from raw samples (pure; the probe and the tests both use it)."""
    outcomes, versions = _counts(samples)
    failures = [f"{s.planned:.3f}s {s.outcome}: {s.error or s.status}"
                for s in samples if not s.ok][:5]
    return TrafficReport(
        url=url, target_rate=target_rate, duration=round(duration, 3), sent=len(samples),
        failed=len(samples) - outcomes["ok"], by_outcome=outcomes,
        p50_ms=_latency_ms(samples, 50), p99_ms=_latency_ms(samples, 99),
        max_ms=_latency_ms(samples, 100),
        achieved_rate=round(len(samples) / duration, 1) if duration > 0 else 0.0,
        late=sum(1 for s in samples
                 if s.sent is None or s.sent - s.planned >= late_threshold),
        versions=versions,
        windows=tuple(window_stats(samples, w, duration) for w in windows),
        marks=tuple(marks), started_at=started_at, first_failures=tuple(failures),
        series=time_series(samples, duration, series_interval(duration)), series_interval=series_interval(duration))


def body_version(body: bytes) -> str | None:
    """The ``"version"`` of a JSON object body, as a string; None otherwise."""
    if not body.lstrip().startswith(b"{"):
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    version = data.get("version") if isinstance(data, dict) else None
    return None if version is None or isinstance(version, (dict, list)) else str(version)


# ---------------------------------------------------------------------------- the probe

#: the most requests per second a probe sends: it measures a load balancer, it must not flood it
MAX_RATE = 100_000.0


class TrafficProbe:
    """Sends GET ``url`` at ``rate`` requests/s from ``workers`` threads until stopped."""

    def __init__(self, url: str, rate: float = 200.0, timeout: float = 2.0,
                 workers: int | None = None, *, keepalive: bool = True,
                 clock: Callable[[], float] = time.monotonic) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"traffic URL must be http(s)://HOST[:PORT]/PATH, got {url!r}")
        if not 0 < rate <= MAX_RATE:
            raise ValueError(f"the rate must be more than 0 and at most {MAX_RATE:g} requests/s")
        if not 0 < timeout <= 3600:
            raise ValueError("the timeout must be more than 0 and at most 3600 s")
        self.url = url
        self.rate = float(rate)
        self.timeout = float(timeout)
        # enough for ~50 ms of traffic in flight, never fewer than 4; with a slow server
        # the queue backs up and requests expire as timeouts -- counted, not hidden
        self.workers = workers or max(4, min(64, math.ceil(self.rate * 0.05)))
        self.keepalive = keepalive
        self._clock = clock
        self._scheme = parts.scheme
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._queue: queue.SimpleQueue[float | None] = queue.SimpleQueue()
        self._samples: list[Sample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._windows: dict[str, Window] = {}
        self._marks: list[tuple[str, float]] = []
        self._t0: float | None = None
        self._t_end: float | None = None
        self._started_at = 0.0

    # -- lifecycle

    def start(self) -> "TrafficProbe":
        """Start sending (idempotent while running)."""
        if self._threads:
            return self
        self._stop.clear()
        self._t0 = self._clock()
        self._t_end = None
        self._started_at = time.time()
        self._threads = [threading.Thread(target=self._dispatch, name="traffic-dispatch",
                                          daemon=True)]
        self._threads += [threading.Thread(target=self._work, name=f"traffic-{i}", daemon=True)
                          for i in range(self.workers)]
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        """Stop planning; finish what is planned (bounded by ``timeout``); idempotent."""
        if not self._threads:
            return
        self._stop.set()
        t_end = self._now()
        dispatcher, workers = self._threads[0], self._threads[1:]
        dispatcher.join(5)
        for _ in workers:
            self._queue.put(None)
        # every queued request either expires at once or is bounded by the socket timeout
        for t in workers:
            t.join(self.timeout * 2 + 5)
        self._t_end = t_end          # the planning span: achieved rate = sent / span
        self._threads = []

    def __enter__(self) -> "TrafficProbe":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return bool(self._threads)

    # -- windows and marks

    def mark(self, label: str) -> None:
        """Record an instant (e.g. "Node-A disabled")."""
        with self._lock:
            self._marks.append((label, self._now()))

    def open_window(self, label: str) -> None:
        """Start the named window (for event subscribers that cannot use ``with``)."""
        with self._lock:
            self._windows[label] = Window(label, self._now())

    def close_window(self, label: str) -> None:
        """End the named window; unknown or closed labels are ignored."""
        with self._lock:
            w = self._windows.get(label)
            if w is not None and w.end is None:
                self._windows[label] = Window(label, w.start, self._now())

    @contextlib.contextmanager
    def window(self, label: str) -> Iterator[None]:
        """``with probe.window("Node-A"): ...`` -- stats for the traffic planned inside."""
        self.open_window(label)
        try:
            yield
        finally:
            self.close_window(label)

    # -- results

    def samples(self) -> list[Sample]:
        """A copy of the finished samples, in completion order."""
        with self._lock:
            return list(self._samples)

    def report(self) -> TrafficReport:
        """The report so far (a snapshot while running, final after stop)."""
        with self._lock:
            samples = list(self._samples)
            windows = list(self._windows.values())
            marks = list(self._marks)
        duration = self._t_end if self._t_end is not None else self._now()
        return summarize(samples, url=self.url, target_rate=self.rate, duration=duration,
                         windows=windows, marks=marks, started_at=self._started_at)

    # -- threads

    def _now(self) -> float:
        return 0.0 if self._t0 is None else self._clock() - self._t0

    def _dispatch(self) -> None:
        interval = 1.0 / self.rate
        i = 0
        while not self._stop.is_set():
            planned = i * interval
            delay = planned - self._now()
            if delay > 0 and self._stop.wait(delay):
                break
            # if the dispatcher itself fell behind, the request keeps its planned time
            self._queue.put(planned)
            i += 1

    def _work(self) -> None:
        conn: http.client.HTTPConnection | None = None
        try:
            while True:
                planned = self._queue.get()
                if planned is None:
                    return
                sample, conn = self._one(planned, conn)
                with self._lock:
                    self._samples.append(sample)
        finally:
            if conn is not None:
                conn.close()

    def _new_conn(self, timeout: float) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
        return cls(self._host, self._port, timeout=timeout)

    def _one(self, planned: float, conn: http.client.HTTPConnection | None
             ) -> tuple[Sample, http.client.HTTPConnection | None]:
        sent = self._now()
        budget = self.timeout - (sent - planned)
        if budget <= 0:
            return Sample(planned, None, sent - planned, "timeout",
                          error="waited longer than the timeout for a free worker"), conn
        reused = conn is not None
        for attempt in (1, 2):
            if conn is None:
                conn = self._new_conn(budget)
                try:
                    conn.connect()
                except OSError as exc:
                    conn.close()
                    return self._sample(planned, sent, "connect", error=_err(exc)), None
            else:
                conn.timeout = budget
                if conn.sock is not None:
                    conn.sock.settimeout(budget)
            try:
                conn.request("GET", self._path, headers={} if self.keepalive
                             else {"Connection": "close"})
                resp = conn.getresponse()
                body = resp.read()
            except (socket.timeout, TimeoutError) as exc:
                conn.close()
                return self._sample(planned, sent, "timeout", error=_err(exc)), None
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                conn.close()
                conn = None
                if reused and attempt == 1:
                    # the server closed an idle keep-alive connection: any HTTP client
                    # retries an idempotent GET once on a fresh connection
                    budget = self.timeout - (self._now() - planned)
                    if budget > 0:
                        continue
                return self._sample(planned, sent, "other", error=_err(exc)), None
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                return self._sample(planned, sent, "other", error=_err(exc)), None
            if resp.will_close or not self.keepalive:
                conn.close()
                conn = None
            status = resp.status
            outcome = ("ok" if status < 400 else "http-5xx" if status >= 500 else "other")
            return self._sample(planned, sent, outcome, status=status,
                                version=body_version(body)), conn
        raise AssertionError("unreachable")  # pragma: no cover

    def _sample(self, planned: float, sent: float, outcome: str, *, status: int | None = None,
                version: str | None = None, error: str | None = None) -> Sample:
        latency = self._now() - planned
        if outcome == "ok" and latency > self.timeout:
            outcome, error = "timeout", f"answered after {latency:.3f}s"
        return Sample(planned, sent, latency, outcome, status, version, error)


def _err(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


# ---------------------------------------------------------------------------- CLI

def main(argv: Sequence[str] | None = None) -> int:
    """``python3 -m zdu.traffic URL --rate 200 --seconds 5``: run the probe, print the report."""
    parser = argparse.ArgumentParser(prog="python3 -m zdu.traffic",
                                     description="Send steady GET traffic and report failures.")
    parser.add_argument("url")
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=5.0, help="how long to send")
    parser.add_argument("--timeout", type=float, default=2.0, help="per-request timeout (s)")
    parser.add_argument("--workers", type=int, default=None, help="sender threads")
    parser.add_argument("--no-keepalive", action="store_true", help="one connection per request")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    try:
        probe = TrafficProbe(args.url, rate=args.rate, timeout=args.timeout,
                             workers=args.workers, keepalive=not args.no_keepalive)
    except ValueError as exc:
        parser.error(str(exc))
    with probe:
        threading.Event().wait(args.seconds)
    report = probe.report()
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.summary_line())
        print(f"  target {report.target_rate:g} req/s over {report.duration:.1f}s, "
              f"late {report.late}, max {_ms(report.max_ms)}, workers {probe.workers}")
        print("  outcomes: " + ", ".join(f"{k} {v}" for k, v in report.by_outcome.items()))
        if report.versions:
            print("  versions: " + ", ".join(f"{k} {v}" for k, v in report.versions.items()))
        for failure in report.first_failures:
            print(f"  failure: {failure}")
    return 0 if report.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
