"""The README stays true: every option and every status code is documented."""
from __future__ import annotations

from pathlib import Path

from zdu.cli.main import build_parser
from zdu.status import Status

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_option_is_in_the_readme() -> None:
    for action in build_parser()._actions:
        documented = [s for s in action.option_strings if s.startswith("--")]
        assert documented, action
        assert any(f"`{s}" in README or f"/ `{s}`" in README for s in documented), documented


def test_every_status_code_is_in_the_readme() -> None:
    for status in Status:
        assert f"| {int(status)} | {status.name} |" in README, status


def test_the_two_commands_exist() -> None:
    root = Path(__file__).resolve().parents[2]
    for script in ("scripts/demo.sh", "scripts/test.sh", "scripts/setup.sh"):
        assert (root / script).stat().st_mode & 0o111, script
        assert script.split("/")[1] in README
    assert "scripts/test.sh" in (root / ".ci" / "run").read_text()
