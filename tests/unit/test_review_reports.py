"""Review of the outputs operators and CI read after a run, fed hostile text (unit level; the
real run over an sshd shell session is in tests/integration/test_review_reports_run.py).

- a secret that a truncated output cuts in two: the pieces on either side of the truncation note
  are masked (the whole value is searched for, and a cut one is not whole any more);
- ``zdupgrade report`` of a journal carrying a lone surrogate (a JSON ``\\udcff``): the page shows
  its escape and is written, no traceback;
- the JUnit document of a step whose output holds every character XML 1.0 cannot carry, ``]]>``
  and a long output: well-formed for xml.etree and lxml, the text kept escaped.
"""
from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.unit.test_review import cli, opened, phase, step, write_run
from zdu.planning.masking import MASK, Masker
from zdu.report.junit import junit_xml
from zdu.report.review import load_run
from zdu.run import events as ev
from zdu.status import FailureKind, Outcome, Phase, Status
from zdu.transport.local import OutputKeeper

SECRET = "Zq9-SeCrEt-Vx7w"


def kept(*pieces: str, head: int = 40, tail: int = 40) -> str:
    """What the transports keep of an output made of ``pieces`` (the real keeper, small sizes)."""
    keeper = OutputKeeper(head, tail)
    for piece in pieces:
        keeper.add(piece)
    return keeper.text()


# --------------------------------------------------------------------------- a secret cut by truncation

@pytest.mark.parametrize("before", [1, 5, 9, 14])
def test_a_secret_cut_by_the_head_of_a_truncated_output_is_masked(before: int) -> None:
    # the head ends `before` characters into the secret; the rest of it is dropped
    text = kept("x" * (40 - before), SECRET, "y" * 200)
    assert "truncated here" in text and text.split("\n")[0].endswith(SECRET[:before])
    masked = Masker([SECRET])(text)
    for size in range(2, len(SECRET)):
        assert SECRET[:size] not in masked, (size, masked)
    if before >= 2:
        assert masked.split("\n")[0] == "x" * (40 - before) + MASK
    assert masked.endswith("y" * 40)


@pytest.mark.parametrize("after", [2, 6, 14])
def test_a_secret_cut_by_the_tail_of_a_truncated_output_is_masked(after: int) -> None:
    # the tail starts `after` characters before the secret's end
    text = kept("x" * 40, "y" * 200, SECRET, "z" * (40 - after))
    assert text.rsplit("\n", 1)[1].startswith(SECRET[-after:])
    masked = Masker([SECRET])(text)
    for size in range(2, len(SECRET)):
        assert SECRET[-size:] not in masked, (size, masked)
    assert masked.rsplit("\n", 1)[1] == MASK + "z" * (40 - after)


def test_cut_pieces_of_quoted_and_json_forms_and_untouched_text() -> None:
    secret = "pa'ss w\"ord9"
    masker = Masker([secret])
    quoted = "'pa'\"'\"'ss w\"ord9'"                  # shlex.quote(secret)
    text = kept("x" * 33, quoted, "y" * 200)
    assert not text.split("\n")[0].endswith("x")
    assert masker(text).split("\n")[0] == "x" * 33 + MASK
    # a neighbour that is only the secret's first or last character, or only a quote, stays
    for text in (kept("x" * 39 + "p", "y" * 200), kept("x" * 39 + "'", "y" * 200), kept("x" * 200, "9" + "z" * 39)):
        assert masker(text) == text
    # no note: nothing but the whole value is touched
    assert masker("ends with pa'ss w") == "ends with pa'ss w"
    cut = kept("a" * 50, "b" * 50)
    assert "truncated here" in cut and masker(cut) == cut


def test_a_short_secrets_cut_piece_must_stand_apart() -> None:
    masker = Masker(["hunter2"])                     # shorter than SUBSTRING_MIN: whole tokens only
    assert masker(kept("x" * 36 + " hun", "y" * 200)).split("\n")[0] == "x" * 36 + " " + MASK
    inside = kept("x" * 37 + "hun", "y" * 200)         # inside a longer word: not the secret
    assert masker(inside) == inside


def test_the_whole_secret_and_its_cut_pieces_in_one_output() -> None:
    # whole at both ends; the second cut after 7 characters, the third 7 before its end
    text = kept(SECRET, "x" * 30, SECRET, "y" * 300, SECRET, "z" * 30, SECRET, head=52, tail=52)
    assert SECRET[:7] + "\n[" in text and "]\n" + SECRET[-7:] in text
    masked = Masker([SECRET])(text)
    for size in range(2, len(SECRET) + 1):
        assert SECRET[:size] not in masked and SECRET[-size:] not in masked, masked
    assert masked.startswith(MASK + "x" * 30 + MASK + "\n[") and masked.endswith("]\n" + MASK + "z" * 30 + MASK)


# --------------------------------------------------------------------------- the HTML report

