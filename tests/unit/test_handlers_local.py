"""LocalHandler: commands on the control machine, same result semantics as SSH."""
from __future__ import annotations

import os
import shlex
import subprocess
import time
from typing import Iterator

import pytest

from zdu.transport import make_handler
from zdu.transport.local import LocalHandler
from zdu.transport.retry import Backoff, retry_call
from zdu.model import CommandResult, Node, SshSettings

NODE = Node(name="control", host="localhost", transport="local")


@pytest.fixture
def handler() -> Iterator[LocalHandler]:
    h = LocalHandler(NODE, SshSettings())
    h.open()
    yield h
    h.close()


def _running(pattern: str) -> bool:
    return subprocess.run(["pgrep", "-f", pattern], capture_output=True).returncode == 0


def test_make_handler_picks_local() -> None:
    assert isinstance(make_handler(NODE, SshSettings()), LocalHandler)


def test_make_handler_rejects_unknown_transport() -> None:
    with pytest.raises(ValueError, match="unknown transport"):
        make_handler(Node("x", "h", transport="telnet"), SshSettings())  # type: ignore[arg-type]


def test_exit_code_stdout_stderr(handler: LocalHandler) -> None:
    result = handler.run("echo out; echo err >&2; exit 4")
    assert isinstance(result, CommandResult)
    assert (result.exit_code, result.stdout, result.stderr, result.error) == (4, "out\n", "err\n", None)
    assert not result.ok and result.started > 0 and result.duration >= 0
    assert handler.run("true").ok


def test_env_adds_to_environment(handler: LocalHandler) -> None:
    value = "a 'b' $HOME ; `id`"
    result = handler.run('printf %s "$ZDU_X"; test -n "$PATH"', env={"ZDU_X": value})
    assert (result.stdout, result.exit_code) == (value, 0)


def test_hostile_and_non_ascii_arguments(handler: LocalHandler, tmp_path: os.PathLike) -> None:
    marker = f"{tmp_path}/pwned"
    value = f"héllo ✓ 'q' \"d\" $(touch {marker}) `touch {marker}` ; | & \\"
    assert handler.run(f"printf '%s' {shlex.quote(value)}").stdout == value
    assert not os.path.exists(marker)


def test_stdin_is_closed(handler: LocalHandler) -> None:
    result = handler.run("cat; echo after", timeout=5)
    assert (result.exit_code, result.stdout) == (0, "after\n")


def test_megabytes_and_invalid_utf8(handler: LocalHandler) -> None:
    big = handler.run("head -c 2000000 /dev/zero | tr '\\0' x")
    assert big.stdout == "x" * 2_000_000  # within the head + tail kept: nothing cut
    assert handler.run("printf '\\xff\\xfe'").stdout == "\ufffd\ufffd"
    assert handler.run("yes é | head -n 100000 | tr -d '\\n'").stdout == "é" * 100_000


def test_timeout_kills_the_whole_process_group(handler: LocalHandler) -> None:
    t0 = time.monotonic()
    result = handler.run("echo before; sleep 33.1 & sleep 33.1; echo never", timeout=0.5)
    assert time.monotonic() - t0 < 3
    assert (result.exit_code, result.error, result.stdout) == (None, "timeout", "before\n")
    assert not _running("^sleep 33.1")


def test_timeout_escalates_to_sigkill(handler: LocalHandler) -> None:
    result = handler.run("trap '' TERM; sleep 33.2", timeout=0.3)
    assert result.error == "timeout"
    assert not _running("^sleep 33.2")


def test_default_timeout_comes_from_settings() -> None:
    h = LocalHandler(NODE, SshSettings(command_timeout=0.3))
    assert h.run("sleep 33.3").error == "timeout"


def test_backoff_policy() -> None:
    assert list(Backoff(retries=4, initial=1, factor=2, maximum=5).delays()) == [1, 2, 4, 5]
    slept: list[float] = []
    calls: Iterator[Exception | str] = iter([OSError("a"), OSError("b"), "done"])

    def flaky() -> str:
        item = next(calls)
        if isinstance(item, Exception):
            raise item
        return item

    assert retry_call(flaky, policy=Backoff(retries=3), retry_if=lambda e: True,
                      sleep=slept.append) == "done"
    assert slept == [0.5, 1.0]
    with pytest.raises(KeyError):
        retry_call(lambda: {"y": 1}["x"], policy=Backoff(retries=3),
                   retry_if=lambda e: isinstance(e, OSError), sleep=slept.append)
    assert slept == [0.5, 1.0]



def test_retry_gives_up_when_told_before_or_after_a_sleep() -> None:
    """``give_up()`` true (an interrupt before anything changed): the error that just came is
    raised instead of another attempt, whether it turns true before the sleep or during it."""
    calls: list[int] = []

    def refused() -> str:
        calls.append(1)
        raise OSError("connection refused")

    with pytest.raises(OSError):
        retry_call(refused, policy=Backoff(retries=3), retry_if=lambda e: True, sleep=lambda s: None,
                   give_up=lambda: True)
    assert len(calls) == 1
    stopping: list[bool] = []
    calls.clear()
    with pytest.raises(OSError):
        retry_call(refused, policy=Backoff(retries=3), retry_if=lambda e: True,
                   sleep=lambda s: stopping.append(True), give_up=lambda: bool(stopping))
    assert len(calls) == 1 and stopping == [True]
    calls.clear()
    with pytest.raises(OSError):
        retry_call(refused, policy=Backoff(retries=3), retry_if=lambda e: True, sleep=lambda s: None)
    assert len(calls) == 4

def test_huge_output_keeps_head_and_tail_and_says_what_was_cut() -> None:
    handler = LocalHandler(Node(name="ctl", host="127.0.0.1", transport="local"))
    result = handler.run("printf START; head -c 5000000 /dev/zero | tr '\\0' x; printf END; "
                         "head -c 3000000 /dev/zero | tr '\\0' y >&2", timeout=60)
    assert result.exit_code == 0
    assert result.stdout.startswith("START") and result.stdout.endswith("END")
    assert "characters of output truncated here" in result.stdout
    cut = int(result.stdout.split("[... zdupgrade: ")[1].split(" ")[0])
    assert len(result.stdout.replace("x", "")) < 200 and cut + result.stdout.count("x") == 5_000_000
    assert "truncated" in result.stderr and result.stderr.count("y") == 2 * 1024 * 1024
