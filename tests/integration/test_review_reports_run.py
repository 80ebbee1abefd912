"""What operators and CI read after a real run (a real zdupgrade process, a real sshd, the shell
session transport) whose node answers with hostile output and a secret:

- the secret reaches the output in pieces (split across two writes 0.3 s apart, on stdout and on
  stderr), and a long output's truncation cuts it in two: neither it nor a piece of it is in the
  run folder (run.json, journal, run.log, the node log), --events, --junit, the console or the
  HTML report;
- the JUnit file holds the control characters, U+FFFE, undecodable bytes, ``]]>`` and 2 MiB of
  output of the failed step: well-formed (xml.etree and lxml), valid against the
  schema, the text escaped;
- the report, opened in headless Chromium: none of the step's ``</script><script>`` or the
  step name's runs, the text shows as text.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Callable

import pytest
import xmlschema
import yaml

from tests.support.browser import Chromium, chromium_binary
from tests.support.sshd import SshdServer, sshd_server  # noqa: F401 (fixture)

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = xmlschema.XMLSchema(str(ROOT / "tests" / "data" / "junit" / "junit.xsd"))
SECRET = "Zq9-SeCrEt-Vx7w"
STEP_NAME = 'hostile </script><script>window.pwned=1</script><!-- "q" \u202e'
PAYLOAD = ("ctl:\x01\x02\x08\x0b\x0c\x0e\x1f fffe:\ufffe cdata:]]> </script><script>document.title='pwned';"
           "window.pwned=1</script> <!-- --> \"q\" 'a' <a href=\"javascript:window.pwned=2\">x</a> \u202ebidi")
#: the step: the secret in two writes on each stream, hostile bytes, then over 2 MiB of stdout
#: whose truncation cuts the secret (the head ends 5 characters into it) and 2 MiB of stderr whose
#: kept tail starts 6 characters before its end (the last line, the step's message, is another one:
#: see test_a_secret_cut_in_a_failed_steps_message_is_masked)
SCRIPT = r"""rep() { head -c "$1" /dev/zero | tr '\0' "$2"; }
printf '%s' "${SECRET:0:5}"; sleep 0.3; printf '%s\n' "${SECRET:5}"
printf 'err:%s' "${SECRET:0:4}" >&2; sleep 0.3; printf '%s\n' "${SECRET:4}" >&2
printf '%s\n' "$PAYLOAD"; printf 'bad:\377\376\n'
rep HEAD_FILL x; printf %s "$SECRET"; rep 1100000 y; echo
rep 1100000 w >&2; printf %s "$SECRET" >&2; rep TAIL_FILL z >&2; printf '\nstderr ends\n' >&2
exit 3
""".replace("HEAD_FILL", str(1024 * 1024 - (len(SECRET) + 1) - (len(PAYLOAD) + 1) - len("bad:??\n") - 5)).replace(
    "TAIL_FILL", str(1024 * 1024 - 6 - len("\nstderr ends\n")))


def zdupgrade(*argv: str, timeout: float = 120, env: dict[str, str] | None = None
              ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "zdupgrade"), *argv], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def pieces(secret: str, size: int = 4) -> set[str]:
    """Every run of ``size`` characters of ``secret``, and its whole JSON-escaped form."""
    return {secret[i:i + size] for i in range(len(secret) - size + 1)} | {json.dumps(secret)[1:-1]}


def fleet(tmp_path: Path, server: SshdServer | None, script: str, *, secret: object = SECRET,
          hook: Path | None = None) -> list[str]:
    """The arguments of a run of one node (over ssh to ``server``, or ``transport: local``) whose
    UPGRADE runs ``script`` with the secret in $SECRET and PAYLOAD in $PAYLOAD."""
    (tmp_path / "step.sh").write_text(script)
    profile = {"name": "hostile-output", "secrets": ["pw"],
               "phases": {"EXPORT": [{"name": "ok", "run": "true"}],
                          "UPGRADE": [{"name": STEP_NAME, "run": f"SECRET={{{{ pw }}}} PAYLOAD={{{{ payload }}}} "
                                                                 f"bash {tmp_path / 'step.sh'}"}],
                          "PRE-APPLY": [{"name": "n", "run": "true"}], "APPLY": [{"name": "n", "run": "true"}],
                          "POST-APPLY": [{"name": "n", "run": "true"}]},
               "rollback": {"APPLY": [{"name": "back", "run": "true"}]}}
    (tmp_path / "profile.yaml").write_text(yaml.safe_dump(profile))
    topology: dict[str, object] = {"profile": str(tmp_path / "profile.yaml"), "lock_dir": str(tmp_path / "lock"),
                                   "vars": {"pw": secret, "payload": PAYLOAD},
                                   "nodes": [{"name": "N1", "host": "127.0.0.1", "transport": "local"}]}
    if hook is not None:
        topology["load_balancer"] = {"type": "script", "path": str(hook), "timeout": 30}
    if server is not None:
        known = tmp_path / "known_hosts"
        known.write_text(server.known_hosts_line())
        topology["ssh"] = {"known_hosts": str(known), "key_file": str(server.client_key), "connect_timeout": 5}
        topology["nodes"] = [{"name": "N1", "host": server.host, "port": server.port, "user": server.user}]
    (tmp_path / "topology.yaml").write_text(yaml.safe_dump(topology))
    for name in ("old", "new"):
        (tmp_path / name).mkdir()
    return ["--old_install_dir", str(tmp_path / "old"), "--new_install_dir", str(tmp_path / "new"),
            "--config", str(tmp_path / "topology.yaml"), "--log_dir", str(tmp_path / "logs"), "--plain"]


def test_outputs_of_a_run_with_hostile_output_and_a_cut_secret(sshd_server: Callable[..., SshdServer],
                                                               tmp_path: Path) -> None:
    server = sshd_server("127.0.3.31")
    junit, events = tmp_path / "junit.xml", tmp_path / "events.jsonl"
    done = zdupgrade(*fleet(tmp_path, server, SCRIPT), "--junit", str(junit), "--events", str(events))
    assert done.returncode == 71, done.stdout + done.stderr            # UPGRADE_FAILED
    run_dir = next((tmp_path / "logs").iterdir())
    report = tmp_path / "report.html"
    made = zdupgrade("report", run_dir.name, "-o", str(report), "--log_dir", str(tmp_path / "logs"))
    assert made.returncode == 0, made.stderr
    # the truncations did cut the secret, and the secret went out in two writes (the sleeps)
    journal = [json.loads(line) for line in (run_dir / "journal.jsonl").read_text().splitlines()]
    step = next(e for e in journal if e["type"] == "StepFinished" and e["phase"] == "UPGRADE")
    assert step["stdout"].startswith("******\nctl:") and step["stderr"].startswith("err:******\n")
    assert "x******\n[... zdupgrade: " in step["stdout"], step["stdout"][1048500:1048700]
    assert "truncated here ...]\n******zzz" in step["stderr"]
    assert step["duration"] >= 0.6
    texts = {"console": done.stdout + done.stderr, "junit": junit.read_text(), "events": events.read_text(),
             "report": report.read_text()}
    texts.update({p.name: p.read_text(errors="replace") for p in run_dir.iterdir() if p.is_file()})
    for where, text in texts.items():
        for piece in pieces(SECRET):
            assert piece not in text, f"{piece!r} of the secret is in {where}"
    # JUnit: well-formed and valid, the text escaped
    data = junit.read_bytes()
    SCHEMA.validate(str(junit))
    failure = ET.fromstring(data).find(".//testcase[@classname='zdupgrade.N1'][@name='UPGRADE']/failure")
    assert failure is not None and failure.text is not None
    assert "ctl:\\x01\\x02\\x08\\x0b\\x0c\\x0e\\x1f fffe:\ufffd cdata:]]> </script><script>" in failure.text
    assert "\\u202ebidi\nbad:\ufffd\ufffd\n" in failure.text
    # megabytes of a failed step's output: its start and its end, the cut said (the node log has all)
    assert "characters of output truncated here" in failure.text and "stderr ends" in failure.text
    assert len(failure.text) < 300_000
    assert STEP_NAME.replace("\u202e", "\\u202e") in failure.text
    from lxml import etree                                  # a second, stricter parser
    tree = etree.fromstring(data, etree.XMLParser(huge_tree=True))
    assert "cdata:]]> </script>" in "".join(tree.itertext())
    # the report in a real browser: nothing of it ran, the text is there
    if chromium_binary() is None:
        pytest.fail("chromium is not installed (scripts/setup.sh installs Debian's chromium)")
    with Chromium(tmp_path) as browser:
        page = browser.open(report)
        assert page.evaluate("window.__violations") == []
        assert page.evaluate("document.title").startswith("zdupgrade run ")
        assert page.evaluate("typeof window.pwned") == "undefined"
        assert page.evaluate("document.querySelectorAll('script').length") == 1        # our own
        assert page.evaluate("document.querySelectorAll('img, iframe, object').length") == 0
        links = page.evaluate("Array.from(document.querySelectorAll('a')).map(a => a.getAttribute('href'))")
        assert len(links) == 1 and links[0].startswith("#step-"), links          # the failed step's, ours
        stdout = page.evaluate("document.querySelector('pre.stdout').textContent.slice(0, 400)")
        assert stdout.startswith("******\n" + PAYLOAD.replace("\x01\x02\x08\x0b\x0c\x0e\x1f", "\\x01\\x02\\x08\\x0b"
                                                                   "\\x0c\\x0e\\x1f").replace("\u202e", "\\u202e"))
        summaries = page.evaluate("Array.from(document.querySelectorAll('details.step.failed summary'))"
                                  ".map(s => s.textContent)")
        assert any(STEP_NAME.replace("\u202e", "\\u202e") in s for s in summaries), summaries
        assert page.evaluate("document.querySelectorAll('#failed-steps a').length") == 1


#: a failed step's message is its output's last line, cut to 300 characters: the secret's start where
#: the cut goes through it; its end where that line starts in the kept tail of a truncated output
MESSAGE_CUTS = {
    "cut at 300": 'printf "%0295d%s end\\n" 0 "$SECRET" >&2; exit 3\n',
    "truncated tail": 'head -c 1100000 /dev/zero | tr "\\0" w >&2; printf %s "$SECRET" >&2; '
                      'head -c 100 /dev/zero | tr "\\0" z >&2; head -c 1048470 /dev/zero | tr "\\0" "\\n" >&2; exit 3\n',
}


@pytest.mark.parametrize("case", sorted(MESSAGE_CUTS))
def test_a_secret_cut_in_a_failed_steps_message_is_masked(sshd_server: Callable[..., SshdServer],
                                                         tmp_path: Path, case: str) -> None:
    server = sshd_server("127.0.3.32")
    done = zdupgrade(*fleet(tmp_path, server, MESSAGE_CUTS[case]))
    assert done.returncode == 71, done.stdout + done.stderr
    run_dir = next((tmp_path / "logs").iterdir())
    texts = {"console": done.stdout + done.stderr, **{p.name: p.read_text() for p in run_dir.iterdir() if p.is_file()}}
    assert "exit code 3: " in texts["run.log"]
    for where, text in texts.items():
        for piece in pieces(SECRET):
            assert piece not in text, f"{piece!r} of the secret is in {where}"


POLICY = """
import os
from zdu.run.policy import Action, Decision

