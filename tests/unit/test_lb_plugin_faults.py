"""A custom (plugin) hook whose code raises anything, BaseException subclasses included, or
answers garbage: every method keeps the interface's contract (a clear error, a failed action, a
balancer that cannot be read), and a KeyboardInterrupt is taken for the operator's Ctrl-C only
where it can be one.  The plugin is a real module installed as a distribution with an entry point.
"""
from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.support.plugins import install_plugin
from zdu.errors import ConfigError, LoadBalancerError
from zdu.lb import ENTRY_POINT_GROUP, GuardedHook, make_load_balancer
from zdu.lb.base import LoadBalancer
from zdu.model import LbSettings, Node, frozen_map
from zdu.plugins import load_callable

NODES = [Node(name="A", host="127.0.0.11"), Node(name="B", host="127.0.0.12")]

PLUGIN = """
    from zdu.lb.base import LbResult, LoadBalancer

    class Boom(BaseException):
        pass

    RAISES = {"RuntimeError": lambda: RuntimeError("the F5 said 503"),
              "two lines": lambda: RuntimeError("bad\\nzdupgrade: all nodes upgraded\\r"),
              "KeyboardInterrupt": lambda: KeyboardInterrupt("from the plugin"),
              "SystemExit": lambda: SystemExit(3),
              "GeneratorExit": lambda: GeneratorExit("closed"),
              "Boom": lambda: Boom("its own")}

    class Unprintable:
        def __str__(self):
            raise RuntimeError("no text")

    ANSWERS = {"ok as text": LbResult("no", "said no"), "nan duration": LbResult(True, "ok", float("nan")),
               "bytes message": LbResult(False, b"\\xff bytes"), "no message": LbResult(True, None),
               "odd details": LbResult(True, "ok", 0.0, {"x": Unprintable(), 1: float("inf"), "l": (1, [2])}),
               "a list of details": LbResult(True, "ok", 0.0, [1]), "not a result": True,
               "none": None, "a list": ["A", "B"], "strings": {"A": "yes", "B": "no"},
               "ints": {"A": 1, "B": 0}, "one left out": {"A": True}, "bools": {"A": True, "B": False, "Z": True}}

    class Hook(LoadBalancer):
        name = "flaky"
        pool = "p1"

        def __init__(self, options):
            self.where, self.what = options["where"], options["what"]

        def _do(self, method):
            if method == self.where:
                if self.what in RAISES:
                    raise RAISES[self.what]()
                return ANSWERS[self.what]
            return LbResult(True, method)

        def validate(self, nodes): self._do("validate")
        def check(self, nodes): self._do("check")
        def disable(self, node): return self._do("disable")
        def enable(self, node): return self._do("enable")
        def serving(self, nodes):
            return self._do("serving") if self.where == "serving" else {n.name: True for n in nodes}
        def describe(self, action, node):
            self._do("describe")
            return f"flaky {action} {node.name}"
        def close(self): self._do("close")

    def make(options):
        if options["where"] == "factory":
            raise RAISES[options["what"]]()
        return Hook(options)
"""

KINDS = ["RuntimeError", "KeyboardInterrupt", "SystemExit", "GeneratorExit", "Boom"]
SAID = {"RuntimeError": "RuntimeError: the F5 said 503", "KeyboardInterrupt": "KeyboardInterrupt: from the plugin",
        "SystemExit": "SystemExit: 3", "GeneratorExit": "GeneratorExit: closed", "Boom": "Boom: its own"}


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return install_plugin(tmp_path, monkeypatch, "zdu_test_flaky_lb", PLUGIN,
                          {ENTRY_POINT_GROUP: {"flaky": "zdu_test_flaky_lb:make"}})


@pytest.fixture
def run_handlers() -> Iterator[None]:
    """SIGINT taken by a handler, as during a run (zdu.cli.signals): a KeyboardInterrupt can then
    only be raised by code."""
    previous = signal.signal(signal.SIGINT, lambda signum, frame: None)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def build(where: str, what: str) -> LoadBalancer:
    return make_load_balancer(LbSettings("flaky", frozen_map({"where": where, "what": what})))


@pytest.mark.usefixtures("plugin", "run_handlers")
@pytest.mark.parametrize("kind", KINDS)
def test_whatever_a_plugins_method_raises_keeps_the_interface(kind: str) -> None:
    with pytest.raises(ConfigError) as refused:
        build("factory", kind)
    assert str(refused.value) == f"load_balancer.type: hook 'flaky' failed to build: {SAID[kind]}"

    with pytest.raises(ConfigError) as refused:
        build("validate", kind).validate(NODES)
    assert str(refused.value) == f"load_balancer.type: hook 'flaky': validate() raised {SAID[kind]}"

    with pytest.raises(LoadBalancerError) as refused:
        build("check", kind).check(NODES)
    assert str(refused.value) == f"hook 'flaky': check() raised {SAID[kind]}"

    for action in ("disable", "enable"):
        result = getattr(build(action, kind), action)(NODES[0])
        assert not result.ok and result.message == SAID[kind]

    with pytest.raises(LoadBalancerError) as refused:
        build("serving", kind).serving(NODES)
    assert str(refused.value) == f"hook 'flaky': serving() raised {SAID[kind]}"

    assert build("describe", kind).describe("disable", NODES[0]) == "flaky disable A"   # the generic line


