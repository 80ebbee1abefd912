#!/usr/bin/env python3
"""Sample API gateway for the zdupgrade lab (python3 stdlib only; runs inside the lab nodes).

One program, installed twice: ``/opt/gateway-1.0`` and ``/opt/gateway-2.0``.  The version is the
content of ``<install dir>/VERSION``.  The two versions read different config formats:

* 1.0: ``conf/gateway.ini`` (``key=value`` lines: ``listen_port``, ``route.NAME=URL``, ``admin_password``)
* 2.0: ``conf/gateway.json`` (``{"listen": {"port": N}, "routes": [...], "secrets": {...}}``),
  produced by ``gateway upgrade --from EXPORT``; 2.0 refuses to start without it.

Subcommands: export (1.0), upgrade and check (2.0), start, stop, status, serve (internal).

**Module mode** (``ZDU_APP_MODULE=worker`` in the environment): the same server stands in for
an Apinizer-like module packaged as a tarball or a container image (see ``zdu/lab/products.py``).
Its settings are ``SERVER_HOST`` and ``SERVER_PORT``, from the environment (containers) or from
``conf/application.env`` next to ``conf/master.key`` (tarball installs).  Like the real modules it
refuses to start when they are missing ("SERVER_PORT is not set", "Master key file not found"),
and it also refuses files that are not owned by the user it runs as or are open to others
(application.env must be mode 600, master.key 400).  Besides ``/health`` it answers the modules'
health URLs ``/server-status`` and ``/management/health``, and it writes its start line
(``Started Apinizer<Module>App``, or ``ZDU_APP_NAME``) to stdout, i.e. to the journal or to ``docker logs``.

**Cache member** (``/etc/gateway/cluster``, JSON ``{"peers": ["HOST:PORT", ...], "join_delay": S}``,
read when the server starts): the node stands in for a cache node of a cluster (Apinizer's
Hazelcast).  ``join_delay`` seconds after it starts, and then whenever the count changes, the
server writes the membership to logs/gateway.log in Hazelcast's words --
``Members {size:N, ver:V} [Member [HOST]:PORT this, ...]`` -- counting itself and every peer
whose ``/health`` answers 200.

Fault injection: ``/etc/gateway/faults`` holds one word per line.  ``export`` fails the 1.0 export;
``upgrade``, ``check``, ``start``, ``stop`` fail the 2.0 subcommand of that name; ``health`` makes
the 2.0 ``/health`` answer 503.  ``hang-<point>`` makes that point sleep forever instead.  Only 2.0
honours the points other than ``export``, so rolling back to 1.0 always works.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

INSTALL_DIR = Path(__file__).resolve().parent.parent
VERSION = (INSTALL_DIR / "VERSION").read_text().strip() if (INSTALL_DIR / "VERSION").exists() else "0.0"
ETC = Path(os.environ.get("ZDU_GATEWAY_ETC", "/etc/gateway"))
FAULTS_FILE = ETC / "faults"
PID_FILE = INSTALL_DIR / "run" / "gateway.pid"
LOG_FILE = INSTALL_DIR / "logs" / "gateway.log"
INI_FILE = INSTALL_DIR / "conf" / "gateway.ini"
JSON_FILE = INSTALL_DIR / "conf" / "gateway.json"
EXPORT_FORMAT = "gateway-export/1"
CLUSTER_FILE = ETC / "cluster"

#: fault points each version honours
POINTS = {"1.0": {"export"}, "2.0": {"upgrade", "check", "start", "stop", "health"}}


class GatewayError(Exception):
    """A user-facing error: printed to stderr, exit status 1."""


# ------------------------------------------------------------------ faults

def faults() -> set[str]:
    """The fault words currently injected on this node."""
    try:
        return {w.strip() for w in FAULTS_FILE.read_text().split() if w.strip()}
    except OSError:
        return set()


def hang_point(point: str) -> None:
    """Sleep forever if ``hang-<point>`` is injected and this version honours ``point``."""
    if point in POINTS.get(VERSION, set()) and f"hang-{point}" in faults():
        log(f"injected fault hang-{point}: hanging")
        while True:
            time.sleep(3600)


def fail_point(point: str) -> None:
    """Raise GatewayError if ``point`` is injected and this version honours it."""
    if point in POINTS.get(VERSION, set()) and point in faults():
        raise GatewayError(f"injected fault: {point}")


def fault_point(point: str) -> None:
    """Hang or fail at ``point`` as the faults file says."""
    hang_point(point)
    fail_point(point)


# ------------------------------------------------------------------ config

def node_name() -> str:
    """The node name: $ZDU_NODE_NAME, else /etc/gateway/node, else the hostname."""
    name = os.environ.get("ZDU_NODE_NAME")
    if not name:
        try:
            name = (ETC / "node").read_text().strip()
        except OSError:
            name = ""
    return name or socket.gethostname()


def default_host() -> str:
    """The address to bind: /etc/gateway/host, else 127.0.0.1."""
    try:
        return (ETC / "host").read_text().strip() or "127.0.0.1"
    except OSError:
        return "127.0.0.1"


def read_ini() -> dict[str, Any]:
    """Parse the 1.0 ``key=value`` config into a version-neutral dict."""
    if not INI_FILE.exists():
        raise GatewayError(f"missing config {INI_FILE}")
    port: int | None = None
    routes: list[dict[str, str]] = []
    secrets: dict[str, str] = {}
    for number, raw in enumerate(INI_FILE.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if "=" not in line:
            raise GatewayError(f"{INI_FILE}:{number}: expected key=value")
        key, value = (part.strip() for part in line.split("=", 1))
        if key == "listen_port":
            port = int(value)
        elif key.startswith("route."):
            routes.append({"name": key[len("route."):], "upstream": value})
        elif key.endswith("password") or key.endswith("secret"):
            secrets[key] = value
    if port is None:
        raise GatewayError(f"{INI_FILE}: listen_port is missing")
    return {"listen_port": port, "routes": routes, "secrets": secrets}


def validate_json_config(data: Any) -> dict[str, Any]:
    """Check the 2.0 config shape; return it or raise GatewayError."""
    if not isinstance(data, dict):
        raise GatewayError("config: top level must be an object")
    listen = data.get("listen")
    if not isinstance(listen, dict) or not isinstance(listen.get("port"), int):
        raise GatewayError("config: listen.port must be an integer")
    if not 0 < listen["port"] < 65536:
        raise GatewayError("config: listen.port out of range")
    routes = data.get("routes")
    if not isinstance(routes, list) or not all(
            isinstance(r, dict) and isinstance(r.get("name"), str) and isinstance(r.get("upstream"), str)
            for r in routes):
        raise GatewayError("config: routes must be a list of {name, upstream}")
    if not isinstance(data.get("secrets", {}), dict):
        raise GatewayError("config: secrets must be an object")
    return data


def read_json_config() -> dict[str, Any]:
    """Load and validate the 2.0 config."""
    if not JSON_FILE.exists():
        raise GatewayError(f"missing config {JSON_FILE} (run 'gateway upgrade --from EXPORT' first)")
    try:
        data = json.loads(JSON_FILE.read_text())
    except ValueError as exc:
        raise GatewayError(f"{JSON_FILE}: invalid JSON: {exc}") from None
    return validate_json_config(data)


APP_MODULE = os.environ.get("ZDU_APP_MODULE", "")
APP_NAME = os.environ.get("ZDU_APP_NAME") or f"Apinizer{APP_MODULE.capitalize()}App"
APP_ENV_FILE = INSTALL_DIR / "conf" / "application.env"
MASTER_KEY_FILE = INSTALL_DIR / "conf" / "master.key"


def _check_private(path: Path, allowed: int, mode_name: str) -> None:
    """Refuse ``path`` unless it is owned by the user running this and has no mode bit outside ``allowed``."""
    info = path.stat()
    if info.st_uid != os.getuid() or info.st_mode & 0o777 & ~allowed:
        raise GatewayError(f"{path} must be mode {mode_name} and owned by uid {os.getuid()} "
                           f"(is {info.st_mode & 0o777:04o}, uid {info.st_uid})")


def app_settings() -> dict[str, str]:
    """Module mode: SERVER_* settings from conf/application.env (checked with master.key), then the environment."""
    settings: dict[str, str] = {}
    if APP_ENV_FILE.exists():
        _check_private(APP_ENV_FILE, 0o600, "600")
        if not MASTER_KEY_FILE.exists():
            raise GatewayError(f"Master key file not found: {MASTER_KEY_FILE}")
        _check_private(MASTER_KEY_FILE, 0o400, "400")
        if not MASTER_KEY_FILE.read_bytes().strip():
            raise GatewayError(f"{MASTER_KEY_FILE} is empty")
        for raw in APP_ENV_FILE.read_text().splitlines():
            key, sep, value = raw.strip().partition("=")
            if sep and not key.startswith("#"):
                settings[key.strip()] = value.strip()
    settings.update({k: v for k, v in os.environ.items() if k.startswith("SERVER_")})
    for key in ("SERVER_HOST", "SERVER_PORT"):
        if not settings.get(key):
            raise GatewayError(f"{key} is not set (environment or {APP_ENV_FILE})")
    return settings


def listen_port() -> int:
    """The port this version listens on, from its own config format."""
    if APP_MODULE:
        return int(app_settings()["SERVER_PORT"])
    if VERSION.startswith("1."):
        return int(read_ini()["listen_port"])
    return int(read_json_config()["listen"]["port"])


# ------------------------------------------------------------------ process helpers

def log(message: str) -> None:
    """Append a timestamped line to logs/gateway.log."""
    LOG_FILE.parent.mkdir(parents=True, exist_ok=True)
    with LOG_FILE.open("a") as handle:
        handle.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} [{os.getpid()}] {message}\n")


def read_pid() -> int | None:
    """The pid of this version's live server process, or None."""
    try:
        pid = int(PID_FILE.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if is_our_server(pid) else None


def is_our_server(pid: int) -> bool:
    """True if ``pid`` is a live (not zombie) ``serve`` process of this install dir."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    if state in ("Z", "X"):
        return False
    args = [a.decode(errors="replace") for a in cmdline]
    return any(a == str(INSTALL_DIR / "bin" / "gateway") for a in args) and "serve" in args


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


# ------------------------------------------------------------------ subcommands

def cmd_export(args: argparse.Namespace) -> int:
    """1.0: write the config as version-neutral JSON."""
    if not VERSION.startswith("1."):
        raise GatewayError(f"export is a 1.0 command (this is {VERSION})")
    fault_point("export")
    config = read_ini()
    doc = {"format": EXPORT_FORMAT, "source_version": VERSION, "node": node_name(), **config}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, out)
    print(f"exported {len(config['routes'])} routes to {out}")
    return 0


def cmd_upgrade(args: argparse.Namespace) -> int:
    """2.0: convert an export into conf/gateway.json (starts nothing)."""
    if VERSION.startswith("1."):
        raise GatewayError(f"upgrade is a 2.0 command (this is {VERSION})")
    fault_point("upgrade")
    try:
        doc = json.loads(Path(args.from_file).read_text())
    except OSError as exc:
        raise GatewayError(f"cannot read export: {exc}") from None
    except ValueError as exc:
        raise GatewayError(f"export is not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != EXPORT_FORMAT:
        raise GatewayError(f"not a {EXPORT_FORMAT} file: {args.from_file}")
    config = validate_json_config({
        "listen": {"port": doc.get("listen_port")},
        "routes": [{"name": r.get("name"), "upstream": r.get("upstream")} for r in doc.get("routes", [])],
        "secrets": dict(doc.get("secrets", {})),
        "upgraded_from": doc.get("source_version"),
    })
    JSON_FILE.parent.mkdir(parents=True, exist_ok=True)
    tmp = JSON_FILE.with_name(JSON_FILE.name + ".tmp")
    tmp.write_text(json.dumps(config, indent=2) + "\n")
    os.replace(tmp, JSON_FILE)
    print(f"wrote {JSON_FILE} ({len(config['routes'])} routes)")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """2.0: validate the converted config."""
    fault_point("check")
    if VERSION.startswith("1."):
        read_ini()
    else:
        read_json_config()
    print(f"gateway {VERSION}: configuration OK")
    return 0


def systemd_unit() -> str | None:
    """``gateway@VERSION.service`` when systemd runs this node and has the lab's unit for this
    install dir (``/opt/gateway-VERSION``); None otherwise (the server then runs detached)."""
    if not Path("/run/systemd/system").is_dir() or INSTALL_DIR != Path(f"/opt/gateway-{VERSION}"):
        return None
    if not any(Path(d, "gateway@.service").exists() for d in ("/etc/systemd/system", "/lib/systemd/system")):
        return None
    return f"gateway@{VERSION}.service"


def _wait_listening(host: str, port: int, wait: float, exited: Any) -> int:
    """Poll until ``host:port`` accepts (0) or ``exited()`` returns an exit description (1)."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        code = exited()
        if code is not None:
            tail = LOG_FILE.read_text().splitlines()[-5:] if LOG_FILE.exists() else []
            print(f"gateway {VERSION} exited at start with {code}:", *tail, sep="\n", file=sys.stderr)
            PID_FILE.unlink(missing_ok=True)
            return 1
        try:
            with socket.create_connection((host, port), timeout=0.5):
                print(f"gateway {VERSION} started on {host}:{port} (pid {read_pid()})")
                return 0
        except OSError:
            time.sleep(0.05)
    print(f"gateway {VERSION} not listening after {wait}s (pid {read_pid()})", file=sys.stderr)
    return 1


def cmd_start(args: argparse.Namespace) -> int:
    """Start the server (its systemd unit, or a detached process); wait until it listens or dies."""
    hang_point("start")
    pid = read_pid()
    if pid:
        print(f"gateway {VERSION} already running (pid {pid})")
        return 0
    listen_port()  # refuse at once on a missing or broken config
    host = args.host or default_host()
    PID_FILE.parent.mkdir(parents=True, exist_ok=True)
    LOG_FILE.parent.mkdir(parents=True, exist_ok=True)
    port = listen_port()
    unit = systemd_unit()
    if unit is not None:
        Path("/run/gateway").mkdir(exist_ok=True)
        Path(f"/run/gateway/{VERSION}.env").write_text(f"GATEWAY_HOST={host}\n")
        subprocess.run(["systemctl", "reset-failed", unit], capture_output=True, check=False)
        started = subprocess.run(["systemctl", "start", unit], capture_output=True, text=True, check=False)
        if started.returncode != 0:
            print(f"systemctl start {unit} failed: {started.stderr.strip()}", file=sys.stderr)
            return 1

        def unit_ended() -> str | None:
            state = subprocess.run(["systemctl", "is-active", unit], capture_output=True, text=True,
                                   check=False).stdout.strip()
            return None if state in ("active", "activating") else f"{unit} {state}"
        return _wait_listening(host, port, args.wait, unit_ended)
    with open(os.devnull, "rb") as devnull, LOG_FILE.open("ab") as logf:
        proc = subprocess.Popen(
            [sys.executable, str(INSTALL_DIR / "bin" / "gateway"), "serve", "--host", host],
            stdin=devnull, stdout=logf, stderr=logf, start_new_session=True, close_fds=True)
    PID_FILE.write_text(f"{proc.pid}\n")
    return _wait_listening(host, port, args.wait,
                           lambda: None if proc.poll() is None else f"status {proc.returncode}")


def cmd_stop(args: argparse.Namespace) -> int:
    """SIGTERM the server, wait for the drain, SIGKILL after ``--timeout``."""
    fault_point("stop")
    pid = read_pid()
    if not pid:
        PID_FILE.unlink(missing_ok=True)
        print(f"gateway {VERSION} not running")
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + args.timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive(pid):
        log(f"stop: pid {pid} still running after {args.timeout}s, sending SIGKILL")
        os.kill(pid, signal.SIGKILL)
        while alive(pid):
            time.sleep(0.05)
    PID_FILE.unlink(missing_ok=True)
    print(f"gateway {VERSION} stopped (pid {pid})")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Exit 0 iff this version's server is running."""
    pid = read_pid()
    if pid:
        print(f"gateway {VERSION} running (pid {pid})")
        return 0
    print(f"gateway {VERSION} stopped")
    return 3


class Handler(BaseHTTPRequestHandler):
    """GET /, /health and /slow?ms=N."""

    server_version = f"SampleGateway/{VERSION}"
    # headers and body go out in separate writes; with Nagle on, the body waits for the
    # client's delayed ACK of the headers (~40 ms per response)
    disable_nagle_algorithm = True

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

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        url = urlparse(self.path)
        body = {"version": VERSION, "node": node_name(), "status": "ok"}
        if url.path == "/health" or (APP_MODULE and url.path in ("/server-status", "/management/health")):
            active = faults() if VERSION == "2.0" else set()
            if "hang-health" in active:
                time.sleep(3600)
            if "health" in active:
                self._answer(503, {**body, "status": "unhealthy"})
                return
            self._answer(200, body)
        elif url.path == "/slow":
            query = parse_qs(url.query)
            ms = int(query.get("ms", ["1000"])[0])
            tag = query.get("id", ["-"])[0]
            log(f"slow request {tag} started ({ms} ms)")   # lets tests see it is in flight
            time.sleep(ms / 1000)
            log(f"slow request {tag} done")
            self._answer(200, {**body, "slept_ms": ms})
        elif url.path == "/":
            self._answer(200, body)
        else:
            self._answer(404, {**body, "status": "not found"})


class GatewayServer(ThreadingHTTPServer):
    """The threading HTTP server with a listen backlog that survives bursts (default 5)."""

    request_queue_size = 128

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client that hangs up early (a health check, a cut request) is not the server's error;
        # one line instead of a traceback (which, under systemd, would fill the journal)
        exc = sys.exc_info()[1]
        if not isinstance(exc, (ConnectionError, TimeoutError)):
            log(f"request from {client_address[0]} failed: {type(exc).__name__}: {exc}")


def _peer_healthy(peer: str) -> bool:
    host, _, port = peer.rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=0.5)
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def cluster_member(me: str, stopping: threading.Event) -> None:
    """The cache-member stand-in (see the module doc): log the membership while the server runs."""
    try:
        spec = json.loads(CLUSTER_FILE.read_text())
        peers = [str(p) for p in spec.get("peers", []) if str(p) != me]
        delay = float(spec.get("join_delay", 0))
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        log(f"cluster: ignoring {CLUSTER_FILE}: {exc}")
        return
    if stopping.wait(delay):
        return
    last: list[str] | None = None
    while True:
        members = [me] + [p for p in peers if _peer_healthy(p)]
        if members != last:
            listed = ", ".join(f"Member [{m.rsplit(':', 1)[0]}]:{m.rsplit(':', 1)[1]}" + (" this" if m == me else "")
                               for m in members)
            log(f"Members {{size:{len(members)}, ver:{VERSION}}} [{listed}]")
            last = members
        if stopping.wait(0.5):
            return


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the server in the foreground (``start`` runs this in the background)."""
    try:
        fail_point("start")
        port = listen_port()
        if APP_MODULE:
            args.host = app_settings()["SERVER_HOST"]
        server = GatewayServer((args.host, port), Handler)
    except (GatewayError, OSError) as exc:
        log(f"ERROR: gateway {VERSION} failed to start: {exc}")
        if APP_MODULE:
            print(f"ERROR: {APP_MODULE} {VERSION} failed to start: {exc}", file=sys.stderr, flush=True)
        return 1
    server.daemon_threads = False   # server_close() joins the in-flight requests
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    loop = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    loop.start()
    PID_FILE.parent.mkdir(parents=True, exist_ok=True)
    PID_FILE.write_text(f"{os.getpid()}\n")
    log(f"Started gateway {VERSION} on {args.host}:{port}")
    if not APP_MODULE and CLUSTER_FILE.exists():
        threading.Thread(target=cluster_member, args=(f"{args.host}:{port}", stopping), daemon=True).start()
    if APP_MODULE:
        print(f"Started {APP_NAME} on {args.host}:{port} (version {VERSION})", flush=True)
    else:
        print(f"Started gateway {VERSION} on {args.host}:{port}", flush=True)   # the journal, under systemd
    while not stopping.wait(1.0):
        pass
    log(f"SIGTERM: gateway {VERSION} stops accepting, draining in-flight requests")
    server.shutdown()        # no new accepts
    server.socket.close()    # refuse new connections at once
    server.server_close()    # waits for the request threads
    log(f"Stopped gateway {VERSION}")
    if APP_MODULE:
        print(f"Stopped {APP_MODULE} {VERSION}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``gateway SUBCOMMAND [options]``."""
    parser = argparse.ArgumentParser(prog="gateway", description=f"sample API gateway {VERSION}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("export", help="(1.0) export the config as version-neutral JSON")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("upgrade", help="(2.0) convert an export into conf/gateway.json")
    p.add_argument("--from", dest="from_file", required=True)
    p.set_defaults(func=cmd_upgrade)
    p = sub.add_parser("check", help="validate the configuration")
    p.set_defaults(func=cmd_check)
    p = sub.add_parser("start", help="start in the background")
    p.add_argument("--host", default=None)
    p.add_argument("--wait", type=float, default=10.0, help="seconds to wait until listening")
    p.set_defaults(func=cmd_start)
    p = sub.add_parser("stop", help="graceful stop (SIGTERM, then SIGKILL after --timeout)")
    p.add_argument("--timeout", type=float, default=20.0)
    p.set_defaults(func=cmd_stop)
    p = sub.add_parser("status", help="exit 0 iff running")
    p.set_defaults(func=cmd_status)
    p = sub.add_parser("serve", help="run the server in the foreground")
    p.add_argument("--host", default=None)
    p.set_defaults(func=cmd_serve)
    args = parser.parse_args(argv)
    if getattr(args, "host", "x") is None:
        args.host = os.environ.get("GATEWAY_HOST") or default_host()
    try:
        return int(args.func(args))
    except GatewayError as exc:
        print(f"gateway {VERSION}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
