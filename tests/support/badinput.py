"""Helpers of the bad-input tests: run ``zdu.cli.main`` in-process and check that a refusal is
one clear ``zdupgrade: error: FILE: ...`` line with status 78 (CONFIG_ERROR) and no traceback."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from zdu.cli.main import main
from zdu.errors import ConfigError
from zdu.status import Status

#: a number no int() should be asked to read (Python refuses int() of more than 4,300 digits)
NINES = "9" * 5000
#: the smallest profile: one EXPORT step
PROFILE = "name: p\nphases:\n  EXPORT: [ {name: show, run: \"echo {{ node.name }}\"} ]\n"


def short(value: object) -> str:
    """A test id: long parameters (5,000 digits) cut short."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:30]}...({len(text)})"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def cli(*argv: str) -> tuple[Status, str, str]:
    """``zdupgrade ARGV`` in-process, with an empty environment: (status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    status = main(list(argv), {}, out=out, err=err)
    return status, out.getvalue(), err.getvalue()


def dry_run(tmp_path: Path, *extra: str) -> tuple[Status, str, str]:
    return cli("--old_install_dir", "/opt/gw-1", "--new_install_dir", "/opt/gw-2", "--dry-run",
               "--log_dir", str(tmp_path / "logs"), *extra)


def refused(result: tuple[Status, str, str], *needles: str) -> str:
    """The one error line of a refused run (status 78, no traceback, nothing printed on stdout);
    it holds every one of ``needles``."""
    status, out, err = result
    assert status is Status.CONFIG_ERROR, (status, out, err)
    assert "Traceback" not in err + out and "bug" not in err, err
    assert out == "" and err.startswith("zdupgrade: error: "), (out, err)
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def config_error(call: Any, *args: Any, **kw: Any) -> str:
    """The message of the ConfigError ``call(*args, **kw)`` raises (bounded in length)."""
    with pytest.raises(ConfigError) as info:
        call(*args, **kw)
    message = str(info.value)
    assert len(message) < 700, message
    return message
