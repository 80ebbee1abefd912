"""A real OpenSSH server on a loopback address, for fast transport tests.

``SshdServer`` runs a plain ``/usr/sbin/sshd -D -e -f CONFIG`` on ``127.0.0.x`` and a
free port, with a freshly generated ed25519 host key and an ``authorized_keys`` file
holding a freshly generated client key.  ``start`` polls the port until the
``SSH-2.0-`` banner answers; ``crash`` kills the daemon *and* every process it
spawned (sessions, commands), which is what a node crash looks like to a client.

Test modules import the fixtures explicitly::

    from tests.support.sshd import SshdServer, sshd_server  # noqa: F401

Only loopback addresses are accepted.
"""
from __future__ import annotations

import functools
import getpass
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import pytest

SSHD = "/usr/sbin/sshd"
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"


def sshd_argv(config: Path) -> list[str]:
    """sshd in the foreground; as root, in a mount namespace of its own where root's ~/.bashrc is
    empty.  bash reads ~/.bashrc for every command sshd starts, and this machine's runs
    ``pyenv init``, whose rehash takes a lock file: a test that kills a session's processes at the
    wrong moment leaves that lock behind, and every later login waits 60 s for it.  A node's rc
    files are the node's business; the tests' logins must not depend on the control machine's."""
    argv = [SSHD, "-D", "-e", "-f", str(config)]
    bashrc = Path.home() / ".bashrc"
    hide = _hide_command(str(bashrc)) if bashrc.exists() else None
    return [*hide, *argv] if hide else argv


@functools.lru_cache(maxsize=None)
def _hide_command(path: str) -> tuple[str, ...] | None:
    """The prefix that runs a command with ``path`` bind-mounted to /dev/null in a private mount
    namespace, or None where that cannot be done (not root, no unshare, no CAP_SYS_ADMIN)."""
    unshare = shutil.which("unshare")
    if os.geteuid() != 0 or not unshare:
        return None
    prefix = (unshare, "--mount", "--propagation", "private", "sh", "-c",
              'mount --bind /dev/null "$1" && shift && exec "$@"', "sh", path)
    probe = subprocess.run([*prefix, "true"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return prefix if probe.returncode == 0 else None


def sshd_available() -> bool:
    """True when an OpenSSH server binary and ssh-keygen exist and we are root."""
    return os.path.exists(SSHD) and os.path.exists(SSH_KEYGEN) and os.geteuid() == 0


def free_port(host: str) -> int:
    """A TCP port nobody listens on at ``host`` right now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def keygen(path: Path, comment: str = "zdu-test") -> Path:
    """Generate an unencrypted ed25519 key pair at ``path`` (+ ``.pub``)."""
    subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", comment,
                    "-f", str(path)], check=True, stdin=subprocess.DEVNULL)
    return path


def fingerprint(pub_path: Path) -> str:
    """The SHA256 fingerprint of a public key file, as ``ssh-keygen -lf`` prints it."""
    out = subprocess.run([SSH_KEYGEN, "-lf", str(pub_path)], check=True,
                         capture_output=True, text=True).stdout
    return out.split()[1]


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                stat = fh.read()
        except OSError:
            continue
        # the command name may hold spaces and parentheses: split after the last ')'
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            kids.append(int(entry))
    return kids


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children first found, breadth-first)."""
    found: list[int] = []
    todo = [pid]
    while todo:
        for kid in _children(todo.pop()):
            found.append(kid)
            todo.append(kid)
    return found


@dataclass
class SshdServer:
    """One plain sshd on ``host:port`` with its own keys, config and log in ``workdir``."""

    workdir: Path
    host: str = "127.0.0.1"
    port: int = 0
    user: str = field(default_factory=getpass.getuser)
    process: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        if not ipaddress.ip_address(self.host).is_loopback:
            raise ValueError(f"test sshd must listen on loopback, not {self.host}")
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port(self.host)
        self.host_key = keygen(self.workdir / "ssh_host_ed25519_key", "zdu-test-host")
        self.client_key = keygen(self.workdir / "client_ed25519", "zdu-test-client")
        shutil.copyfile(f"{self.client_key}.pub", self.workdir / "authorized_keys")
        self.config = self.workdir / "sshd_config"
        self.log_path = self.workdir / "sshd.log"
        self.write_config()

    # ------------------------------------------------------------------ keys

    @property
    def host_fingerprint(self) -> str:
        """``SHA256:...`` of the host key, as ``ssh-keygen -lf`` prints it."""
        return fingerprint(Path(f"{self.host_key}.pub"))

    @property
    def known_hosts_name(self) -> str:
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    def known_hosts_line(self) -> str:
        """A known_hosts line trusting this server's current host key."""
        key_type, blob = Path(f"{self.host_key}.pub").read_text().split()[:2]
        return f"{self.known_hosts_name} {key_type} {blob}\n"

    def regenerate_host_key(self) -> None:
        """Replace the host key (a reinstalled node, or an impostor); restart to apply."""
        for path in (self.host_key, Path(f"{self.host_key}.pub")):
            path.unlink()
        keygen(self.host_key, "zdu-test-host-new")

    # ------------------------------------------------------------------ process

    def write_config(self) -> None:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        self.config.write_text(
            f"ListenAddress {f'[{self.host}]' if ':' in self.host else self.host}:{self.port}\n"
            f"HostKey {self.host_key}\n"
            f"PidFile {self.workdir / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {self.workdir / 'authorized_keys'}\n"
            "PermitRootLogin prohibit-password\n"
            "PubkeyAuthentication yes\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "StrictModes no\n"
            "UsePAM no\n"
            "LogLevel VERBOSE\n"
            "MaxStartups 50\n")

    def start(self, timeout: float = 10.0) -> "SshdServer":
        """Start sshd and poll until it answers with an SSH banner."""
        if self.running:
            return self
        log = open(self.log_path, "ab")
        try:
            self.process = subprocess.Popen(
                sshd_argv(self.config), stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"sshd exited with {self.process.returncode}:\n{self.log_text()}")
            if self._banner_ok():
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"sshd on {self.host}:{self.port} gave no banner:\n{self.log_text()}")
            time.sleep(0.02)

    def _banner_ok(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as sock:
                return sock.recv(64).startswith(b"SSH-2.0-")
        except OSError:
            return False

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """Stop the daemon and everything it spawned (idempotent)."""
        self.crash()

    def crash(self) -> None:
        """SIGKILL sshd and all its descendants at once: the node 'dies'."""
        if self.process is None:
            return
        if self.process.poll() is None:
            victims = [self.process.pid, *descendants(self.process.pid)]
            for pid in victims:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.process.wait(timeout=10)
        self.process = None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def accepted_logins(self) -> int:
        """How many SSH logins sshd accepted so far (one per client connection)."""
        return self.log_text().count("Accepted publickey for")


@pytest.fixture
def sshd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., SshdServer]]:
    """Factory fixture: ``sshd_server(host="127.0.0.1")`` → a started :class:`SshdServer`.

    Every server the test started is stopped at teardown.
    """
    if not sshd_available():
        pytest.skip("needs root and OpenSSH server binaries")
    servers: list[SshdServer] = []

    def factory(host: str = "127.0.0.1", *, start: bool = True) -> SshdServer:
        server = SshdServer(tmp_path_factory.mktemp("sshd"), host=host)
        servers.append(server)
        return server.start() if start else server

    yield factory
    for server in servers:
        server.stop()
