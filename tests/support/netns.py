"""Network namespaces in a line, for tests where a bastion is the only way in.

``NetnsLine(3)`` builds::

    root ns --veth-- ns[0] --veth-- ns[1] --veth-- ns[2]
    .1          .2 / .5         .6 / .9         .10      (10.250.X.0/24, X from the pid)

Each namespace reaches only its neighbours: namespaces do not forward (``ip_forward=0``),
and the root namespace gets an ``unreachable`` route for the rest of the /24, so a
direct connection from the test process to ``ns[1]`` fails at once with "no route to
host" (and never leaves the machine through the default route).  An sshd started in
``ns[i]`` by :class:`NetnsSshd` is reached from the root namespace only through the
sshd of ``ns[0]`` ... ``ns[i-1]``: that is the real-bastion topology, on one machine.

Needs root and ``ip`` (iproute2); :func:`netns_available` says whether both work here.
"""
from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.sshd import SshdServer, sshd_argv

IP = "/usr/sbin/ip" if os.path.exists("/usr/sbin/ip") else "ip"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([IP, *args], check=check, capture_output=True, text=True)


def netns_available() -> bool:
    """True when we are root and may create network namespaces."""
    if os.geteuid() != 0:
        return False
    name = f"zdu-h5-probe-{os.getpid()}"
    if _ip("netns", "add", name, check=False).returncode != 0:
        return False
    _ip("netns", "del", name, check=False)
    return True


class NetnsLine:
    """``count`` namespaces linked in a line to the root namespace (see the module doc)."""

    def __init__(self, count: int) -> None:
        pid = os.getpid()
        self.octet = 20 + pid % 200
        self.prefix = f"10.250.{self.octet}"
        self.names = [f"zdu-h5-{pid}-{i}" for i in range(count)]
        self._links: list[str] = []
        self._route = f"{self.prefix}.0/24"
        try:
            self._build(pid, count)
        except BaseException:
            self.close()
            raise

    def address(self, index: int) -> str:
        """The address of ``ns[index]`` on the link towards the root namespace."""
        return f"{self.prefix}.{4 * index + 2}"

    @property
    def root_address(self) -> str:
        return f"{self.prefix}.1"

    def _build(self, pid: int, count: int) -> None:
        for name in self.names:
            _ip("netns", "add", name)
            _ip("-n", name, "link", "set", "lo", "up")
            _ip("netns", "exec", name, "sysctl", "-qw", "net.ipv4.ip_forward=0")
        for i in range(count):
            left, right = f"z5{pid % 100000}l{i}", f"z5{pid % 100000}r{i}"
            _ip("link", "add", left, "type", "veth", "peer", "name", right)
            self._links.append(left)
            _ip("link", "set", right, "netns", self.names[i])
            if i == 0:
                _ip("addr", "add", f"{self.prefix}.1/30", "dev", left)
                _ip("link", "set", left, "up")
            else:
                _ip("link", "set", left, "netns", self.names[i - 1])
                _ip("-n", self.names[i - 1], "addr", "add", f"{self.prefix}.{4 * i + 1}/30",
                    "dev", left)
                _ip("-n", self.names[i - 1], "link", "set", left, "up")
            _ip("-n", self.names[i], "addr", "add", f"{self.prefix}.{4 * i + 2}/30", "dev", right)
            _ip("-n", self.names[i], "link", "set", right, "up")
        # everything else in the /24 is unreachable from here: fail fast, stay on this host
        _ip("route", "add", "unreachable", self._route)

    def close(self) -> None:
        """Remove the route, the links and the namespaces (idempotent)."""
        _ip("route", "del", "unreachable", self._route, check=False)
        for link in self._links:
            _ip("link", "del", link, check=False)
        for name in self.names:
            _ip("netns", "del", name, check=False)
        self._links = []


@dataclass
class NetnsSshd(SshdServer):
    """An :class:`SshdServer` listening on ``host`` inside network namespace ``netns``.

    Readiness is read from sshd's own log ("Server listening on"), since the test
    process may have no route to it.
    """

    netns: str = ""
    extra_config: str = ""
    _listen: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        self._listen, self.host = self.host, "127.0.0.1"   # the base class wants loopback
        if not self.port:
            self.port = 2200
        super().__post_init__()
        self.host = self._listen
        self.write_config()

    def write_config(self) -> None:
        super().write_config()
        if self.extra_config:
            with open(self.config, "a", encoding="utf-8") as fh:
                fh.write(self.extra_config)

    def start(self, timeout: float = 10.0) -> "NetnsSshd":
        if self.running:
            return self
        before = self.log_text().count("Server listening on")
        log = open(self.log_path, "ab")
        try:
            self.process = subprocess.Popen(
                [IP, "netns", "exec", self.netns, *sshd_argv(self.config)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while self.log_text().count("Server listening on") <= before:
            if self.process.poll() is not None:
                raise RuntimeError(f"sshd exited with {self.process.returncode}:\n{self.log_text()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"sshd in {self.netns} did not start:\n{self.log_text()}")
            time.sleep(0.02)
        return self

    def login_sources(self) -> list[str]:
        """The client address of every accepted login, in order."""
        return re.findall(r"Accepted publickey for \S+ from (\S+) port", self.log_text())

    def authorize(self, public_key: Path) -> None:
        """Also accept the key whose ``.pub`` is ``public_key``."""
        with open(self.workdir / "authorized_keys", "a", encoding="utf-8") as fh:
            fh.write(Path(public_key).read_text())
