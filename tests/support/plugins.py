"""Install a real plugin distribution (a module plus entry points) on ``sys.path`` for a test.

``install_plugin(tmp_path, monkeypatch, "zdu_test_plugin", SOURCE, {"zdupgrade.load_balancers":
{"fake": "zdu_test_plugin:make"}})`` writes ``zdu_test_plugin.py`` and a
``zdu_test_plugin-1.0.dist-info`` with ``entry_points.txt``, which is exactly what pip
leaves behind, so :mod:`importlib.metadata` finds it like any installed package.  The
module is dropped from ``sys.modules`` at teardown.
"""
from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Mapping

import pytest


def install_plugin(root: Path, monkeypatch: pytest.MonkeyPatch, module: str, source: str,
                   entry_points: Mapping[str, Mapping[str, str]] | None = None) -> Path:
    site = root / "site"
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    dist = site / f"{module}-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n")
    lines = []
    for group, names in (entry_points or {}).items():
        lines.append(f"[{group}]")
        lines.extend(f"{name} = {value}" for name, value in names.items())
    (dist / "entry_points.txt").write_text("\n".join(lines) + "\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, module, raising=False)
    return site