def test_report_of_a_journal_with_a_lone_surrogate_is_written(tmp_path: Path) -> None:
    log_dir = tmp_path / "logs"
    run_id = "20260101-000000-000009"
    t = time.time() - 600
    events: list[ev.Event] = [opened(run_id, t, ("A",)), ev.RunStarted(at=t, message="go")]
    events += phase("A", Phase.EXPORT, t + 1)
    events += [ev.PhaseStarted(at=t + 3, node="A", phase=Phase.UPGRADE, steps=1),
               *step("A", Phase.UPGRADE, "convert \udcff", t + 3, code=3, out="lone \udcff\ud800 end\n",
                     err="bad \udce4\n", failure=FailureKind.FAILED, message="exit code 3: bad \udce4"),
               ev.PhaseFinished(at=t + 4, node="A", phase=Phase.UPGRADE, outcome=Outcome.FAILED, code=3,
                                failure=FailureKind.FAILED, message="exit code 3: bad \udce4"),
               ev.RunFinished(at=t + 5, status=Status.UPGRADE_FAILED, message="UPGRADE failed on A")]
    run_dir = write_run(log_dir, run_id, events)
    # the run's own journal holds them as "?" (written with errors="replace"); an edited one as escapes
    journal = run_dir / "journal.jsonl"
    lines = [json.loads(line) for line in journal.read_text().splitlines()]
    for line in lines:
        if line["type"] == "StepFinished" and line["phase"] == "UPGRADE":
            line.update(name="convert \udcff", stdout="lone \udcff\ud800 end\n", stderr="bad \udce4\n",
                        message="exit code 3: bad \udce4")
    journal.write_text("".join(json.dumps(line) + "\n" for line in lines))
    target = tmp_path / "report.html"
    code, out, err = cli("report", run_id, "-o", str(target), "--log_dir", str(log_dir))
    assert code == 0 and "Traceback" not in err, err
    page = target.read_text(encoding="utf-8")           # valid UTF-8 throughout
    assert "lone \\udcff\\ud800 end" in page and "bad \\udce4" in page and "convert \\udcff" in page


# --------------------------------------------------------------------------- JUnit

NOT_XML = "".join(map(chr, [*range(0, 9), 0x0B, 0x0C, *range(0x0E, 0x20)])) + "\ufffe\uffff\udcff\ud800"


def test_junit_of_hostile_output_is_well_formed_and_keeps_the_text(tmp_path: Path) -> None:
    log_dir = tmp_path / "logs"
    run_id = "20260101-000000-000010"
    t = time.time() - 600
    long = "L" * 3_000_000
    hostile = f"ctl[{NOT_XML}] cdata ]]> <![CDATA[ x ]]> </failure><x/> &amp; \"'\r\n\u202eend"
    events: list[ev.Event] = [opened(run_id, t, ("A",)), ev.RunStarted(at=t, message="go")]
    events += [ev.PhaseStarted(at=t + 1, node="A", phase=Phase.EXPORT, steps=1),
               *step("A", Phase.EXPORT, f"export {hostile}", t + 1, code=3, out=hostile + "\n" + long,
                     err=hostile, failure=FailureKind.FAILED, message=f"exit code 3: {hostile}"),
               ev.PhaseFinished(at=t + 2, node="A", phase=Phase.EXPORT, outcome=Outcome.FAILED, code=3,
                                failure=FailureKind.FAILED, message=f"exit code 3: {hostile}"),
               ev.Warned(at=t + 2, message=f"warned {hostile}"),
               ev.RunFinished(at=t + 3, status=Status.EXPORT_FAILED, message="EXPORT failed on A")]
    write_run(log_dir, run_id, events)
    run = load_run(log_dir, run_id)
    assert run.state is not None
    # --junit is written during the run, from the events themselves (not from the journal)
    document = junit_xml(run.state, [e for e in events if isinstance(e, ev.StepFinished)])
    data = document.encode("utf-8")                     # no lone surrogate left
    root = ET.fromstring(data)
    failure = next(c for c in root.iter("testcase") if c.get("name") == "EXPORT").find("failure")
    assert failure is not None and failure.text is not None
    shown = "ctl[\\x00\\x01\\x02\\x03\\x04\\x05\\x06\\x07\\x08\\x0b\\x0c\\x0e"
    assert shown in failure.text and "\\x1f\ufffd\ufffd\ufffd\ufffd]" in failure.text
    assert "cdata ]]> <![CDATA[ x ]]> </failure><x/> &amp; \"'\n\\u202eend" in failure.text
    assert long in failure.text and shown in (failure.get("message") or "")
    assert "warned ctl[" in (root.find(".//testcase[@name='status']/failure").text or "")
    from lxml import etree                                  # a second, stricter parser
    parsed = etree.fromstring(data, etree.XMLParser(huge_tree=True))
    assert long in "".join(parsed.itertext())


def test_the_junit_writer_keeps_a_bounded_part_of_each_failed_steps_output() -> None:
    """A fleet whose every node fails with megabytes of output: the writer holds the start and
    the end of each stream (64 KiB), not all of it until the run ends."""
    from zdu.report.junit import JUNIT_OUTPUT, JunitWriter
    from zdu.run import events as ev
    from zdu.status import FailureKind, Phase, StepKind
    writer = JunitWriter("/dev/null")
    big = "S" + "x" * 3_000_000 + "E"
    writer(ev.StepFinished(node="A", phase=Phase.APPLY, key="k", name="n", kind=StepKind.RUN, command="c",
                           exit_code=1, failure=FailureKind.FAILED, message="m", stdout=big, stderr="short"),
           None)  # type: ignore[arg-type]
    kept = writer.steps[0]
    assert kept.stderr == "short"
    assert kept.stdout.startswith("Sxxx") and kept.stdout.endswith("xxE")
    assert len(kept.stdout) < JUNIT_OUTPUT + 200
    assert f"{len(big) - JUNIT_OUTPUT} characters of output truncated here" in kept.stdout
