"""HAProxy runtime API: transports and parsers used by :mod:`zdu.lb.haproxy`.

One command per connection: HAProxy answers a non-interactive command and
closes the connection, so reading to EOF gives the whole answer.  A command
that HAProxy accepts silently (``set server ... state ...``) answers with an
empty line; anything else is HAProxy's refusal text ("No such server.").
"""
from __future__ import annotations

import abc
import csv
import io
import re
import shlex
import socket
from typing import Callable

from zdu.errors import TransportError
from zdu.transport.base import CommandHandler
from zdu.config.values import port_number, valid_host

#: the stat columns this package reads (HAProxy management guide, section 9.1)
STAT_COLUMNS = ("pxname", "svname", "scur", "status", "weight", "check_status")


class SocketUnreachable(Exception):
    """The runtime API socket could not be reached or did not answer."""

    def __init__(self, instance: str, reason: str) -> None:
        super().__init__(f"haproxy socket {instance}: {reason}")
        self.instance = instance
        self.reason = reason


class RuntimeApi(abc.ABC):
    """One HAProxy instance's runtime API (stats socket at level admin)."""

    def __init__(self, address: str) -> None:
        #: the socket as the user wrote it; used as the instance's name
        self.address = address

    @property
    def instance(self) -> str:
        """The name of this instance in messages and details."""
        return self.address

    @abc.abstractmethod
    def execute(self, command: str) -> str:
        """Send one command and return HAProxy's answer; raise SocketUnreachable."""

    def close(self) -> None:
        """Release any connection (idempotent)."""


#: HAProxy's identifier characters (proxy and server names): anything else is refused,
#: because in a runtime-API command ``;`` separates commands, a newline ends one and a
#: space splits its words
IDENTIFIER = re.compile(r"[A-Za-z0-9_.:-]+")
IDENTIFIER_HINT = "only letters, digits, '-', '_', '.' and ':' (HAProxy's identifier characters)"

#: a unix socket path that socat takes as a plain path: no ``!!`` (dual address), ``,``
#: (address options), ``:`` (address type) or whitespace
_SOCAT_PATH = re.compile(r"/[A-Za-z0-9._/@+-]*")


def is_identifier(name: str) -> bool:
    """True when ``name`` is a HAProxy backend or server name that is safe in a command."""
    return bool(IDENTIFIER.fullmatch(name))


def parse_address(address: str) -> tuple[str, str | tuple[str, int]]:
    """Split ``"tcp:HOST:PORT"`` or a unix socket path (``unix:`` prefix optional) into
    (kind, target).  HOST is an IP address (IPv6 in brackets) or a plain host name.

    Raises ValueError for a malformed address.
    """
    if address.startswith("tcp:"):
        host, sep, port = address[4:].rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        number = port_number(port) if sep else None
        if number is None or not valid_host(host):
            raise ValueError(f"expected tcp:HOST:PORT with HOST an IP address or a host name "
                             f"and PORT 1-65535, got {address!r}")
        return "tcp", (host, number)
    if address.startswith("unix:"):
        address = address[5:]
    if not address:
        raise ValueError("empty socket path")
    return "unix", address


def socat_address(address: str) -> str:
    """The socat address of a runtime-API socket on the LB host; ValueError for anything
    socat could read as more than a plain path or host and port."""
    _, target = parse_address(address)
    if isinstance(target, tuple):
        host, port = target
        return f"TCP:[{host}]:{port}" if ":" in host else f"TCP:{host}:{port}"
    path = str(target)
    if not _SOCAT_PATH.fullmatch(path):
        raise ValueError(f"{address!r}: a socket reached over via: must be an absolute path of "
                         "letters, digits and . _ / @ + - (socat would read ':' ',' '!!' or a "
                         "space as address syntax)")
    return f"UNIX-CONNECT:{path}"


def refuse_unsafe_command(command: str) -> None:
    """A runtime-API command is one line of words: refuse ``;`` and control characters
    (names are validated before any command is built; this is the last guard)."""
    if ";" in command or any(ord(c) < 0x20 or ord(c) == 0x7F for c in command):
        raise ValueError(f"refusing to send an unsafe runtime-API command: {command!r}")


