"""The script load-balancer hook, with real executables."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from zdu.errors import ConfigError, LoadBalancerError
from zdu.lb import make_load_balancer
from zdu.model import LbSettings, Node, frozen_map

ROOT = Path(__file__).resolve().parents[2]
NODE = Node(name="Node-A", host="127.0.0.11", port=2222, group="Gateway", lb_server="node-a")


def hook(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "hook.sh"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def make(path: Path, **options: object):  # type: ignore[no-untyped-def]
    return make_load_balancer(LbSettings("script", frozen_map({"path": str(path), **options})))


def test_arguments_and_environment(tmp_path: Path) -> None:
    out = tmp_path / "calls"
    lb = make(hook(tmp_path, f'echo "$1 $2 $ZDU_ACTION $ZDU_NODE_NAME $ZDU_NODE_HOST $ZDU_NODE_PORT '
                             f'$ZDU_NODE_GROUP $ZDU_LB_SERVER" >> {out}\n'))
    lb.check([NODE])
    assert lb.disable(NODE).ok and lb.enable(NODE).ok
    assert out.read_text().splitlines() == [
        "disable Node-A disable Node-A 127.0.0.11 2222 Gateway node-a",
        "enable Node-A enable Node-A 127.0.0.11 2222 Gateway node-a"]


def test_exit_code_decides(tmp_path: Path) -> None:
    result = make(hook(tmp_path, 'echo "pool member busy" >&2; exit 3\n')).disable(NODE)
    assert not result.ok and result.details["exit_code"] == 3
    assert "exit 3: pool member busy" in result.message


def test_timeout_kills_the_hook(tmp_path: Path) -> None:
    result = make(hook(tmp_path, "sleep 30\n"), timeout=0.5).enable(NODE)
    assert not result.ok and "no answer within 0.5s" in result.message
    assert result.duration < 10


def test_missing_or_not_executable_refused_in_check(tmp_path: Path) -> None:
    with pytest.raises(LoadBalancerError, match="not found"):
        make(tmp_path / "nope").check([NODE])
    path = hook(tmp_path, "exit 0\n")
    path.chmod(0o644)
    with pytest.raises(LoadBalancerError, match="not executable"):
        make(path).check([NODE])


@pytest.mark.parametrize("options,needle", [
    ({}, "needs the path"),
    ({"path": "/x", "timeout": -1}, "positive number"),
    ({"path": "/x", "colour": 1}, "unknown field 'colour'"),
])
def test_bad_options(options: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        make_load_balancer(LbSettings("script", frozen_map(options)))


# ---------------------------------------------------------------------------- real processes

def alive(pid: int) -> bool:
    """True while ``pid`` is a live (not zombie) process."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def gone(pids: list[int], timeout: float = 2.0) -> bool:
    """True once none of ``pids`` is alive (SIGKILL is delivered asynchronously)."""
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.01)
    return not any(alive(p) for p in pids)


