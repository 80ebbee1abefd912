"""Hostile steps against the shell session's driver (real sshd)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from tests.support.sshd import SshdServer, sshd_server  # noqa: F401 (fixture)
from tests.integration.test_ssh_shell import make


def test_a_step_that_cleans_tmp_does_not_break_later_steps(sshd_server: Callable[..., SshdServer],
                                                           tmp_path: Path) -> None:
    """A step removing the driver's private directory (rm -rf /tmp/*, a tmp cleaner) must not
    make every later command 'fail' with 126 without running."""
    server = sshd_server("127.0.2.20")
    h = make(server, tmp_path)
    try:
        gone = h.run('rm -rf "${TMPDIR:-/tmp}/zdu-shell.$(tr "\\0" "\\n" </proc/$PPID/cmdline | tail -n 1)"; echo gone')
        assert gone.ok and gone.stdout == "gone\n", gone
        for i in range(2):
            after = h.run(f"echo ran{i}")
            assert (after.exit_code, after.stdout, after.stderr) == (0, f"ran{i}\n", ""), after
        assert h.shells_started == 1
    finally:
        h.close()


@pytest.mark.parametrize("mode", ["shell", "exec"])
def test_a_running_steps_text_is_not_in_the_process_list(sshd_server: Callable[..., SshdServer],
                                                          tmp_path: Path, mode: str) -> None:
    """Any user on a node can read every process's arguments (ps); a step's command text (a
    password it pipes to its tool with printf, a builtin) must not be among them, through the
    shell session or an exec channel each (the fallback)."""
    import secrets
    import threading
    import time

    server = sshd_server("127.0.2.21")           # its processes are this machine's: /proc shows them
    h = make(server, tmp_path, shell_session=mode == "shell")
    mark = f"pw-{secrets.token_hex(8)}"
    pause = f"2.{secrets.randbelow(900) + 100}"   # this step's sleep, told from any other on the machine
    try:
        assert h.run("true").ok                  # the session is up before the step starts
        result: list[object] = []
        step = threading.Thread(target=lambda: result.append(
            h.run(f"printf %s '{mark}' >/dev/null; sleep {pause}; echo done")))
        step.start()
        seen: set[str] = set()
        running = 0
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    continue
                running += text.startswith(f"sleep {pause}")
                if mark in text:
                    seen.add(text)
            time.sleep(0.05)
        step.join()
        assert running, "the step was not seen running: the check looked at nothing"
        assert not seen, seen
        assert getattr(result[0], "stdout") == "done\n" and h.mode == mode
    finally:
        h.close()