class LocalSocketApi(RuntimeApi):
    """A unix socket path or ``tcp:HOST:PORT`` reached from the control machine."""

    def __init__(self, address: str, *, timeout: float = 5.0) -> None:
        super().__init__(address)
        self.kind, self.target = parse_address(address)
        self.timeout = timeout

    def execute(self, command: str) -> str:
        refuse_unsafe_command(command)
        family = socket.AF_UNIX if self.kind == "unix" else socket.AF_INET
        if self.kind == "tcp" and ":" in str(self.target[0]):  # type: ignore[index]
            family = socket.AF_INET6
        try:
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout)
                sock.connect(self.target)
                sock.sendall(command.encode() + b"\n")
                chunks: list[bytes] = []
                while True:
                    data = sock.recv(65536)
                    if not data:
                        break
                    chunks.append(data)
        except OSError as exc:  # refused, missing path, permission, timeout
            raise SocketUnreachable(self.address, _os_reason(exc)) from exc
        return b"".join(chunks).decode(errors="replace")


class RemoteSocketApi(RuntimeApi):
    """A socket on the LB host, reached by running ``socat`` there over a CommandHandler.

    The command goes through the LB account's login shell, whatever it is (bash, dash,
    zsh): ``printf '%s\\n'`` passes it byte for byte where ``echo`` would expand
    backslash escapes, and the socat address is validated to be a plain path or
    host:port (see :func:`socat_address`) and quoted.  ValueError for a bad address.
    """

    def __init__(self, address: str, via: str, handler_factory: Callable[[str], CommandHandler],
                 *, timeout: float = 10.0) -> None:
        super().__init__(address)
        self.kind, self.target = parse_address(address)
        self.peer = socat_address(address)
        self.via = via
        self._factory = handler_factory
        self._handler: CommandHandler | None = None
        self.timeout = timeout

    @property
    def instance(self) -> str:
        return f"{self.via}:{self.address}"

    def socat_command(self, command: str) -> str:
        """The shell line run on the LB host for ``command``."""
        refuse_unsafe_command(command)
        return f"printf '%s\\n' {shlex.quote(command)} | socat - {shlex.quote(self.peer)}"

    def execute(self, command: str) -> str:
        line = self.socat_command(command)
        try:
            if self._handler is None:
                handler = self._factory(self.via)
                handler.open()
                self._handler = handler
            result = self._handler.run(line, timeout=self.timeout)
        except TransportError as exc:
            self.close()
            raise SocketUnreachable(self.instance, f"via {self.via}: {exc.detail}") from exc
        if not result.ok:
            if result.exit_code == 127:
                raise SocketUnreachable(self.instance, f"socat is not installed on {self.via} "
                                                       "(exit 127)")
            why = result.error or f"socat exit {result.exit_code}"
            err = (result.stderr or "").strip().splitlines()
            raise SocketUnreachable(self.instance, f"{why}: {err[-1]}" if err else why)
        return result.stdout

    def close(self) -> None:
        handler, self._handler = self._handler, None
        if handler is not None:
            handler.close()


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, socket.timeout):
        return "no answer (timeout)"
    return exc.strerror or str(exc) or type(exc).__name__


def is_success(answer: str) -> bool:
    """True for the empty answer HAProxy gives to an accepted ``set``/``shutdown`` command."""
    return answer.strip() == ""


def parse_stat_csv(text: str) -> list[dict[str, str]]:
    """Parse ``show stat`` CSV output into one dict per row, keyed by column name.

    Returns an empty list for an answer without the ``# pxname,...`` header
    (HAProxy's error text, e.g. "No such proxy.").
    """
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("# pxname"):
            header = line[2:].split(",")
            body = "\n".join(row for row in lines[index + 1:] if row.strip())
            return [dict(zip(header, row)) for row in csv.reader(io.StringIO(body))]
    return []


def parse_servers_state(text: str) -> dict[str, dict[str, str]]:
    """Parse ``show servers state [BACKEND]`` into one dict per server, keyed by server name.

    Fields are named by HAProxy's own header (``srv_admin_state``, ``srv_op_state``, ...).
    """
    lines = [line for line in text.splitlines() if line.strip()]
    header = next((line for line in lines if line.startswith("#")), "").lstrip("# ").split()
    states: dict[str, dict[str, str]] = {}
    for line in lines:
        if not line[0].isdigit():  # the version line and the header
            continue
        row = dict(zip(header, line.split()))
        if "srv_name" in row:
            states[row["srv_name"]] = row
    return states


def parse_info(text: str) -> dict[str, str]:
    """Parse ``show info`` (``Name: value`` lines) into a dict; {} for anything else."""
    info: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key and " " not in key.strip():
            info[key.strip()] = value.strip()
    return info
