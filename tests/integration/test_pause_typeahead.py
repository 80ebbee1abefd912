"""What was typed on the terminal before a pause asked answers nothing: zdupgrade as a real
process on a pseudo-terminal, with ``transport: local`` nodes.

Before, the terminal's reader kept every line: an ``abort`` typed while the canary was still
being upgraded answered the first pause at once, and a second ``continue`` typed at the first
pause answered the next one in 0.0 s -- the operator was never asked."""
from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

from tests.support.localfleet import ROOT, LocalFleet
from zdu.status import Status


class Screen:
    def __init__(self, master: int, proc: subprocess.Popen[bytes]) -> None:
        self.master, self.proc, self.text = master, proc, b""

    def until(self, marker: bytes, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while marker not in self.text:
            assert time.monotonic() < deadline and self.proc.poll() is None, self.text.decode(errors="replace")[-3000:]
            if select.select([self.master], [], [], 0.1)[0]:
                self.text += os.read(self.master, 65536)

    def drain(self) -> None:
        while self.proc.poll() is None or select.select([self.master], [], [], 0.1)[0]:
            if select.select([self.master], [], [], 0.1)[0]:
                try:
                    self.text += os.read(self.master, 65536)
                except OSError:
                    return


def test_type_ahead_and_a_second_answer_do_not_answer_a_later_pause(tmp_path: Path) -> None:
    fleet = LocalFleet(tmp_path, hold=True, extra={"serial": [1, "pause", 1, "pause", "100%"]})
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, str(ROOT / "zdupgrade"), *fleet.argv()], stdin=slave, stdout=slave,
                            stderr=slave, cwd=tmp_path, start_new_session=True)
    os.close(slave)
    screen = Screen(master, proc)
    try:
        fleet.wait_for(lambda: fleet.in_apply("A"), "the canary inside APPLY", proc)
        os.write(master, b"abort\n")                  # typed ahead, while no pause asks
        time.sleep(0.3)
        fleet.release()
        screen.until(b"type here: continue | abort")
        time.sleep(1.0)                               # the stale "abort" had its chance to be taken
        assert fleet.record()["pauses"][0]["ended"] is None, screen.text.decode(errors="replace")[-2000:]
        assert fleet.running("A") == "2.0"
        os.write(master, b"continue\ncontinue\n")     # the second one is typed ahead of pause 2
        screen.until(b"PAUSED after wave 2 of 3")
        screen.until(b"ignored what was typed before this pause: 'continue'")
        time.sleep(1.0)
        pauses = fleet.record()["pauses"]
        assert len(pauses) == 2 and pauses[1]["ended"] is None, pauses
        os.write(master, b"abort --keep\n")
        screen.drain()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    text = screen.text.decode(errors="replace")
    assert proc.returncode == int(Status.ABORTED), text[-3000:]
    assert [p["answer"] for p in fleet.record()["pauses"]] == ["continue", "abort-keep"]
    assert [fleet.running(n) for n in "ABC"] == ["2.0", "2.0", "1.0"]
    assert all(fleet.lb(n) == "in" for n in "ABC")
