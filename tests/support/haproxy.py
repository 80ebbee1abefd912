"""Real HAProxy processes and small real HTTP backends on loopback, for the haproxy hook tests.

``haproxy_lab(workdir, {"node-a": "127.0.0.231", ...}, instances=2)`` starts one
python http.server thread per server (with a ``/slow/SECONDS`` endpoint) and
``instances`` HAProxy processes balancing them in backend ``gateways`` with health
checks every 100 ms.  Each instance has admin-, operator- and user-level unix
sockets and an admin tcp socket on 127.0.0.1; ``tcp=(1,)`` makes instance 2 driven
over tcp.  Everything stops when the context exits.
"""
from __future__ import annotations

import http.client
import json
import socket
import subprocess
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from zdu.errors import LoadBalancerError
from zdu.lb.haproxy import HaproxyLoadBalancer, from_options
from zdu.model import Node

BACKEND = "gateways"


class _Backend(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_GET(self) -> None:  # noqa: N802
        if self.path.startswith("/slow/"):
            time.sleep(float(self.path.rsplit("/", 1)[1]))
        body = json.dumps({"version": self.server.server_address[0]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass        # health checks and cut sessions reset connections; that is expected


class Backend:
    """A small real HTTP server on one loopback address, stoppable mid-test."""

    def __init__(self, host: str) -> None:
        self.server = _QuietServer((host, 0), _Backend)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if self.thread.is_alive():
            self.server.shutdown()
            self.server.server_close()
            self.thread.join(5)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class Haproxy:
    """One running HAProxy instance and its sockets."""

    proc: subprocess.Popen[bytes]
    socket: str             # the admin socket the hook drives (unix path or tcp:...)
    unix_socket: str        # its admin unix socket
    operator_socket: str    # level operator: answers show stat, refuses set server
    user_socket: str        # level user: likewise
    frontend: int


@dataclass
class HaproxyLab:
    backends: dict[str, Backend]
    instances: list[Haproxy] = field(default_factory=list)

    @property
    def sockets(self) -> list[str]:
        return [h.socket for h in self.instances]

    def lb(self, **options: object) -> HaproxyLoadBalancer:
        opts: dict[str, Any] = {"backend": BACKEND, "sockets": self.sockets, "poll_interval": 0.05,
                                "drain_timeout": 5, "up_timeout": 5, **options}
        return from_options(opts)

    def command(self, text: str, index: int = 0) -> str:
        """Send one runtime-API command to instance ``index`` directly (test side)."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(self.instances[index].unix_socket)
            sock.sendall(text.encode() + b"\n")
            chunks = []
            while data := sock.recv(65536):
                chunks.append(data)
        return b"".join(chunks).decode()

    def status(self, server: str, index: int = 0) -> str:
        """The ``status`` column of ``server`` on instance ``index``, read directly."""
        for line in self.command(f"show stat {BACKEND} 4 -1", index).splitlines():
            fields = line.split(",")
            if len(fields) > 17 and fields[1] == server:
                return fields[17]
        raise AssertionError(f"no server {server} in {BACKEND}")


def start_haproxy(workdir: Path, index: int, backends: Mapping[str, Backend], tcp: bool) -> Haproxy:
    unix_sock = workdir / f"admin{index}.sock"
    op_sock = workdir / f"operator{index}.sock"
    user_sock = workdir / f"user{index}.sock"
    tcp_port = free_port()
    frontend = free_port()
    servers = "\n".join(
        f"  server {name} {b.server.server_address[0]}:{b.port} check inter 100ms rise 2 fall 2"
        for name, b in backends.items())
    cfg = workdir / f"haproxy{index}.cfg"
    cfg.write_text(f"""
global
  stats socket {unix_sock} mode 600 level admin
  stats socket {op_sock} mode 600 level operator
  stats socket {user_sock} mode 600 level user
  stats socket ipv4@127.0.0.1:{tcp_port} level admin
defaults
  mode http
  timeout connect 1s
  timeout client 10s
  timeout server 10s
frontend fe
  bind 127.0.0.1:{frontend}
  default_backend {BACKEND}
backend {BACKEND}
  balance first
  option httpchk GET /health
{servers}
""")
    proc = subprocess.Popen(["haproxy", "-db", "-f", str(cfg)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    inst = Haproxy(proc, f"tcp:127.0.0.1:{tcp_port}" if tcp else str(unix_sock), str(unix_sock),
                   str(op_sock), str(user_sock), frontend)
    lb = from_options({"backend": BACKEND, "socket": inst.socket})
    for _ in range(100):   # <= ~5 s: every server UP (first checks passed)
        if proc.poll() is not None:
            assert proc.stderr is not None
            raise RuntimeError(f"haproxy exited: {proc.stderr.read().decode()}")
        try:
            states = [lb.server_states(Node(n, "x")) for n in backends]
            if all(s == "UP" for st in states for s in st.values()):
                return inst
        except LoadBalancerError:
            pass
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("haproxy did not come up")


@contextmanager
def haproxy_lab(workdir: Path, servers: Mapping[str, str], *, instances: int = 1,
                tcp: Sequence[int] = ()) -> Iterator[HaproxyLab]:
    """Backends ``{server name: loopback address}`` behind ``instances`` HAProxy processes;
    the instances whose 0-based index is in ``tcp`` are driven over their tcp socket."""
    workdir.mkdir(parents=True, exist_ok=True)
    backends = {name: Backend(host) for name, host in servers.items()}
    lab = HaproxyLab(backends)
    try:
        for index in range(instances):
            lab.instances.append(start_haproxy(workdir, index + 1, backends, tcp=index in tcp))
        yield lab
    finally:
        for inst in lab.instances:
            inst.proc.terminate()
            try:
                inst.proc.wait(5)
            except subprocess.TimeoutExpired:
                inst.proc.kill()
                inst.proc.wait(5)
        for b in backends.values():
            b.stop()


class RecordingSocket:
    """A unix socket that records the bytes of each connection and answers like HAProxy."""

    def __init__(self, path: Path) -> None:
        self.received: list[bytes] = []
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(str(path))
        self.sock.listen()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while not data.endswith(b"\n"):
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                self.received.append(data)
                conn.sendall(b"\n")

    def wait_for(self, count: int, timeout: float = 5.0) -> None:
        """Until ``count`` connections were recorded (or ``timeout``)."""
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.01)

    def close(self) -> None:
        self.sock.close()



def get(port: int, path: str, timeout: float = 10.0) -> tuple[int | None, str]:
    """One GET through a frontend; (status, body) or (None, error) when cut."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    except (OSError, http.client.HTTPException) as exc:
        return None, repr(exc)
    finally:
        conn.close()


def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")
