"""Quoting of hostile values and profile validation."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from zdu.errors import ConfigError, TemplateError
from zdu.planning.masking import Masker
from zdu.config.profile import builtin_profiles, load_profile, parse_profile
from zdu.planning.templates import render

HOSTILE = [
    "/opt/with space",
    "/opt/quote'single",
    '/opt/quote"double',
    "/opt/semi;colon; touch /tmp/zdu-pwned",
    "/opt/$(touch /tmp/zdu-pwned)",
    "/opt/`touch /tmp/zdu-pwned`",
    "/opt/new\nline",
    "/opt/ünïcödé-日本",
    "/opt/glob*?[a]",
    "-rf",
    "",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_value_reaches_the_shell_intact(value: str, tmp_path: Path) -> None:
    """Run the rendered command in a real shell: the value arrives as one literal argument."""
    marker = Path("/tmp/zdu-pwned")
    marker.unlink(missing_ok=True)
    command = render("printf '%s' {{ v }}", {"v": value}, where="test")
    out = subprocess.run(["sh", "-c", command], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout == value
    assert not marker.exists()


def test_raw_is_not_quoted() -> None:
    assert render("a {{ v|raw }} b", {"v": "x y"}, where="t") == "a x y b"
    assert render("{{ items|qjoin }}", {"items": ["a b", "c"]}, where="t") == "'a b' c"


def test_undefined_variable_is_an_error_naming_where() -> None:
    with pytest.raises(TemplateError, match=r"profile.yaml step 'x': undefined variable: 'nope' is undefined"):
        render("echo {{ nope }}", {}, where="profile.yaml step 'x'")


def test_mask_secrets_plain_and_quoted() -> None:
    text = "login --password 's3cr3t value' then s3cr3t value"
    assert Masker(["s3cr3t value"])(text) == "login --password ****** then ******"


def _profile(**overrides: object) -> dict:
    data: dict = {"name": "p", "phases": {"APPLY": ["restart"]}, "rollback": ["restore"]}
    data.update(overrides)
    return data


BAD_PROFILES = [
    ({"phases": {"APPLY": ["x"]}, "rollback": ["y"]}, "missing required field 'name'"),
    (_profile(phases={"DEPLOY": ["x"]}), "phases.DEPLOY: unknown phase"),
    (_profile(phases={"APPLY": [{"run": "x", "wait": {"tcp": "a:1"}}]}), "exactly one of 'run', 'wait' or 'http'"),
    (_profile(phases={"APPLY": [{"run": "{{ x"}]}), "template syntax error"),
    (_profile(phases={"APPLY": [{"wait": {"tcp": "a:1", "http": "u"}}]}), "a wait needs exactly one of"),
    (_profile(phases={"APPLY": [{"wait": {"log": "/var/log/x"}}]}), "needs 'pattern'"),
    (_profile(phases={"APPLY": [{"wait": {"log": "/x", "pattern": "("}}]}), "invalid regular expression"),
    (_profile(phases={"APPLY": [{"wait": {"process": "x", "where": "control"}}]}), "runs on the node"),
    (_profile(phases={"APPLY": [{"run": "x", "timeout": "soon"}]}), "timeout: expected a number"),
    (_profile(rollback=None), "no rollback steps"),
    (_profile(phases={"APPLY": [{"wait": {"process": "x", "kill": True}}]}), "kill goes with a process wait for state: exited"),
    (_profile(phases={"APPLY": [{"wait": {"tcp": "a:1", "kill": True}}]}), "kill goes with"),
    (_profile(phases={"APPLY": [{"wait": {"process": "x", "state": "exited", "kill": "yes"}}]}), "expected true or false"),
    (_profile(colour="red"), "unknown field 'colour'"),
    (_profile(phases={"APPLY": "restart"}), "expected a list of steps"),
]


@pytest.mark.parametrize("data,needle", BAD_PROFILES, ids=[str(i) for i in range(len(BAD_PROFILES))])
def test_bad_profile(data: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_profile(data, source="my.yaml")
    assert str(info.value).startswith("my.yaml: ")
    assert needle in str(info.value)


@pytest.mark.parametrize("name", builtin_profiles())
def test_builtin_profiles_load(name: str) -> None:
    profile = load_profile(name)
    assert profile.phases and any(profile.rollback.values())


def test_unknown_profile_lists_builtins() -> None:
    with pytest.raises(ConfigError, match="unknown profile 'nope'.*axway"):
        load_profile("nope")
