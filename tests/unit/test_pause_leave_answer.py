"""``leave_answer``: one answer per pause, in a real run folder, with the waiting run's own
reader (``OperatorPauser``) taking it.

An answer the live run took since its pause began (``pause.answer.used``) stops a different one;
one taken before the pause began, or before the resume that came back to the pause, does not.
An answer the run did not take (it ended the pause otherwise) is reported and taken back."""
from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path

import pytest

from tests.support.fakes import make_plan, opened
from zdu.cli import commands
from zdu.cli.console import Console
from zdu.cli.pause import ANSWER_FILE, OperatorPauser, leave_answer
from zdu.errors import ConfigError
from zdu.report.rundir import RunDir
from zdu.run import events as ev
from zdu.run.conductor import PauseRequest


def _taken_by_the_run(run_dir: RunDir, wave: int) -> str:
    """Let the run's pauser take what is waiting, as the live run does."""
    out = io.StringIO()
    pauser = OperatorPauser(run_dir, Console(out, out), interactive=False)
    return pauser(PauseRequest("r1", wave, 3, 5.0, "abort", ("A",)), lambda: False).answer


def test_an_answer_the_live_run_took_stops_a_different_one(tmp_path: Path) -> None:
    run_dir = RunDir.create(tmp_path, "r1")
    since = time.time() - 1
    assert leave_answer(run_dir, 1, "abort", alive=True, since=since).outcome == "left"
    assert _taken_by_the_run(run_dir, 1) == "abort"
    assert not run_dir.exists(ANSWER_FILE)
    with pytest.raises(ConfigError, match=r"took an answer already: abort .*yours \(continue\) was not left"):
        leave_answer(run_dir, 1, "continue", alive=True, since=since)
    assert not run_dir.exists(ANSWER_FILE)          # nothing left for the run to take later
    assert leave_answer(run_dir, 1, "abort", alive=True, since=since).outcome == "same"


def test_an_answer_taken_before_this_pause_or_before_the_resume_does_not_count(tmp_path: Path) -> None:
    run_dir = RunDir.create(tmp_path, "r1")
    leave_answer(run_dir, 1, "abort", alive=True, since=time.time() - 1)
    assert _taken_by_the_run(run_dir, 1) == "abort"
    # the run died before it recorded the answer; the resume came back to the pause later
    resumed = time.time() + 0.01
    time.sleep(0.02)
    assert leave_answer(run_dir, 1, "continue", alive=True, since=resumed).outcome == "left"
    assert _taken_by_the_run(run_dir, 1) == "continue"
    # the pause after another wave: the earlier wave's answer is no answer to it
    assert leave_answer(run_dir, 2, "abort", alive=True, since=time.time()).outcome == "left"


def test_two_shells_at_the_same_moment_one_answer_is_left(tmp_path: Path) -> None:
    run_dir = RunDir.create(tmp_path, "r1")
    results: list[str] = []
    start = threading.Barrier(8)

    def answer(word: str) -> None:
        start.wait()
        try:
            results.append(f"{word}:{leave_answer(run_dir, 1, word, alive=True, since=0.0).outcome}")
        except ConfigError:
            results.append(f"{word}:refused")
    threads = [threading.Thread(target=answer, args=("continue" if i % 2 else "abort",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    left = json.loads(run_dir.read_text(ANSWER_FILE))["answer"]
    assert sorted(results).count(f"{left}:left") == 1
    assert all(r in (f"{left}:left", f"{left}:same") or r.endswith(":refused") for r in results), results
    assert sum(r.endswith(":refused") for r in results) == 4


def test_an_answer_the_run_did_not_take_is_reported_and_taken_back(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The run ended its pause with another answer (typed on its terminal, or its timeout) while
    ours was being left: `zdupgrade continue` must not say it was obeyed."""
    monkeypatch.setattr(commands, "TAKEN_WAIT", 0.3)
    run_dir = RunDir.create(tmp_path, "r1")
    paused = ev.Paused(wave=1, timeout=60.0, on_timeout="abort")
    events = [opened(make_plan()), paused, ev.PauseEnded(wave=1, answer="abort", by="tester@test (terminal)")]
    run_dir.write_atomic("journal.jsonl", "".join(json.dumps(e.to_json()) + "\n" for e in events).encode())
    leave_answer(run_dir, 1, "continue", alive=True, since=paused.at)
    taken = commands._taken(run_dir, 1, paused.at, "continue")
    assert taken is not None and taken.answer == "abort" and taken.by == "tester@test (terminal)"
    assert not run_dir.exists(ANSWER_FILE)          # ours is taken back: it answers nothing now
    # not taken, and the pause still open (a stopped process): None, and the answer stays for it
    run_dir.write_atomic("journal.jsonl", "".join(json.dumps(e.to_json()) + "\n" for e in events[:2]).encode())
    leave_answer(run_dir, 1, "continue", alive=True, since=paused.at)
    assert commands._taken(run_dir, 1, paused.at, "continue") is None and run_dir.exists(ANSWER_FILE)
    run_dir.remove(ANSWER_FILE)
    # taken by the run: the file is gone at once
    leave_answer(run_dir, 2, "continue", alive=True, since=time.time())
    run_dir.remove(ANSWER_FILE)
    assert commands._taken(run_dir, 2, paused.at, "continue") == commands.PauseAnswer("continue")