def raises(context):
    raise RuntimeError("could not reach the CMDB with token " + os.environ["GW_PW"])

def says(context):
    return Decision(Action.ABORT, "asked the CMDB with token " + os.environ["GW_PW"])
"""


@pytest.mark.parametrize("policy", ["raises", "says"])
def test_a_secret_in_a_rollback_policys_reason_is_masked(tmp_path: Path, policy: str) -> None:
    (tmp_path / "review_reports_policy.py").write_text(POLICY)
    argv = fleet(tmp_path, None, "exit 3\n", secret={"env": "GW_PW"})      # an {env: ...} value: a secret
    done = zdupgrade(*argv, "--rollback-policy", f"review_reports_policy:{policy}",
                     env={"GW_PW": SECRET, "PYTHONPATH": str(tmp_path)})
    assert done.returncode == 71, done.stdout + done.stderr
    assert "CMDB with token" in done.stdout
    run_dir = next((tmp_path / "logs").iterdir())
    texts = {"console": done.stdout + done.stderr, **{p.name: p.read_text() for p in run_dir.iterdir() if p.is_file()}}
    for where, text in texts.items():
        assert SECRET not in text, f"the secret is in {where}"


#: a script hook whose output is longer than the 64 KiB kept of it: the kept tail starts 6
#: characters before the end of the secret it printed (from the environment it inherits)
HOOK = """#!/bin/sh
head -c 70000 /dev/zero | tr '\\0' w; printf %s "$GW_PW"; head -c 65530 /dev/zero | tr '\\0' z
"""


def hook_run(tmp_path: Path, script: str) -> dict[str, str]:
    """A successful run of one local node whose script hook is ``script`` (the secret in its
    environment): every text it left, by where (the console, each file of the run folder)."""
    hook = tmp_path / "hook.sh"
    hook.write_text(script)
    hook.chmod(0o755)
    argv = fleet(tmp_path, None, "true\n", secret={"env": "GW_PW"}, hook=hook)
    done = zdupgrade(*argv, env={"GW_PW": SECRET})
    assert done.returncode == 0, done.stdout + done.stderr
    run_dir = next((tmp_path / "logs").iterdir())
    return {"console": done.stdout + done.stderr, **{p.name: p.read_text() for p in run_dir.iterdir() if p.is_file()}}


def assert_no_piece(texts: dict[str, str]) -> None:
    for where, text in texts.items():
        for piece in pieces(SECRET):
            assert piece not in text, f"{piece!r} of the secret is in {where}"


def test_a_secret_cut_by_a_script_hooks_64k_tail_is_masked(tmp_path: Path) -> None:
    texts = hook_run(tmp_path, HOOK)
    assert "load balancer disable: ok" in texts["console"]
    assert_no_piece(texts)


#: a script hook whose last line holds the secret where the message used to be cut (300 characters)
HOOK_LINE = """#!/bin/sh
printf 'ok %0290d%s end\\n' 0 "$GW_PW"
"""


def test_a_secret_where_a_script_hooks_message_is_cut_is_masked(tmp_path: Path) -> None:
    texts = hook_run(tmp_path, HOOK_LINE)
    assert "0****** end" in texts["run.log"]
    assert_no_piece(texts)
