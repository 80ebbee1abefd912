"""The exec-channel fallback (one exec channel per command) against a node whose login rc files
are noisy and strict: root's ~/.bashrc -- which bash reads for every command sshd starts --
prints a banner on stdout and a motd on stderr (with lines that look like our records, and
text without a newline), then `set -u`, `set -e`, traps EXIT, changes directory, exports a
variable, defines an `echo` function and turns on `set -x`.  Every step still gets exactly its own output, its own exit code and a clean shell
(what the shell session's driver gives, test_shell_rc_files.py); and the driver's other
guarantees hold there too: a timeout kills the command's process group (a daemon holding its
output with it), output is capped, a connection cut under a command is a lost node and the
command is ended before the next; real sshd, real bash."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from tests.integration import test_shell_rc_files as rc_files
from tests.integration.test_shell_rc_files import noisy_rc  # noqa: F401 (fixture)
from tests.support.sshd import SshdServer, sshd_server  # noqa: F401 (fixture)
from tests.integration.test_ssh_shell import _lose_the_connection_under, make
from zdu.transport.ssh import SshHandler

HOSTILE_RC = r"""
[ ! -e "@FLAG@" ] || { echo "rc: refusing to go on" >&2; exit 5; }
[ ! -e "@FLAG@.quiet" ] || exec 2>/dev/null
echo "Welcome to $(hostname): authorised use only"
echo "motd on stderr" >&2
printf '\036zdu-driver:ready\n'
printf '\036zdu-driver:ready=%s\n' 0123456789abcdef >&2
printf '\0360123456789abcdef:begin\n'
printf '\0360123456789abcdef:begin\n' >&2
printf '\0360123456789abcdef:pgid=1:1\n' >&2
printf 'no newline on stdout'
printf 'no newline on stderr' >&2
set -u
set -e
trap 'echo bye from the rc trap; echo bye on stderr >&2' EXIT
cd /
export ZDU_RC_VAR=exported-by-rc
echo() { builtin echo "rc's echo: $*"; }
set -x
"""


@pytest.fixture
def hostile_rc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Path:
    """root's ~/.bashrc, as the node's sshd and its shells see it, is HOSTILE_RC (through
    test_shell_rc_files' bind mount); it exits at once while the file it returns exists, and
    sends its stderr to /dev/null for good while that file's name + ".quiet" does."""
    flag = tmp_path / "rc-exits"
    monkeypatch.setattr(rc_files, "NOISY_RC", HOSTILE_RC.replace("@FLAG@", str(flag)))
    request.getfixturevalue("noisy_rc")
    return flag


@pytest.fixture
def server(hostile_rc: Path, sshd_server: Callable[..., SshdServer]) -> SshdServer:
    return sshd_server("127.0.3.40")


@pytest.fixture(params=["disabled", "fallback"])
def handler(request: pytest.FixtureRequest, server: SshdServer, tmp_path: Path) -> Iterator[SshHandler]:
    """An exec-channel handler: asked for (shell_session=False), or fallen back to because the
    driver cannot start on the node."""
    h = make(server, tmp_path, shell_session=request.param != "disabled")
    if request.param == "fallback":
        h.driver_shell = "/nonexistent/sh"
    yield h
    h.close()


def run(h: SshHandler, command: str) -> tuple[int | None, str, str]:
    result = h.run(command, timeout=10)
    assert h.mode == "exec", h.exec_reason
    return result.exit_code, result.stdout, result.stderr


def test_the_rc_files_output_is_not_a_steps_output(handler: SshHandler) -> None:
    for _ in range(2):                          # every command, not only the first
        assert run(handler, "echo one") == (0, "one\n", "")
    assert run(handler, "echo out; echo err >&2; exit 3") == (3, "out\n", "err\n")
    assert run(handler, "true") == (0, "", "")
    assert run(handler, "printf x; printf y >&2") == (0, "x", "y")


def test_the_rc_files_settings_do_not_reach_a_step(handler: SshHandler) -> None:
    assert run(handler, "false; echo still-here; exit 4") == (4, "still-here\n", "")
    assert run(handler, 'echo "[${UNSET_THING:-}]"; echo "$NOT_SET_AT_ALL"; echo after') == \
        (0, "[]\n\nafter\n", "")
    assert run(handler, "trap") == (0, "", "")
    assert run(handler, 'echo "$ZDU_RC_VAR"') == (0, "exported-by-rc\n", ""), "exports do reach it"


def test_a_steps_own_record_like_output_is_kept(handler: SshHandler) -> None:
    command = ("printf '\\036zdu-driver:ready\\n'; printf '\\0360123456789abcdef:begin\\n' >&2; "
               "printf 'a\\036b\\n'")
    assert run(handler, command) == (0, "\x1ezdu-driver:ready\na\x1eb\n", "\x1e0123456789abcdef:begin\n")


def test_a_login_shell_that_exits_before_the_command_says_so(handler: SshHandler, hostile_rc: Path) -> None:
    hostile_rc.touch()
    code, out, err = run(handler, "echo never")
    assert (code, out) == (5, "") and err.startswith("[zdupgrade: the command did not start on the node"), err
    assert err.endswith("rc: refusing to go on\n") and "Welcome" not in err, err
    hostile_rc.unlink()
    assert run(handler, "echo again") == (0, "again\n", "")


def test_an_rc_file_that_silences_stderr_for_good_leaves_the_step_its_stdout(handler: SshHandler,
                                                                          hostile_rc: Path) -> None:
    Path(f"{hostile_rc}.quiet").touch()
    assert run(handler, "echo out; echo err >&2; exit 6") == (6, "out\n", ""), "not 'did not start'"


def test_the_gate_finds_the_mark_wherever_reads_cut_it() -> None:
    from zdu.transport.shell import OutputGate, begin_mark
    with pytest.raises(ValueError):
        begin_mark("tok; rm -rf /")
    data = b"banner\x1etok:begin no\n\x1etok:begi" + b"x" * 5000 + b"\x1etok:begin\nown\x1etok:begin\n"
    for size in range(1, 60):
        gate = OutputGate("tok")
        out = b"".join(gate.feed(data[i:i + size]) for i in range(0, len(data), size))
        assert out == b"own\x1etok:begin\n" and gate.opened, size
    quiet = OutputGate("tok")
    assert quiet.feed(b"y" * 10000 + b"last words") == b"" and not quiet.opened
    assert len(quiet.dropped) == OutputGate.KEEP and quiet.dropped.endswith(b"last words")


def test_a_daemon_holding_the_output_is_killed_with_its_group_at_the_timeout(handler: SshHandler) -> None:
    """The command's shell exits at once; the daemon it started holds its stdout: the step
    times out, says why, and the daemon goes with the command's process group (as through the
    driver, test_ssh_shell.py)."""
    result = handler.run("sleep 42.7 & echo started", timeout=1.5)
    assert (result.error, result.stdout) == ("timeout", "started\n"), result
    assert run(handler, "pgrep -f 'sleep 4[2].7'; echo $?") == (0, "1\n", ""), "killed with its group"
    assert "the command itself exited (code 0)" in result.stderr and ">/dev/null 2>&1" in result.stderr
    ok = handler.run("sleep 42.8 >/dev/null 2>&1 & echo started", timeout=5)
    assert ok.ok and ok.duration < 2, ok                # a daemon with its output redirected
    handler.run("pkill -f 'sleep 4[2].8'")


def test_a_hung_command_is_killed_with_its_group_at_its_timeout(handler: SshHandler) -> None:
    t0 = time.monotonic()
    result = handler.run("echo before; trap '' TERM; sleep 41.7 & sleep 41.7", timeout=0.5)
    assert (result.error, result.exit_code, result.stdout) == ("timeout", None, "before\n"), result
    assert time.monotonic() - t0 < 5
    assert run(handler, "pgrep -f 'sleep 4[1].7'; echo $?") == (0, "1\n", "")


def test_huge_output_is_capped_and_is_the_commands_own(handler: SshHandler) -> None:
    result = handler.run("head -c 5000000 /dev/zero | tr '\\0' o; head -c 5000000 /dev/zero | tr '\\0' e >&2",
                         timeout=30)
    assert result.exit_code == 0
    for text, char in ((result.stdout, "o"), (result.stderr, "e")):
        head, note, tail = text.partition("\n[... zdupgrade: ")
        assert head == char * 1024 * 1024 and tail.endswith("truncated here ...]\n" + char * 1024 * 1024), text[:80]


def test_a_connection_cut_under_a_command_is_a_lost_node_and_the_command_is_ended(
        handler: SshHandler, server: SshdServer, tmp_path: Path) -> None:
    marker, done = tmp_path / "started", tmp_path / "finished"
    result = _lose_the_connection_under(handler, server, marker, done)
    assert (result.exit_code, result.error) == (None, "unreachable"), result
    assert handler.orphan is not None, "its process group was known"
    assert run(handler, "echo back") == (0, "back\n", "") and handler.orphan is None
    time.sleep(3.2)
    assert not done.exists(), "the lost command was ended before the next one ran"


def test_no_cwd_or_variable_carries_over_to_the_next_step(handler: SshHandler) -> None:
    assert run(handler, "cd /tmp && export STEP_VAR=1 && OTHER=2 && umask 077; pwd") == (0, "/tmp\n", "")
    assert run(handler, 'pwd; echo "[${STEP_VAR:-}${OTHER:-}]"; umask') == (0, "/\n[]\n0022\n", ""), \
        "the rc file's cd / is where every step starts, as through the driver"