def test_a_hook_that_ignores_sigterm_is_killed_with_its_group(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    path = hook(tmp_path, f"trap '' TERM\necho started\nsleep 300 & echo $$ $! > {pids}\nwait\nsleep 300\n")
    result = make(path, timeout=0.5).disable(NODE)

    assert not result.ok
    assert result.message == (f"{path} disable Node-A: no answer within 0.5s; killed its process "
                              "group (SIGTERM ignored, SIGKILL after 2s); its last output: started")
    assert result.details["output"] == "started\n"
    assert 2.4 < result.duration < 6
    assert gone([int(pid) for pid in pids.read_text().split()])   # the hook and its child


def test_a_hook_that_stops_on_sigterm_says_so(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    result = make(hook(tmp_path, f"sleep 300 & echo $! > {pids}\nwait\n"), timeout=0.5).enable(NODE)
    assert not result.ok and result.message.endswith("killed its process group (stopped by SIGTERM)")
    assert result.duration < 2.4
    assert gone([int(pids.read_text())])


def test_a_hook_that_closes_its_output_and_hangs_still_times_out(tmp_path: Path) -> None:
    result = make(hook(tmp_path, "echo bye\nexec >&- 2>&-\nsleep 300\n"), timeout=0.5).disable(NODE)
    assert not result.ok and "no answer within 0.5s" in result.message
    assert result.details["output"] == "bye\n" and result.duration < 4


def test_a_child_that_outlives_the_hook_does_not_hold_the_action(tmp_path: Path) -> None:
    child = tmp_path / "child"
    path = hook(tmp_path, f"(sleep 30; echo late) &\necho $! > {child}\necho done\n")
    result = make(path).disable(NODE)
    pid = int(child.read_text())
    try:
        assert result.ok and result.message == ("exit 0: done; it left a process running that holds its "
                                                "output open (not waited for past 0.5s)")
        assert result.details["left_running"] is True
        assert alive(pid)                            # the hook's business, not killed by us
        assert os.getpgid(pid) != os.getpgrp()       # it ran in a session of its own
    finally:
        group = os.getpgid(pid)
        if group != os.getpgrp():                    # never signal the test runner's own group
            os.killpg(group, signal.SIGKILL)


def test_a_hook_that_prints_a_lot_keeps_the_last_64_kib(tmp_path: Path,
                                                        capfd: pytest.CaptureFixture[str]) -> None:
    body = "head -c 3000000 /dev/zero | tr '\\0' x\necho\necho 'LAST LINE' >&2\n"
    result = make(hook(tmp_path, body)).enable(NODE)

    assert result.ok and result.message == "exit 0: LAST LINE"
    output = result.details["output"]
    dropped = 3000011 - 64 * 1024
    note = f"\n[... zdupgrade: {dropped} bytes of output truncated here ...]\n"
    assert output.startswith(note) and len(output) == len(note) + 64 * 1024      # the note says it was cut
    assert output.endswith("x\nLAST LINE\n")
    assert result.details["output_truncated_bytes"] == dropped
    assert capfd.readouterr() == ("", "")            # nothing printed past the event recorder


def test_a_hook_killed_by_a_signal_missing_or_unrunnable_is_a_result(tmp_path: Path) -> None:
    result = make(hook(tmp_path, "echo crashing\nkill -SEGV $$\n")).disable(NODE)
    assert not result.ok and result.message == "killed by SIGSEGV: crashing"
    assert result.details["exit_code"] == -signal.SIGSEGV

    missing = make(tmp_path / "nope").disable(NODE)
    assert not missing.ok and "cannot run: No such file or directory" in missing.message

    odd = Node(name="bad\x00name", host="127.0.0.11")
    assert not make(hook(tmp_path, "exit 0\n")).disable(odd).ok


HARNESS = """
import json, signal, sys
from zdu.lb.script import ScriptLoadBalancer
from zdu.model import Node
got = []
if sys.argv[2] == "handled":   # like zdupgrade's run: a signal only asks to stop at a safe point
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(sig, lambda n, f: got.append(n))
else:                          # Python's defaults, even under nohup (SIGHUP ignored, inherited)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
result = ScriptLoadBalancer(sys.argv[1], timeout=30).disable(Node("Node-A", "127.0.0.231"))
print(json.dumps({"ok": result.ok, "message": result.message, "signals": got}))
"""


@pytest.mark.parametrize("sig, mode", [(signal.SIGINT, "handled"), (signal.SIGHUP, "handled"),
                                       (signal.SIGINT, "default"), (signal.SIGHUP, "default")])
def test_a_signal_to_zdupgrades_process_group_does_not_stop_the_hook(tmp_path: Path, sig: signal.Signals,
                                                                    mode: str) -> None:
    """Ctrl-C / a hang-up reaches the whole foreground process group of the terminal; a hook
    halfway through draining a node must still finish (and, when zdupgrade is alive to hear
    it, report) its action."""
    mark = tmp_path / "mark"
    path = hook(tmp_path, f"echo begun > {mark}\nsleep 1.5\necho \"drained $2\" >> {mark}\necho finished\n")
    parent = subprocess.Popen([sys.executable, "-c", HARNESS, str(path), mode], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)     # its own group: our terminal stays out
    try:
        deadline = time.monotonic() + 20
        while not mark.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert mark.exists(), parent.communicate(timeout=5)
        os.killpg(parent.pid, sig)
        out, err = parent.communicate(timeout=20)
    finally:
        if parent.poll() is None:
            parent.kill()
    if mode == "handled":
        assert parent.returncode == 0, err
        assert json.loads(out) == {"ok": True, "message": "exit 0: finished", "signals": [int(sig)]}
    else:
        assert parent.returncode != 0                           # zdupgrade itself died ...
        deadline = time.monotonic() + 5                         # ... the hook did not
        while "drained" not in mark.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
    assert mark.read_text() == "begun\ndrained Node-A\n"


def test_a_control_character_in_a_node_value_never_reaches_the_hook(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    lb = make(hook(tmp_path, f"echo called >> {calls}\n"))
    odd = Node(name="Node-A", host="127.0.0.11", group="Gate\nway", lb_server="node-a\nset server x")
    with pytest.raises(ConfigError, match=r"node 'Node-A': group: control character '\\n'"):
        lb.validate([NODE, odd])
    with pytest.raises(ConfigError, match="node 'Node-A': group"):
        lb.check([odd])
    result = lb.disable(Node(name="Node-A", host="127.0.0.11", lb_server="node-a\x00"))
    assert not result.ok and "lb_server: control character" in result.message
    assert result.message.endswith("the hook was not run")
    assert not calls.exists()
    lb.validate([NODE])


# ---------------------------------------------------------------------------- healthy (opt-in)

NODE_B = Node(name="Node-B", host="127.0.0.12", port=2222, group="Gateway", lb_server="node-b")


def test_healthy_is_asked_only_when_the_hook_says_it_answers(tmp_path: Path) -> None:
    out = tmp_path / "calls"
    body = (f'echo "$1 $2 $ZDU_ACTION $ZDU_LB_SERVER" >> {out}\n'
            '[ "$1" = healthy ] || exit 0\n'
            '[ "$2" = Node-A ] && exit 0\n'
            'echo "checking..."; echo "pool member $ZDU_LB_SERVER: DOWN (connection refused)"; exit 1\n')
    assert make(hook(tmp_path, body)).healthy([NODE]) is None and not out.exists()   # default: cannot tell
    lb = make(hook(tmp_path, body), healthy=True)
    assert lb.healthy([NODE, NODE_B]) == {"Node-A": True,
                                          "Node-B": "pool member node-b: DOWN (connection refused)"}
    assert out.read_text().splitlines() == ["healthy Node-A healthy node-a", "healthy Node-B healthy node-b"]
    silent = make(hook(tmp_path, "exit 1\n"), healthy=True)
    assert silent.healthy([NODE]) == {"Node-A": False}


@pytest.mark.parametrize("body,needle", [
    ("echo 'unknown action' >&2; exit 2\n", "exit 2: unknown action"),
    ("kill -9 $$\n", "killed by SIGKILL"),
    ("sleep 30\n", "no answer within 0.5s"),
])
def test_a_healthy_answer_that_is_neither_0_nor_1_is_an_unreadable_balancer(tmp_path: Path, body: str,
                                                                            needle: str) -> None:
    with pytest.raises(LoadBalancerError, match="healthy Node-A: ") as info:
        make(hook(tmp_path, body), healthy=True, timeout=0.5).healthy([NODE])
    assert needle in str(info.value)


@pytest.mark.parametrize("value", ["yes", 1, None, [True]])
def test_healthy_must_be_true_or_false(tmp_path: Path, value: object) -> None:
    with pytest.raises(ConfigError, match="load_balancer.healthy: expected true or false"):
        make(hook(tmp_path, "exit 0\n"), healthy=value)


def test_the_haproxy_example_hook_answers_healthy(tmp_path: Path) -> None:
    """scripts/lb-hook-haproxy.sh: UP -> 0; anything else -> 1 with the status it read."""
    sock = tmp_path / "fake.sock"
    import socket
    import threading
    status = {"node-a": "UP", "node-b": "DOWN"}
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock))
    server.listen(8)

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.recv(4096)
                rows = "".join(f"gateways,{n},0,{s}\n" for n, s in status.items())
                conn.sendall(("# pxname,svname,scur,status\n" + rows).encode())
    threading.Thread(target=serve, daemon=True).start()
    try:
        lb = make(ROOT / "scripts" / "lb-hook-haproxy.sh", healthy=True,
                  env={"HAPROXY_SOCKET": str(sock), "HAPROXY_BACKEND": "gateways"})
        assert lb.healthy([NODE, NODE_B]) == {"Node-A": True, "Node-B": "gateways/node-b DOWN"}
    finally:
        server.close()
