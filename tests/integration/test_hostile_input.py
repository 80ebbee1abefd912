"""Hostile input on the real lab: install dirs and variables full of shell syntax, commands that
print megabytes or invalid UTF-8, an install dir missing on one node.

Values must reach the node byte for byte and never be executed; output is logged without a
traceback; a preflight problem changes nothing on any node.
"""
from __future__ import annotations

import base64
import io
import json
import shlex
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from zdu.cli.main import main
from zdu.lab.fleet import Lab
from zdu.status import Status

NODES = ["Node-A", "Node-B", "Node-C"]
TOKEN = uuid.uuid4().hex[:8]
MARKER = f"zdu-pwned-{TOKEN}"     # any file starting with this (in /tmp or $HOME) means something ran


def hostile(label: str) -> str:
    """One path component (no '/') with every kind of shell syntax; executing any part of it
    creates a marker file in the home directory of whoever ran it."""
    return (f"{label} x; cd; touch {MARKER}-semi; $(cd; touch {MARKER}-dollar) `cd; touch {MARKER}-tick` "
            f"'q' \"d\" \\ $HOME %s * & | > é日本\n2nd line\ttab")


def run_cli(lab: Lab, tmp_path: Path, old: str, new: str, *, lb: str = "none", profile: Path | None = None,
            extra: dict[str, Any] | None = None) -> tuple[Status, str, str, dict[str, Any], Path]:
    config = lab.write_topology(tmp_path / "topology.yaml", lb=lb, extra=extra)  # type: ignore[arg-type]
    out, err = io.StringIO(), io.StringIO()
    argv = ["--old_install_dir", old, "--new_install_dir", new, "--config", str(config),
            "--log_dir", str(tmp_path / "logs")]
    if profile is not None:
        argv += ["--profile", str(profile)]
    status = main(argv, out=out, err=err)
    runs = sorted((tmp_path / "logs").glob("*/run.json"))
    record = json.loads(runs[-1].read_text()) if runs else {}
    return status, out.getvalue(), err.getvalue(), record, (runs[-1].parent if runs else tmp_path / "logs")


def node_sh(lab: Lab, node: str, cmd: str, *, check: bool = True) -> str:
    code, out = lab.exec(node, cmd)
    if check:
        assert code == 0, f"{node}: {cmd!r} -> {code}: {out}"
    return out


def node_file_bytes(lab: Lab, node: str, path: str) -> bytes:
    return base64.b64decode(node_sh(lab, node, f"base64 -w0 {shlex.quote(path)}").strip())


def assert_no_marker(lab: Lab) -> None:
    for name in NODES:
        found = node_sh(lab, name, f"ls -d ~/{MARKER}* /tmp/{MARKER}* / 2>/dev/null; true").split()
        assert found == ["/"], name    # "/": ls itself worked
    for folder in (Path.home(), Path("/tmp"), Path.cwd()):
        assert list(folder.glob(f"{MARKER}*")) == [], f"executed on the control machine ({folder})"


def assert_no_traceback(*texts: str) -> None:
    for text in texts:
        assert "Traceback" not in text


def run_folder_text(run_dir: Path) -> str:
    return "".join(p.read_text(encoding="utf-8") for p in sorted(run_dir.iterdir()) if p.is_file())


# --------------------------------------------------------------------------- install dirs

# install dirs take every shell metacharacter; control characters (newline, tab) are refused for
# them (tests/unit/test_install_dirs.py) and go through the variables test below instead
OLD_DIR = "/opt/" + hostile("gw old").replace("\n", " ").replace("\t", " ")
NEW_DIR = "/opt/" + hostile("gw new").replace("\n", " ").replace("\t", " ")


@pytest.fixture
def hostile_installs(fresh_lab: Lab) -> Iterator[Lab]:
    """Gateway 1.0 and 2.0 copied to the hostile paths on every node, 1.0 running from there."""
    old, new = shlex.quote(OLD_DIR), shlex.quote(NEW_DIR)
    for node in fresh_lab.nodes:
        node_sh(fresh_lab, node.name, f"set -e; /opt/gateway-1.0/bin/gateway stop --timeout 5 >/dev/null; "
                                      f"cp -a /opt/gateway-1.0 {old}; cp -a /opt/gateway-2.0 {new}; "
                                      f"rm -f {old}/run/gateway.pid {new}/run/gateway.pid {new}/conf/gateway.json; "
                                      f"{old}/bin/gateway start --host {node.host}")
    fresh_lab.wait_servers_up()
    yield fresh_lab
    for node in fresh_lab.nodes:   # before fresh_lab's reset, which only knows /opt/gateway-*
        node_sh(fresh_lab, node.name, f"{new}/bin/gateway stop --timeout 5; {old}/bin/gateway stop --timeout 5; "
                                      f"rm -rf {old} {new} ~/{MARKER}*", check=False)


