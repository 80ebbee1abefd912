"""Hostile steps against the shell session's driver (real sshd)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

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
