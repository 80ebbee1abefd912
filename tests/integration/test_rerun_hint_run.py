"""A run that stops with its fleet on two versions says which nodes are still on the old one
and the ``--limit`` that takes a new run to them alone: zdupgrade as a real process on a fleet
of ``transport: local`` nodes (real shells, a real script hook, a real SIGTERM)."""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from tests.support.localfleet import ROOT, LocalFleet
from zdu.status import Status

HINT = "Still on the old version: B (rolled back), C (not upgraded). To upgrade them, run the same " \
       "command again with --limit B,C"


def test_an_interrupted_run_names_the_nodes_left_and_the_limit_that_finishes_them(tmp_path: Path) -> None:
    fleet = LocalFleet(tmp_path)
    fleet.hold_hook("disable", "B")          # A is done; B is being taken out when the signal comes,
    # so the stop comes as B's APPLY begins: B is rolled back, C never started
    proc = fleet.start()
    fleet.wait_for(lambda: (tmp_path / "in-disable-B").exists(), "B's disable under way", proc)
    proc.send_signal(signal.SIGTERM)
    fleet.release()
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == int(Status.INTERRUPTED), out
    assert [fleet.running(n) for n in "ABC"] == ["2.0", "1.0", "1.0"]
    assert HINT in out, out
    show = subprocess.run([sys.executable, str(ROOT / "zdupgrade"), "show", "--log_dir", str(fleet.log_dir)],
                          capture_output=True, text=True, timeout=60)
    assert show.returncode == 0 and HINT in show.stdout, show.stdout + show.stderr
    resumed = fleet.resume()        # an operator's first try: refused, and pointed at the same way on
    assert resumed.returncode == int(Status.CONFIG_ERROR)
    assert "nothing to resume. " + HINT in resumed.stderr, resumed.stderr
    # the hint, followed: the rest of the fleet is upgraded, A is left alone
    again = fleet.start("--limit", "B,C")
    out2, _ = again.communicate(timeout=60)
    assert again.returncode == int(Status.SUCCESS), out2
    assert [fleet.running(n) for n in "ABC"] == ["2.0", "2.0", "2.0"]
    assert "Still on the old version" not in out2
    assert fleet.lb_log("A") == ["disable", "enable"]     # only the first run touched A
