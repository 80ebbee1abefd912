"""zdupgrade in the control machine's real-world environments: a cron line or a script that
closes the standard descriptors, a shell whose working directory was removed, an odd umask, and a
terminal whose COLUMNS / LINES do not say its size.  Real zdupgrade processes on a local fleet,
real shells, a real pseudo-terminal."""
from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import shutil
import signal
import stat
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pytest

from tests.support.localfleet import ROOT, LocalFleet, profile
from zdu.cli import console as console_module
from zdu.status import Status

ZDU = [sys.executable, str(ROOT / "zdupgrade")]


def _sh(script: str, *argv: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``script`` run by a real sh with ``argv`` as "$@" (for redirections and umask)."""
    return subprocess.run(["sh", "-c", script, "sh", *argv], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout)


def _upgraded(fleet: LocalFleet) -> bool:
    return all(fleet.running(n) == "2.0" and fleet.lb(n) == "in" for n in fleet.names)


# --------------------------------------------------------------------------- closed descriptors

def test_a_run_with_all_standard_descriptors_closed_upgrades_and_records(tmp_path: Path) -> None:
    """``zdupgrade ... <&- >&- 2>&-`` (cron, a script): it ended 80 ("internal error") once the
    fleet lock was taken; now the run goes on with its console on /dev/null, and its record is whole."""
    fleet = LocalFleet(tmp_path)
    done = _sh('exec "$@" <&- >&- 2>&-', *ZDU, *fleet.argv("--plain"), cwd=tmp_path)
    assert done.returncode == Status.SUCCESS, done.stdout + done.stderr
    assert _upgraded(fleet)
    run_log = (fleet.run_dir() / "run.log").read_text()
    assert "Status 0 (SUCCESS)" in run_log and "internal error" not in run_log


def test_a_run_with_stdout_closed_still_says_its_errors_on_stderr(tmp_path: Path) -> None:
    fleet = LocalFleet(tmp_path)
    done = _sh('exec "$@" >&-', *ZDU, *fleet.argv("--plain"), cwd=tmp_path)
    assert done.returncode == Status.SUCCESS, done.stderr
    assert "internal error" not in done.stderr and "Traceback" not in done.stderr
    assert _upgraded(fleet)
    refused = _sh('exec "$@" >&-', *ZDU, *fleet.argv("--serial", "abc"), cwd=tmp_path)
    assert refused.returncode == Status.CONFIG_ERROR
    assert "--serial" in refused.stderr


def test_a_run_with_stdin_closed_is_not_an_internal_error(tmp_path: Path) -> None:
    fleet = LocalFleet(tmp_path)
    done = _sh('exec "$@" <&-', *ZDU, *fleet.argv("--plain"), cwd=tmp_path)
    assert done.returncode == Status.SUCCESS, done.stdout[-2000:] + done.stderr
    assert "internal error" not in done.stdout + done.stderr
    assert _upgraded(fleet)


# --------------------------------------------------------------------------- a removed working directory

GONE = 'cd "$1" && rmdir "$1" && shift && exec "$@"'


def test_a_run_from_a_removed_working_directory_is_refused_before_anything(tmp_path: Path) -> None:
    """Every path absolute, but the shell's directory was removed: the run took its run folder
    and the fleet lock, then ended 80 ("internal error: FileNotFoundError"), leaving a damaged run
    folder.  Now one clear line, 78, and nothing made or touched."""
    fleet = LocalFleet(tmp_path)
    gone = tmp_path / "release-1.0"
    for extra in ((), ("--dry-run",)):
        gone.mkdir()
        done = _sh(GONE, str(gone), *ZDU, *fleet.argv("--plain", *extra), cwd=tmp_path)
        assert done.returncode == Status.CONFIG_ERROR, done.stdout + done.stderr
        assert "the current directory" in done.stderr and "no longer exists" in done.stderr, done.stderr
        assert "internal error" not in done.stderr and "Traceback" not in done.stderr
    assert not fleet.log_dir.exists()
    assert not (tmp_path / "fleet-lock").exists()
    assert all(fleet.running(n) == "1.0" for n in fleet.names)


def test_review_commands_from_a_removed_working_directory(tmp_path: Path) -> None:
    """Given an absolute --log_dir a review command works; with the default (relative) logs/ it
    says why instead of "no run under logs/"."""
    fleet = LocalFleet(tmp_path)
    assert subprocess.run([*ZDU, *fleet.argv("-q")], capture_output=True, cwd=tmp_path, timeout=120).returncode == 0
    gone = tmp_path / "gone"
    gone.mkdir()
    listed = _sh(GONE, str(gone), *ZDU, "runs", "--log_dir", str(fleet.log_dir), cwd=tmp_path)
    assert listed.returncode == 0 and "SUCCESS (0)" in listed.stdout, listed.stdout + listed.stderr
    gone.mkdir()
    shown = _sh(GONE, str(gone), *ZDU, "show", cwd=tmp_path)
    assert shown.returncode == Status.CONFIG_ERROR
    assert "no longer exists" in shown.stderr and "no run under" not in shown.stderr, shown.stderr


# --------------------------------------------------------------------------- umask

def test_log_dirs_made_by_a_run_are_private_whatever_the_umask(tmp_path: Path) -> None:
    """A missing --log_dir's missing parents were made 0777 minus the umask: under ``umask 000``
    a world-writable folder above the run folders."""
    fleet = LocalFleet(tmp_path)
    for umask in ("000", "077", "022"):
        logs = tmp_path / f"u{umask}" / "zdupgrade" / "logs"
        done = _sh(f'umask {umask} && exec "$@"', *ZDU, *fleet.argv("-q", "--log_dir", str(logs)), cwd=tmp_path)
        assert done.returncode == Status.SUCCESS, done.stdout[-2000:] + done.stderr
        run = next(logs.iterdir())
        for folder in (logs.parent.parent, logs.parent, logs, run):
            assert stat.S_IMODE(folder.stat().st_mode) == 0o700, (umask, folder, oct(folder.stat().st_mode))
        assert {stat.S_IMODE(f.stat().st_mode) for f in run.iterdir()} == {0o600}


# --------------------------------------------------------------------------- the live view's size

def _on_terminal(argv: list[str], env: dict[str, str], cwd: Path, columns: int, rows: int) -> tuple[int, str]:
    """``argv`` on a real pseudo-terminal of ``columns`` x ``rows``; its status and what it drew."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd, start_new_session=True)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:             # EIO: the child side is closed
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
    proc.wait(timeout=60)
    text = b"".join(chunks).decode("utf-8", "replace")
    return proc.returncode, re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


def _table_lines(text: str) -> list[str]:
    return [line for line in re.split(r"[\r\n]", text) if "\u2502" in line or "\u2503" in line]


def test_the_live_view_draws_at_the_terminals_own_size(tmp_path: Path) -> None:
    """COLUMNS / LINES in the environment that do not say the terminal's size: COLUMNS=0 drew
    nothing (every progress line of the run lost), LINES=1 a table cut to "...", and a COLUMNS
    wider than the terminal a table wider than it."""
    data = profile(tmp_path)
    data["phases"]["PRE-APPLY"] = [{"name": "check that the converted configuration is complete", "run": "true"}]
    fleet = LocalFleet(tmp_path, names=("gateway-node-a", "gateway-node-b"),
                       profile_overrides={"phases": data["phases"]})
    base = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")}
    base["TERM"] = "xterm"
    status, drawn = _on_terminal([*ZDU, *fleet.argv()], {**base, "COLUMNS": "0"}, tmp_path, 70, 20)
    assert status == Status.SUCCESS, drawn[-2000:]
    assert "logs in" in drawn and drawn.count("load balancer disable: ok") == 2, drawn[-2000:]
    assert _table_lines(drawn)

    status, drawn = _on_terminal([*ZDU, *fleet.argv()], {**base, "LINES": "1"}, tmp_path, 70, 20)
    assert status == Status.SUCCESS
    assert any("gateway-node-a" in line for line in _table_lines(drawn)), drawn[-2000:]

    status, drawn = _on_terminal([*ZDU, *fleet.argv()], {**base, "COLUMNS": "300"}, tmp_path, 60, 20)
    assert status == Status.SUCCESS
    lines = _table_lines(drawn)
    assert lines and max(len(line) for line in lines) <= 60, max(lines, key=len)


# --------------------------------------------------------------------------- a console nobody reads

def _unread_pipe() -> tuple[int, int]:
    """A pipe of one page (4 KiB: F_SETPIPE_SZ), so that a run's output fills it."""
    read, write = os.pipe()
    fcntl.fcntl(write, 1031, 4096)          # F_SETPIPE_SZ
    return read, write


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        try:
            data = os.read(fd, 1 << 20)
        except OSError:                     # EIO: a pty whose other side is closed
            break
        if not data:
            break
        chunks.append(data)
    os.close(fd)
    return b"".join(chunks)


def _wait_upgraded(fleet: LocalFleet, proc: subprocess.Popen[bytes], timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _upgraded(fleet):
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.1)
    return False


def _run_on_unread_pipe(fleet: LocalFleet, options: list[str], cwd: Path, stderr: Path | None
                        ) -> tuple[bool, int, str]:
    """zdupgrade with its stdout (and stderr, unless ``stderr`` names a file) on a pipe nobody
    reads until the nodes are upgraded: whether they were, the status, and what the pipe got."""
    read, write = _unread_pipe()
    with open(stderr or os.devnull, "wb") as err:
        proc = subprocess.Popen([*ZDU, *fleet.argv(*options)], stdout=write,
                                stderr=err if stderr else write, cwd=cwd)
        os.close(write)
        try:
            upgraded = _wait_upgraded(fleet, proc)
        finally:
            out = _read_all(read).decode()
            proc.wait(timeout=60)
    return upgraded, proc.returncode, out


def test_a_pipe_that_is_not_read_does_not_hold_up_the_run(tmp_path: Path) -> None:
    """``zdupgrade ... | less`` not scrolled, a stalled CI log reader: the run's writes blocked on the
    full pipe, and the run with them (in EXPORT here; as well with a node out of the load balancer).
    Now the nodes are upgraded while nobody reads, and every line is there once the pipe is read."""
    fleet = LocalFleet(tmp_path, names=[f"N{i}" for i in range(12)])
    upgraded, status, out = _run_on_unread_pipe(fleet, ["--plain", "-v"], tmp_path, None)
    assert upgraded, "the run waited for its console to be read"
    assert status == Status.SUCCESS, out[-2000:]
    assert "Status 0 (SUCCESS)" in out and out.count("load balancer enable: ok") == 12
    assert "dropped" not in out


def test_a_terminal_that_is_not_read_does_not_hold_up_the_live_view(tmp_path: Path) -> None:
    """The live view on a terminal whose output is not read (Ctrl-S, a stuck ssh session)."""
    fleet = LocalFleet(tmp_path, names=[f"N{i}" for i in range(12)])
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 20, 80, 0, 0))
    env = {**os.environ, "TERM": "xterm"}
    proc = subprocess.Popen([*ZDU, *fleet.argv()], stdin=slave, stdout=slave, stderr=slave, env=env, cwd=tmp_path,
                            start_new_session=True)
    os.close(slave)
    try:
        upgraded = _wait_upgraded(fleet, proc)
    finally:
        out = _read_all(master).decode("utf-8", "replace")
        proc.wait(timeout=60)
    assert upgraded, "the run waited for its terminal to be read"
    assert proc.returncode == Status.SUCCESS and "Status 0 (SUCCESS)" in out, out[-2000:]


