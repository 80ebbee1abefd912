"""The one plugin loader: a user names code by entry point or dotted path; every failure is a
clear ConfigError naming the setting and the ref, and describing a ref imports nothing."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.support.plugins import install_plugin
from zdu.errors import ConfigError
from zdu.plugins import describe_ref, load_callable, parse_ref

GROUP = "zdupgrade.test_plugins"

SOURCE = """
    from pathlib import Path
    Path(__file__).with_name("imported").write_text("yes")

    class Hooks:
        @staticmethod
        def make(options):
            return ("made", options)

    def make(options):
        return ("plain", options)

    NOT_CALLABLE = 42
"""


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return install_plugin(tmp_path, monkeypatch, "zdu_test_plugin", SOURCE,
                          {GROUP: {"fancy": "zdu_test_plugin:Hooks.make"}})


def test_every_spelling_loads_the_same_kind_of_callable(plugin: Path) -> None:
    assert load_callable("zdu_test_plugin:make", setting="s")({}) == ("plain", {})
    assert load_callable("zdu_test_plugin.make", setting="s")({}) == ("plain", {})
    assert load_callable("zdu_test_plugin:Hooks.make", setting="s")({"a": 1}) == ("made", {"a": 1})
    assert load_callable("fancy", setting="s", group=GROUP)({}) == ("made", {})
    assert load_callable("os.path:join", setting="s") is __import__("os").path.join


def test_an_entry_point_is_found_only_in_its_group(plugin: Path) -> None:
    with pytest.raises(ConfigError, match="'fancy' is not an installed entry point of zdupgrade.other"):
        load_callable("fancy", setting="load_balancer.type", group="zdupgrade.other")


def test_describing_a_ref_imports_nothing(plugin: Path) -> None:
    assert describe_ref("fancy", setting="s", group=GROUP) == (
        f"fancy (entry point {GROUP}: zdu_test_plugin:Hooks.make)")
    assert describe_ref("zdu_test_plugin.make", setting="s") == "zdu_test_plugin.make (zdu_test_plugin:make)"
    assert describe_ref("zdu_test_plugin:make", setting="s") == "zdu_test_plugin:make"
    assert describe_ref("no_such_pkg.mod:f", setting="s") == "no_such_pkg.mod:f"   # not looked for
    assert "zdu_test_plugin" not in sys.modules and not (plugin / "imported").exists()
    load_callable("fancy", setting="s", group=GROUP)                          # the marker works
    assert (plugin / "imported").read_text() == "yes"


@pytest.mark.parametrize("ref, needle", [
    ("", "expected an entry point name or package.module:function, got ''"),
    ("just_a_name", "'just_a_name' is not package.module:function or package.module.function"),
    ("a b:c", "is not package.module:function"),
    ("pkg.mod:", "is not package.module:function"),
    ("os;rm:x", "is not package.module:function"),
    ("../evil:x", "is not package.module:function"),
    ("no_such_pkg.lb:make", "cannot load 'no_such_pkg.lb:make': no module named 'no_such_pkg'"),
    ("zdu_test_plugin:nope", "zdu_test_plugin has no attribute 'nope'"),
    ("zdu_test_plugin:Hooks.nope", "zdu_test_plugin.Hooks has no attribute 'nope'"),
    ("zdu_test_plugin:NOT_CALLABLE", "zdu_test_plugin:NOT_CALLABLE is a int, not a callable"),
])
def test_each_failure_names_the_setting_and_the_ref(plugin: Path, ref: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_callable(ref, setting="--rollback-policy")
    assert str(info.value).startswith("--rollback-policy: ")
    assert needle in str(info.value)


def test_a_module_that_fails_while_importing_is_a_config_error(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    install_plugin(tmp_path / "a", monkeypatch, "zdu_test_broken", "raise RuntimeError('no licence file')\n")
    with pytest.raises(ConfigError, match=r"load_balancer.type: cannot load 'zdu_test_broken:f': "
                                          r"importing 'zdu_test_broken' raised RuntimeError: no licence file"):
        load_callable("zdu_test_broken:f", setting="load_balancer.type")
    install_plugin(tmp_path / "b", monkeypatch, "zdu_test_exits", "import sys\nsys.exit(3)\n")
    with pytest.raises(ConfigError, match="raised SystemExit: 3"):
        load_callable("zdu_test_exits:f", setting="s")
    install_plugin(tmp_path / "c", monkeypatch, "zdu_test_needs", "import zdu_no_such_dependency\n")
    with pytest.raises(ConfigError, match="no module named 'zdu_no_such_dependency' "
                                          r"\(imported by zdu_test_needs\)"):
        load_callable("zdu_test_needs:f", setting="s")


def test_an_entry_point_with_an_unusable_value(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_plugin(tmp_path, monkeypatch, "zdu_test_badep", "", {GROUP: {"odd": "not a target"}})
    with pytest.raises(ConfigError, match="entry point 'odd' of zdupgrade.test_plugins has an unusable value"):
        parse_ref("odd", setting="s", group=GROUP)
