"""Hostile and faulty input, in the project's own words (the classes of ../shared/hostile-cases/).

Each test names the class it closes: a value reaching a shell unquoted, a health gate meeting
garbage, secrets leaking through lists, filters, hooks and error messages, bytes that are not
UTF-8, a dry run that runs code a topology names.
"""
from __future__ import annotations

import io
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from tests.support.fakes import PROFILE, FakeLb, run
from zdu.cli import main
from zdu.config.profile import parse_profile
from zdu.errors import TemplateError
from zdu.lb.base import LbResult
from zdu.model import CommandResult, Node, Topology
from zdu.planning.masking import Masker
from zdu.planning.plan import build_plan, format_plan
from zdu.status import FailureKind, LbState, Phase, Status, Version


def plan_for(profile: dict[str, Any], vars: dict[str, Any] | None = None, env: dict[str, str] | None = None,
             node_vars: dict[str, Any] | None = None) -> Any:
    from zdu.model import frozen_map
    topo = Topology(nodes=(Node(name="A", host="127.0.0.1", vars=frozen_map(node_vars or {})),),
                    vars=frozen_map(vars or {}))
    return build_plan(topo, parse_profile(profile, source="p.yaml"), old_install_dir="/o", new_install_dir="/n",
                      run_id="r", env=env)


