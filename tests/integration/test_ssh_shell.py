"""The shell session (one long-lived driver per connection) against real OpenSSH servers.

What it must keep from one-exec-channel-per-command: separate stdout/stderr, exit codes, any
bytes, no state shared between commands, a timeout that kills the process group, a lost or
frozen node classified and never hanging; and it must fall back to exec channels (saying so
once) where the driver cannot run.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from tests.support.sshd import SshdServer, descendants, sshd_server  # noqa: F401 (fixture)
from zdu.model import Node, SshSettings
from zdu.transport.shell import RecordSplitter, encode_command
from zdu.errors import UnreachableError
from zdu.transport.ssh import LIVE_WINDOW, SshHandler, SshPool

Factory = Callable[..., SshdServer]


@pytest.fixture
def server(sshd_server: Factory) -> SshdServer:
    return sshd_server("127.0.0.151")


def make(server: SshdServer, tmp_path: Path, **kw: Any) -> SshHandler:
    known = tmp_path / "known_hosts"
    known.write_text(server.known_hosts_line())
    settings = SshSettings(known_hosts=str(known), key_file=str(server.client_key), connect_timeout=3.0)
    return SshHandler(Node("node-a", server.host, server.port), settings, pool=kw.pop("pool", SshPool()), **kw)


@pytest.fixture(params=["/bin/sh", "/bin/bash"])
def handler(request: pytest.FixtureRequest, server: SshdServer, tmp_path: Path) -> Iterator[SshHandler]:
    """A handler whose driver runs under dash (/bin/sh here) or under bash (/bin/sh elsewhere)."""
    h = make(server, tmp_path)
    h.driver_shell = request.param
    yield h
    h.close()


def test_commands_share_one_session_and_one_driver(handler: SshHandler, server: SshdServer) -> None:
    parents = set()
    for i in range(10):
        result = handler.run(f"echo {i}; ps -o ppid= -p $$")
        assert result.exit_code == 0 and result.stdout.startswith(f"{i}\n"), result
        parents.add(int(result.stdout.split()[1]))
    assert handler.mode == "shell" and handler.shells_started == 1 and handler.connects == 1
    assert len(parents) == 1, "every command is a child of the same driver"
    assert server.accepted_logins() == 1


def test_no_state_leaks_between_commands(handler: SshHandler) -> None:
    first = handler.run("cd /tmp && export ZDU_LEAK=1 && ZDU_VAR=2 && umask 077 && trap 'echo t' EXIT "
                        "&& alias ll=ls; pwd")
    assert first.stdout.startswith("/tmp\n")
    second = handler.run('pwd; echo "leak=${ZDU_LEAK:-} var=${ZDU_VAR:-}"; umask; trap')
    home = handler.run("echo $HOME").stdout.strip()
    assert second.stdout == f"{home}\nleak= var=\n0022\n", second


def test_each_command_is_its_own_session_with_default_signals(handler: SshHandler) -> None:
    ids = []
    for _ in range(2):
        # /proc/self: the command's own process (its shell, waiting for it, blocks SIGCHLD a moment)
        out = handler.run("ps -o sid=,pgid= -p $$; echo $$; grep -E '^Sig(Ign|Blk)' /proc/self/status").stdout.split()
        sid, pgid, pid = int(out[0]), int(out[1]), int(out[2])
        assert sid == pgid == pid, out           # session and process-group leader
        ids.append(pid)
        assert out[3:] == ["SigBlk:", "0000000000000000", "SigIgn:", "0000000000000000"], out
    assert ids[0] != ids[1]


def test_stdout_stderr_exit_codes_and_signals(handler: SshHandler) -> None:
    result = handler.run("printf 'no newline'; printf 'err' >&2; exit 9")
    assert (result.exit_code, result.stdout, result.stderr) == (9, "no newline", "err")
    assert handler.run("kill -9 $$").exit_code == 137
    assert handler.run("exit 0").ok


def test_any_bytes_reach_the_node_and_come_back(handler: SshHandler) -> None:
    text = "".join(chr(c) for c in range(1, 128)) + "é ✓ \\0101 \\c %s %b '\"$(id)`id`\n\n"
    result = handler.run("cat <<'ZDU_EOF'\n" + text + "\nZDU_EOF\nprintf '%s' \"tail\"\n\n\n")
    assert result.stdout == text + "\ntail", result
    big = "x" * 100_000
    assert handler.run(f"printf %s {big} | wc -c").stdout.strip() == "100000"


def test_output_that_looks_like_the_drivers_records(handler: SshHandler) -> None:
    fake = "\\036zdu-driver:ready\\n\\0360123456789abcdef:end\\n\\036"
    result = handler.run(f"printf '{fake}'; printf '{fake}' >&2; echo after")
    expected = "\x1ezdu-driver:ready\n\x1e0123456789abcdef:end\n\x1eafter\n"
    assert (result.exit_code, result.stdout) == (0, expected)
    assert result.stderr == expected[:-len("after\n")]


def test_interleaved_streams_stay_separate(handler: SshHandler) -> None:
    result = handler.run("for i in $(seq 1 2000); do echo out$i; echo err$i >&2; done")
    assert result.stdout == "".join(f"out{i}\n" for i in range(1, 2001))
    assert result.stderr == "".join(f"err{i}\n" for i in range(1, 2001))


def test_timeout_kills_the_process_group(handler: SshHandler) -> None:
    t0 = time.monotonic()
    result = handler.run("echo before; trap '' TERM; sleep 41.3 & sleep 41.3", timeout=0.5)
    assert (result.error, result.exit_code, result.stdout) == ("timeout", None, "before\n")
    assert time.monotonic() - t0 < 5
    assert handler.run("pgrep -f 'sleep 4[1].3'").exit_code == 1
    assert handler.run("echo next").stdout == "next\n" and handler.shells_started == 1


def test_daemon_holding_the_output_times_out_and_says_why(handler: SshHandler) -> None:
    result = handler.run("sleep 42.1 & echo started", timeout=1.5)
    assert result.error == "timeout" and result.stdout == "started\n"
    assert "the command itself exited (code 0)" in result.stderr and ">/dev/null 2>&1" in result.stderr
    assert handler.run("pgrep -f 'sleep 4[2].1'").exit_code == 1, "killed with its group"
    # a daemon that redirects its output does not hold the step
    ok = handler.run("sleep 42.2 >/dev/null 2>&1 & echo started", timeout=5)
    assert ok.ok and ok.duration < 2
    handler.run("pkill -f 'sleep 4[2].2'")


def test_escaped_daemon_holding_the_output_never_reaches_a_later_command(handler: SshHandler) -> None:
    """Something outside the command's process group keeps its output open: the group is
    killed, then the forwarders; what that process writes later must go nowhere."""
    result = handler.run("setsid sh -c 'sleep 5; echo LATE; echo LATE >&2; sleep 30' & echo started",
                         timeout=0.5)
    assert result.error == "timeout" and result.stdout == "started\n", result
    time.sleep(max(0.0, 6 - result.duration))
    later = [handler.run("echo next; sleep 0.1") for _ in range(3)]
    assert all(r.stdout == "next\n" and r.stderr == "" for r in later), later
    handler.run("pkill -f 'sleep 3[0]'")


def test_a_killed_driver_is_a_lost_command_and_the_next_one_restarts_it(handler: SshHandler) -> None:
    assert handler.run("true").ok
    result = handler.run("kill -9 $PPID; sleep 5")
    assert (result.exit_code, result.error) == (None, "unreachable")
    assert handler.run("echo again").stdout == "again\n"
    assert handler.shells_started == 2 and handler.connects == 1


def _session_sshds(server: SshdServer) -> list[int]:
    """The per-connection sshd processes under the listener (not the shells they started)."""
    assert server.process is not None
    found = []
    for pid in descendants(server.process.pid):
        try:
            if Path(f"/proc/{pid}/comm").read_text().startswith("sshd"):
                found.append(pid)
        except OSError:
            pass
    return found


def _lose_the_connection_under(handler: SshHandler, server: SshdServer, marker: Path,
                               done: Path) -> Any:
    """A command that signals it started, then writes ``done`` 3 s later; its connection dies
    under it (the node's sshd for this connection killed: a dropped link, an OOM kill).  sshd
    does not signal a session command without a terminal, so on the node it would go on."""
    box: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: box.update(r=handler.run(
        f": > {marker}; sleep 3; echo finished > {done}")))
    worker.start()
    deadline = time.monotonic() + 10
    while not marker.exists():
        assert time.monotonic() < deadline, "the command never started"
        time.sleep(0.02)
    for pid in _session_sshds(server):
        os.kill(pid, signal.SIGKILL)
    worker.join(timeout=20)
    assert not worker.is_alive()
    return box["r"]


@pytest.fixture(params=["/bin/bash", "/bin/dash"])
def command_shell(request: pytest.FixtureRequest, server: SshdServer) -> str:
    """The shell the node's commands run under (``$SHELL``): root's bash, or dash as for a user
    whose login shell is Debian's /bin/sh -- whose kill builtin refuses ``--``."""
    if request.param != "/bin/bash":
        server.config.write_text(server.config.read_text() + f"SetEnv SHELL={request.param}\n")
        server.stop()
        server.start()
    return str(request.param)


def test_a_command_that_lost_its_connection_is_ended_before_the_next_one(
        server: SshdServer, tmp_path: Path, command_shell: str) -> None:
    """Otherwise a rollback would run beside the upgrade step it rolls back, over the new
    connection, and the node would end on whichever finished last."""
    warnings: list[str] = []
    handler = make(server, tmp_path, on_warning=warnings.append)
    try:
        assert handler.run("readlink /proc/$$/exe; true").stdout.strip() == os.path.realpath(command_shell)
        marker, done = tmp_path / "started", tmp_path / "finished"
        result = _lose_the_connection_under(handler, server, marker, done)
        assert (result.exit_code, result.error) == (None, "unreachable"), result
        assert handler.orphan is not None
        after = handler.run("echo next")
        assert after.stdout == "next\n" and handler.connects == 2
        assert handler.orphan is None
        assert any("was still running on the node" in w and f"process group" in w for w in warnings), warnings
        time.sleep(3.5)
        assert not done.exists(), "the lost command went on running after the next command"
        # and a group that had ended by itself is not reported
        warnings.clear()
        handler.orphan = (2 ** 22 - 3, "")    # no such group
        assert handler.run("echo again").stdout == "again\n" and warnings == []
    finally:
        handler.close()


def test_a_lost_command_on_a_node_that_does_not_answer_is_ended_once_it_does(
        server: SshdServer, tmp_path: Path) -> None:
    """The node is unreachable: the command is not sent, the error is the connect's own (a
    BastionError stays one), and the lost command stays noted: once the node answers again it
    is ended before the next command runs."""
    from zdu.transport.retry import Backoff
    warnings: list[str] = []
    handler = make(server, tmp_path, on_warning=warnings.append, backoff=Backoff(retries=0))
    try:
        assert handler.run("true").ok
        marker, done = tmp_path / "started", tmp_path / "finished"
        result = _lose_the_connection_under(handler, server, marker, done)
        assert result.error == "unreachable"
        assert server.process is not None
        server.process.kill()      # the listener alone goes; the lost command goes on
        server.process.wait(timeout=10)
        server.process = None
        with pytest.raises(UnreachableError, match="connection refused"):
            handler.run(f"echo ran > {tmp_path / 'ran'}")
        assert handler.orphan is not None, "kept for the next try"
        assert not (tmp_path / "ran").exists()
        server.start()
        assert handler.run("echo back").stdout == "back\n" and handler.orphan is None
        assert any("was still running on the node" in w for w in warnings), warnings
        time.sleep(3)
        assert not done.exists()
    finally:
        handler.close()


def test_a_resume_ends_the_step_that_a_dead_run_left_running(server: SshdServer, tmp_path: Path,
                                                             command_shell: str) -> None:
    """The control process dies (its connection with it) while a tagged step runs: the step goes
    on on the node.  A new process (the resume) finds it by its tag and ends it; a step that
    finished, or another tag, is left alone."""
    tag = "20261202-000000-000001/node-a/APPLY/1"
    dead = make(server, tmp_path)
    marker, done = tmp_path / "started", tmp_path / "finished"
    box: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: box.update(r=dead.run(
        f": > {marker}; sleep 3; echo finished > {done}", env={"ZDU_STEP": tag})))
    worker.start()
    deadline = time.monotonic() + 10
    while not marker.exists():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    connection = dead.connection
    assert connection is not None and connection.transport is not None
    connection.transport.sock.close()          # the control process is gone: nothing more is sent
    worker.join(timeout=20)
    resumed = make(server, tmp_path, pool=SshPool())
    try:
        assert resumed.end_lost_step("20261202-000000-000001/node-a/APPLY/2") is False   # another step
        assert resumed.end_lost_step(tag) is True
        assert resumed.end_lost_step(tag) is False                                      # gone now
        time.sleep(3.5)
        assert not done.exists(), "the dead run's step went on running"
        # a tagged step that finished is not found again
        assert resumed.run("true", env={"ZDU_STEP": "r/node-a/APPLY/3"}).ok
        assert resumed.end_lost_step("r/node-a/APPLY/3") is False
        assert resumed.run("echo $ZDU_STEP", env={"ZDU_STEP": "r/node-a/APPLY/4"}).stdout == "r/node-a/APPLY/4\n"
    finally:
        resumed.close()
        dead.close()


