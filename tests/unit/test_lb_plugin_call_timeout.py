"""A custom (plugin) hook whose call never returns (an F5 API that accepts and never answers, a
lock the plugin waits on forever): ``load_balancer.call_timeout`` bounds every call, the hung one
is left running in a daemon thread, and the hook is not called beside it until it returns.
The plugin is a real module installed as a distribution with an entry point."""
from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.support.plugins import install_plugin
from zdu.config.values import describe_value
from zdu.errors import ConfigError, LoadBalancerError
from zdu.lb import ENTRY_POINT_GROUP, UnloadedHook, make_load_balancer
from zdu.lb.base import LoadBalancer
from zdu.model import LbSettings, Node, frozen_map

NODES = [Node(name="A", host="127.0.0.11"), Node(name="B", host="127.0.0.12")]

PLUGIN = """
    import threading
    from zdu.lb.base import LbResult, LoadBalancer

    RELEASE = threading.Event()      # the test lets the hung calls return at its end
    ONE = {}                         # node name -> its own event (instead of RELEASE)
    CALLS = []

    class Hook(LoadBalancer):
        name = "stuck"

        def __init__(self, options):
            self.hang = options["hang"]
            self.options = options

        def _do(self, method, node=None):
            CALLS.append((method, node.name if node else None, threading.current_thread().name))
            if method in self.hang:
                ONE.get(node.name if node else None, RELEASE).wait()
                return LbResult(True, f"{method} came back late")
            return LbResult(True, f"{method} done")

        def check(self, nodes): self._do("check")
        def disable(self, node): return self._do("disable", node)
        def enable(self, node): return self._do("enable", node)
        def serving(self, nodes):
            self._do("serving")
            return {n.name: True for n in nodes}
        def close(self): self._do("close")

    def make(options):
        return Hook(options)
"""


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    install_plugin(tmp_path, monkeypatch, "zdu_test_stuck_lb", PLUGIN,
                   {ENTRY_POINT_GROUP: {"stuck": "zdu_test_stuck_lb:make"}})
    import zdu_test_stuck_lb  # type: ignore[import-not-found]
    try:
        yield zdu_test_stuck_lb
    finally:
        zdu_test_stuck_lb.RELEASE.set()
        for event in zdu_test_stuck_lb.ONE.values():
            event.set()


def build(hang: tuple[str, ...], **options: Any) -> LoadBalancer:
    return make_load_balancer(LbSettings("stuck", frozen_map({"hang": hang, **options})))


def test_a_hung_disable_fails_at_call_timeout_and_the_hook_is_not_called_beside_it(plugin: Any) -> None:
    hook = build(("disable",), call_timeout=0.3)
    started = time.monotonic()
    first = hook.disable(NODES[0])
    took = time.monotonic() - started
    assert not first.ok and took >= 0.3 and took < 30
    assert first.message == ("hook 'stuck': disable() of A did not return within 0.3 s (load_balancer.call_timeout); "
                             "it is left running, and the hook is not called again while it does")
    # the hung call still runs: nothing else is sent to the plugin (CALLS below)
    second = hook.enable(NODES[0])
    assert not second.ok
    assert second.message.startswith("hook 'stuck': enable() of A was not called: its disable() of A, started ")
    assert second.message.endswith("has not returned (call_timeout 0.3 s), and the hook is not called beside it")
    with pytest.raises(LoadBalancerError, match=r"serving\(\) was not called: its disable\(\) of A"):
        hook.serving(NODES)
    assert [c[:2] for c in plugin.CALLS] == [("disable", "A")]
    # once it has returned, the hook is called again
    plugin.RELEASE.set()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(t.name.startswith("zdu-hook-") for t in threading.enumerate()):
        time.sleep(0.01)
    again = hook.disable(NODES[1])
    assert again.ok and again.message == "disable came back late"     # RELEASE stays set


def test_the_hung_call_is_a_daemon_thread_and_the_plugin_runs_off_the_main_thread(plugin: Any) -> None:
    hook = build(("check",), call_timeout=0.2)
    with pytest.raises(LoadBalancerError) as refused:
        hook.check(NODES)
    assert str(refused.value) == ("hook 'stuck': check() did not return within 0.2 s (load_balancer.call_timeout); "
                                  "it is left running, and the hook is not called again while it does")
    hung = [t for t in threading.enumerate() if t.name == "zdu-hook-check()"]
    assert len(hung) == 1 and hung[0].daemon and hung[0].is_alive()     # cannot hold the process at exit
    assert plugin.CALLS[0][2] == "zdu-hook-check()"