def one_step(step: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return {"name": "p", "phases": {"APPLY": [step]}, "rollback": ["true"], **kw}


# --------------------------------------------------------------------------- a value reaching a shell

def test_a_tcp_wait_on_the_node_passes_host_and_port_as_words(tmp_path: Path) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        plan = plan_for(one_step({"wait": {"tcp": "{{ target }}", "where": "node"}}),
                        vars={"target": f"127.0.0.1:{port}"})
        command = plan.node_plan("A").phases[Phase.APPLY][0].wait.target
        assert subprocess.run(["bash", "-c", command]).returncode == 0
    assert subprocess.run(["bash", "-c", command]).returncode != 0      # closed now


@pytest.mark.parametrize("target", [
    "127.0.0.1/1;touch PWNED-0;:/22", "$(touch PWNED-1):80", "127.0.0.1:80;touch PWNED-2", "host:port",
    "127.0.0.1:99999", "`id`:1",
])
def test_a_tcp_wait_target_that_is_not_host_port_is_refused(target: str, tmp_path: Path) -> None:
    for where in ("node", "control"):
        with pytest.raises(TemplateError, match="a tcp wait needs HOST:PORT"):
            plan_for(one_step({"wait": {"tcp": "{{ target }}", "where": where}}), vars={"target": target})
    assert not list(tmp_path.glob("PWNED*")) and not list(Path.cwd().glob("PWNED*"))


# --------------------------------------------------------------------------- a health gate meeting garbage

@pytest.fixture
def garbage_port() -> Iterator[int]:
    """A port that answers every connection with bytes that are not HTTP."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                try:
                    conn.recv(1024)
                    conn.sendall(b"\x00\xff SSH-2.0-not-http\r\n\r\n")
                except OSError:
                    pass
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(2)
    server.close()


@pytest.mark.parametrize("url", ["http://127.0.0.1:{port}/health", "http://127.0.0.1:8O80/health",
                                 "http://[::1/health", "htp:/nonsense"])
def test_a_health_gate_meeting_garbage_fails_the_phase_and_the_node_is_rolled_back(garbage_port: int,
                                                                                   url: str) -> None:
    profile = dict(PROFILE, phases=dict(PROFILE["phases"], APPLY=[
        "apply {{ node.name }}",
        {"name": "healthy", "wait": {"http": url.format(port=garbage_port), "deadline": 0.3, "interval": 0.05}}]))
    out = run(profile=profile)
    assert out.status is Status.APPLY_FAILED
    a = out.node("A")
    assert a.phases[Phase.APPLY].classification is FailureKind.FAILED
    assert out.state.decisions[0].action == "ROLLBACK_ALL"
    assert out.log[-1] == "undo A"
    # the stopped node went back into traffic only after its rollback, on the old version
    assert out.lb.calls == [("disable", "A"), ("enable", "A")]
    assert a.version is Version.OLD and a.lb is LbState.IN


# --------------------------------------------------------------------------- secrets

SECRET = "hunter2-Secret"


def dry_run(tmp_path: Path, profile: dict[str, Any], topo_extra: dict[str, Any] | None = None,
            env: dict[str, str] | None = None) -> tuple[Status, str, str]:
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(profile))
    topo = {"profile": str(tmp_path / "p.yaml"), "nodes": [{"name": "A", "host": "127.0.0.1"}]}
    topo.update(topo_extra or {})
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(topo))
    out, err = io.StringIO(), io.StringIO()
    status = main(["--old_install_dir", "/o", "--new_install_dir", "/n", "--config", str(tmp_path / "t.yaml"),
                   "--dry-run", "--log_dir", str(tmp_path / "logs")], env or {}, out=out, err=err)
    return status, out.getvalue(), err.getvalue()


def test_a_secret_list_is_masked_element_by_element(tmp_path: Path) -> None:
    profile = one_step({"run": "login {{ passwords|qjoin }} && echo {{ passwords[1] }}"},
                       secrets=["passwords"], vars={"passwords": ["alpha-one-1", "beta-two-22"]})
    status, out, _ = dry_run(tmp_path, profile)
    assert status is Status.SUCCESS
    assert "alpha-one-1" not in out and "beta-two-22" not in out
    assert "login '******' '******' && echo ******" in out


@pytest.mark.parametrize("expr", ["admin_password|urlencode", "admin_password|ere", "admin_password|tojson",
                                  "admin_password|upper", "'u:' ~ admin_password", "admin_password|reverse"])
def test_a_secret_through_a_filter_is_masked(tmp_path: Path, expr: str) -> None:
    profile = one_step({"run": f"curl -u {{{{ {expr} }}}} http://x/"}, secrets=["admin_password"],
                       vars={"admin_password": "p@ss w/rd!7"})
    status, out, _ = dry_run(tmp_path, profile)
    assert status is Status.SUCCESS
    for form in ("p@ss w/rd!7", "p%40ss", "P@SS W/RD!7", "7!dr/w ss@p", "w/rd", "W/RD"):
        assert form not in out, (expr, out)
    assert "curl -u " in out


def test_a_secret_in_a_template_error_is_masked(tmp_path: Path) -> None:
    profile = one_step({"run": "echo {{ {}[admin_password] }}"}, secrets=["admin_password"],
                       vars={"admin_password": SECRET})
    status, out, err = dry_run(tmp_path, profile)
    assert status is Status.CONFIG_ERROR
    assert SECRET not in err + out and "******" in err


def test_a_short_secret_does_not_garble_other_text(tmp_path: Path) -> None:
    profile = one_step({"run": "deploy --profile axway --pin {{ pin }} && echo away"}, secrets=["pin"],
                       vars={"pin": "a"})
    status, out, _ = dry_run(tmp_path, profile)
    assert status is Status.SUCCESS
    assert "deploy --profile axway --pin ****** && echo away" in out
    masker = Masker(["a"])
    assert masker("profile axway: a b") == "profile axway: ****** b"


def test_secrets_in_hook_output_and_error_messages_are_masked() -> None:
    class LeakyLb(FakeLb):
        def disable(self, node: Node) -> LbResult:
            return LbResult(True, f"drained with token {SECRET}", details={"output": f"curl -H 'X: {SECRET}'",
                                                                          "nested": [SECRET]})

    def boom(command: str) -> CommandResult:
        raise RuntimeError(f"could not parse {SECRET}")
    profile = dict(PROFILE, secrets=["token"], vars={"token": SECRET},
                   phases=dict(PROFILE["phases"], APPLY=["apply {{ node.name }} {{ token }}"]))
    out = run({f"apply A {SECRET}": boom}, profile=profile, lb=LeakyLb())
    text = repr([e.to_json() for e in out.events]) + repr(out.state.to_dict())
    assert SECRET not in text
    assert "drained with token ******" in text and "could not parse ******" in text


def test_a_secret_from_the_environment_with_bytes_that_are_not_utf8_is_refused(tmp_path: Path) -> None:
    profile = one_step({"run": "login {{ pw }}"}, vars={"pw": {"env": "PW"}})
    status, out, err = dry_run(tmp_path, profile, env={"PW": "caf\udce9"})
    assert status is Status.CONFIG_ERROR
    assert "environment variable 'PW'" in err and "not valid UTF-8" in err and "Traceback" not in err + out


@pytest.mark.parametrize("old", ["/opt/caf\udce9", "/opt/a\x00b"])
def test_an_install_dir_that_is_not_utf8_is_refused(tmp_path: Path, old: str) -> None:
    out, err = io.StringIO(), io.StringIO()
    status = main(["--old_install_dir", old, "--new_install_dir", "/opt/new", "--dry-run"], {}, out=out, err=err)
    assert status is Status.CONFIG_ERROR
    assert "--old_install_dir" in err.getvalue() and "Traceback" not in err.getvalue()


# --------------------------------------------------------------------------- code named by a topology

def test_a_dry_run_runs_no_code_the_topology_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    profile = one_step({"run": "true"})
    status, out, err = dry_run(tmp_path, profile, {"load_balancer": {"type": "builtins:print", "msg": "CALLED"}})
    captured = capsys.readouterr()
    assert status is Status.SUCCESS, err
    assert "custom hook builtins:print (not loaded by --dry-run)" in out
    assert "CALLED" not in out + err + captured.out + captured.err


def test_a_dry_run_does_not_import_the_rollback_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(one_step({"run": "true"})))
    (tmp_path / "t.yaml").write_text(yaml.safe_dump({"profile": str(tmp_path / "p.yaml"),
                                                     "nodes": [{"name": "A", "host": "127.0.0.1"}]}))
    out, err = io.StringIO(), io.StringIO()
    status = main(["--old_install_dir", "/o", "--new_install_dir", "/n", "--config", str(tmp_path / "t.yaml"),
                   "--dry-run", "--rollback-policy", "this:s"], {}, out=out, err=err)
    assert status is Status.SUCCESS, err.getvalue()
    assert "rollback policy: this:s (not loaded by --dry-run)" in out.getvalue()
    assert "Beautiful is better than ugly" not in capsys.readouterr().out


def test_format_plan_shows_masked_text_only() -> None:
    plan = plan_for(one_step({"run": "login {{ pw }}"}, secrets=["pw"], vars={"pw": SECRET}))
    text = format_plan(plan)
    assert SECRET not in text and "login ******" in text
    assert plan.node_plan("A").phases[Phase.APPLY][0].command == f"login {SECRET}"


def test_the_earlier_import_paths_of_the_lock_and_the_test_sshd_still_work() -> None:
    """Scripts written against the earlier layout (the hostile cases' harness among them) import
    ``zdu.lock.FleetLock`` and ``tests.sshd.SshdServer``: the same classes, not copies."""
    import tests.sshd
    import zdu.lock
    from tests.support.sshd import SshdServer
    from zdu.run.lock import FleetLock
    assert zdu.lock.FleetLock is FleetLock and tests.sshd.SshdServer is SshdServer
