"""The command line, called in-process (httpie style): bad input is a clear error and touches nothing."""
from __future__ import annotations

import io
import socket
from pathlib import Path

import pytest

from zdu.cli.main import main
from zdu.status import Status


def call(*argv: str) -> tuple[Status, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main(list(argv), out=out, err=err)
    return status, out.getvalue(), err.getvalue()


DIRS = ("--old_install_dir", "/opt/gateway-1.0", "--new_install_dir", "/opt/gateway-2.0")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def topology(tmp_path: Path, body: str) -> str:
    path = tmp_path / "topology.yaml"
    path.write_text(body)
    return str(path)


def test_help_lists_every_option_and_status(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) is Status.SUCCESS
    text = capsys.readouterr().out
    for option in ("--old_install_dir", "--new_install_dir", "--config", "--profile", "--dry-run", "--log_dir",
                   "--serial", "--rollback-policy", "--traffic", "--lab", "--host-key-policy"):
        assert option in text
    for status in Status:
        assert status.name in text and str(int(status)) in text


def test_missing_required_options() -> None:
    status, _, err = call("--old_install_dir", "/opt/a")
    assert status is Status.USAGE_ERROR
    assert "--new_install_dir" in err


def test_hyphenated_spelling_works(tmp_path: Path) -> None:
    status, out, _ = call("--old-install-dir", "/opt/a", "--new-install-dir", "/opt/b", "--dry-run",
                          "--log-dir", str(tmp_path))
    assert status is Status.SUCCESS
    assert "old install dir: /opt/a" in out


def test_options_are_case_sensitive() -> None:
    status, _, _ = call("--OLD_INSTALL_DIR", "/opt/a", "--new_install_dir", "/opt/b")
    assert status is Status.USAGE_ERROR


@pytest.mark.parametrize("old,new,needle", [
    ("relative/dir", "/opt/b", "not an absolute path"),
    ("/opt/a", "/opt/a/", "same directory"),
    ("  ", "/opt/b", "empty"),
])
def test_bad_install_dirs(old: str, new: str, needle: str) -> None:
    status, _, err = call("--old_install_dir", old, "--new_install_dir", new, "--dry-run")
    assert status is Status.CONFIG_ERROR
    assert needle in err and "Traceback" not in err


def test_bad_topology_is_a_clear_error_and_creates_no_run(tmp_path: Path) -> None:
    config = topology(tmp_path, "nodes:\n  - {name: a, host: 127.0.0.1, port: nope}\n")
    status, out, err = call(*DIRS, "--config", config, "--log_dir", str(tmp_path / "logs"))
    assert status is Status.CONFIG_ERROR
    assert err.startswith(f"zdupgrade: error: {config}: nodes[0] (a).port")
    assert "Traceback" not in err + out
    assert not (tmp_path / "logs").exists()


def test_undefined_template_variable_fails_before_anything(tmp_path: Path) -> None:
    profile = tmp_path / "p.yaml"
    profile.write_text("name: p\nphases:\n  APPLY: ['restart {{ servce }}']\nrollback: ['x']\n")
    config = topology(tmp_path, "nodes:\n  - {name: a, host: 127.0.0.1, port: 1}\n")
    status, _, err = call(*DIRS, "--config", config, "--profile", str(profile), "--log_dir", str(tmp_path / "l"))
    assert status is Status.CONFIG_ERROR
    assert "undefined variable" in err and "servce" in err and "(node a)" in err
    assert not (tmp_path / "l").exists()


def test_dry_run_prints_plan_and_contacts_nothing(tmp_path: Path) -> None:
    port = free_port()  # nothing listens: a contact attempt would fail the run
    config = topology(tmp_path, f"profile: lab-gateway\nnodes:\n  - {{name: gw1, host: 127.0.0.1, port: {port}}}\n")
    status, out, _ = call("--old_install_dir", "/opt/old gw;$(id)", "--new_install_dir", "/opt/gateway-2.0",
                          "--config", config, "--dry-run", "--log_dir", str(tmp_path / "logs"))
    assert status is Status.SUCCESS
    assert "'/opt/old gw;$(id)'/bin/gateway export" in out
    assert "[load balancer] disable" in out and "rollback path" in out
    assert not (tmp_path / "logs").exists()


def test_unreachable_node_is_reported_before_any_change(tmp_path: Path) -> None:
    port = free_port()
    config = topology(tmp_path, "profile: lab-gateway\nssh: {connect_timeout: 1, connect_retries: 0}\n"
                      f"nodes:\n  - {{name: gw1, host: 127.0.0.1, port: {port}}}\n"
                      f"  - {{name: gw2, host: 127.0.0.2, port: {port}}}\n")
    status, out, err = call(*DIRS, "--config", config, "--log_dir", str(tmp_path / "logs"))
    assert status is Status.NODE_UNREACHABLE
    assert "preflight found 2 problem(s); nothing was changed" in err
    assert "gw1: " in err and "gw2: " in err and str(port) in err
    assert "Traceback" not in err + out
    run_json = next((tmp_path / "logs").glob("*/run.json")).read_text()
    assert '"NODE_UNREACHABLE"' in run_json


def test_script_hook_missing_is_refused(tmp_path: Path) -> None:
    port = free_port()
    config = topology(tmp_path, "profile: lab-gateway\nssh: {connect_timeout: 1, connect_retries: 0}\n"
                      "load_balancer: {type: script, path: /no/such/hook}\n"
                      f"nodes:\n  - {{name: gw1, host: 127.0.0.1, port: {port}}}\n")
    status, _, err = call(*DIRS, "--config", config, "--log_dir", str(tmp_path / "logs"))
    assert status in (Status.NODE_UNREACHABLE, Status.CONFIG_ERROR)
    assert "hook script not found: /no/such/hook" in err


@pytest.mark.parametrize("config,old,new", [
    ("config/topology.yaml", "/opt/Axway-7.5.3", "/opt/Axway-7.7"),
    ("config/topology.json", "/opt/apinizer-worker", "/opt/apinizer-worker-2026.04.6"),
])
def test_sample_topologies_plan(config: str, old: str, new: str, tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    out, err = io.StringIO(), io.StringIO()
    status = main(["--config", str(root / config), "--old_install_dir", old, "--new_install_dir", new,
                   "--dry-run", "--log_dir", str(tmp_path)], {"AXWAY_ADMIN_PASSWORD": "pa55-word"}, out=out, err=err)
    assert status is Status.SUCCESS, err.getvalue()
    text = out.getvalue()
    assert text.count("[load balancer] disable") == 3 and "pa55-word" not in text


def test_env_variable_missing_is_a_clear_error(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    err = io.StringIO()
    status = main(["--config", str(root / "config/topology.yaml"), "--old_install_dir", "/opt/a",
                   "--new_install_dir", "/opt/b", "--dry-run"], {}, out=io.StringIO(), err=err)
    assert status is Status.CONFIG_ERROR
    assert "environment variable 'AXWAY_ADMIN_PASSWORD' is not set" in err.getvalue()


def test_local_transport_node_runs_every_phase_on_the_control_machine(tmp_path: Path) -> None:
    """A `transport: local` node: real processes via invoke, real files, the whole flow."""
    old, new, state = tmp_path / "old gw", tmp_path / "new gw", tmp_path / "state"
    old.mkdir(), new.mkdir(), state.mkdir()
    (old / "version").write_text("1.0")
    (new / "version").write_text("2.0")
    profile = tmp_path / "p.yaml"
    profile.write_text("""\
name: local
phases:
  EXPORT: ["cp {{ old_install_dir }}/version {{ state }}/exported"]
  UPGRADE: ["cp {{ state }}/exported {{ new_install_dir }}/imported"]
  PRE-APPLY: ["test -s {{ new_install_dir }}/imported"]
  APPLY: ["ln -sfn {{ new_install_dir }} {{ state }}/current"]
  POST-APPLY:
    - {name: current is new, wait: {command: "grep -qx 2.0 {{ state }}/current/version", deadline: 5, interval: 0.1}}
rollback: ["ln -sfn {{ old_install_dir }} {{ state }}/current"]
""")
    config = topology(tmp_path, f"vars: {{state: '{state}'}}\nnodes:\n  - {{name: ctl, host: localhost, transport: local}}\n")
    status, out, err = call("--old_install_dir", str(old), "--new_install_dir", str(new), "--config", config,
                            "--profile", str(profile), "--log_dir", str(tmp_path / "logs"))
    assert status is Status.SUCCESS, out + err
    assert (state / "current").resolve() == new and (new / "imported").read_text() == "1.0"
    row = next(line for line in out.splitlines() if line.startswith("| ctl"))
    assert [c.strip() for c in row.strip("|").split("|")] == ["ctl"] + ["PASSED (0)"] * 5 + ["*"]


def test_log_dir_that_cannot_be_created_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    port = free_port()
    config = topology(tmp_path, f"profile: lab-gateway\nnodes:\n  - {{name: gw1, host: 127.0.0.1, port: {port}}}\n")
    status, out, err = call(*DIRS, "--config", config, "--log_dir", str(blocker / "logs"))
    assert status is Status.CONFIG_ERROR
    assert f"--log_dir '{blocker / 'logs'}': a part of the path is not a directory" in err
    assert "Traceback" not in out + err


def test_a_negative_min_free_mb_is_refused_not_a_check_turned_off(capsys: pytest.CaptureFixture[str]) -> None:
    for bad in ("-5", "5.5", "\u00b2", "1" * 12):
        status, _, _ = call(*DIRS, "--min-free-mb", bad, "--dry-run")
        err = capsys.readouterr().err           # argparse's own message
        assert status is Status.USAGE_ERROR and "--min-free-mb" in err and "whole number of MB" in err, err
    assert call(*DIRS, "--min-free-mb", "0", "--dry-run")[0] is Status.SUCCESS


@pytest.mark.parametrize("traffic,rate,needle", [("notaurl", "200", "must be http(s)"),
                                                 ("http://127.0.0.1:1/", "0", "more than 0 and at most 100000"),
                                                 ("http://127.0.0.1:1/", "inf", "at most 100000 requests/s"),
                                                 ("http://127.0.0.1:1/", "1e308", "at most 100000 requests/s"),
                                                 ("http://127.0.0.1:1/", "nan", "at most 100000 requests/s")])
def test_bad_traffic_option_fails_before_any_node_is_contacted(tmp_path: Path, traffic: str, rate: str,
                                                              needle: str) -> None:
    port = free_port()
    config = topology(tmp_path, f"profile: lab-gateway\nnodes:\n  - {{name: gw1, host: 127.0.0.1, port: {port}}}\n")
    status, out, err = call(*DIRS, "--config", config, "--traffic", traffic, "--traffic-rate", rate,
                            "--log_dir", str(tmp_path / "logs"))
    assert status is Status.CONFIG_ERROR and needle in err and "--traffic" in err
    assert not (tmp_path / "logs").exists() and "Traceback" not in out + err


@pytest.mark.parametrize("option,needle", [
    (("--limit", ""), "--limit: empty (name nodes, groups or patterns"),
    (("--limit", " , "), "--limit: empty"),
    (("--traffic-rate", "nan"), "--traffic-rate nan: not a number of requests per second"),
    (("--traffic-rate", "inf"), "--traffic-rate inf: not a number"),
    (("--pause-after-wave", "1"), "the plan has 1 wave(s); there is no wave after the first to pause before"),
])
def test_option_values_that_would_mean_nothing_are_refused(tmp_path: Path, option: tuple[str, str],
                                                           needle: str) -> None:
    """An empty --limit does not mean every node, a nan rate does not reach run.json, and a pause
    in a one-wave plan is said plainly; each before any node is contacted."""
    config = topology(tmp_path, "profile: lab-gateway\nnodes:\n  - {name: gw1, host: 127.0.0.1, port: 9}\n")
    status, out, err = call(*DIRS, "--config", config, *option, "--log_dir", str(tmp_path / "logs"))
    assert status is Status.CONFIG_ERROR and needle in err, err
    assert not (tmp_path / "logs").exists() and "Traceback" not in out + err


@pytest.mark.parametrize("option", ["--config", "--profile", "--inventory", "-i", "--log_dir", "--rollback-policy",
                                    "--traffic"])
def test_an_empty_file_or_setting_is_refused_not_taken_for_the_default(tmp_path: Path, option: str) -> None:
    """``--config "$TOPOLOGY"`` with the variable unset: not the built-in reference topology (another
    fleet), not the default policy, not no traffic; the same in ``lock status`` and the review commands."""
    config = topology(tmp_path, "profile: lab-gateway\nnodes:\n  - {name: gw1, host: 127.0.0.1, port: 9}\n")
    argv = [*DIRS, "--dry-run", "--config", config, "--log_dir", str(tmp_path / "logs"), option, ""]
    status, out, err = call(*argv)
    name = "--inventory" if option == "-i" else option
    assert status is Status.CONFIG_ERROR and f"{name}: empty (leave the option out" in err, out + err
    assert "PLAN" not in out and "Traceback" not in out + err


@pytest.mark.parametrize("argv", [("lock", "status", "--config", ""), ("lock", "status", "-i", ""),
                                  ("runs", "--log_dir", ""), ("show", "--log_dir", ""),
                                  ("report", "-o", "")])
def test_an_empty_option_of_a_command_is_refused(argv: tuple[str, ...]) -> None:
    status, out, err = call(*argv)
    assert status is Status.CONFIG_ERROR and ": empty (leave the option out" in err, out + err


def test_ansibles_short_options_for_inventory_and_limit(tmp_path: Path) -> None:
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("[gw]\nweb1 ansible_host=127.0.0.1 ansible_port=9\nweb2 ansible_host=127.0.0.2\n")
    status, out, err = call(*DIRS, "--dry-run", "--profile", "lab-gateway", "-i", str(inventory), "-l", "web2")
    assert status is Status.SUCCESS, err
    assert "waves: web2" in out and "skipped (--limit): web1" in out


def test_the_console_script_exits_with_the_status_and_freezes_what_is_left(monkeypatch: pytest.MonkeyPatch) -> None:
    """``entry_point`` exits with the status ``main`` returned, and the objects alive at that point
    are frozen: the interpreter's collector does not walk them all once more at exit (0.1 s of a
    3-node run, issue 12). What the run wrote is closed before: the review tests read the run
    folders that real ``./zdupgrade`` processes left."""
    import gc
    import importlib

    cli = importlib.import_module("zdu.cli.main")    # the module (zdu.cli's ``main`` is the function)
    monkeypatch.setattr(cli, "main", lambda: Status.CONFIG_ERROR)
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    try:
        with pytest.raises(SystemExit) as exited:
            cli.entry_point()
        assert exited.value.code == int(Status.CONFIG_ERROR)
        assert gc.get_freeze_count() > 1000
    finally:
        gc.unfreeze()


def test_connects_are_abandoned_only_by_an_interrupt_before_the_conductor_runs() -> None:
    """The predicate every SSH connect of a run consults before a retry: after Ctrl-C in
    preflight no retry (the run ends with nothing changed), after Ctrl-C once the conductor
    runs the retries stay (putting a node back may need that connection)."""
    import argparse
    import threading

    from zdu.cli.console import Console
    from zdu.cli.upgrade import Upgrade
    stop = threading.Event()
    upgrade = Upgrade(argparse.Namespace(), Console(io.StringIO(), io.StringIO()), {}, stop, [])
    assert upgrade._connects_abandoned() is False
    stop.set()
    assert upgrade._connects_abandoned() is True
    upgrade._conducting = True
    assert upgrade._connects_abandoned() is False


def test_a_bad_load_balancer_option_names_the_topology_file(tmp_path: Path) -> None:
    config = topology(tmp_path, "profile: lab-gateway\nload_balancer: {type: haproxy, backend: gw, socket: /tmp/x, "
                                "drain_timeout: .inf}\nnodes: [{name: A, host: 127.0.0.1}]\n")
    status, out, err = call(*DIRS, "--config", config, "--dry-run")
    assert status is Status.CONFIG_ERROR
    assert f"{config}: load_balancer.drain_timeout: expected a number of seconds" in err, err


@pytest.mark.parametrize("argv", [("status", "--help"), ("status",), ("Runs",), ("st\x1b[2Jx", "--dry-run")])
def test_an_unknown_command_is_a_usage_error_even_with_help(argv: tuple[str, ...]) -> None:
    status, out, err = call(*argv)
    assert status is Status.USAGE_ERROR
    assert out == ""                      # not the main help, which would read as "it worked"
    assert "unknown command" in err and "runs, show" in err
    assert "\x1b" not in err              # the word is shown escaped, never sent to the terminal
