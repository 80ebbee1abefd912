"""Building the load-balancer hook a topology names: custom hooks by dotted path or entry
point, a dry run that imports and calls none of them, and clear errors instead of tracebacks."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.plugins import install_plugin
from zdu.errors import ConfigError, LoadBalancerError
from zdu.lb import ENTRY_POINT_GROUP, UnloadedHook, make_load_balancer
from zdu.lb.base import LbResult, LoadBalancer
from zdu.lb.none import NoLoadBalancer
from zdu.lb.script import ScriptLoadBalancer
from zdu.model import LbSettings, Node, frozen_map

NODE = Node(name="Node-A", host="127.0.0.11", lb_server="node-a")


class _Recorder(LoadBalancer):
    name = "recorder"

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options

    def disable(self, node: Node) -> LbResult:
        return LbResult(True, f"disabled {node.name} in {self.options['pool']}")

    def enable(self, node: Node) -> LbResult:
        return LbResult(True)


def make_recorder(options: dict[str, Any]) -> _Recorder:
    return _Recorder(options)


def settings(kind: str, **options: Any) -> LbSettings:
    return LbSettings(kind, frozen_map(options))


PLUGIN = """
    from pathlib import Path
    Path(__file__).with_name("imported").write_text("yes")

    def make(options):
        Path(__file__).with_name("called").write_text(repr(options))
        from tests.unit.test_lb_factory import make_recorder
        return make_recorder(options)

    def broken(options):
        raise KeyError("pool")

    def refuses(options):
        from zdu.errors import ConfigError
        raise ConfigError("pool 'p9' does not exist on the F5")

    def wrong(options):
        return {"not": "a hook"}
"""


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return install_plugin(tmp_path, monkeypatch, "zdu_test_lbhook", PLUGIN,
                          {ENTRY_POINT_GROUP: {"f5": "zdu_test_lbhook:make"}})


def test_custom_hook_by_dotted_path_and_by_entry_point(plugin: Path) -> None:
    lb = make_load_balancer(settings("tests.unit.test_lb_factory:make_recorder", pool="p1"))
    assert lb.disable(NODE).message == "disabled Node-A in p1"
    lb = make_load_balancer(settings("f5", pool="p2"))
    assert lb.disable(NODE).message == "disabled Node-A in p2"
    assert (plugin / "called").read_text() == "{'pool': 'p2'}"


@pytest.mark.parametrize("ref", ["zdu_test_lbhook:make", "f5"])
def test_a_dry_run_neither_imports_nor_calls_a_custom_hook(plugin: Path, ref: str) -> None:
    lb = make_load_balancer(settings(ref, pool="p1"), load_code=False)

    assert isinstance(lb, UnloadedHook)
    assert "zdu_test_lbhook" not in sys.modules
    assert not (plugin / "imported").exists() and not (plugin / "called").exists()
    line = lb.describe("disable", NODE)
    assert line.startswith("custom hook ") and "zdu_test_lbhook:make" in line
    assert "(not loaded by --dry-run): disable node-a" in line
    # the stand-in never pretends to act
    assert not lb.disable(NODE).ok and not lb.enable(NODE).ok
    assert "was not loaded" in lb.disable(NODE).message
    with pytest.raises(LoadBalancerError, match="was not loaded"):
        lb.check([NODE])


def test_a_dry_run_of_a_builtin_callable_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    """A topology naming ``builtins:print`` (or ``this:x``, whose import prints) must stay data."""
    make_load_balancer(settings("builtins:print", msg="called from a topology"), load_code=False)
    make_load_balancer(settings("this:x"), load_code=False)
    assert capsys.readouterr() == ("", "")
    assert "this" not in sys.modules


def test_a_dry_run_still_refuses_a_misspelt_ref() -> None:
    with pytest.raises(ConfigError, match="load_balancer.type: 'not a ref' is not an installed entry point"):
        make_load_balancer(settings("not a ref"), load_code=False)


@pytest.mark.parametrize("kind, options, needle", [
    ("haproxy", {"socket": "/x"}, "load_balancer.backend"),
    ("haproxy", {"backend": "gw;show info", "socket": "/x"}, "load_balancer.backend"),
    ("script", {}, "load_balancer.path"),
    ("none", {"backend": "gw"}, "type none takes no options"),
])
def test_a_dry_run_still_validates_builtin_hooks(kind: str, options: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        make_load_balancer(settings(kind, **options), load_code=False)


def test_builtin_hooks_are_built_in_a_dry_run(tmp_path: Path) -> None:
    assert isinstance(make_load_balancer(settings("none"), load_code=False), NoLoadBalancer)
    lb = make_load_balancer(settings("script", path=str(tmp_path / "hook")), load_code=False)
    assert isinstance(lb, ScriptLoadBalancer)


@pytest.mark.parametrize("factory, needle", [
    ("zdu_test_lbhook:broken", "load_balancer.type: hook 'zdu_test_lbhook:broken' failed to build: "
                               "KeyError: 'pool'"),
    ("zdu_test_lbhook:refuses", "load_balancer.type: hook 'zdu_test_lbhook:refuses': "
                                "pool 'p9' does not exist on the F5"),
    ("zdu_test_lbhook:wrong", "hook 'zdu_test_lbhook:wrong' returned dict, not a zdu.lb.base.LoadBalancer"),
    ("no_such_pkg.lb:make", "load_balancer.type: cannot load 'no_such_pkg.lb:make': "
                            "no module named 'no_such_pkg'"),
])
def test_a_custom_factory_that_fails_is_a_config_error(plugin: Path, factory: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        make_load_balancer(settings(factory))
    assert needle in str(info.value)


@pytest.mark.parametrize("kind, options, where", [
    ("haproxy", {"backend": "gw", "socket": "/run/h.sock\nshow info"}, "load_balancer.socket"),
    ("haproxy", {"backend": "gw", "sockets": ["/a", "/b\x00"]}, r"load_balancer.sockets\[1\]"),
    ("haproxy", {"backend": "gw", "socket": "/a", "via": "lb\rhost"}, "load_balancer.via"),
    ("script", {"path": "/bin/true", "env": {"TOKEN": "a\x1b[2Jb"}}, "load_balancer.env.TOKEN"),
    ("tests.unit.test_lb_factory:make_recorder", {"pool": "p\x001"}, "load_balancer.pool"),
])
def test_control_characters_in_any_option_are_refused(kind: str, options: dict[str, Any],
                                                      where: str) -> None:
    with pytest.raises(ConfigError, match=rf"{where}: control character"):
        make_load_balancer(settings(kind, **options))


def test_hooks_that_cannot_tell_who_is_serving_say_none(tmp_path: Path) -> None:
    assert make_load_balancer(settings("none")).serving([NODE]) is None
    assert make_load_balancer(settings("script", path="/bin/true")).serving([NODE]) is None
    assert make_recorder({}).serving([NODE]) is None
