"""A reviewer's findings on profiles (December): ``qjoin`` on a string, a secret basic-auth user.

``{{ x|qjoin }}`` on a string was split into its characters (``rm -rf / o p t ...``); it is a
ConfigError naming the profile step.  A secret used as an http step's or wait's ``auth.user``
was shown as it is in the dry run and written to the node log, run.json and journal.jsonl.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.support.badinput import cli, dry_run, refused, write
from zdu.errors import TemplateError
from zdu.planning.templates import render
from zdu.status import Status


@pytest.mark.parametrize("value, kind", [("/opt/gw-7.5/tmp", "a string"), (b"/opt/x", "bytes"),
                                         ({"a": 1}, "a mapping"), (5, "a int")])
def test_qjoin_refuses_what_is_not_a_list(value: object, kind: str) -> None:
    with pytest.raises(TemplateError) as info:
        render("rm -rf {{ dirs|qjoin }}", {"dirs": value}, where="p.yaml: phases.EXPORT[0] step 'clean'")
    assert str(info.value) == (f"p.yaml: phases.EXPORT[0] step 'clean': the qjoin filter expects a list, got "
                               f"{kind} (use {{{{ value }}}} for a single value: it is quoted as one word)")


def test_qjoin_still_quotes_each_element_of_a_list_or_tuple() -> None:
    assert render("rm -rf {{ d|qjoin }}", {"d": ["/opt/a b", "/opt/c"]}, where="t") == "rm -rf '/opt/a b' /opt/c"
    assert render("rm -rf {{ d|qjoin }}", {"d": ("/x",)}, where="t") == "rm -rf /x"
    assert render("x {{ d|qjoin }}", {"d": []}, where="t") == "x "


def test_qjoin_on_a_string_variable_is_a_config_error_naming_the_step(tmp_path: Path) -> None:
    write(tmp_path / "pq.yaml", "name: pq\nphases:\n  EXPORT:\n    - {name: clean, run: \"rm -rf {{ stale_dirs|qjoin }}\"}\n")
    topology = write(tmp_path / "t.yaml", "profile: ./pq.yaml\nvars: {stale_dirs: /opt/gw-7.5/tmp}\n"
                                          "nodes: [{name: A, host: 127.0.0.1, transport: local}]\n")
    err = refused(dry_run(tmp_path, "--config", str(topology)),
                  f"{tmp_path / 'pq.yaml'}: phases.EXPORT[0] step 'clean' (node A): the qjoin filter expects a list")
    assert "/ o p t" not in err and not (tmp_path / "logs").exists()


SECRET_USER, SECRET_TOKEN = "svc-Zq81xYuser", "Tok3nSecretValue"


def _secret_profile(tmp_path: Path, first: str) -> Path:
    closed = _closed_port()
    control = {"name": "req", "http": {"url": f"http://127.0.0.1:{closed}/x",
                                       "auth": {"user": "{{ api_user }}", "password": "{{ api_token }}"}}}
    node = {"name": "req2", "http": {"url": f"http://127.0.0.1:{closed}/x", "where": "node", "timeout": 5,
                                     "auth": {"user": "{{ api_user }}", "password": "{{ api_token }}"}}}
    wait = {"name": "w", "wait": {"http": f"http://127.0.0.1:{closed}/y", "where": "node", "deadline": 0.2,
                                  "interval": 0.1, "auth": {"user": "{{ api_user }}", "password": "pw"}}}
    steps = {"control": [control, node, wait], "node": [node, control, wait], "wait": [wait, control, node]}[first]
    profile = {"name": "ps", "secrets": ["api_user", "api_token"],
               "vars": {"api_user": SECRET_USER, "api_token": SECRET_TOKEN}, "phases": {"EXPORT": steps}}
    write(tmp_path / "ps.yaml", yaml.safe_dump(profile))
    return write(tmp_path / "t.yaml", f"profile: ./ps.yaml\nlock_dir: {tmp_path / 'lock'}\n"
                                      "nodes: [{name: A, host: 127.0.0.1, transport: local}]\n")


def _closed_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_secret_basic_auth_user_is_masked_in_the_dry_run(tmp_path: Path) -> None:
    status, out, err = dry_run(tmp_path, "--config", str(_secret_profile(tmp_path, "control")))
    assert status is Status.SUCCESS, err
    assert SECRET_USER not in out + err and SECRET_TOKEN not in out + err
    assert out.count(" as ****** -> 200") == 3          # the control and node requests, the node-side wait


@pytest.mark.parametrize("first", ["control", "node", "wait"])
def test_a_secret_basic_auth_user_never_reaches_the_run_folder(tmp_path: Path, first: str) -> None:
    """A real run (transport: local) whose first step, a request with the secret user, fails:
    neither the node log, run.log, run.json nor journal.jsonl holds the user or the password."""
    old, new = tmp_path / "gw-1", tmp_path / "gw-2"
    old.mkdir(), new.mkdir()
    status, out, err = cli("--old_install_dir", str(old), "--new_install_dir", str(new),
                           "--config", str(_secret_profile(tmp_path, first)), "--log_dir", str(tmp_path / "logs"))
    assert status is Status.EXPORT_FAILED, (status, err)
    assert SECRET_USER not in out + err and SECRET_TOKEN not in out + err
    files = [p for p in (tmp_path / "logs").rglob("*") if p.is_file()]
    assert {"A.log", "run.log", "run.json", "journal.jsonl"} <= {p.name for p in files}
    for path in files:
        text = path.read_bytes().decode("utf-8", "replace")
        assert SECRET_USER not in text and SECRET_TOKEN not in text, path
