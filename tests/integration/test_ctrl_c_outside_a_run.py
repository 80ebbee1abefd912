"""Ctrl-C where no run's signal handling is in place, with zdupgrade as a real process and real
signals:

- while the program loads (the signal sent from inside the process as it imports jinja2, so the
  moment is certain): one line and 130, no traceback;
- while it waits for a node that accepts the TCP connection and never says a word (a hung sshd,
  a firewall that answers for it), on a real listening socket that counts the connections:
  - an upgrade run in preflight ends INTERRUPTED, nothing changed; it neither goes on with the
    connect's remaining retries (4 x connect_timeout; one connection only) nor waits out the
    attempt in flight (the handshake under way is cut: it ends long before connect_timeout);
  - the same when the silent one is the node's jump host, and when the node drops the SYN (a
    connect waiting for the TCP connection: a listener whose accept queue is full);
  - ``zdupgrade lock status`` ends with one line and 130, no traceback, no retry, and no wait
    for the attempt in flight either.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.support.localfleet import ROOT
from zdu.status import Status


class Silent:
    """A TCP listener on loopback that accepts and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)     # wakes the accept (closing alone would not)
        except OSError:
            pass
        self.sock.close()
        for conn in self.accepted:
            conn.close()


class Full:
    """A TCP listener on loopback whose accept queue is full (one connection queued, never
    accepted): the kernel drops every further SYN, as a firewall that drops does, and a connect
    waits for an answer that never comes."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)
        self.port = self.sock.getsockname()[1]
        self.queued = socket.create_connection(("127.0.0.1", self.port), timeout=5)

    def waiting(self) -> int:
        """How many connects to it wait for an answer to their SYN (SYN_SENT in /proc/net/tcp)."""
        remote = f"0100007F:{self.port:04X}"
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
        return sum(1 for line in lines if line.split()[2] == remote and line.split()[3] == "02")

    def close(self) -> None:
        self.queued.close()
        self.sock.close()


@pytest.fixture
def silent() -> Iterator[Silent]:
    listener = Silent()
    yield listener
    listener.close()


#: long enough that waiting it out cannot pass for cutting the handshake short
CONNECT_TIMEOUT = 40


def interrupted(tmp_path: Path, silent: Silent | Full, *argv: str,
                jump: bool = False) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run ``./zdupgrade ARGV`` against the silent node (``jump``: the silent one is the node's
    jump host); SIGINT once it is connected (a Full one: once its SYN waits) and waiting.  The
    process's result, and the seconds from the SIGINT to its end."""
    (tmp_path / "known_hosts").write_text("")
    config = tmp_path / "topology.yaml"
    node = (f"{{name: gw1, host: 127.0.0.9, proxy_jump: 'root@127.0.0.1:{silent.port}'}}" if jump
            else f"{{name: gw1, host: 127.0.0.1, port: {silent.port}}}")
    config.write_text("profile: lab-gateway\n"
                      f"ssh: {{connect_timeout: {CONNECT_TIMEOUT}, known_hosts: {tmp_path / 'known_hosts'}}}\n"
                      f"nodes:\n  - {node}\n")
    proc = subprocess.Popen([sys.executable, str(ROOT / "zdupgrade"), *argv, "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(tmp_path),
                            env={**os.environ, "NO_COLOR": "1"})
    ready = silent.waiting if isinstance(silent, Full) else lambda: len(silent.accepted)
    deadline = time.monotonic() + 30
    while not ready() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert ready(), "zdupgrade never connected"
    time.sleep(0.2)                       # it waits for the SSH banner (Full: its SYN's answer) now
    proc.send_signal(signal.SIGINT)
    sent = time.monotonic()
    out, err = proc.communicate(timeout=4 * CONNECT_TIMEOUT + 30)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), time.monotonic() - sent


def test_ctrl_c_while_the_program_loads_is_one_line_and_130() -> None:
    script = ("import builtins, os, signal, sys\n"
              f"sys.path.insert(0, {str(ROOT)!r})\n"
              "from zdu.__main__ import launch\n"
              "real = builtins.__import__\n"
              "def pressed(name, *args, **kwargs):\n"
              "    if name == 'jinja2':\n"
              "        os.kill(os.getpid(), signal.SIGINT)\n"
              "    return real(name, *args, **kwargs)\n"
              "builtins.__import__ = pressed\n"
              "sys.argv = ['zdupgrade', '--help']\n"
              "launch()\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == Status.INTERRUPTED, done.stdout + done.stderr
    assert done.stderr == "zdupgrade: interrupted\n" and done.stdout == ""


def test_ctrl_c_in_preflight_does_not_wait_for_the_connect_retries(tmp_path: Path, silent: Silent) -> None:
    done, after = interrupted(tmp_path, silent, "--old_install_dir", "/opt/gateway-1.0",
                              "--new_install_dir", "/opt/gateway-2.0", "--log_dir", str(tmp_path / "logs"))
    assert done.returncode == Status.INTERRUPTED, done.stdout + done.stderr
    assert "interrupted during preflight: nothing was changed" in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert len(silent.accepted) == 1          # the attempt in flight, and no retry after Ctrl-C
    # the handshake in flight was cut, not waited out (that alone takes CONNECT_TIMEOUT)
    assert after < CONNECT_TIMEOUT / 2, f"{after:.1f} s from the SIGINT to the end"


def test_ctrl_c_in_preflight_cuts_a_connect_that_waits_for_its_syn_answer(tmp_path: Path) -> None:
    full = Full()
    try:
        done, after = interrupted(tmp_path, full, "--old_install_dir", "/opt/gateway-1.0",
                                  "--new_install_dir", "/opt/gateway-2.0", "--log_dir", str(tmp_path / "logs"))
        assert full.waiting() == 0            # the connect was given up, not left behind
    finally:
        full.close()
    assert done.returncode == Status.INTERRUPTED, done.stdout + done.stderr
    assert "interrupted during preflight: nothing was changed" in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert after < CONNECT_TIMEOUT / 2, f"{after:.1f} s from the SIGINT to the end"


def test_ctrl_c_in_preflight_cuts_a_jump_hosts_handshake_short(tmp_path: Path, silent: Silent) -> None:
    done, after = interrupted(tmp_path, silent, "--old_install_dir", "/opt/gateway-1.0",
                              "--new_install_dir", "/opt/gateway-2.0", "--log_dir", str(tmp_path / "logs"),
                              jump=True)
    assert done.returncode == Status.INTERRUPTED, done.stdout + done.stderr
    assert "interrupted during preflight: nothing was changed" in done.stdout + done.stderr
    assert len(silent.accepted) == 1
    assert after < CONNECT_TIMEOUT / 2, f"{after:.1f} s from the SIGINT to the end"


def test_ctrl_c_in_lock_status_is_one_line_and_130(tmp_path: Path, silent: Silent) -> None:
    done, after = interrupted(tmp_path, silent, "lock", "status")
    assert done.returncode == Status.INTERRUPTED, done.stdout + done.stderr
    assert done.stderr == "zdupgrade: interrupted\n", done.stderr
    assert len(silent.accepted) == 1
    assert after < CONNECT_TIMEOUT / 2, f"{after:.1f} s from the SIGINT to the end"
