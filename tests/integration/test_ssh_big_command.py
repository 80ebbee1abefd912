"""A command longer than the shell session takes (SHELL_COMMAND_MAX) runs over an exec channel
of its own, whole, and the session goes on with the next command; real sshd.  Through the
driver a 140 KB command failed with 126 ("setsid: Argument list too long": the environment
variable that carries it holds at most 128 KiB) and a 1 MB one ran into its timeout."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from tests.integration.test_ssh_shell import make
from tests.support.sshd import SshdServer, sshd_server  # noqa: F401 (fixture)
from zdu.transport.ssh import SHELL_COMMAND_MAX


def test_a_big_command_runs_whole_and_the_session_goes_on(sshd_server: Callable[..., SshdServer],
                                                          tmp_path: Path) -> None:
    h = make(sshd_server("127.0.3.62"), tmp_path)
    try:
        assert h.run("echo small", timeout=10).stdout == "small\n" and h.mode == "shell"
        for size in (SHELL_COMMAND_MAX, 140_000, 1_000_000):
            # a here-document the size of an inline config file: its bytes counted on the node
            body = ("k=v" * (size // 3 + 1))[:size]
            result = h.run(f"wc -c <<'EOF'\n{body}\nEOF\necho \"$ZDU_T\" >&2; exit 3", timeout=20,
                           env={"ZDU_T": "env-reached"})
            assert (result.exit_code, result.stdout.strip(), result.stderr) == (3, str(size + 1), "env-reached\n"), \
                (size, result.exit_code, result.stderr[-300:])
            again = h.run("echo after; pwd", timeout=10)       # the session is still the one that serves
            assert again.exit_code == 0 and again.stdout.startswith("after\n") and h.mode == "shell"
    finally:
        h.close()
