#!/usr/bin/env python3
"""Lab stand-in for webMethods API Gateway: exactly the REST interface the zero-downtime upgrade
documents use, with their status codes (python3 stdlib only; runs inside the lab nodes).

Documents (``../shared/seeds/``): 001 "Upgrade Standalone Deployment" (blue-green: quiesce mode
for design time, start the new instance, add it to the load balancer, shut the old one down) and
004 "Zero downtime upgrade of minor versions for cluster" (quiesce port, quiesce mode for all with
flush, health through the quiesce port, shutdown, start the fixed node).

One program, installed per version as ``/opt/softwareag-<V>`` (``VERSION``, ``config/gateway.json``
with host, primary port, runtime port and the Administrator password; ``config/ports.json`` keeps
the ports created through the API, as Integration Server keeps its port configuration).

Primary port (REST; basic auth as Administrator, 401 without it, except the health resource):

* ``PUT /rest/apigateway/quiescemode`` ``{"enable": true, "block": "designtime"}`` -> 200; from then
  every design-time call answers 503, except all GET requests, ``/rest/apigateway/quiescemode``,
  ``/rest/apigateway/search`` and ``/rest/facade/apigateway/searchApis`` (001, step 1).
  ``{"enable": true, "block": "all", "flush": [...]}`` -> 200 at once, "a long operation": the
  instance stops taking runtime traffic, flushes, and when done its health through the quiesce
  port stops answering 200 (004, step 1).  ``{"enable": false}`` -> 200, back to normal.
  Anything else -> 400.
* ``GET /rest/apigateway/quiescemode`` -> 200 ``{"enable", "block", "status": "in progress" |
  "success"}`` (001: "a success status message implies that quiesce mode ... is complete").
* ``POST /rest/apigateway/ports`` ``{"factoryKey": "webMethods/HTTP", "pkg": "WmRoot", "port":
  "4444", "portAlias": "QuiescePort"}`` -> 200 (the same port again: 200, unchanged);
  ``PUT /rest/apigateway/ports/enable`` ``{"listenerKey": "HTTPListener@4444", "pkg": "WmRoot",
  "requestServiceStatus": ""}`` -> 200 and the port listens; unknown listener -> 404;
  ``PUT /invoke/wm.server.quiesce/setQuiescePort`` ``{"portAlias": "QuiescePort"}`` -> 200,
  unknown alias -> 404 (004, prerequisite).
* ``POST /rest/apigateway/shutdown`` ``{"bounce": "false", "option": "drain" | "force", "timeout":
  N, "quiesce": "false"}`` -> 200, then the instance stops: ``drain`` waits (up to ``timeout``
  seconds) for the runtime requests in flight, ``force`` does not (001, step 4).
* ``GET /rest/apigateway/health`` -> 200 (503 with the lab fault ``health`` on 2.0).
* design-time sample: ``GET /rest/apigateway/apis`` -> 200, ``POST /rest/apigateway/apis`` -> 201
  (503 while design time is quiesced).

The quiesce port answers ``GET /rest/apigateway/health``: 200 while the instance runs or its
quiesce for all is in progress, 503 once it is complete.  The runtime port (the load balancer's)
answers ``GET /`` and ``/health`` with ``{"version": ..., "node": ...}`` and ``/slow?ms=N``; it is
bound with SO_REUSEPORT, so an old and a new instance on one node serve it together ("the
transactions are served by both the old and new versions", 001 step 3) until one shuts down.
Lab faults (``/etc/gateway/faults``, 2.0 only): ``start``, ``health``, ``hang-health``.
"""
from __future__ import annotations

import base64
import json
import os
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

INSTALL_DIR = Path(__file__).resolve().parent.parent
VERSION = (INSTALL_DIR / "VERSION").read_text().strip() if (INSTALL_DIR / "VERSION").exists() else "0.0"
CONFIG = INSTALL_DIR / "config" / "gateway.json"
PORTS = INSTALL_DIR / "config" / "ports.json"
LOG = INSTALL_DIR / "logs" / "server.log"
FAULTS = Path(os.environ.get("ZDU_GATEWAY_ETC", "/etc/gateway")) / "faults"
DESIGNTIME_ALLOWED = ("/rest/apigateway/quiescemode", "/rest/apigateway/search", "/rest/facade/apigateway/searchApis")
FLUSH_SECONDS = float(os.environ.get("ZDU_WM_FLUSH_SECONDS", "1.5"))


