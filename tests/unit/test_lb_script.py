"""The script load-balancer hook, with real executables."""
from __future__ import annotations

from pathlib import Path

import pytest

from zdu.errors import ConfigError, LoadBalancerError
from zdu.lb import make_load_balancer
from zdu.model import LbSettings, Node, frozen_map

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