def test_hostile_install_dirs_reach_the_node_intact(hostile_installs: Lab, tmp_path: Path) -> None:
    lab = hostile_installs
    for name in NODES:
        assert node_sh(lab, name, f"{shlex.quote(OLD_DIR)}/bin/gateway status").startswith("gateway 1.0 running")
    status, out, err, record, run_dir = run_cli(lab, tmp_path, OLD_DIR, NEW_DIR, lb="script")
    assert status is Status.SUCCESS, out + err
    assert record["old_install_dir"] == OLD_DIR and record["new_install_dir"] == NEW_DIR
    for name in NODES:
        # the new version runs from the hostile path (status matches /proc/PID/cmdline exactly)
        assert node_sh(lab, name, f"{shlex.quote(NEW_DIR)}/bin/gateway status").startswith("gateway 2.0 running")
        code, _ = lab.exec(name, f"{shlex.quote(OLD_DIR)}/bin/gateway status")
        assert code == 3, f"{name}: old gateway still running"
        assert lab.served_version(name) == "2.0"
        # UPGRADE wrote its config inside the hostile dir, not into some truncated path
        node_sh(lab, name, f"test -s {shlex.quote(NEW_DIR)}/conf/gateway.json")
        # nothing else appeared under /opt (no dir cut at a space, quote or newline)
        listing = node_sh(lab, name, "cd /opt && for d in *; do printf '%s\\0' \"$d\"; done")
        assert sorted(listing.split("\0")[:-1]) == sorted(["gateway-1.0", "gateway-2.0", OLD_DIR[5:], NEW_DIR[5:]])
    assert_no_marker(lab)
    node_log = (run_dir / "Node-B.log").read_text()
    assert f"{shlex.quote(NEW_DIR)}/bin/gateway start --host" in node_log
    assert_no_traceback(out, err, run_folder_text(run_dir))


# --------------------------------------------------------------------------- variables

VARS_PROFILE = """\
name: hostile-vars
phases:
  EXPORT:
    - {name: topology var, run: "mkdir -p {{ work_dir }} && printf '%s' {{ greeting }} > {{ work_dir }}/greeting"}
    - {name: node var, run: "printf '%s' {{ node_value }} > {{ work_dir }}/node_value"}
    - {name: larger string, run: "printf '%s' {{ 'pre:' ~ node_value ~ ':post' }} > {{ work_dir }}/larger"}
    - {name: as argv, run: "set -- {{ node_value }} {{ greeting }}; printf '%s' \\"$#\\" > {{ work_dir }}/argc"}
"""


def test_hostile_variables_reach_the_node_byte_for_byte(fresh_lab: Lab, tmp_path: Path) -> None:
    greeting = hostile("topology") + " -n -e \\x41 \x1b[31m"
    per_node = {name: hostile(f"node {name}") + ("\n" if name == "Node-B" else "") for name in NODES}
    nodes = [{"name": n.name, "host": n.host, "port": n.ssh_port, "lb_server": n.lb_server,
              "vars": {"node_value": per_node[n.name]}} for n in fresh_lab.nodes]
    nodes[2]["vars"]["greeting"] = "-" + greeting      # a node var overrides the topology var
    profile = tmp_path / "hostile-vars.yaml"
    profile.write_text(VARS_PROFILE)
    status, out, err, record, run_dir = run_cli(
        fresh_lab, tmp_path, "/opt/gateway-1.0", "/opt/gateway-2.0", profile=profile,
        extra={"vars": {"greeting": greeting}, "nodes": nodes})
    assert status is Status.SUCCESS, out + err
    work = f"/var/tmp/zdupgrade/{record['run_id']}"
    for name in NODES:
        expect_greeting = ("-" + greeting) if name == "Node-C" else greeting
        assert node_file_bytes(fresh_lab, name, f"{work}/greeting") == expect_greeting.encode()
        assert node_file_bytes(fresh_lab, name, f"{work}/node_value") == per_node[name].encode()
        assert node_file_bytes(fresh_lab, name, f"{work}/larger") == f"pre:{per_node[name]}:post".encode()
        assert node_file_bytes(fresh_lab, name, f"{work}/argc") == b"2"
    assert_no_marker(fresh_lab)
    assert_no_traceback(out, err, run_folder_text(run_dir))


# --------------------------------------------------------------------------- big and binary output

FIVE_MB = 5 * 1024 * 1024
OUTPUT_PROFILE = f"""\
name: noisy
phases:
  EXPORT:
    - {{name: five megabytes, run: "head -c {FIVE_MB} /dev/zero | tr '\\\\0' x; echo; echo END-OF-STDOUT", timeout: 120}}
    - {{name: one megabyte on stderr, run: "head -c 1048576 /dev/zero | tr '\\\\0' y >&2; echo END-OF-STDERR >&2"}}
    - {{name: invalid utf-8, run: "printf 'bad:\\\\377\\\\376\\\\200 half:\\\\303\\\\050 end\\\\n'; printf 'err:\\\\377\\\\n' >&2"}}
    - {{name: split multibyte, run: "head -c 65535 /dev/zero | tr '\\\\0' z; printf '\\\\303\\\\251-after\\\\n'"}}
"""


