"""The terminal at a pause: a stray byte that is not UTF-8 does not end terminal answers (the
"continue" typed after it counts), and a run in the background of its terminal is not stopped by
SIGTTIN at a pause: its timeout (and `zdupgrade continue`) still end the pause."""
from __future__ import annotations

import io
import os
import pty
import signal
import sys
import threading
import time
from pathlib import Path

from zdu.cli.console import Console
from zdu.cli.pause import OperatorPauser
from zdu.report.rundir import RunDir
from zdu.run.conductor import PauseRequest

ROOT = Path(__file__).resolve().parents[2]


def test_a_non_utf8_byte_typed_at_a_pause_does_not_end_terminal_answers(tmp_path: Path) -> None:
    r, w = os.pipe()
    stdin = io.TextIOWrapper(io.FileIO(r, "r"), encoding="utf-8", errors="strict")
    out = io.StringIO()
    pauser = OperatorPauser(RunDir.create(tmp_path, "r1"), Console(out, out), stdin=stdin, interactive=True)

    def typing() -> None:
        os.write(w, b"contin\xe9\n")
        time.sleep(0.3)
        os.write(w, b"continue\n")
    threading.Thread(target=typing, daemon=True).start()
    answer = pauser(PauseRequest("r1", 1, 3, 10.0, "abort", ("A",)), lambda: False)
    os.close(w)
    assert answer.answer == "continue" and "(terminal)" in answer.by
    assert "not an answer" in out.getvalue()


CHILD = r"""
import os, sys, tempfile
sys.path.insert(0, sys.argv[1])
os.setpgid(0, 0)                      # a background job: not the terminal's foreground group
from zdu.cli.console import Console
from zdu.cli.pause import OperatorPauser
from zdu.report.rundir import RunDir
from zdu.run.conductor import PauseRequest
pauser = OperatorPauser(RunDir.create(tempfile.mkdtemp(), "r1"), Console(sys.stdout, sys.stderr))
assert pauser.interactive
print("ANSWER", pauser(PauseRequest("r1", 1, 3, 1.0, "abort", ("A",)), lambda: False).answer, flush=True)
"""


def test_a_background_run_at_a_pause_is_not_stopped_by_sigttin() -> None:
    pid, master = pty.fork()
    if pid == 0:                                   # a session on the pseudo-terminal; the job in it:
        job = os.fork()
        if job == 0:
            os.execv(sys.executable, [sys.executable, "-c", CHILD, str(ROOT)])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            done, status = os.waitpid(job, os.WNOHANG | os.WUNTRACED)
            if done:
                os._exit(3 if os.WIFSTOPPED(status) else 0)
            time.sleep(0.05)
        os._exit(4)
    screen = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        screen += chunk
    _, status = os.waitpid(pid, 0)
    os.close(master)
    if os.WIFSTOPPED(status):
        os.kill(pid, signal.SIGKILL)
    code = os.waitstatus_to_exitcode(status)
    assert code == 0, ("stopped by SIGTTIN" if code == 3 else f"exit {code}", screen.decode(errors="replace"))
    assert b"ANSWER abort" in screen
    # it does not invite typing it cannot read; it says how to answer here
    assert b"or type here" not in screen and b"`fg` to type an answer here" in screen
