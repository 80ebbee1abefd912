"""Messages quote output cut to a few hundred characters; the cut must come after masking, or a
secret it goes through leaves a piece the masker cannot know (an http step's body, a GET wait's
body, a node-side http check's)."""
from __future__ import annotations

from zdu.model import CommandResult
from zdu.planning.masking import Masker
from zdu.planning.plan import PlannedRequest, PlannedWait
from zdu.run.http import judge_response
from zdu.run.waits import node_check

SECRET = "Zq9-SeCrEt-Vx7w"
MASK = Masker([SECRET])


def pieces_in(text: str) -> list[str]:
    return [SECRET[i:i + 4] for i in range(len(SECRET) - 3) if SECRET[i:i + 4] in text]


def test_an_http_steps_body_is_masked_before_it_is_cut() -> None:
    request = PlannedRequest("GET", "http://127.0.0.1:1/x", (), None, None, None, (200,), None, True,
                             None, None, None, False, "control", 5.0)
    body = "x" * 155 + SECRET + " tail"                  # the 160-character cut goes through it
    unmasked = judge_response(request, 500, body)
    assert unmasked is not None and pieces_in(MASK(unmasked))   # the defect, as it was
    judged = judge_response(request, 500, body, MASK)
    assert judged is not None and "status 500, expected 200" in judged and not pieces_in(judged)


def test_a_node_side_http_checks_body_is_masked_before_it_is_cut() -> None:
    wait = PlannedWait("http", "node", "http://127.0.0.1:1/health", "ready", None, "up", 5, 1)
    body = "y" * 115 + SECRET
    check = node_check(wait, CommandResult("poll", 0, f"{body}\n200", ""), MASK)
    assert not check.ok and "body does not match /ready/" in check.message
    assert not pieces_in(check.message)


def test_a_node_side_command_checks_message_is_masked_before_it_is_cut() -> None:
    wait = PlannedWait("command", "node", "check", None, None, "up", 5, 1)
    line = "z" * 195 + SECRET + " end"                  # the 200-character cut goes through it
    check = node_check(wait, CommandResult("poll", 1, "", line + "\n"), MASK)
    assert not check.ok and check.message.startswith("exit 1: zzz") and not pieces_in(check.message)


def test_a_plugin_hook_whose_serving_raises_only_loses_the_warning() -> None:
    """out_of_rotation is for a warning: a hook's bug there must not stop the run at preflight."""
    from zdu.lb.base import LoadBalancer
    from zdu.run.preflight import out_of_rotation
    from tests.support.fakes import make_plan

    class Broken(LoadBalancer):
        name = "broken"

        def serving(self, nodes):  # type: ignore[no-untyped-def]
            raise RuntimeError("bug in the plugin")

        def disable(self, node):  # type: ignore[no-untyped-def]
            raise AssertionError

        def enable(self, node):  # type: ignore[no-untyped-def]
            raise AssertionError

    assert out_of_rotation(make_plan(), Broken()) == []
