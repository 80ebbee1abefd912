"""A node whose login rc files are noisy or strict: they print a banner (stdout and stderr),
`set -u` / `set -e`, trap EXIT, change directory, export variables.  Steps still get their own
output only, their own exit codes, and a clean environment (real sshd, one shell session)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest

from tests.support import sshd as sshd_module
from tests.support.sshd import SshdServer, sshd_server  # noqa: F401 (fixture)
from tests.integration.test_ssh_shell import make

NOISY_RC = r"""
echo "Welcome to $(hostname): authorised use only"
echo "motd on stderr" >&2
printf '\036zdu-driver:ready\n'
set -u
set -e
trap 'echo bye from the rc trap' EXIT
cd /
export ZDU_RC_VAR=leaked
alias ls='echo aliased'
"""


@pytest.fixture
def noisy_rc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """root's ~/.bashrc, as the node's sshd and its shells see it, is NOISY_RC (a bind mount in
    sshd's own mount namespace: the control machine's file is not changed)."""
    rc = tmp_path / "bashrc"
    rc.write_text(NOISY_RC)
    home_rc = Path.home() / ".bashrc"
    if not home_rc.exists():
        pytest.fail(f"{home_rc} must exist to be shadowed")

    def argv(config: Path) -> list[str]:
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                'mount --bind "$1" "$2" && shift 2 && exec "$@"', "sh", str(rc), str(home_rc),
                sshd_module.SSHD, "-D", "-e", "-f", str(config)]
    monkeypatch.setattr(sshd_module, "sshd_argv", argv)
    yield


@pytest.mark.parametrize("driver_shell", ["/bin/sh", "/bin/bash"])
def test_noisy_and_strict_rc_files_do_not_reach_steps(noisy_rc: None, sshd_server: Callable[..., SshdServer],
                                                      tmp_path: Path, driver_shell: str) -> None:
    server = sshd_server("127.0.2.30")
    h = make(server, tmp_path)
    h.driver_shell = driver_shell
    try:
        first = h.run("echo one")
        assert (first.exit_code, first.stdout, first.stderr) == (0, "one\n", ""), first
        unset = h.run('echo "[${UNSET_THING:-}]"; echo "$NOT_SET_AT_ALL"; echo after')
        assert unset.exit_code == 0 and unset.stdout == "[]\n\nafter\n", unset
        failing = h.run("false; echo still-here; exit 3")
        assert (failing.exit_code, failing.stdout) == (3, "still-here\n"), failing
        for _ in range(2):
            leak = h.run("cd /tmp; export STEP_VAR=1")
            assert leak.ok, leak
            state = h.run('pwd; echo "[${STEP_VAR:-}]"')
            assert state.ok and state.stdout.splitlines()[1] == "[]", state
        assert h.shells_started == 1 and h.mode == "shell"
    finally:
        h.close()
