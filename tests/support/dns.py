"""A process that sees only a DNS server on loopback which knows no name, for tests of names
nobody can resolve without asking the machine's real resolver (traffic stays on loopback); or
an ``/etc/hosts`` of the test's own, for names with the addresses a test needs.

``NxdomainServer(address)`` answers every query on ``address:53`` (UDP) with NXDOMAIN, as a real
server does for a name that does not exist; :func:`resolv_conf_wrapper` gives the argv prefix
that runs a command in a mount namespace of its own where ``/etc/resolv.conf`` names only it.
"""
from __future__ import annotations

import shutil
import socket
import struct
import threading
from pathlib import Path


class NxdomainServer:
    """A UDP DNS server on ``address:53`` that says "no such name" (RCODE 3) to every query."""

    def __init__(self, address: str) -> None:
        if not address.startswith("127."):
            raise ValueError(f"loopback only, not {address}")
        self.address = address
        self.queries: list[str] = []
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((address, 53))
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="nxdomain", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self._sock.recvfrom(512)
            except socket.timeout:
                continue
            except OSError:
                return
            if len(data) < 12:
                continue
            ident, flags, qdcount = struct.unpack("!HHH", data[:6])
            question = data[12:]
            self.queries.append(_qname(question))
            # response, the query's opcode and RD bit, RA, RCODE 3 (NXDOMAIN); the question echoed
            answer_flags = 0x8000 | (flags & 0x7900) | 0x0080 | 3
            self._sock.sendto(struct.pack("!HHHHHH", ident, answer_flags, qdcount, 0, 0, 0) + question, peer)

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        self._thread.join(timeout=2)


def _qname(question: bytes) -> str:
    labels, i = [], 0
    while i < len(question) and question[i]:
        length = question[i]
        labels.append(question[i + 1:i + 1 + length].decode(errors="replace"))
        i += 1 + length
    return ".".join(labels)


def resolv_conf_wrapper(resolv_conf: Path, nameserver: str) -> list[str]:
    """argv prefix: run the command with ``/etc/resolv.conf`` naming only ``nameserver`` (a
    private mount namespace; the machine's file is untouched).  Needs root and unshare(1)."""
    resolv_conf.write_text(f"nameserver {nameserver}\noptions attempts:1 timeout:1\n")
    return bind_over_wrapper(resolv_conf, "/etc/resolv.conf")


def hosts_file_wrapper(hosts: Path, entries: str) -> list[str]:
    """argv prefix: run the command with ``/etc/hosts`` holding ``entries`` only (``ADDRESS
    NAME`` lines), as :func:`resolv_conf_wrapper` does for ``/etc/resolv.conf``."""
    hosts.write_text(entries)
    return bind_over_wrapper(hosts, "/etc/hosts")


def bind_over_wrapper(replacement: Path, path: str) -> list[str]:
    """argv prefix: run the command with ``replacement`` mounted over ``path`` in a private
    mount namespace (the machine's file is untouched).  Needs root and unshare(1)."""
    unshare = shutil.which("unshare") or "/usr/bin/unshare"
    return [unshare, "--mount", "--propagation", "private", "sh", "-c",
            f'mount --bind "$0" {path} && exec "$@"', str(replacement)]