def test_lines_past_the_limit_are_dropped_and_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    """The console's writer on a real pipe nobody reads: past MAX_QUEUED the lines are dropped,
    never waited for, and a line says how many once the pipe is read."""
    monkeypatch.setattr(console_module, "MAX_QUEUED", 20000)
    read, write = _unread_pipe()
    stream = os.fdopen(write, "w")
    console = console_module.Console(stream, stream)
    console.start_writer()
    started = time.monotonic()
    for number in range(2000):
        console.line(f"line {number:05d} " + "x" * 80)
    assert time.monotonic() - started < 5
    chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: chunks.append(_read_all(read)))
    reader.start()
    console.drain()
    stream.close()
    reader.join(timeout=30)
    text = chunks[0].decode()
    assert "line 00000" in text and "console line(s) dropped while the console was not being read" in text
    dropped = sum(int(n) for n in re.findall(r"\[zdupgrade: (\d+) console line", text))
    assert dropped > 0 and dropped == 2000 - text.count("line 0")
    numbers = [int(n) for n in re.findall(r"^line (\d+)", text, re.M)]
    assert numbers == sorted(numbers)            # in order, with gaps where the notes are


def test_the_live_view_on_a_terminal_that_is_not_utf8(tmp_path: Path) -> None:
    """LC_ALL=C without Python's UTF-8 coercion: the live view's box characters could not be
    encoded, and the whole console was lost (not even the summary was shown: run.log said
    "the console was lost during the run: UnicodeEncodeError").  Now it draws with ASCII."""
    fleet = LocalFleet(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("LANG", "LANGUAGE", "PYTHONIOENCODING") and
           not k.startswith("LC_")}
    env.update({"LC_ALL": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0", "TERM": "xterm"})
    status, drawn = _on_terminal([*ZDU, *fleet.argv()], env, tmp_path, 100, 30)
    assert status == Status.SUCCESS, drawn[-2000:]
    assert "Status 0 (SUCCESS)" in drawn and "| NODE" in drawn and "\\u25" not in drawn, drawn[-2000:]
    assert "console was lost" not in (fleet.run_dir() / "run.log").read_text()


def test_an_events_reader_that_stalls_does_not_hold_up_the_run(tmp_path: Path) -> None:
    """``--events - | consumer`` whose consumer stops reading for a while: the run went on only
    when it read again.  Now the nodes are upgraded meanwhile, and the consumer gets every event."""
    fleet = LocalFleet(tmp_path, names=[f"N{i}" for i in range(12)])
    upgraded, status, out = _run_on_unread_pipe(fleet, ["--plain", "--events", "-"], tmp_path,
                                                tmp_path / "console.txt")
    assert upgraded, "the run waited for its --events reader"
    assert status == Status.SUCCESS, (tmp_path / "console.txt").read_text()[-2000:]
    kinds = [json.loads(line)["type"] for line in out.splitlines()]
    journal = [json.loads(line)["type"] for line in (fleet.run_dir() / "journal.jsonl").read_text().splitlines()]
    assert "RunFinished" in kinds and kinds == journal


def test_a_ctrl_c_while_the_last_lines_wait_for_their_reader_keeps_the_runs_status(tmp_path: Path) -> None:
    """The run is over and recorded, its summary waits for a reader: a Ctrl-C then must not make
    the finished run exit 130 ("interrupted")."""
    fleet = LocalFleet(tmp_path, names=[f"N{i}" for i in range(12)])
    read, write = _unread_pipe()
    proc = subprocess.Popen([*ZDU, *fleet.argv("--plain", "-v")], stdout=write, stderr=write, cwd=tmp_path)
    os.close(write)
    try:
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            runs = list(fleet.log_dir.glob("*/run.json"))
            if runs and json.loads(runs[0].read_text() or "{}").get("ended"):
                break
            time.sleep(0.1)
        assert proc.poll() is None, "the run did not wait for its reader"
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
    finally:
        out = _read_all(read).decode()
        proc.wait(timeout=60)
    assert proc.returncode == Status.SUCCESS, out[-2000:]
    assert "Status 0 (SUCCESS)" in out and "interrupted" not in out


# --------------------------------------------------------------------------- a log disk already full

@pytest.mark.parametrize("options, fill", [("size=8k", True), ("nr_inodes=12", False)])
def test_a_log_disk_full_before_the_run_is_refused_before_anything(tmp_path: Path, options: str, fill: bool) -> None:
    """A log disk that filled up (blocks, or inodes) before the night's run: the run made its run
    folder, then ended 80 ("internal error: OSError: No space left on device ... a zdupgrade bug")
    and left a damaged folder.  Now 78, naming --log_dir, and no folder left.  A real tmpfs in a
    private mount namespace of the zdupgrade process (root and unshare, as test_full_disk.py)."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.fail("this test needs root and unshare(1) to mount a private tmpfs")
    fleet = LocalFleet(tmp_path)
    logs = tmp_path / "small"
    logs.mkdir()
    script = (f'mount -t tmpfs -o {options} tmpfs "$1" && chmod 700 "$1" && '
              + ('{ head -c 65536 /dev/zero > "$1/fill" 2>/dev/null; true; } && ' if fill else "")
              + 'd="$1" && shift && "$@"; s=$?; ls -A "$d"; exit $s')
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                           str(logs), *ZDU, *fleet.argv("--plain", "--log_dir", str(logs))],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == Status.CONFIG_ERROR, done.stdout[-2000:] + done.stderr
    assert f"--log_dir '{logs}'" in done.stderr and "nothing was changed" in done.stderr, done.stderr
    assert "internal error" not in done.stderr
    assert done.stdout.split() == (["fill"] if fill else []), done.stdout     # no run folder left
    assert all(fleet.running(n) == "1.0" and fleet.lb(n) == "in" for n in fleet.names)
    assert not (tmp_path / "fleet-lock").exists()


def test_long_lines_above_the_live_view_are_not_cut_by_newlines(tmp_path: Path) -> None:
    """The run folder's path in the run's first line, on a terminal narrower than the line: rich
    cut it with a newline of its own, so the path copied from the screen was broken."""
    fleet = LocalFleet(tmp_path)
    env = {**{k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}, "TERM": "xterm"}
    status, drawn = _on_terminal([*ZDU, *fleet.argv()], env, tmp_path, 60, 20)
    assert status == Status.SUCCESS, drawn[-2000:]
    run_dir = str(fleet.run_dir())
    assert len(run_dir) > 40
    assert any(line.endswith(f"logs in {run_dir}") for line in re.split(r"[\r\n]", drawn)), drawn[:1000]


# --------------------------------------------------------------------------- ~ in path options

def test_a_tilde_the_shell_left_in_log_dir_is_the_home_directory(tmp_path: Path) -> None:
    """``--log_dir=~/logs`` (the shell expands no ``~`` after ``=``) made a folder named ``~`` in
    the working directory, while ``--config=~/...`` beside it was expanded."""
    fleet = LocalFleet(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home)}
    work = tmp_path / "work"
    work.mkdir()
    done = subprocess.run([*ZDU, *fleet.argv("-q")[:-3], "--log_dir=~/zdu-logs", "-q", "--junit", "~/j.xml"],
                          capture_output=True, text=True, cwd=work, env=env, timeout=120)
    assert done.returncode == Status.SUCCESS, done.stdout[-2000:] + done.stderr
    assert not (work / "~").exists()
    assert len(list((home / "zdu-logs").glob("*/journal.jsonl"))) == 1 and (home / "j.xml").is_file()
    listed = subprocess.run([*ZDU, "runs", "--log_dir", "~/zdu-logs"], capture_output=True, text=True, cwd=work,
                            env=env, timeout=60)
    assert listed.returncode == 0 and "SUCCESS (0)" in listed.stdout, listed.stdout + listed.stderr
    unknown = subprocess.run([*ZDU, "runs", "--log_dir=~no-such-user-zdu/x"], capture_output=True, text=True,
                             cwd=work, env=env, timeout=60)
    assert unknown.returncode == Status.CONFIG_ERROR and "there is no user 'no-such-user-zdu'" in unknown.stderr
