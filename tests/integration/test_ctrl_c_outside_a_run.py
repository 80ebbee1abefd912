"""Ctrl-C where no run's signal handling is in place, with zdupgrade as a real process and real
signals:

- while the program loads (the signal sent from inside the process as it imports jinja2, so the
  moment is certain): one line and 130, no traceback;
- while it waits for a node that accepts the TCP connection and never says a word (a hung sshd,
  a firewall that answers for it), on a real listening socket that counts the connections:
  - an upgrade run in preflight ends INTERRUPTED, nothing changed, after the attempt in flight;
    it does not go on with the connect's remaining retries (4 x connect_timeout): one connection;
  - ``zdupgrade lock status`` ends with one line and 130, no traceback, and no retry either.
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
        self.sock.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def silent() -> Iterator[Silent]:
    listener = Silent()
    yield listener
    listener.close()


def interrupted(tmp_path: Path, silent: Silent, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run ``./zdupgrade ARGV`` against the silent node; SIGINT once it is connected and waiting."""
    (tmp_path / "known_hosts").write_text("")
    config = tmp_path / "topology.yaml"
    config.write_text("profile: lab-gateway\n"
                      f"ssh: {{connect_timeout: 2, known_hosts: {tmp_path / 'known_hosts'}}}\n"
                      f"nodes:\n  - {{name: gw1, host: 127.0.0.1, port: {silent.port}}}\n")
    proc = subprocess.Popen([sys.executable, str(ROOT / "zdupgrade"), *argv, "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(tmp_path),
                            env={**os.environ, "NO_COLOR": "1"})
    deadline = time.monotonic() + 30
    while not silent.accepted and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert silent.accepted, "zdupgrade never connected"
    time.sleep(0.2)                       # it waits for the SSH banner now
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


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
    done = interrupted(tmp_path, silent, "--old_install_dir", "/opt/gateway-1.0",
                       "--new_install_dir", "/opt/gateway-2.0", "--log_dir", str(tmp_path / "logs"))
    assert done.returncode == Status.INTERRUPTED, done.stdout + done.stderr
    assert "interrupted during preflight: nothing was changed" in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert len(silent.accepted) == 1          # the attempt in flight, and no retry after Ctrl-C


def test_ctrl_c_in_lock_status_is_one_line_and_130(tmp_path: Path, silent: Silent) -> None:
    done = interrupted(tmp_path, silent, "lock", "status")
    assert done.returncode == Status.INTERRUPTED, done.stdout + done.stderr
    assert done.stderr == "zdupgrade: interrupted\n", done.stderr
    assert len(silent.accepted) == 1
