"""Hostile topology and profile files, through ``zdu.cli.main`` in-process.

Each bad file must give one clear ``zdupgrade: error: FILE: ...`` line naming the file (and the
node / field where there is one), status CONFIG_ERROR (78), no traceback anywhere, no log folder
(nothing was run) - and must stay bounded in time and memory.  This adds to test_topology.py and
test_templates_profile.py (which call the loaders directly) the cases those do not cover.

The nodes of every topology here point at a loopback port nobody listens on, with no connect
retries: a bad file that slipped through validation would reach preflight, fail there quickly
and create a log folder, which the tests notice.
"""
from __future__ import annotations

import io
import json
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from zdu.cli.main import main
from zdu.status import Status

DIRS = ("--old_install_dir", "/opt/gateway-1.0", "--new_install_dir", "/opt/gateway-2.0")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


PORT = _free_port()
SSH = "ssh: {connect_timeout: 1, connect_retries: 0}\n"
NODE = f"{{name: gw1, host: 127.0.0.1, port: {PORT}}}"
GOOD_TOPOLOGY = f"profile: lab-gateway\n{SSH}nodes:\n  - {NODE}\n"


def run_cli(tmp_path: Path, *argv: str) -> tuple[Status, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main([*DIRS, *argv, "--log_dir", str(tmp_path / "logs")], out=out, err=err)
    return status, out.getvalue(), err.getvalue()


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def assert_clear_error(tmp_path: Path, status: Status, out: str, err: str, path: Path,
                       needles: tuple[str, ...] = (), expected: Status = Status.CONFIG_ERROR) -> None:
    """One ``zdupgrade: error: FILE: ...`` line, the status, no traceback, no run folder."""
    assert status is expected, (status, out, err)
    assert err.startswith(f"zdupgrade: error: {path}: "), err
    assert err.count("zdupgrade: error:") == 1, err
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"
    assert "Traceback" not in out + err and 'File "' not in out + err, out + err
    assert not (tmp_path / "logs").exists(), "a log folder was created: something ran"


# --------------------------------------------------------------------------- topology files

BAD_TOPOLOGIES: list[tuple[str, str, bytes | str, tuple[str, ...]]] = [
    # id, file name, content, needles in the message
    ("binary-garbage", "t.yaml", random.Random(4).randbytes(4096), ("not valid UTF-8",)),
    ("utf16", "t.yaml", GOOD_TOPOLOGY.encode("utf-16"), ("not valid UTF-8",)),
    ("latin1", "t.yaml", "profile: lab-gateway\nnodes:\n  - {name: gw-\xe9, host: 127.0.0.1}\n".encode("latin-1"),
     ("not valid UTF-8", "byte")),
    ("nul-bytes", "t.yaml", "nodes:\x00\n  - " + NODE + "\n", ("YAML",)),
    ("python-tag", "t.yaml", "nodes: !!python/object/apply:os.system ['touch /tmp/zdu-pwned-yaml']\n",
     ("YAML", "line 1", "python/object/apply")),
    ("two-documents", "t.yaml", GOOD_TOPOLOGY + "---\nnodes: []\n", ("YAML syntax error", "line 5")),
    ("tab-indent", "t.yaml", "nodes:\n\t- " + NODE + "\n", ("YAML syntax error", "line 2")),
    ("unhashable-key", "t.yaml", "? [a, b]\n: 1\nnodes:\n  - " + NODE + "\n", ("YAML syntax error", "line 1")),
    ("unclosed-quote", "t.yaml", "nodes:\n  - {name: 'gw1, host: 127.0.0.1}\n", ("YAML syntax error",)),
    ("only-comments", "t.yaml", "# nothing here\n\n# at all\n", ("empty",)),
    ("json-trailing-comma", "t.json", '{"nodes": [{"name": "a", "host": "127.0.0.1"},]}',
     ("JSON syntax error at line 1",)),
    ("json-top-list", "t.json", '[{"name": "a", "host": "127.0.0.1"}]', ("top level", "expected a mapping")),
    ("json-top-string", "t.json", '"nodes"', ("top level", "expected a mapping")),
    ("json-nan-port", "t.json", '{"nodes": [{"name": "a", "host": "127.0.0.1", "port": NaN}]}',
     ("nodes[0] (a).port", "integer")),
    ("json-float-port", "t.json", '{"nodes": [{"name": "a", "host": "127.0.0.1", "port": 22.5}]}',
     ("nodes[0] (a).port", "22.5")),
    ("json-port-as-string", "t.json", '{"nodes": [{"name": "a", "host": "127.0.0.1", "port": "22"}]}',
     ("nodes[0] (a).port", "'22'")),
    ("typo-top-field", "t.yaml", "node:\n  - " + NODE + "\n", ("top level", "unknown field 'node'")),
    ("nodes-mapping", "t.yaml", "nodes: {gw1: {host: 127.0.0.1}}\n", ("nodes", "non-empty list")),
    ("null-node", "t.yaml", "nodes:\n  - ~\n", ("nodes[0]", "expected a mapping", "null")),
    ("node-is-string", "t.yaml", "nodes:\n  - gw1\n", ("nodes[0]", "expected a mapping", "'gw1'")),
    ("host-is-date", "t.yaml", "nodes:\n  - {name: gw1, host: 2001-01-01}\n", ("nodes[0] (gw1).host",)),
    ("name-is-date", "t.yaml", "nodes:\n  - {name: 2001-01-01, host: 127.0.0.1}\n", ("nodes[0].name",)),
    ("name-is-number", "t.yaml", "nodes:\n  - {name: 7, host: 127.0.0.1}\n", ("nodes[0].name", "number")),
    ("name-with-newline", "t.yaml", 'nodes:\n  - {name: "gw\\n1", host: 127.0.0.1}\n', ("nodes[0].name", "newline")),
    ("name-non-ascii", "t.yaml", "nodes:\n  - {name: gw-\u00e9\u65e5, host: 127.0.0.1}\n", ("name", "invalid value")),
    ("host-with-space", "t.yaml", "nodes:\n  - {name: gw1, host: '127.0.0.1 -oProxyCommand=id'}\n",
     ("nodes[0] (gw1).host", "invalid host")),
    ("host-option-injection", "t.yaml", "nodes:\n  - {name: gw1, host: '-oProxyCommand=id'}\n",
     ("nodes[0] (gw1).host", "invalid host")),
    ("user-is-list", "t.yaml", "nodes:\n  - {name: gw1, host: 127.0.0.1, user: [root]}\n",
     ("nodes[0] (gw1).user", "a list")),
    ("roles-of-numbers", "t.yaml", "nodes:\n  - {name: gw1, host: 127.0.0.1, roles: [1, 2]}\n",
     ("nodes[0] (gw1).roles", "list of strings")),
    ("vars-is-list", "t.yaml", "vars: [a, b]\nnodes:\n  - " + NODE + "\n", ("vars", "expected a mapping")),
    ("node-vars-int-key", "t.yaml", "nodes:\n  - {name: gw1, host: 127.0.0.1, vars: {1: x}}\n",
     ("nodes[0] (gw1).vars", "keys must be strings")),
    ("ssh-is-list", "t.yaml", "ssh: [strict]\nnodes:\n  - " + NODE + "\n", ("ssh", "expected a mapping")),
    ("known-hosts-int", "t.yaml", "ssh: {known_hosts: 5}\nnodes:\n  - " + NODE + "\n", ("ssh.known_hosts",)),
    ("parallel-zero", "t.yaml", "ssh: {parallel: 0}\nnodes:\n  - " + NODE + "\n", ("ssh.parallel", "got 0")),
    ("timeout-negative", "t.yaml", "ssh: {command_timeout: -5}\nnodes:\n  - " + NODE + "\n",
     ("ssh.command_timeout", "-5")),
    ("serial-negative-percent", "t.yaml", "serial: '-5%'\nnodes:\n  - " + NODE + "\n", ("serial",)),
    ("serial-empty-list", "t.yaml", "serial: []\nnodes:\n  - " + NODE + "\n", ("serial",)),
    ("lb-is-string", "t.yaml", "load_balancer: haproxy\nnodes:\n  - " + NODE + "\n",
     ("load_balancer", "expected a mapping")),
    ("profile-is-list", "t.yaml", "profile: [a]\nnodes:\n  - " + NODE + "\n", ("profile",)),
    ("host-key-md5", "t.yaml", "nodes:\n  - {name: gw1, host: 127.0.0.1, host_key: 'aa:bb:cc'}\n",
     ("nodes[0] (gw1).host_key", "SHA256")),
    ("host-key-short", "t.yaml", "nodes:\n  - {name: gw1, host: 127.0.0.1, host_key: 'SHA256:abc'}\n",
     ("nodes[0] (gw1).host_key",)),
    ("duplicate-host-case", "t.yaml", "nodes:\n  - {name: a, host: GW.example.net}\n  - {name: b, host: gw.example.net}\n",
     ("nodes[1] (b)", "duplicate host:port")),
]


@pytest.mark.parametrize("name,content,needles", [c[1:] for c in BAD_TOPOLOGIES],
                         ids=[c[0] for c in BAD_TOPOLOGIES])
def test_bad_topology_file(tmp_path: Path, name: str, content: str | bytes, needles: tuple[str, ...]) -> None:
    path = write(tmp_path, name, content)
    status, out, err = run_cli(tmp_path, "--config", str(path))
    assert_clear_error(tmp_path, status, out, err, path, needles)
    assert not Path("/tmp/zdu-pwned-yaml").exists()


def test_topology_path_is_a_directory(tmp_path: Path) -> None:
    folder = tmp_path / "conf.yaml"
    folder.mkdir()
    status, out, err = run_cli(tmp_path, "--config", str(folder))
    assert_clear_error(tmp_path, status, out, err, folder, ("not a file",))


def test_topology_unreadable(tmp_path: Path) -> None:
    """A file that cannot be read (even by root: /proc/self/mem fails with EIO at offset 0)."""
    path = tmp_path / "t.yaml"
    path.symlink_to("/proc/self/mem")
    status, out, err = run_cli(tmp_path, "--config", str(path))
    assert_clear_error(tmp_path, status, out, err, path, ("cannot read",))


def _laughs(levels: int, width: int = 10) -> list[str]:
    """Billion-laughs anchors: a{n} is a list of ``width`` aliases of a{n-1}."""
    lines = [f"a0: &a0 [{', '.join(['lol'] * width)}]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels + 1)]
    return lines


ALIAS_BOMB = "the topology expands to more than 100,000 values through YAML aliases"


@pytest.mark.parametrize("where", ["roles", "name", "port"])
def test_yaml_bomb_in_a_checked_field_is_refused_at_once(tmp_path: Path, where: str) -> None:
    """The aliases are counted while the YAML is composed (each use counts all it contains):
    10**9 'lol's are refused at the anchor that crosses the bound, before anything is built."""
    node = {"name": "gw1", "host": "127.0.0.1", "port": PORT}
    node[where] = "*a8"
    fields = ", ".join(f"{k}: {v}" for k, v in node.items())
    # anchors live in a top-level var so the document stays one mapping
    text = "vars:\n" + "".join(f"  {line}\n" for line in _laughs(8)) + f"nodes:\n  - {{{fields}}}\n"
    path = write(tmp_path, "t.yaml", text)
    started = time.monotonic()
    status, out, err = run_cli(tmp_path, "--config", str(path))
    assert time.monotonic() - started < 5
    # line 6 is a4: ten uses of a3 (10**4 values each) cross the bound
    assert_clear_error(tmp_path, status, out, err, path, (ALIAS_BOMB, "(line 6)"))


_BOUNDED_RUNNER = """
import io, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (1536 * 2**20, 1536 * 2**20))
from zdu.cli.main import main
out, err = io.StringIO(), io.StringIO()
status = main(sys.argv[1:], out=out, err=err)
sys.stdout.write(out.getvalue()); sys.stderr.write(err.getvalue())
sys.exit(int(status))
"""


def _run_bounded(tmp_path: Path, *argv: str, timeout: float = 60) -> tuple[int, str, str]:
    """Run the CLI in a child with 1.5 GB of address space and a time limit."""
    try:
        proc = subprocess.run([sys.executable, "-c", _BOUNDED_RUNNER, *DIRS, *argv,
                               "--log_dir", str(tmp_path / "logs")],
                              capture_output=True, text=True, timeout=timeout,
                              cwd=Path(__file__).resolve().parents[2])
    except subprocess.TimeoutExpired:
        pytest.fail(f"not bounded: still running after {timeout}s")
    return proc.returncode, proc.stdout, proc.stderr


def test_yaml_bomb_in_a_used_variable_is_refused(tmp_path: Path) -> None:
    """The full billion-laughs bomb (8 levels) used as ``stop_timeout`` ran ~70 s and ended in a
    MemoryError traceback under a 4 GB limit.  A small one (10**5 elements) rendered into a
    700 kB command and went on to contact the node.  Both are refused while loading now."""
    text = ("profile: lab-gateway\n" + SSH + "vars:\n" + "".join(f"  {line}\n" for line in _laughs(4))
            + "  stop_timeout: *a4\n" + "nodes:\n  - " + NODE + "\n")
    path = write(tmp_path, "t.yaml", text)
    code, out, err = _run_bounded(tmp_path, "--config", str(path))
    assert code == Status.CONFIG_ERROR, (code, err[-2000:])
    assert err.startswith(f"zdupgrade: error: {path}: {ALIAS_BOMB}"), err[-2000:]
    assert not (tmp_path / "logs").exists()


def test_nested_variable_from_small_anchors_is_refused_naming_it(tmp_path: Path) -> None:
    """Under the alias bound, a variable is still a scalar or a flat list: the first nested one
    of the anchors is named (a1 nests a0)."""
    text = ("profile: lab-gateway\n" + SSH + "vars:\n" + "".join(f"  {line}\n" for line in _laughs(2))
            + "nodes:\n  - " + NODE + "\n")
    path = write(tmp_path, "t.yaml", text)
    status, out, err = run_cli(tmp_path, "--config", str(path))
    assert_clear_error(tmp_path, status, out, err, path, ("vars.a1: a variable is",))


def test_huge_topology_file_stays_bounded(tmp_path: Path) -> None:
    """A 5 MB topology (comments and a large variable) is parsed in bounded time and memory.

    There is no size cap today: 10 MB of YAML takes ~7 s, 30 MB ~60 s and ~600 MB of RSS
    (pure-Python PyYAML); see the report for the recommendation of a cap."""
    body = "".join(f"# filler {i:07d} {'x' * 90}\n" for i in range(40_000))
    text = body + GOOD_TOPOLOGY + "vars:\n  blob: '" + "y" * 1_000_000 + "'\n"
    path = write(tmp_path, "t.yaml", text)
    assert path.stat().st_size > 5_000_000
    started = time.monotonic()
    code, out, err = _run_bounded(tmp_path, "--config", str(path), "--dry-run")
    assert time.monotonic() - started < 40
    assert code == Status.SUCCESS, err[-2000:]
    assert "Traceback" not in out + err


@pytest.mark.parametrize("name,content", [
    ("t.yaml", "nodes: " + "[" * 20_000 + "]" * 20_000 + "\n"),
    ("t.json", '{"nodes": ' + "[" * 20_000 + "]" * 20_000 + "}"),
    ("t.yaml", "vars: {x: " + "{a: " * 5_000 + "1" + "}" * 5_000 + "}\nnodes:\n  - " + NODE + "\n"),
], ids=["yaml-lists", "json-lists", "yaml-mappings"])
def test_deeply_nested_topology_is_a_clear_error(tmp_path: Path, name: str, content: str) -> None:
    path = write(tmp_path, name, content)
    status, out, err = run_cli(tmp_path, "--config", str(path))
    assert_clear_error(tmp_path, status, out, err, path, ("nest",))


@pytest.mark.parametrize("name,content,key", [
    ("t.json", '{"profile": "lab-gateway", "ssh": {"connect_retries": 0}, "nodes": ['
     + json.dumps({"name": "a", "host": "127.0.0.1", "port": PORT}) + '], "nodes": ['
     + json.dumps({"name": "b", "host": "127.0.0.2", "port": PORT}) + "]}", "nodes"),
    ("t.json", '{"profile": "lab-gateway", "ssh": {"connect_retries": 0}, "nodes": [{"name": "a", "host": "127.0.0.1", "port": 1, "port": %d}]}' % PORT,
     "port"),
    ("t.yaml", f"profile: lab-gateway\n{SSH}nodes:\n  - {{name: a, host: 127.0.0.1, port: 1, port: {PORT}}}\n",
     "port"),
    ("t.yaml", f"{SSH}nodes:\n  - {NODE}\nprofile: lab-gateway\nnodes:\n  - {{name: b, host: 127.0.0.2, port: {PORT}}}\n",
     "nodes"),
], ids=["json-top", "json-node", "yaml-node", "yaml-top"])
def test_duplicate_keys_are_refused(tmp_path: Path, name: str, content: str, key: str) -> None:
    path = write(tmp_path, name, content)
    status, out, err = run_cli(tmp_path, "--config", str(path))
    assert_clear_error(tmp_path, status, out, err, path, ("duplicate", repr(key)))


def test_nul_byte_in_a_variable_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "t.yaml", GOOD_TOPOLOGY + 'vars: {stop_timeout: "5\\0; touch /tmp/x"}\n')
    status, out, err = run_cli(tmp_path, "--config", str(path))
    assert_clear_error(tmp_path, status, out, err, path, ("stop_timeout", "NUL"))


# --------------------------------------------------------------------------- profile files

BASE_PROFILE = "name: p\nphases:\n  APPLY: [restart]\nrollback: [restore]\n"
BAD_PROFILES: list[tuple[str, str, bytes | str, tuple[str, ...]]] = [
    ("binary-garbage", "p.yaml", random.Random(7).randbytes(2048), ("not valid UTF-8",)),
    ("latin1", "p.yaml", "name: caf\xe9\nphases: {APPLY: [x]}\nrollback: [y]\n".encode("latin-1"),
     ("not valid UTF-8",)),
    ("syntax", "p.yaml", "name: p\nphases:\n  APPLY: [restart\nrollback: [restore]\n", ("YAML syntax error",)),
    ("json-syntax", "p.json", '{"name": "p", "phases": {"APPLY": ["x"]}', ("JSON syntax error",)),
    ("empty", "p.yaml", "", ("empty",)),
    ("top-list", "p.yaml", "- name: p\n", ("top level", "expected a mapping")),
    ("python-tag", "p.yaml", "name: !!python/name:os.system\nphases: {}\n", ("YAML", "python/name")),
    ("missing-phases", "p.yaml", "name: p\nrollback: [x]\n", ("missing required field 'phases'",)),
    ("phases-null", "p.yaml", "name: p\nphases:\nrollback: [y]\n", ("phases", "expected a mapping", "null")),
    ("phase-key-int", "p.yaml", "name: p\nphases: {5: [x]}\nrollback: [y]\n", ("phases", "keys must be strings")),
    ("rollback-keyed-by-rollback", "p.yaml", "name: p\nphases: {APPLY: [x]}\nrollback: {ROLLBACK: [y]}\n",
     ("rollback.ROLLBACK",)),
    ("rollback-unknown-phase", "p.yaml", "name: p\nphases: {APPLY: [x]}\nrollback: {LATER: [y]}\n",
     ("rollback.LATER", "unknown phase")),
    ("phase-rollback", "p.yaml", "name: p\nphases: {ROLLBACK: [x]}\n", ("phases.ROLLBACK",)),
    ("name-list", "p.yaml", "name: [1]\nphases: {APPLY: [x]}\nrollback: [y]\n", ("name", "a list")),
    ("run-int", "p.yaml", "name: p\nphases:\n  APPLY: [{run: 123}]\nrollback: [y]\n",
     ("phases.APPLY[0].run", "number")),
    ("run-empty", "p.yaml", "name: p\nphases:\n  APPLY: [{run: ''}]\nrollback: [y]\n", ("phases.APPLY[0].run",)),
    ("step-number", "p.yaml", "name: p\nphases:\n  APPLY: [5]\nrollback: [y]\n", ("phases.APPLY[0]", "mapping")),
    ("step-unknown-field", "p.yaml", "name: p\nphases:\n  APPLY: [{run: x, sudo: true}]\nrollback: [y]\n",
     ("phases.APPLY[0]", "unknown field 'sudo'")),
    ("timeout-negative", "p.yaml", "name: p\nphases:\n  APPLY: [{run: x, timeout: -1}]\nrollback: [y]\n",
     ("phases.APPLY[0].timeout", "-1")),
    ("timeout-bool", "p.yaml", "name: p\nphases:\n  APPLY: [{run: x, timeout: yes}]\nrollback: [y]\n",
     ("phases.APPLY[0].timeout", "boolean")),
    ("wait-number", "p.yaml", "name: p\nphases:\n  APPLY: [{wait: 5}]\nrollback: [y]\n",
     ("phases.APPLY[0].wait", "mapping")),
    ("wait-status", "p.yaml", "name: p\nphases:\n  APPLY: [{wait: {http: 'http://x/', status: 999}}]\nrollback: [y]\n",
     ("phases.APPLY[0].wait.status", "999")),
    ("wait-unknown-field", "p.yaml", "name: p\nphases:\n  APPLY: [{wait: {tcp: 'a:1', retries: 3}}]\nrollback: [y]\n",
     ("phases.APPLY[0].wait", "unknown field 'retries'")),
    ("secrets-string", "p.yaml", BASE_PROFILE + "secrets: admin_password\n", ("secrets", "list of strings")),
    ("vars-list", "p.yaml", BASE_PROFILE + "vars: [a]\n", ("vars", "expected a mapping")),
    ("vars-bad-name", "p.yaml", BASE_PROFILE + "vars: {'a;b': 1}\n", ("vars.a;b", "identifiers")),
    ("smoke-string", "p.yaml", BASE_PROFILE + "smoke: restart\n", ("smoke", "list of steps")),
    ("template-syntax", "p.yaml", "name: p\nphases:\n  APPLY: ['echo {% if %}']\nrollback: [y]\n",
     ("phases.APPLY[0].run", "template syntax error")),
    ("unknown-filter", "p.yaml", "name: p\nphases:\n  APPLY: ['echo {{ x|shell }}']\nrollback: [y]\n",
     ("phases.APPLY[0].run: template syntax error on line 1", "No filter named 'shell'")),
    ("undefined-attribute", "p.yaml", "name: p\nphases:\n  EXPORT: ['echo {{ node.password }}']\n",
     ("undefined variable", "password", "(node gw1)")),
]


@pytest.mark.parametrize("name,content,needles", [c[1:] for c in BAD_PROFILES],
                         ids=[c[0] for c in BAD_PROFILES])
def test_bad_profile_file(tmp_path: Path, name: str, content: str | bytes, needles: tuple[str, ...]) -> None:
    config = write(tmp_path, "topology.yaml", GOOD_TOPOLOGY)
    path = write(tmp_path, name, content)
    status, out, err = run_cli(tmp_path, "--config", str(config), "--profile", str(path))
    assert_clear_error(tmp_path, status, out, err, path, needles)


def test_profile_named_in_topology_is_resolved_next_to_it_and_checked(tmp_path: Path) -> None:
    """``profile: p.yaml`` in the topology: a bad profile there names the profile file."""
    path = write(tmp_path, "p.yaml", "name: p\nphases:\n  APPLY: [{run: x, timeout: soon}]\nrollback: [y]\n")
    config = write(tmp_path, "topology.yaml", f"profile: p.yaml\n{SSH}nodes:\n  - {NODE}\n")
    status, out, err = run_cli(tmp_path, "--config", str(config))
    assert_clear_error(tmp_path, status, out, err, path, ("phases.APPLY[0].timeout",))


@pytest.mark.parametrize("ref,needle", [
    ("/no/such/profile.yaml", "profile file not found: /no/such/profile.yaml"),
    ("../etc/passwd", "profile file not found"),
    ("bad name;id", "invalid profile name"),
])
def test_profile_reference_errors(tmp_path: Path, ref: str, needle: str) -> None:
    config = write(tmp_path, "topology.yaml", GOOD_TOPOLOGY)
    status, out, err = run_cli(tmp_path, "--config", str(config), "--profile", ref)
    assert status is Status.CONFIG_ERROR
    assert err.startswith("zdupgrade: error: ") and needle in err, err
    assert "Traceback" not in out + err
    assert not (tmp_path / "logs").exists()


@pytest.mark.parametrize("first,second", [("APPLY", "apply"), ("PRE_APPLY", "PRE-APPLY")])
def test_same_phase_twice_is_refused(tmp_path: Path, first: str, second: str) -> None:
    config = write(tmp_path, "topology.yaml", GOOD_TOPOLOGY)
    path = write(tmp_path, "p.yaml", f"name: p\nphases:\n  {first}: [one]\n  {second}: [two]\nrollback: [y]\n")
    status, out, err = run_cli(tmp_path, "--config", str(config), "--profile", str(path))
    assert_clear_error(tmp_path, status, out, err, path, ("duplicate", second))


@pytest.mark.parametrize("template", [
    "echo {{ 1 / 0 }}",
    "echo {{ '%d' % 'x' }}",
    "echo {{ old_install_dir() }}",
    "{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}",
], ids=["zero-division", "type-error", "call-a-string", "recursion"])
def test_template_runtime_error_is_a_clear_error(tmp_path: Path, template: str) -> None:
    config = write(tmp_path, "topology.yaml", GOOD_TOPOLOGY)
    path = write(tmp_path, "p.yaml", "name: p\nphases:\n  EXPORT:\n    - " + json.dumps({"run": template}) + "\n")
    status, out, err = run_cli(tmp_path, "--config", str(config), "--profile", str(path))
    assert_clear_error(tmp_path, status, out, err, path, ("EXPORT", "(node gw1)"))


def test_hostile_yaml_does_not_leave_marker() -> None:
    """Guard for the python-tag cases above: nothing was executed on the control machine."""
    assert not Path("/tmp/zdu-pwned-yaml").exists()
