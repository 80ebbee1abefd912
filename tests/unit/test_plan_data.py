"""Data-driven plan tests: a topology, a profile and the arguments in; the dry-run plan out.

Each folder under data/plan/ holds topology.yaml, profile.yaml, args.json and expected.txt.
Regenerate an expected file after a deliberate change with ZDU_REGEN=1 and review the diff.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from zdu.planning.plan import build_plan, format_plan
from zdu.config.profile import load_profile
from zdu.config.topology import load_topology

DATA = Path(__file__).parent / "data" / "plan"
CASES = sorted(p.name for p in DATA.iterdir() if p.is_dir())


@pytest.mark.parametrize("case", CASES)
def test_plan_matches_expected(case: str) -> None:
    folder = DATA / case
    args = json.loads((folder / "args.json").read_text())
    topology = load_topology(folder / "topology.yaml")
    profile = load_profile(str(folder / "profile.yaml"))
    plan = build_plan(topology, profile, **args)
    text = format_plan(plan).replace(str(folder), "<case>")
    expected = folder / "expected.txt"
    if os.environ.get("ZDU_REGEN"):
        expected.write_text(text)
    assert text == expected.read_text()