def test_a_call_that_returns_in_time_is_answered_as_before(plugin: Any) -> None:
    hook = build((), call_timeout=5)
    assert hook.disable(NODES[0]).message == "disable done"
    assert hook.serving(NODES) == {"A": True, "B": True}
    hook.check(NODES)
    hook.close()
    assert [c[0] for c in plugin.CALLS] == ["disable", "serving", "check", "close"]


def test_call_timeout_is_zdupgrades_own_option_and_never_reaches_the_factory(plugin: Any) -> None:
    hook = build((), call_timeout=7, region="eu")
    assert hook.call_timeout == 7.0
    assert hook.hook.options == {"hang": (), "region": "eu"}
    assert build(()).call_timeout == 600.0            # the default


def test_a_hung_close_is_one_warning_line(plugin: Any, capsys: pytest.CaptureFixture[str]) -> None:
    build(("close",), call_timeout=0.2).close()
    assert capsys.readouterr().err == ("zdupgrade: warning: load-balancer hook 'stuck': close() did not return "
                                       "within 0.2 s (load_balancer.call_timeout); it is left running, and the "
                                       "hook is not called again while it does (ignored)\n")


@pytest.mark.parametrize("value", [0, 0.05, -1, 86401, True, "60", float("nan"), float("inf"), None, [60]])
def test_a_bad_call_timeout_is_refused_even_without_loading_the_code(value: Any) -> None:
    settings = LbSettings("mypkg.nowhere:make", frozen_map({"call_timeout": value}))
    with pytest.raises(ConfigError) as refused:
        make_load_balancer(settings, load_code=False)       # --dry-run: the plugin is not imported
    assert str(refused.value) == ("load_balancer.call_timeout: expected a number of seconds at least 0.1 and at "
                                  f"most 86400, got {describe_value(value)}")
    assert isinstance(make_load_balancer(LbSettings("mypkg.nowhere:make", frozen_map({"call_timeout": 30})),
                                         load_code=False), UnloadedHook)


def test_a_real_ctrl_c_during_a_hung_call_is_still_an_interrupt(plugin: Any) -> None:
    """Under Python's own SIGINT handling (before the run's handlers), the operator's Ctrl-C
    while the main thread waits for a hung hook call interrupts, as it did before."""
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    hook = build(("check",), call_timeout=60)
    timer = threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            hook.check(NODES)
    finally:
        timer.cancel()
    assert time.monotonic() - started < 30


def test_two_calls_that_hang_at_once_each_keep_the_hook_from_being_called(plugin: Any) -> None:
    """A wave's nodes are taken out at once: when both disables hang, the hook stays uncalled until
    both have returned, not only until the one that timed out last has."""
    plugin.ONE.update(A=threading.Event(), B=threading.Event())
    hook = build(("disable",), call_timeout=0.5)
    results: dict[str, Any] = {}

    def disable(node: Node) -> None:
        results[node.name] = hook.disable(node)
    first = threading.Thread(target=disable, args=(NODES[0],))
    first.start()
    time.sleep(0.2)                              # B starts (and times out) after A
    disable(NODES[1])
    first.join()
    assert not results["A"].ok and not results["B"].ok
    plugin.ONE["B"].set()                        # the one that timed out last returns; A still hangs
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(t.name == "zdu-hook-disable() of B" for t in threading.enumerate()):
        time.sleep(0.01)
    plugin.CALLS.clear()
    refused = hook.enable(NODES[1])
    assert not refused.ok and "its disable() of A, started" in refused.message
    assert plugin.CALLS == []


def test_a_frozen_exception_class_raised_by_a_hook_call_is_still_the_plugins(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    install_plugin(tmp_path, monkeypatch, "zdu_test_frozen_lb", """
        from dataclasses import dataclass
        from zdu.lb.base import LoadBalancer

        @dataclass(frozen=True)
        class Stop(KeyboardInterrupt):
            why: str = "frozen"

        class Hook(LoadBalancer):
            def disable(self, node): raise Stop()
            def enable(self, node): raise Stop()

        def make(options):
            return Hook()
    """)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    hook = make_load_balancer(LbSettings("zdu_test_frozen_lb:make", frozen_map({"call_timeout": 5})))
    result = hook.disable(NODES[0])            # not taken for a Ctrl-C, though setattr raises on it
    assert not result.ok and result.message == "Stop"
