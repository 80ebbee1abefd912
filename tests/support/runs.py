"""Helpers for tests that drive zdupgrade as a separate process and read its run folder."""
from __future__ import annotations

import json
import subprocess
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
