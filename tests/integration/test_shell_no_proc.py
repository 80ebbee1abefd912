"""A node without /proc (a minimal container, a BSD-like system): commands still run through the
shell session, a command past its timeout is still ended with its process group, and a resume's
check for a step left running says "cannot tell" (None) instead of guessing (real sshd whose
/proc is an empty tmpfs, in a mount namespace of its own)."""
from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from tests.support import sshd as sshd_module
from tests.support.sshd import SshdServer, sshd_server  # noqa: F401 (fixture)
from tests.integration.test_ssh_shell import make


@pytest.fixture
def no_proc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    home_rc = Path.home() / ".bashrc"

    def argv(config: Path) -> list[str]:
        hide_rc = f'mount --bind /dev/null {home_rc} && ' if home_rc.exists() else ""
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                f'{hide_rc}mount -t tmpfs none /proc && exec "$@"', "sh",
                sshd_module.SSHD, "-D", "-e", "-f", str(config)]
    monkeypatch.setattr(sshd_module, "sshd_argv", argv)
    yield


def test_a_node_without_proc(no_proc: None, sshd_server: Callable[..., SshdServer], tmp_path: Path) -> None:
    server = sshd_server("127.0.2.31")
    h = make(server, tmp_path)
    try:
        seen = h.run("[ -r /proc/self/stat ] && echo has-proc || echo no-proc; echo $$")
        assert seen.ok and seen.stdout.startswith("no-proc\n"), seen
        assert h.mode == "shell"
        pause = f"30.{secrets.randbelow(900) + 100}"     # told from any other sleep on this machine
        t0 = time.monotonic()
        hung = h.run(f"sleep {pause} & sleep {pause}; echo never", timeout=1.0)
        assert hung.error == "timeout" and "never" not in hung.stdout, hung
        assert time.monotonic() - t0 < 20
        # its whole process group was ended (this test's own /proc sees the node's processes)
        assert not [c for c in _cmdlines() if c.startswith(f"sleep\0{pause}".encode())]
        after = h.run("echo next")
        assert (after.exit_code, after.stdout) == (0, "next\n"), after
        assert h.end_lost_step("20261203-000000-000000/APPLY/0") is None
        assert h.run("echo still-usable").ok
    finally:
        h.close()


def _cmdlines() -> list[bytes]:
    found = []
    for path in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            found.append(path.read_bytes())
        except OSError:                 # ended meanwhile
            continue
    return found