def _start_time(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[19]


def test_an_orphan_group_now_held_by_another_process_is_left_alone(server: SshdServer, tmp_path: Path) -> None:
    """The node rebooted or the pid was reused since the command lost its connection: a leader
    whose start time is not the lost command's is another process, and is not killed."""
    import subprocess
    victim = subprocess.Popen(["setsid", "sleep", "30"])
    warnings: list[str] = []
    handler = make(server, tmp_path, on_warning=warnings.append)
    try:
        time.sleep(0.2)
        handler.orphan = (victim.pid, str(int(_start_time(victim.pid)) + 1))
        assert handler.run("echo next").stdout == "next\n"
        assert victim.poll() is None and warnings == [] and handler.orphan is None
        handler.orphan = (victim.pid, _start_time(victim.pid))      # the lost command itself
        assert handler.run("echo next").stdout == "next\n"
        assert victim.wait(timeout=5) is not None and len(warnings) == 1
    finally:
        victim.kill()
        handler.close()


def test_a_group_of_zombies_is_gone(server: SshdServer, tmp_path: Path) -> None:
    """A container whose init does not reap keeps zombies for good: they hold the group's number
    but run nothing, and must not block the node."""
    import subprocess
    import sys
    keeper = subprocess.Popen([sys.executable, "-c", "import os, sys, time\npid = os.fork()\n"
                               "if pid == 0:\n    os.setsid(); os._exit(0)\nprint(pid, flush=True); time.sleep(30)"],
                              stdout=subprocess.PIPE, text=True)
    handler = make(server, tmp_path)
    try:
        assert keeper.stdout is not None
        zombie = int(keeper.stdout.readline())
        time.sleep(0.2)
        assert Path(f"/proc/{zombie}/stat").read_text().rsplit(") ", 1)[1].split()[0] == "Z"
        handler.orphan = (zombie, "")
        assert handler.run("echo ok").stdout == "ok\n" and handler.orphan is None
    finally:
        keeper.kill()
        handler.close()


def test_a_step_file_of_another_user_is_never_trusted(server: SshdServer, tmp_path: Path) -> None:
    """Run as root, a resume reads every zdu-shell.* directory under /tmp: a file planted there
    by another user must not make it kill a process group of its choosing."""
    import pwd
    import shutil
    import subprocess
    victim = subprocess.Popen(["setsid", "sleep", "30"])
    planted = Path("/tmp") / f"zdu-shell.planted{os.getpid()}"
    nobody = pwd.getpwnam("nobody")
    handler = make(server, tmp_path)
    try:
        planted.mkdir(mode=0o700)
        (planted / "step").write_text(f"{victim.pid} {os.getpid()} r/node-a/APPLY/0\n")
        for path in (planted, planted / "step"):
            os.chown(path, nobody.pw_uid, nobody.pw_gid)
        time.sleep(0.2)
        assert handler.end_lost_step("r/node-a/APPLY/0") is False
        assert victim.poll() is None, "a planted step file killed another process group"
    finally:
        victim.kill()
        shutil.rmtree(planted, ignore_errors=True)
        handler.close()


def test_an_exec_channel_whose_timeout_kill_did_not_get_through_is_ended_later(
        server: SshdServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import zdu.transport.ssh as ssh
    handler = make(server, tmp_path, shell_session=False)
    done = tmp_path / "finished"
    try:
        with monkeypatch.context() as patch:
            patch.setattr(ssh, "_side_command", lambda *args: False)     # the node does not answer it
            result = handler.run(f"sleep 3; echo finished > {done}", timeout=1)
        assert result.error == "timeout" and handler.orphan is not None
        assert handler.run("echo next").stdout == "next\n" and handler.orphan is None
        time.sleep(3)
        assert not done.exists()
        assert handler.end_lost_step("r/node-a/APPLY/0") is False, "no step of that tag runs there"
    finally:
        handler.close()


def test_a_lost_step_that_cannot_be_ended_lets_nothing_more_run_there(server: SshdServer, tmp_path: Path) -> None:
    tag = "r/node-a/APPLY/1"
    dead = make(server, tmp_path)
    marker, done = tmp_path / "started", tmp_path / "finished"
    worker = threading.Thread(target=lambda: dead.run(f": > {marker}; sleep 3; echo x > {done}",
                                                      env={"ZDU_STEP": tag}))
    worker.start()
    deadline = time.monotonic() + 10
    while not marker.exists():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert dead.connection is not None and dead.connection.transport is not None
    dead.connection.transport.sock.close()
    worker.join(timeout=20)
    resumed = make(server, tmp_path, pool=SshPool())
    try:
        server.stop()
        with pytest.raises(UnreachableError, match="could not be ended"):
            resumed.end_lost_step(tag)
        server.start()
        with pytest.raises(UnreachableError, match="nothing more is run there"):
            resumed.run(f"echo ran > {tmp_path / 'ran'}")
        assert not (tmp_path / "ran").exists()
    finally:
        resumed.close()
        dead.close()
        time.sleep(3.2)


def test_frozen_node_gives_up_at_the_timeout(handler: SshHandler, server: SshdServer) -> None:
    """SIGSTOP on every sshd process and what runs under it: what ``docker pause`` does."""
    assert handler.run("true").ok
    box: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: box.update(r=handler.run("sleep 43.7", timeout=2)))
    worker.start()
    time.sleep(0.5)
    assert server.process is not None
    frozen = descendants(server.process.pid)
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    try:
        worker.join(timeout=20)
        assert not worker.is_alive(), "a frozen node must not hang the run"
        assert box["r"].error == "timeout" and box["r"].duration < 12
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
    assert handler.run("pkill -f 'sleep 4[3].7'; echo thawed").stdout == "thawed\n"


def test_a_node_that_froze_while_idle_is_never_sent_the_command(server: SshdServer, tmp_path: Path) -> None:
    """After a quiet spell the node must answer before a command goes into its shell: a frozen
    node would otherwise run the command when it thaws, after the run gave up on it."""
    known = tmp_path / "known_hosts"
    known.write_text(server.known_hosts_line())
    settings = SshSettings(known_hosts=str(known), key_file=str(server.client_key), connect_timeout=1.0,
                           connect_retries=0)
    h = SshHandler(Node("node-a", server.host, server.port), settings, pool=SshPool())
    marker = tmp_path / "ran"
    try:
        assert h.run("true").ok
        time.sleep(LIVE_WINDOW + 0.3)
        assert server.process is not None
        frozen = [server.process.pid, *descendants(server.process.pid)]    # docker pause: all of it
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            with pytest.raises(UnreachableError):
                h.run(f"touch {marker}", timeout=5)
            assert time.monotonic() - t0 < 6
        finally:
            for pid in frozen:
                os.kill(pid, signal.SIGCONT)
        time.sleep(1.5)
        assert not marker.exists(), "the command ran after the node thawed"
        assert h.run(f"touch {marker}").ok and marker.exists()       # and the node is usable again
    finally:
        h.close()


def test_no_setsid_on_the_node_falls_back_to_exec_and_says_so_once(sshd_server: Factory,
                                                                   tmp_path: Path) -> None:
    server = sshd_server("127.0.0.152", start=False)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("cat", "mkfifo", "ps"):        # everything the driver needs but setsid
        os.symlink(f"/usr/bin/{tool}", bindir / tool)
    with open(server.config, "a") as fh:
        fh.write(f"SetEnv PATH={bindir}\n")
    server.start()
    warnings: list[str] = []
    pool = SshPool(on_warning=warnings.append)
    h = make(server, tmp_path, pool=pool)
    second = make(server, tmp_path, pool=pool)
    try:
        for handler in (h, second):
            result = handler.run("echo $PATH; echo err >&2; exit 4")
            # (root's rc files here complain on stderr about the tools missing from this PATH)
            assert result.exit_code == 4 and result.stderr.endswith("err\n"), result
            assert "\x1e" not in result.stderr and result.stdout.endswith(f"{bindir}\n")
            assert handler.mode == "exec" and handler.exec_reason == "setsid not found there"
        assert len(warnings) == 1 and "setsid not found there" in warnings[0], warnings
        assert "node-a" in warnings[0] and "one SSH session each" in warnings[0]
    finally:
        h.close()
        second.close()


def test_a_driver_shell_that_cannot_start_falls_back(server: SshdServer, tmp_path: Path) -> None:
    h = make(server, tmp_path)
    h.driver_shell = "/nonexistent/sh"
    try:
        assert h.run("echo fine").stdout == "fine\n"
        assert h.mode == "exec" and h.exec_reason is not None
        assert h.exec_reason.startswith("the shell session ended at once")
    finally:
        h.close()


def test_exec_mode_when_asked(server: SshdServer, tmp_path: Path) -> None:
    h = make(server, tmp_path, shell_session=False)
    try:
        assert h.run("echo x").stdout == "x\n" and h.mode == "exec" and h.shells_started == 0
    finally:
        h.close()


# --------------------------------------------------------------------------- framing, no ssh

def test_record_splitter_cuts_records_wherever_reads_end() -> None:
    data = b"abc\x1eN:pgid=12\ndef\x1eN:end\n\x1eX:no\n\x1e"
    for size in range(1, len(data) + 1):
        splitter = RecordSplitter(b"N:")
        out = b"".join(splitter.feed(data[i:i + size]) for i in range(0, len(data), size)) + splitter.flush()
        assert out == b"abcdef\x1eX:no\n\x1e" and splitter.records == ["pgid=12", "end"], size


def test_encoded_command_has_no_whitespace_or_backslash_of_its_own() -> None:
    encoded = encode_command("a b\tc\nd\\e\x01é")
    assert encoded == "a\\0040b\\0011c\\0012d\\0134e\\0001\\0303\\0251"
    assert not any(c.isspace() for c in encoded)
