"""The script hook against hooks that exec cannot start or that end badly, with real files and
real processes: refused in ``check`` (before any node is touched) with why, and at run time a
message that says what happened -- not exec's bare "No such file or directory"."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from zdu.errors import LoadBalancerError
from zdu.lb import make_load_balancer
from zdu.lb.script import ScriptLoadBalancer
from zdu.model import LbSettings, Node, frozen_map

NODE = Node(name="Node-A", host="127.0.0.11", lb_server="node-a")


def write_hook(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    path.chmod(0o755)
    return path


def make(path: Path | str, **options: object) -> ScriptLoadBalancer:
    lb = make_load_balancer(LbSettings("script", frozen_map({"path": str(path), **options})))
    assert isinstance(lb, ScriptLoadBalancer)
    return lb


#: a file exec refuses although it is there and executable, and what check says about it
UNRUNNABLE = {
    "missing interpreter": (b"#!/no/such/interp\necho hi\n",
                            "its #! interpreter /no/such/interp is not an executable file"),
    "no shebang": (b"echo hi\n", "its first line is not #! and an interpreter"),
    "windows line endings": (b"#!/bin/sh\r\necho hi\r\n", "its #! line ends in a carriage return"),
    "env program missing": (b"#!/usr/bin/env zdu-no-such-interp\necho hi\n",
                            "runs /usr/bin/env zdu-no-such-interp, and zdu-no-such-interp is not on PATH"),
    "empty shebang": (b"#!\n", "its #! line names no interpreter"),
    "interpreter is a directory": (b"#!/tmp\n", "its #! interpreter /tmp is not an executable file"),
}


@pytest.mark.parametrize("case", sorted(UNRUNNABLE))
def test_a_hook_exec_cannot_start_is_refused_in_check_and_explained_at_run_time(tmp_path: Path, case: str) -> None:
    content, why = UNRUNNABLE[case]
    path = write_hook(tmp_path / "hook.sh", content)
    lb = make(path)
    with pytest.raises(LoadBalancerError, match="cannot be run") as refused:
        lb.check([NODE])
    assert str(refused.value).startswith(f"load-balancer hook script cannot be run: {path}: ")
    assert why in str(refused.value)
    result = lb.disable(NODE)              # called anyway (a resume, a hook changed since preflight)
    # env starts, then says itself what it did not find
    said = "exit 127 (a command it ran was not found): /usr/bin/env: " if case == "env program missing" else why
    assert not result.ok and said in result.message, result.message


@pytest.mark.parametrize("content", [b"#!/bin/sh\nexit 0\n", b"#!/usr/bin/env sh\nexit 0\n",
                                     b"#! /bin/sh -eu\nexit 0\n", b"#!/usr/bin/env -S sh -eu\nexit 0\n"])
def test_a_runnable_hook_passes_check_and_runs(tmp_path: Path, content: bytes) -> None:
    lb = make(write_hook(tmp_path / "hook.sh", content))
    lb.check([NODE])
    assert lb.disable(NODE).ok


def test_a_binary_hook_passes_check(tmp_path: Path) -> None:
    lb = make(write_hook(tmp_path / "true", Path("/bin/true").read_bytes()))
    lb.check([NODE])
    assert lb.enable(NODE).ok


def test_a_directory_is_named_as_such(tmp_path: Path) -> None:
    (tmp_path / "hooks").mkdir()
    with pytest.raises(LoadBalancerError, match=r"hook script is a directory: .*/hooks$"):
        make(tmp_path / "hooks").check([NODE])


def test_a_relative_path_runs_the_file_check_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``path: hook.sh``: check found ./hook.sh, and exec used to look it up on PATH instead."""
    write_hook(tmp_path / "hook.sh", b"#!/bin/sh\necho \"ran $0\"\n")
    monkeypatch.chdir(tmp_path)
    lb = make("hook.sh")
    lb.check([NODE])
    result = lb.disable(NODE)
    assert result.ok, result.message
    assert result.message == f"exit 0: ran {tmp_path / 'hook.sh'}"


@pytest.mark.parametrize("body, status", [
    ("no-such-lbctl drain \"$ZDU_LB_SERVER\"\n", "exit 127 (a command it ran was not found)"),
    (": > \"$0.data\"; \"$0.data\"\n", "exit 126 (a command it ran could not be executed)"),
    ("sh -c 'kill -KILL $$'\n", "exit 137 (128+9: a command it ran was killed by SIGKILL)"),
    ("exit 200\n", "exit 200"),
])
def test_a_shells_exit_status_above_125_is_explained(tmp_path: Path, body: str, status: str) -> None:
    result = make(write_hook(tmp_path / "hook.sh", b"#!/bin/sh\n" + body.encode())).disable(NODE)
    assert not result.ok
    assert result.message == status or result.message.startswith(status + ": "), result.message


def test_a_hook_killed_by_a_signal_says_which(tmp_path: Path) -> None:
    result = make(write_hook(tmp_path / "hook.sh", b"#!/bin/sh\necho bye\nkill -ABRT $$\n")).enable(NODE)
    assert not result.ok and result.message == "killed by SIGABRT: bye"
    assert result.details["exit_code"] == -signal.SIGABRT


def test_a_timed_out_hook_says_what_it_printed_last(tmp_path: Path) -> None:
    path = write_hook(tmp_path / "hook.sh", b"#!/bin/sh\necho 'draining node-a: 3 sessions left'\nsleep 300\n")
    result = make(path, timeout=0.5).disable(NODE)
    assert not result.ok
    assert result.message == (f"{path} disable Node-A: no answer within 0.5s; killed its process group "
                              "(stopped by SIGTERM); its last output: draining node-a: 3 sessions left")


def test_a_hook_that_leaves_a_process_holding_its_output_is_reported(tmp_path: Path) -> None:
    child = tmp_path / "child"
    path = write_hook(tmp_path / "hook.sh", f"#!/bin/sh\nsleep 30 &\necho $! > {child}\necho done\n".encode())
    result = make(path).disable(NODE)
    pid = int(child.read_text())
    try:
        assert result.ok and result.duration < 5
        assert result.message == ("exit 0: done; it left a process running that holds its output open "
                                  "(not waited for past 0.5s)")
    finally:
        group = os.getpgid(pid)
        if group != os.getpgrp():          # never signal the test runner's own group
            os.killpg(group, signal.SIGKILL)
