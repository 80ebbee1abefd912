"""What a run's start imports (issue 12: the process start is most of zdupgrade's own time).

Each check runs a fresh interpreter: the modules a run imports before its first node command
must not pull in what only an option, an HTTP step, a plugin or the run's end needs."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: the modules the run path imports up to the conductor (the transport's ssh module aside: it
#: brings paramiko and, through cryptography, importlib.metadata)
RUN_PATH = ("zdu.cli.main", "zdu.cli.upgrade", "zdu.cli.live", "zdu.cli.pause", "zdu.run.conductor",
            "zdu.run.preflight", "zdu.run.lock", "zdu.run.resume", "zdu.report.runfolder", "zdu.lb",
            "zdu.lb.haproxy", "zdu.plugins", "zdu.run.policy")


def _loaded(code: str) -> set[str]:
    script = f"import sys\n{code}\nimport json\nprint(json.dumps(sorted(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=str(ROOT),
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return set(json.loads(proc.stdout.splitlines()[-1]))


def test_run_start_does_not_import_what_only_options_or_the_end_need() -> None:
    loaded = _loaded("\n".join(f"import {name}" for name in RUN_PATH))
    assert "zdu.run.conductor" in loaded          # the check itself imported the run path
    unwanted = {"tabulate",                        # the summary table, at the run's end
                "zdu.run.http", "ssl", "urllib.request",   # http steps only
                "zdu.report.junit", "zdu.report.views", "zdu.report.review",  # --junit / --events
                "importlib.metadata"}              # entry-point plugins only
    assert sorted(unwanted & loaded) == []


def test_the_outputs_import_the_ci_writers_when_asked_for(tmp_path: Path) -> None:
    code = f"""
import argparse, io
from zdu.cli.console import Console
from zdu.cli.live import Outputs
args = argparse.Namespace(quiet=False, verbose=False, junit=None, events=None, plain=True)
Outputs(args, Console(io.StringIO(), io.StringIO()), {{}})
assert "zdu.report.junit" not in sys.modules, "imported without --junit / --events"
args.junit = {str(tmp_path / 'junit.xml')!r}
outputs = Outputs(args, Console(io.StringIO(), io.StringIO()), {{}})
assert outputs.junit is not None and outputs.junit.path.endswith("junit.xml")
"""
    assert "zdu.report.junit" in _loaded(code)


def test_preload_imports_the_end_modules_in_a_thread_of_its_own() -> None:
    code = """
import threading
from zdu.cli.upgrade import END_MODULES, preload
assert "tabulate" in END_MODULES and "tabulate" not in sys.modules
thread = preload(END_MODULES + ("zdu_no_such_module_here", "json.tool"))
assert thread is not threading.current_thread() and thread.daemon
thread.join(60)
assert "tabulate" in sys.modules
assert "json.tool" not in sys.modules    # a module that fails stops the preload: the real import reports it
"""
    assert "tabulate" in _loaded(code)
