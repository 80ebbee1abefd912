"""Helpers for tests that drive zdupgrade as a separate process and read its run folder."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from zdu.lab.fleet import wait_until


def latest_record(log_dir: Path) -> dict[str, Any]:
    """run.json of the newest run under ``log_dir`` ({} when there is none yet)."""
    runs = sorted(log_dir.glob("*/run.json"))
    return json.loads(runs[-1].read_text()) if runs else {}


def wait_record(log_dir: Path, predicate: Callable[[dict[str, Any]], bool], what: str, *,
                proc: subprocess.Popen[str] | None = None, describe: Callable[[], str] = lambda: "",
                timeout: float = 60) -> dict[str, Any]:
    """Poll run.json until ``predicate`` holds; fail early if ``proc`` ends first."""
    def check() -> dict[str, Any] | None:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"zdupgrade ended ({proc.returncode}) before {what}:\n{describe()[-3000:]}")
        try:
            data = latest_record(log_dir)
        except ValueError:        # caught between the write and the rename
            return None
        return data if data and predicate(data) else None
    try:
        return wait_until(check, timeout=timeout, interval=0.05, what=what)
    except AssertionError:
        raise
    except Exception:
        if proc is not None:
            proc.kill()
        raise


def step_running(node: str, phase: str, name: str | None = None, key: str | None = None
                 ) -> Callable[[dict[str, Any]], bool]:
    """A step of ``node`` in ``phase`` (by name or key) has started and not ended."""
    def running(data: dict[str, Any]) -> bool:
        return any(s["node"] == node and s["phase"] == phase and s["ended"] is None
                   and (name is None or s["name"] == name) and (key is None or s["key"] == key)
                   for s in data["steps"])
    return running


ROOT = Path(__file__).resolve().parents[2]


@dataclass
class CliRun:
    """A ``zdupgrade`` process started by :func:`start_cli`: its output goes to a file."""

    proc: subprocess.Popen[str]
    log_dir: Path
    output: Path

    def wait(self, timeout: float = 150.0) -> int:
        """The exit status; a run that outlives ``timeout`` is killed and the test fails."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"zdupgrade did not finish within {timeout:g}s:\n{self.text()[-4000:]}")

    def text(self) -> str:
        """Everything it printed so far (stdout and stderr)."""
        return self.output.read_text(errors="replace")

    def record(self) -> dict[str, Any]:
        """run.json of its (newest) run."""
        return latest_record(self.log_dir)

    def wait_record(self, predicate: Callable[[dict[str, Any]], bool], what: str,
                    timeout: float = 60) -> dict[str, Any]:
        """Poll run.json until ``predicate`` holds; fail if the process ends first."""
        return wait_record(self.log_dir, predicate, what, proc=self.proc, describe=self.text, timeout=timeout)


def start_cli(cwd: Path, *args: str, log_dir: Path, name: str = "run",
              env: dict[str, str] | None = None, prefix: list[str] | tuple[str, ...] = ()) -> CliRun:
    """Start ``./zdupgrade ARGS --log_dir LOG_DIR`` (this checkout's) as a process of its own in
    ``cwd``; ``env`` replaces the environment (e.g. another HOME); ``prefix`` runs it through
    another program (``[WRAPPER, ARGS...]``)."""
    output = cwd / f"{name}.out"
    with output.open("w") as out:
        proc = subprocess.Popen([*prefix, sys.executable, str(ROOT / "zdupgrade"), *args, "--log_dir", str(log_dir)],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                                cwd=cwd, env=env)
    return CliRun(proc, log_dir, output)


def run_cli(cwd: Path, *args: str, log_dir: Path, name: str = "run", env: dict[str, str] | None = None,
            prefix: list[str] | tuple[str, ...] = (), timeout: float = 150.0) -> tuple[int, str]:
    """Run ``zdupgrade`` to its end: (exit status, output)."""
    run = start_cli(cwd, *args, log_dir=log_dir, name=name, env=env, prefix=prefix)
    return run.wait(timeout), run.text()
