"""A resume on a node on the exec-channel fallback: the step a dead run left running there is
found by its tag and ended before anything else runs, as through the shell session's driver
(test_ssh_shell.py); a finished step, another tag, a reused pid or a file planted by another
user are left alone.  Real sshd; the exec channel asked for, or fallen back to (no driver)."""
from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from tests.support.sshd import SshdServer, sshd_server  # noqa: F401 (fixture)
from tests.integration.test_ssh_shell import make
from zdu.transport.ssh import SshHandler, SshPool

TAG = "20261203-000000-000001/node-a/APPLY/1"
NOTES = Path("/tmp")        # where the commands of this machine's sshd note steps (sshd gives no TMPDIR)


@pytest.fixture
def server(sshd_server: Callable[..., SshdServer]) -> SshdServer:
    return sshd_server("127.0.3.50")


@pytest.fixture(params=["disabled", "fallback"])
def exec_handler(request: pytest.FixtureRequest, server: SshdServer,
                 tmp_path: Path) -> Iterator[Callable[[], SshHandler]]:
    """Makes handlers that run one exec channel per command (shell_session=False, or a driver
    that cannot start)."""
    made: list[SshHandler] = []
    before = set(NOTES.glob("zdu-exec.*"))

    def factory() -> SshHandler:
        h = make(server, tmp_path, pool=SshPool(), shell_session=request.param == "fallback")
        if request.param == "fallback":
            h.driver_shell = "/nonexistent/sh"
        made.append(h)
        return h
    yield factory
    for h in made:
        h.close()
    for left in set(NOTES.glob("zdu-exec.*")) - before:     # the notes of this test's steps
        shutil.rmtree(left, ignore_errors=True)


def _die_under(handler: SshHandler, command: str, marker: Path) -> None:
    """Run ``command`` tagged; once ``marker`` exists the control process 'dies': its socket is
    closed under the command (nothing more is sent; the command goes on on the node)."""
    box: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: box.update(r=handler.run(command, env={"ZDU_STEP": TAG})))
    worker.start()
    deadline = time.monotonic() + 10
    while not marker.exists():
        assert time.monotonic() < deadline, "the step never started"
        time.sleep(0.02)
    connection = handler.connection
    assert connection is not None and connection.transport is not None
    connection.transport.sock.close()
    worker.join(timeout=20)
    assert box["r"].error == "unreachable" and handler.mode == "exec", box


def test_a_resume_ends_the_step_a_dead_run_left_running(exec_handler: Callable[[], SshHandler],
                                                        tmp_path: Path) -> None:
    marker, done = tmp_path / "started", tmp_path / "finished"
    _die_under(exec_handler(), f": > {marker}; sleep 3; echo finished > {done}", marker)
    resumed = exec_handler()
    assert resumed.end_lost_step("20261203-000000-000001/node-a/APPLY/2") is False   # another step
    assert resumed.end_lost_step(TAG) is True
    assert resumed.mode == "exec"
    assert resumed.end_lost_step(TAG) is False                                      # gone now
    time.sleep(3.5)
    assert not done.exists(), "the dead run's step went on running"
    # a tagged step that finished is not found again; the note leaves nothing in the step's shell
    assert resumed.run("true", env={"ZDU_STEP": "r/node-a/APPLY/3"}).ok
    assert resumed.end_lost_step("r/node-a/APPLY/3") is False
    seen = resumed.run('echo "$ZDU_STEP [${zdu_d-}${zdu_n-}$#]"; type zdu_note >/dev/null 2>&1 || echo none',
                       env={"ZDU_STEP": "r/node-a/APPLY/4"})
    assert (seen.exit_code, seen.stdout, seen.stderr) == (0, "r/node-a/APPLY/4 [0]\nnone\n", ""), seen


def test_a_pid_reused_since_is_left_alone(exec_handler: Callable[[], SshHandler], tmp_path: Path) -> None:
    """The noted leader is gone and its pid is another process now (its start time differs)."""
    victim = subprocess.Popen(["setsid", "sleep", "30"])
    note = NOTES / f"zdu-exec.{victim.pid}"
    try:
        time.sleep(0.2)
        start = Path(f"/proc/{victim.pid}/stat").read_text().rsplit(") ", 1)[1].split()[19]
        note.mkdir(mode=0o700)
        (note / "step").write_text(f"{victim.pid} {int(start) + 1} {TAG}\n")
        assert exec_handler().end_lost_step(TAG) is False
        assert victim.poll() is None, "another process was killed"
    finally:
        victim.kill()
        shutil.rmtree(note, ignore_errors=True)


def test_a_step_file_of_another_user_is_never_trusted(exec_handler: Callable[[], SshHandler]) -> None:
    """Run as root, a resume reads every zdu-exec.* directory under /tmp: a file planted there by
    another user (or a link to one of ours) must not make it kill a process group of its choosing."""
    victim = subprocess.Popen(["setsid", "sleep", "30"])
    tmp = NOTES
    planted, ours, link = (tmp / f"zdu-exec.planted{os.getpid()}", tmp / f"zdu3-ours{os.getpid()}",
                           tmp / f"zdu-exec.link{os.getpid()}")
    nobody = pwd.getpwnam("nobody")
    try:
        time.sleep(0.2)
        start = Path(f"/proc/{victim.pid}/stat").read_text().rsplit(") ", 1)[1].split()[19]
        for folder in (planted, ours):
            folder.mkdir(mode=0o700)
            (folder / "step").write_text(f"{victim.pid} {start} {TAG}\n")
        for path in (planted, planted / "step"):
            os.chown(path, nobody.pw_uid, nobody.pw_gid)
        link.symlink_to(ours)
        handler = exec_handler()
        assert handler.end_lost_step(TAG) is False
        assert victim.poll() is None, "a planted step file killed another process group"
        # a tagged step's note removes stale notes of ours only (a finished command's), not
        # another user's, nor what a link points to
        stale = tmp / f"zdu-exec.{os.getpid() + 4_000_000}"
        stale.mkdir(mode=0o700)
        (stale / "step").write_text(f"{os.getpid() + 4_000_000} 1 r/node-a/APPLY/0\n")
        assert handler.run("true", env={"ZDU_STEP": "r/node-a/APPLY/5"}).ok
        assert not stale.exists() and planted.exists() and (ours / "step").exists() and link.is_symlink()
        assert handler.end_lost_step("r/node-a/APPLY/5") is False
    finally:
        victim.kill()
        for path in (planted, ours):
            shutil.rmtree(path, ignore_errors=True)
        link.unlink(missing_ok=True)
