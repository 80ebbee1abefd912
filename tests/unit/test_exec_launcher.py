"""The exec-channel fallback's launcher (zdu.transport.shell.exec_launcher): the command comes
on stdin, runs only when it arrived whole, and leaves no variable of the launcher behind; run
here by real dash and bash, as a node's login shell would."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from zdu.transport.shell import exec_launcher, exec_stdin

SHELLS = ["/bin/sh", "/bin/bash"]


def launch(shell: str, data: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([shell, "-c", exec_launcher("n0nce")], input=data, capture_output=True, timeout=10)


@pytest.mark.parametrize("shell", SHELLS)
def test_the_command_runs_as_written_with_its_exit_code(shell: str) -> None:
    command = ("printf '%s\\n' 'a  b\\\\c' \"[${zdu_c-unset}|${zdu_k-unset}|${zdu_l-unset}]\"\n"
               "x='two\nlines'; echo \"$x\"; echo ünï >&2; exit 7")
    done = launch(shell, exec_stdin("n0nce", command))
    assert done.returncode == 7, done
    assert done.stdout == b"a  b\\\\c\n[unset|unset|unset]\ntwo\nlines\n"
    assert done.stderr == "ünï\n".encode()


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("cut", [1, 7, 20])
def test_a_command_cut_on_its_way_does_not_run(shell: str, cut: int, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    data = exec_stdin("n0nce", f"touch {marker}\necho second line")
    done = launch(shell, data[:-cut])
    assert done.returncode == 126 and b"did not arrive whole; nothing ran" in done.stderr
    assert not marker.exists()


def test_a_line_like_the_end_line_of_another_nonce_is_only_text() -> None:
    done = launch("/bin/sh", exec_stdin("n0nce", "cat <<'E'\n#other\nE"))
    assert (done.returncode, done.stdout) == (0, b"#other\n")


def test_the_nonce_is_checked() -> None:
    with pytest.raises(ValueError):
        exec_launcher("a; rm -rf /")
