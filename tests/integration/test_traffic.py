"""The traffic probe against real local HTTP servers on 127.0.0.42 (loopback only)."""
from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import pytest

from zdu.run.traffic import TrafficProbe, main

HOST = "127.0.0.42"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True     # else Nagle + delayed ACK add 40 ms per answer

    def setup(self) -> None:
        super().setup()
        self.server.conns.add(self.connection)  # type: ignore[attr-defined]

    def do_GET(self) -> None:  # noqa: N802
        server: Server = self.server.owner  # type: ignore[attr-defined]
        if server.delay:
            time.sleep(server.delay)
        body = b'{"version": "%s"}' % server.version.encode()
        self.send_response(server.status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _Quiet(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def handle_error(self, request: object, client_address: object) -> None:
        pass


class Server:
    """A real HTTP server whose answer can be changed, and stopped like a dying process."""

    def __init__(self, status: int = 200, delay: float = 0.0, version: str = "1.0") -> None:
        self.status, self.delay, self.version = status, delay, version
        self.httpd = _Quiet((HOST, 0), _Handler)
        self.httpd.owner = self          # type: ignore[attr-defined]
        self.httpd.conns = set()         # type: ignore[attr-defined]
        self.url = f"http://{HOST}:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Stop listening and drop every open connection, as a killed process would."""
        if not self.thread.is_alive():
            return
        self.httpd.shutdown()
        self.httpd.server_close()
        for conn in list(self.httpd.conns):  # type: ignore[attr-defined]
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.thread.join(5)


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    yield srv
    srv.stop()


def run_for(probe: TrafficProbe, seconds: float) -> None:
    with probe:
        threading.Event().wait(seconds)


def test_steady_rate_without_failures(server: Server) -> None:
    probe = TrafficProbe(server.url, rate=200, timeout=2.0)
    with probe:
        threading.Event().wait(1.0)
        with probe.window("Node-A"):
            threading.Event().wait(1.0)
        probe.mark("after")
        threading.Event().wait(1.0)
    report = probe.report()

    assert 570 <= report.sent <= 630, report
    assert report.failed == 0, report.first_failures
    assert report.by_outcome["ok"] == report.sent
    assert dict(report.versions) == {"1.0": report.sent}
    assert 190 <= report.achieved_rate <= 210
    assert report.p50_ms is not None and report.p50_ms < 50
    (window,) = report.windows
    assert window.label == "Node-A" and 180 <= window.sent <= 220 and window.failed == 0
    assert [label for label, _ in report.marks] == ["after"]
    assert report.summary_line().startswith(f"traffic: {report.sent} sent, 0 failed, p50 ")


def test_server_stopped_mid_run_counts_connect_failures(server: Server) -> None:
    probe = TrafficProbe(server.url, rate=200, timeout=1.0)
    with probe:
        threading.Event().wait(0.7)
        server.stop()
        threading.Event().wait(0.7)
    report = probe.report()

    assert abs(report.sent - 200 * report.duration) <= 10   # server.stop() itself takes a while
    assert report.failed > 0
    assert report.by_outcome["connect"] >= 100          # ~0.7 s x 200/s refused
    assert report.by_outcome["ok"] >= 100


def test_http_5xx_is_a_failure() -> None:
    srv = Server(status=503)
    try:
        probe = TrafficProbe(srv.url, rate=100, timeout=1.0)
        run_for(probe, 0.5)
    finally:
        srv.stop()
    report = probe.report()
    assert report.sent >= 45
    assert report.failed == report.sent == report.by_outcome["http-5xx"]


def test_slower_than_timeout_is_a_timeout() -> None:
    srv = Server(delay=0.6)
    try:
        probe = TrafficProbe(srv.url, rate=40, timeout=0.2)
        run_for(probe, 0.5)
    finally:
        srv.stop()
    report = probe.report()
    assert report.sent >= 18
    assert report.failed == report.sent == report.by_outcome["timeout"]


def test_busy_workers_do_not_lower_the_count() -> None:
    """Open loop: one worker, a 50 ms server, 100 req/s asked -- every planned request
    is counted, the ones that waited too long as timeouts, the rest as late."""
    srv = Server(delay=0.05)
    try:
        probe = TrafficProbe(srv.url, rate=100, timeout=0.5, workers=1)
        run_for(probe, 1.0)
    finally:
        srv.stop()
    report = probe.report()
    assert 95 <= report.sent <= 105                      # not the ~20 one worker could send
    assert report.by_outcome["timeout"] > 0
    assert report.late > report.sent // 2
    assert report.p99_ms is not None and report.p99_ms >= 400


def test_cli_prints_the_report(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    status = main([server.url, "--rate", "100", "--seconds", "0.5"])
    out = capsys.readouterr().out
    assert status == 0
    assert out.startswith("traffic: ") and " 0 failed" in out and "versions: 1.0" in out


def test_rejects_a_bad_url() -> None:
    with pytest.raises(ValueError, match="traffic URL"):
        TrafficProbe("ftp://127.0.0.1/")