def log(message: str) -> None:
    """One line to logs/server.log and stdout (the journal)."""
    line = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} [{VERSION}] {message}"
    LOG.parent.mkdir(parents=True, exist_ok=True)
    with LOG.open("a") as handle:
        handle.write(line + "\n")
    print(line, flush=True)


def faults() -> set[str]:
    """Lab fault words; only version 2.0 honours them (a rollback to 1.0 always works)."""
    if VERSION != "2.0":
        return set()
    try:
        return set(FAULTS.read_text().split())
    except OSError:
        return set()


class Server(ThreadingHTTPServer):
    """A listener of the instance; ``kind`` is primary, quiesce or runtime."""

    request_queue_size = 128
    daemon_threads = False      # server_close() waits for requests in flight (drain)

    def __init__(self, address: tuple[str, int], kind: str, gateway: "Gateway", reuse_port: bool = False) -> None:
        self.kind, self.gateway, self.reuse_port = kind, gateway, reuse_port
        super().__init__(address, Handler)

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.reuse_port:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if not isinstance(exc, (ConnectionError, TimeoutError)):
            log(f"request from {client_address[0]} failed: {type(exc).__name__}: {exc}")


class Gateway:
    """The instance: its listeners, its quiesce state, its ports."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.host: str = config["host"]
        self.config = config
        self.lock = threading.Lock()
        self.quiesce: dict[str, Any] = {"enable": False, "block": None, "status": None}
        self.ports: dict[str, dict[str, Any]] = json.loads(PORTS.read_text()) if PORTS.exists() else {}
        self.listeners: dict[str, Server] = {}
        self.in_flight = 0
        self.stopping = threading.Event()
        self.shutdown_option = "force"
        self.shutdown_timeout = 0.0

    # ------------------------------------------------------------------ listeners

    def listen(self, name: str, port: int, kind: str, reuse_port: bool = False) -> None:
        server = Server((self.host, port), kind, self, reuse_port)
        self.listeners[name] = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()

    def close(self, name: str) -> None:
        server = self.listeners.pop(name, None)
        if server is not None:
            server.shutdown()
            server.socket.close()

    def start(self) -> None:
        if "start" in faults():
            raise RuntimeError("injected fault: start")
        self.listen("primary", int(self.config["primary_port"]), "primary")
        self.listen("runtime", int(self.config["runtime_port"]), "runtime", reuse_port=True)
        for listener_key, port in self.ports.items():
            if port.get("enabled"):
                self.listen(listener_key, int(port["port"]), "quiesce")
        log(f"API Gateway {VERSION} started: primary port {self.config['primary_port']}, "
            f"runtime port {self.config['runtime_port']}")

    # ------------------------------------------------------------------ operations

    def set_quiesce(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        enable, block = body.get("enable"), body.get("block")
        if enable is False or enable == "false":
            with self.lock:
                self.quiesce = {"enable": False, "block": None, "status": None}
            log("quiesce mode disabled")
            return 200, self.quiesce
        if enable not in (True, "true") or block not in ("designtime", "all"):
            return 400, {"errorDetails": "expected {enable: true, block: designtime|all} or {enable: false}"}
        flush = body.get("flush") or []
        if not isinstance(flush, list):
            return 400, {"errorDetails": "flush must be a list"}
        with self.lock:
            self.quiesce = {"enable": True, "block": block, "status": "in progress", "flush": flush}
        log(f"quiesce mode for {block} requested (flush: {', '.join(flush) or 'none'})")
        threading.Thread(target=self._complete_quiesce, args=(block,), daemon=True).start()
        return 200, self.quiesce

    def _complete_quiesce(self, block: str) -> None:
        if block == "all":
            self.close("runtime")                  # no new runtime requests; those in flight finish
            deadline = time.monotonic() + 30
            while self.in_flight and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(FLUSH_SECONDS)              # license and performance metrics, quotas: flushed
        else:
            time.sleep(0.3)
        with self.lock:
            if self.quiesce.get("block") == block:
                self.quiesce["status"] = "success"
        log(f"quiesce mode for {block} complete")

    def quiesced_all(self) -> bool:
        with self.lock:
            return self.quiesce.get("block") == "all" and self.quiesce.get("status") == "success"

    def create_port(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        try:
            port = int(body["port"])
            alias = str(body["portAlias"])
        except (KeyError, TypeError, ValueError):
            return 400, {"errorDetails": "port and portAlias are required"}
        if body.get("factoryKey") != "webMethods/HTTP" or not 0 < port < 65536:
            return 400, {"errorDetails": "only webMethods/HTTP ports 1-65535"}
        key = f"HTTPListener@{port}"
        with self.lock:
            self.ports.setdefault(key, {"port": port, "portAlias": alias, "pkg": body.get("pkg", "WmRoot"),
                                        "enabled": False, "quiesce": False})
            self._save_ports()
        return 200, {"listenerKey": key, **self.ports[key]}

    def enable_port(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        key = str(body.get("listenerKey"))
        with self.lock:
            port = self.ports.get(key)
            if port is None:
                return 404, {"errorDetails": f"no port {key}"}
            port["enabled"] = True
            self._save_ports()
        if key not in self.listeners:
            self.listen(key, int(port["port"]), "quiesce")
        return 200, {"listenerKey": key, **port}

    def set_quiesce_port(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        alias = body.get("portAlias")
        with self.lock:
            found = [k for k, p in self.ports.items() if p["portAlias"] == alias]
            if not found:
                return 404, {"errorDetails": f"no port with alias {alias!r}"}
            for key, port in self.ports.items():
                port["quiesce"] = key == found[0]
            self._save_ports()
        return 200, {"quiescePort": alias}

    def _save_ports(self) -> None:
        PORTS.parent.mkdir(parents=True, exist_ok=True)
        tmp = PORTS.with_name(PORTS.name + ".tmp")
        tmp.write_text(json.dumps(self.ports, indent=2) + "\n")
        os.replace(tmp, PORTS)

    def request_shutdown(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        option = body.get("option", "force")
        if option not in ("force", "drain"):
            return 400, {"errorDetails": "option must be force or drain"}
        try:
            self.shutdown_timeout = float(body.get("timeout", 0))
        except (TypeError, ValueError):
            return 400, {"errorDetails": "timeout must be a number"}
        self.shutdown_option = option
        log(f"shutdown requested (option {option}, timeout {self.shutdown_timeout:g}s)")
        self.stopping.set()
        return 200, {"shutdown": "initiated", "option": option}

    def stop(self) -> None:
        """Stop taking requests; with ``drain``, let the runtime requests in flight finish first."""
        runtime = self.listeners.get("runtime")
        if runtime is not None:
            runtime.shutdown()
            runtime.socket.close()
        if self.shutdown_option == "drain":
            deadline = time.monotonic() + self.shutdown_timeout
            while self.in_flight and time.monotonic() < deadline:
                time.sleep(0.05)
        log(f"API Gateway {VERSION} stopped ({self.in_flight} runtime request(s) cut)")


class Handler(BaseHTTPRequestHandler):
    server: Server
    disable_nagle_algorithm = True
    server_version = "webMethods API Gateway (zdupgrade lab stand-in)"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = (json.dumps(body) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict[str, Any] | None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            data = json.loads(raw or b"{}")
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    def _authorized(self) -> bool:
        expected = base64.b64encode(f"Administrator:{self.server.gateway.config['password']}".encode()).decode()
        return self.headers.get("Authorization", "") == f"Basic {expected}"

    def _dispatch(self, method: str) -> None:
        gateway, kind = self.server.gateway, self.server.kind
        path = urlparse(self.path).path
        if kind == "runtime":
            return self._runtime(method, path)
        if kind == "quiesce" and path != "/rest/apigateway/health":
            return self._answer(404, {"errorDetails": "the quiesce port answers /rest/apigateway/health"})
        if path == "/rest/apigateway/health" and method == "GET":     # public, as on API Gateway
            unhealthy = "health" in faults() or (kind == "quiesce" and gateway.quiesced_all())
            if "hang-health" in faults():
                time.sleep(3600)
            return self._answer(503 if unhealthy else 200, {"status": "red" if unhealthy else "green",
                                                             "version": VERSION})
        if not self._authorized():
            return self._answer(401, {"errorDetails": "authentication required"})
        if kind == "primary" and gateway.quiesced_all():
            return self._answer(503, {"errorDetails": "the instance is quiesced"})
        quiesce = gateway.quiesce
        if (quiesce.get("enable") and quiesce.get("block") == "designtime" and method != "GET"
                and path not in DESIGNTIME_ALLOWED and path != "/rest/apigateway/shutdown"):
            return self._answer(503, {"errorDetails": "design time changes are blocked (quiesce mode)"})
        if path == "/rest/apigateway/quiescemode":
            if method == "GET":
                return self._answer(200, dict(quiesce))
            if method == "PUT":
                return self._with_body(gateway.set_quiesce)
        if path == "/rest/apigateway/ports" and method == "POST":
            return self._with_body(gateway.create_port)
        if path == "/rest/apigateway/ports/enable" and method == "PUT":
            return self._with_body(gateway.enable_port)
        if path == "/invoke/wm.server.quiesce/setQuiescePort" and method == "PUT":
            return self._with_body(gateway.set_quiesce_port)
        if path == "/rest/apigateway/shutdown" and method == "POST":
            return self._with_body(gateway.request_shutdown)
        if path == "/rest/apigateway/apis":
            if method == "GET":
                return self._answer(200, {"apiResponse": []})
            if method == "POST":
                return self._answer(201, {"apiResponse": {"created": True}})
        if path in ("/rest/apigateway/search", "/rest/facade/apigateway/searchApis") and method in ("GET", "POST"):
            return self._answer(200, {"result": []})
        return self._answer(404 if method == "GET" else 405, {"errorDetails": f"{method} {path}"})

    def _with_body(self, operation: Any) -> None:
        body = self._body()
        if body is None:
            return self._answer(400, {"errorDetails": "the body must be a JSON object"})
        status, answer = operation(body)
        self._answer(status, answer)

    def _runtime(self, method: str, path: str) -> None:
        gateway = self.server.gateway
        body = {"version": VERSION, "node": _node_name(), "status": "ok"}
        with gateway.lock:
            gateway.in_flight += 1
        try:
            if path == "/health" and "health" in faults():
                return self._answer(503, {**body, "status": "unhealthy"})
            if path == "/slow":
                ms = int(parse_qs(urlparse(self.path).query).get("ms", ["1000"])[0])
                time.sleep(ms / 1000)
                return self._answer(200, {**body, "slept_ms": ms})
            if path in ("/", "/health") and method == "GET":
                return self._answer(200, body)
            return self._answer(404, {**body, "status": "not found"})
        finally:
            with gateway.lock:
                gateway.in_flight -= 1

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._dispatch("GET")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")


def _node_name() -> str:
    try:
        return (FAULTS.parent / "node").read_text().strip()
    except OSError:
        return socket.gethostname()


def main() -> int:  # noqa: D401
    """``apigateway serve``: run the instance in the foreground until shut down (REST or SIGTERM)."""
    if sys.argv[1:] != ["serve"]:
        print("usage: apigateway serve", file=sys.stderr)
        return 2
    gateway = Gateway(json.loads(CONFIG.read_text()))
    try:
        gateway.start()
    except (RuntimeError, OSError) as exc:
        log(f"ERROR: API Gateway {VERSION} failed to start: {exc}")
        return 1
    def on_sigterm(*_: object) -> None:      # systemctl stop: drain, as Integration Server does
        gateway.shutdown_option, gateway.shutdown_timeout = "drain", 30.0
        gateway.stopping.set()
    signal.signal(signal.SIGTERM, on_sigterm)
    gateway.stopping.wait()
    time.sleep(0.2)            # the shutdown call's own answer goes out first
    gateway.stop()
    sys.stdout.flush()
    os._exit(0)                # requests still running past the drain are cut, not waited for


if __name__ == "__main__":
    sys.exit(main())