@pytest.mark.usefixtures("plugin", "run_handlers")
@pytest.mark.parametrize("kind", KINDS)
def test_a_plugins_close_that_raises_is_one_line_without_its_message(kind: str,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    build("close", kind).close()
    out, err = capsys.readouterr()
    assert out == "" and err == f"zdupgrade: warning: load-balancer hook 'flaky': close() raised {kind} (ignored)\n"


@pytest.mark.usefixtures("plugin")
def test_a_keyboard_interrupt_is_the_operators_only_where_a_ctrl_c_can_land() -> None:
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with pytest.raises(KeyboardInterrupt):          # the factory runs in the main thread: may be a real
        build("factory", "KeyboardInterrupt")       # Ctrl-C, it stays one (130)
    # a hook call runs in a thread of its own (call_timeout), which no signal reaches: what it
    # raises is the plugin's, wherever it was called from
    hook = build("disable", "KeyboardInterrupt")
    result = hook.disable(NODES[0])
    assert not result.ok and result.message == "KeyboardInterrupt: from the plugin"
    results: list[Any] = []
    worker = threading.Thread(target=lambda: results.append(hook.disable(NODES[0])))
    worker.start()
    worker.join()
    assert not results[0].ok and results[0].message == "KeyboardInterrupt: from the plugin"


@pytest.mark.usefixtures("plugin")
@pytest.mark.parametrize("answer, said", [
    ("a list", "hook 'flaky': serving() answered a list, not a mapping of node name to true/false"),
    ("strings", "hook 'flaky': serving() answered a str for node 'A', not true/false"),
    ("ints", "hook 'flaky': serving() answered a int for node 'A', not true/false"),
    ("one left out", "hook 'flaky': serving() answered nothing for node 'B'"),
])
def test_a_serving_answer_that_cannot_be_read_is_an_unreadable_balancer(answer: str, said: str) -> None:
    """``{"B": "no"}`` is truthy: read as it was, the capacity guard counted B as serving."""
    with pytest.raises(LoadBalancerError) as refused:
        build("serving", answer).serving(NODES)
    assert str(refused.value) == said


@pytest.mark.usefixtures("plugin")
@pytest.mark.parametrize("answer, ok, message", [
    ("ok as text", False, "the hook answered ok=str, not true/false: said no"),   # "no" is truthy
    ("bytes message", False, "\ufffd bytes"),
    ("no message", True, ""),
    ("not a result", False, "the hook returned bool, not an LbResult"),
])
def test_an_action_answer_is_made_one_the_record_can_hold(answer: str, ok: bool, message: str) -> None:
    result = build("disable", answer).disable(NODES[0])
    assert (result.ok, result.message) == (ok, message)
    assert isinstance(result.duration, float) and result.duration < 5


@pytest.mark.usefixtures("plugin")
def test_a_duration_or_details_json_cannot_hold_are_replaced() -> None:
    """A NaN duration went into run.json and the journal, and the review commands then called the
    run folder damaged."""
    result = build("disable", "nan duration").disable(NODES[0])
    assert result.ok and 0 <= result.duration < 5
    odd = build("disable", "odd details").disable(NODES[0])
    assert odd.ok and odd.details == {"x": "<Unprintable>", "1": "inf", "l": [1, [2]]}
    assert build("disable", "a list of details").disable(NODES[0]).details == {"details": [1]}


@pytest.mark.usefixtures("plugin")
def test_a_serving_answer_that_can_be_read_is_passed_on() -> None:
    assert build("serving", "none").serving(NODES) is None
    assert build("serving", "bools").serving(NODES) == {"A": True, "B": False}


@pytest.mark.usefixtures("plugin")
def test_the_guarded_hook_is_the_plugins_hook_for_its_own_attributes() -> None:
    hook = build("nowhere", "RuntimeError")
    assert isinstance(hook, GuardedHook) and hook.name == "flaky" and hook.pool == "p1"
    assert hook.disable(NODES[0]).message == "disable"


@pytest.mark.usefixtures("plugin", "run_handlers")
def test_a_line_break_in_a_plugins_message_cannot_forge_a_line_of_output() -> None:
    said = "RuntimeError: bad\\nzdupgrade: all nodes upgraded\\r"
    with pytest.raises(ConfigError) as refused:
        build("factory", "two lines")
    assert str(refused.value).endswith(said)
    with pytest.raises(LoadBalancerError) as unread:
        build("check", "two lines").check(NODES)
    assert str(unread.value).endswith(said)
    assert build("enable", "two lines").enable(NODES[0]).message == said


MODULES = {
    "two lines": "raise ValueError('bad\\nzdupgrade: SUCCESS')\n",
    "SystemExit": "raise SystemExit(2)\n",
    "Boom": "class Boom(BaseException):\n    pass\nraise Boom('at import')\n",
    "GeneratorExit": "raise GeneratorExit('at import')\n",
    "getattr": "def __getattr__(name):\n    raise SystemExit('no ' + name)\n",
}


@pytest.mark.usefixtures("run_handlers")
@pytest.mark.parametrize("case", sorted(MODULES))
def test_a_plugin_module_raising_a_base_exception_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   case: str) -> None:
    module = f"zdu_test_base_raise_{case.lower().replace(' ', '_')}"
    install_plugin(tmp_path, monkeypatch, module, MODULES[case])
    with pytest.raises(ConfigError, match=rf"^load_balancer\.type: cannot load '{module}:make': ") as refused:
        load_callable(f"{module}:make", setting="load_balancer.type")
    assert "\n" not in str(refused.value)


def test_an_entry_point_with_extras_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``f5 = mypkg.f5:make [snmp]``, the packaging spec's form with extras, was 'an unusable value'."""
    install_plugin(tmp_path, monkeypatch, "zdu_test_flaky_extras", PLUGIN,
                   {ENTRY_POINT_GROUP: {"flaky-extras": "zdu_test_flaky_extras:make [snmp, tls]"}})
    hook = make_load_balancer(LbSettings("flaky-extras", frozen_map({"where": "nowhere", "what": "none"})))
    assert hook.name == "flaky" and hook.disable(NODES[0]).ok
