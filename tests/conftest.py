"""Shared fixtures.

``lab`` (session): a running :class:`zdu.lab.Lab` (3 real OpenSSH nodes + HAProxy), placed by
``ZDU_LAB_SLOT`` (see :func:`zdu.lab.fleet.placement_from_env`).  Tests that
use it are marked ``lab``; without Docker or HAProxy they are skipped, unless
``ZDU_LAB_REQUIRED=1`` (CI), where a missing lab is an error.

``fresh_lab`` (function): the same lab, reset before and after the test (gateway 1.0 only, no
faults, 2.0 config removed, HAProxy servers ready and UP).
"""
from __future__ import annotations

import os
import shutil
import subprocess
from typing import TYPE_CHECKING, Iterator

import pytest

if TYPE_CHECKING:
    from zdu.lab.fleet import Lab


def _lab_missing() -> str | None:
    """Why the lab cannot run here, or None."""
    if shutil.which("docker") is None:
        return "docker CLI not installed"
    if subprocess.run(["docker", "info"], capture_output=True, check=False).returncode != 0:
        return "no Docker engine running"
    if shutil.which("haproxy") is None and not os.path.exists("/usr/sbin/haproxy"):
        return "haproxy not installed"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that uses the lab with ``lab`` (select with ``-m lab`` / ``-m 'not lab'``)."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        defs = info.name2fixturedefs if info is not None else {}
        # a module may define its own fixture called "lab"; mark only users of this one
        if any(defs.get(name) and getattr(defs[name][-1].func, "__module__", None) == __name__
               for name in ("lab", "fresh_lab")):
            item.add_marker(pytest.mark.lab)


@pytest.fixture(scope="session")
def lab() -> Iterator["Lab"]:
    """The session's lab fleet (started once, removed at the end even after failures)."""
    reason = _lab_missing()
    if reason:
        if os.environ.get("ZDU_LAB_REQUIRED") == "1":
            pytest.fail(f"lab required but unavailable: {reason} (run scripts/setup.sh)")
        pytest.skip(f"lab unavailable: {reason} (run scripts/setup.sh)")
    from zdu.lab.fleet import Lab, placement_from_env

    with Lab(**placement_from_env()) as running:
        yield running


@pytest.fixture
def fresh_lab(lab: "Lab") -> Iterator["Lab"]:
    """The lab, put back to its start state before the test and again after it.

    Tests that change a node use this; read-only tests may use ``lab`` directly.
    """
    lab.reset()
    yield lab
    lab.reset()