def test_megabytes_and_invalid_utf8_are_logged_without_traceback(fresh_lab: Lab, tmp_path: Path) -> None:
    profile = tmp_path / "noisy.yaml"
    profile.write_text(OUTPUT_PROFILE)
    started = time.monotonic()
    status, out, err, record, run_dir = run_cli(fresh_lab, tmp_path, "/opt/gateway-1.0", "/opt/gateway-2.0",
                                                profile=profile)
    elapsed = time.monotonic() - started
    assert status is Status.SUCCESS, out + err
    assert elapsed < 90, f"{elapsed:.1f}s"
    raw = (run_dir / "Node-A.log").read_bytes()
    text = raw.decode("utf-8")                       # the node log is valid UTF-8
    assert "END-OF-STDOUT" in text and "END-OF-STDERR" in text
    # either the whole output or a bounded part of it with a clear marker
    xs = text.count("x" * 1000)
    assert xs >= FIVE_MB // 1000 or "truncated" in text, "5 MB of output neither logged nor marked as cut"
    assert "bad:\ufffd\ufffd\ufffd half:\ufffd( end" in text and "err:\ufffd" in text
    assert "\u00e9-after" in text                    # a character split across reads survives
    assert len((run_dir / "run.json").read_bytes()) < 200_000, "output does not belong in run.json"
    assert max(len(line) for line in out.splitlines()) < 2000
    assert_no_traceback(out, err, (run_dir / "run.log").read_text(), text)


def test_failing_command_with_huge_binary_stderr_gives_a_bounded_message(fresh_lab: Lab, tmp_path: Path) -> None:
    profile = tmp_path / "fail.yaml"
    profile.write_text("name: fail\nphases:\n  EXPORT:\n"
                       "    - {name: spew and fail, run: \"head -c 2000000 /dev/zero | tr '\\\\0' z >&2; echo >&2; "
                       "printf '\\\\377\\\\376 last\\\\n' >&2; exit 3\"}\n")
    status, out, err, record, run_dir = run_cli(fresh_lab, tmp_path, "/opt/gateway-1.0", "/opt/gateway-2.0",
                                                profile=profile)
    assert status is Status.EXPORT_FAILED, out + err
    step = next(s for s in record["steps"] if s["node"] == "Node-A")
    assert step["exit_code"] == 3 and step["message"].startswith("exit code 3")
    assert "\ufffd\ufffd last" in step["message"] and len(step["message"]) < 400
    assert max(len(line) for line in out.splitlines()) < 2000
    assert max(len(line) for line in (run_dir / "run.log").read_text().splitlines()) < 2000
    assert_no_traceback(out, err, (run_dir / "run.log").read_text())
    assert all(fresh_lab.running_versions(n) == ["1.0"] for n in NODES)


# --------------------------------------------------------------------------- missing install dir

@pytest.fixture
def nope_on_a_and_c(fresh_lab: Lab) -> Iterator[Lab]:
    """``/opt/nope`` exists on Node-A and Node-C, not on Node-B."""
    for name in ("Node-A", "Node-C"):
        node_sh(fresh_lab, name, "mkdir -p /opt/nope")
    yield fresh_lab
    for name in NODES:
        node_sh(fresh_lab, name, "rm -rf /opt/nope", check=False)


def _untouched(lab: Lab, record: dict[str, Any]) -> None:
    for name in NODES:
        assert lab.running_versions(name) == ["1.0"], name
        assert lab.served_version(name) == "1.0"
        left = node_sh(lab, name, "ls -A /var/tmp/zdupgrade 2>/dev/null; true").strip()
        assert left == "", f"{name}: /var/tmp/zdupgrade holds {left!r}"
        assert record["nodes"][name]["lb_calls"] == {"disable": 0, "enable": 0}
        assert record["nodes"][name]["phases"] == {}
    assert record["steps"] == []
    assert all(s["srv_admin_state"] == "0" for s in lab.server_states().values())


def test_install_dir_missing_on_one_node(nope_on_a_and_c: Lab, tmp_path: Path) -> None:
    lab = nope_on_a_and_c
    status, out, err, record, run_dir = run_cli(lab, tmp_path, "/opt/nope", "/opt/gateway-2.0", lb="script")
    assert status is Status.CONFIG_ERROR, out + err
    assert int(status) == 78 and record["status"]["code"] == 78
    host_b = lab.node("Node-B").host
    assert "preflight found 1 problem(s); nothing was changed" in err
    assert f"Node-B: old install dir '/opt/nope' does not exist on {host_b}" in err
    assert "Node-A" not in err and "Node-C" not in err
    _untouched(lab, record)
    assert_no_traceback(out, err)


def test_every_preflight_problem_is_reported_at_once(fresh_lab: Lab, tmp_path: Path) -> None:
    status, out, err, record, run_dir = run_cli(fresh_lab, tmp_path, "/opt/nope old", "/opt/nope;new",
                                                lb="script")
    assert status is Status.CONFIG_ERROR, out + err
    assert "preflight found 6 problem(s)" in err
    for name in NODES:
        assert f"{name}: old install dir '/opt/nope old' does not exist" in err
        assert f"{name}: new install dir '/opt/nope;new' does not exist" in err
    _untouched(fresh_lab, record)
