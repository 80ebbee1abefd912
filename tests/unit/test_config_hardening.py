"""Hostile documents: alias bombs, deep nesting, huge integers, bad text, names that collide.

Every case is one ConfigError naming the file and the field (and the line where the parser
knows it), raised while loading: nothing is built from the bad value.
"""
from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest

from zdu.cli.main import main
from zdu.config.documents import (MAX_ALIAS_VALUES, MAX_DEPTH, check_text, describe_value,
                                  read_document)
from zdu.config.profile import load_profile, parse_profile
from zdu.config.topology import RESERVED_NODE_NAMES, load_topology, parse_topology
from zdu.errors import ConfigError
from zdu.status import Phase, Status

NODE = "{name: gw1, host: 127.0.0.1}"


def write(tmp_path: Path, text: str, name: str = "t.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(path: Path, loader=load_topology) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError) as info:
        loader(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    assert len(message) < 600, message
    return message


def laughs(levels: int, width: int = 9) -> str:
    """The case's alias bomb: a{n} is ``width`` uses of a{n-1}; a0 holds ``width`` strings."""
    lines = [f"a0: &a0 [{', '.join(['lol'] * width)}]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels + 1)]
    return "".join(f"    {line}\n" for line in lines)


# --------------------------------------------------------------------------- aliases

def test_billion_laughs_in_load_balancer_options_is_refused_while_loading(tmp_path: Path) -> None:
    """629 bytes that expand to 9**10 strings in ``load_balancer.env`` (options nobody checks
    by shape): refused at the anchor that crosses the bound, in milliseconds."""
    text = ("profile: lab-gateway\nload_balancer:\n  type: script\n  path: /bin/true\n  env:\n"
            + laughs(9) + f"nodes:\n  - {NODE}\n")
    path = write(tmp_path, text)
    assert len(text.encode()) < 700
    started = time.monotonic()
    message = load_error(path)
    assert time.monotonic() - started < 1
    assert message == (f"{path}: the topology expands to more than {MAX_ALIAS_VALUES:,} values through "
                       "YAML aliases (each use of an alias counts all it contains) (line 11)")


def test_alias_expansion_bound_is_exact(tmp_path: Path) -> None:
    """An anchor of 1,000 strings used by 99 nodes adds 99 * 1,001 values: accepted;
    used by 100 nodes it adds 100,100: refused."""
    def topology(uses: int) -> str:
        big = ", ".join(f"r{i}" for i in range(1000))
        nodes = [f"  - {{name: n0, host: 10.0.0.1, roles: &big [{big}]}}"]
        nodes += [f"  - {{name: n{i}, host: 10.0.0.{i % 250 + 2}, port: {1000 + i}, roles: *big}}"
                  for i in range(1, uses + 1)]
        return "nodes:\n" + "\n".join(nodes) + "\n"

    ok = load_topology(write(tmp_path, topology(99), "ok.yaml"))
    assert len(ok.nodes) == 100 and len(ok.nodes[99].roles) == 1000
    message = load_error(write(tmp_path, topology(100), "bad.yaml"))
    assert "expands to more than 100,000 values through YAML aliases" in message and "(line 102)" in message


def test_merge_key_anchors_keep_working(tmp_path: Path) -> None:
    text = ("defaults: &defaults {port: 2222, user: deploy, group: Gateway}\n"
            "nodes:\n"
            "  - {<<: *defaults, name: a, host: 10.0.0.1}\n"
            "  - {<<: *defaults, name: b, host: 10.0.0.2, port: 2200}\n")
    # 'defaults' is not a topology field: the merge itself is what is being tested, so load
    # the document and parse what a user would write (the anchor on the first node)
    data = read_document(write(tmp_path, text), what="topology")
    data.pop("defaults")
    topo = parse_topology(data, source="t.yaml")
    assert [(n.name, n.port, n.user, n.group) for n in topo.nodes] == [
        ("a", 2222, "deploy", "Gateway"), ("b", 2200, "deploy", "Gateway")]
    inline = ("nodes:\n  - &first {name: a, host: 10.0.0.1, port: 2222, user: deploy}\n"
              "  - {<<: *first, name: b, host: 10.0.0.2}\n")
    topo = load_topology(write(tmp_path, inline, "inline.yaml"))
    assert [(n.name, n.host, n.port, n.user) for n in topo.nodes] == [
        ("a", "10.0.0.1", 2222, "deploy"), ("b", "10.0.0.2", 2222, "deploy")]


def test_alias_inside_its_own_anchor_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, f"vars: {{x: &loop [a, *loop]}}\nnodes:\n  - {NODE}\n")
    assert load_error(path) == f"{path}: the alias *loop refers to the node that contains it (line 1)"


# --------------------------------------------------------------------------- nesting

@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_nesting_bound_is_exact(tmp_path: Path, suffix: str) -> None:
    """MAX_DEPTH levels load; one more is refused by a counter, not by a RecursionError."""
    def doc(depth: int) -> str:  # the top mapping is level 1
        inner = "[" * (depth - 1) + "]" * (depth - 1)
        return f'{{"x": {inner}}}' if suffix == ".json" else f"x: {inner}\n"

    data = read_document(write(tmp_path, doc(MAX_DEPTH), "ok" + suffix), what="topology")
    depth, value = 1, data["x"]
    while value:
        depth, value = depth + 1, value[0]
    assert depth == MAX_DEPTH - 1  # the innermost empty list is level MAX_DEPTH
    path = write(tmp_path, doc(MAX_DEPTH + 1), "bad" + suffix)
    with pytest.raises(ConfigError) as info:
        read_document(path, what="topology")
    assert str(info.value).startswith(f"{path}: the topology is nested more than {MAX_DEPTH} levels deep")


def test_json_brackets_inside_strings_do_not_count(tmp_path: Path) -> None:
    text = json.dumps({"nodes": [{"name": "a", "host": "10.0.0.1", "vars": {"x": "[" * 5000 + '\\"{'}}]})
    topo = load_topology(write(tmp_path, text, "t.json"))
    assert topo.nodes[0].vars["x"].startswith("[[[")


# --------------------------------------------------------------------------- integers

@pytest.mark.parametrize("literal,digits", [("9" * 5000, "5,000"), ("-" + "1" * 4301, "4,301"),
                                            ("1_000_000_000_000_000_001", "19"),
                                            ("0x" + "f" * 200, "202")])
def test_huge_yaml_integer_names_field_and_line(tmp_path: Path, literal: str, digits: str) -> None:
    """Python refuses int<->str beyond 4300 digits with a ValueError inside PyYAML; out-of-range
    integers are now a clear error instead (without converting 10**7 digits first)."""
    path = write(tmp_path, f"nodes:\n  - {NODE}\nvars:\n  big: {literal}\n")
    message = load_error(path)
    assert message.startswith(f"{path}: vars.big: an integer of ")
    assert "is out of range (line 4): integers here are at most 10**18 in magnitude" in message
    if not literal.startswith("0x"):
        assert f"an integer of {digits} digits" in message


def test_huge_json_integer_names_field(tmp_path: Path) -> None:
    text = '{"nodes": [{"name": "a", "host": "10.0.0.1", "port": ' + "7" * 10_000 + "}]}"
    path = write(tmp_path, text, "t.json")
    message = load_error(path)
    assert message == (f"{path}: nodes[0].port: an integer of 10,000 digits is out of range: "
                       "integers here are at most 10**18 in magnitude")


def test_integer_bound_is_exact(tmp_path: Path) -> None:
    ok = load_topology(write(tmp_path, f"nodes:\n  - {NODE}\nvars: {{n: {10**18}, m: -{10**18}}}\n", "ok.yaml"))
    assert ok.vars["n"] == 10**18 and ok.vars["m"] == -10**18
    message = load_error(write(tmp_path, f"nodes:\n  - {NODE}\nvars: {{n: {10**18 + 1}}}\n"))
    assert "vars.n: an integer of 19 digits is out of range (line 3)" in message


def test_long_sexagesimal_integer_is_refused_quickly(tmp_path: Path) -> None:
    """YAML 1.1 reads 1:2:3 as base 60; 300,000 parts would be a quadratic loop in PyYAML."""
    path = write(tmp_path, f"nodes:\n  - {NODE}\nvars: {{t: 1{':30' * 300_000}}}\n")
    started = time.monotonic()
    message = load_error(path)
    assert time.monotonic() - started < 10
    assert "vars.t: an integer of" in message and "out of range (line 3)" in message


def test_huge_integer_through_the_command_line_is_a_config_error(tmp_path: Path) -> None:
    """Hostile case 12b: status 78 (CONFIG_ERROR), not 80 ("internal error ... a zdupgrade bug")."""
    path = write(tmp_path, f"profile: lab-gateway\nnodes:\n  - {NODE}\nvars: {{big: {'9' * 5000}}}\n")
    out, err = io.StringIO(), io.StringIO()
    status = main(["--config", str(path), "--old_install_dir", "/a", "--new_install_dir", "/b", "--dry-run",
                   "--log_dir", str(tmp_path / "logs")], out=out, err=err)
    assert status is Status.CONFIG_ERROR, err.getvalue()
    assert err.getvalue().startswith(f"zdupgrade: error: {path}: vars.big: an integer of 5,000 digits")
    assert "bug" not in err.getvalue() and out.getvalue() == ""


# --------------------------------------------------------------------------- text in every string

@pytest.mark.parametrize("field,value,needle", [
    ("vars", {"pw": "p\udce4ss"}, "vars.pw: 'p\\udce4ss' is not valid UTF-8 text (undecodable byte 0xe4 at position 1)"),
    ("vars", {"pw": "\ud800"}, "vars.pw: '\\ud800' is not valid UTF-8 text (lone surrogate U+D800 at position 0)"),
    ("vars", {"x\udc80": 1}, "vars: the key 'x\\udc80' is not valid UTF-8 text (undecodable byte 0x80"),
    ("vars", {"cmd": "a\u0000b"}, "vars.cmd: 'a\\x00b' contains a NUL byte (position 1)"),
    ("load_balancer", {"type": "script", "path": "/bin/\udcff"}, "load_balancer.path: '/bin/\\udcff' is not valid UTF-8"),
    ("serial", ["1", "\u0000"], "serial[1]: '\\x00' contains a NUL byte"),
])
def test_json_strings_with_surrogates_or_nul_are_refused_anywhere(tmp_path: Path, field: str, value: object,
                                                                   needle: str) -> None:
    """JSON can carry "\\udc80" (what a non-UTF-8 byte becomes) and "\\u0000" in any string,
    keys included, also in fields that are not validated by shape."""
    doc = {"nodes": [{"name": "a", "host": "10.0.0.1"}], field: value}
    path = write(tmp_path, json.dumps(doc), "t.json")
    message = load_error(path)
    assert message.startswith(f"{path}: {needle}"), message


def test_yaml_escapes_for_surrogates_and_nul_are_refused(tmp_path: Path) -> None:
    message = load_error(write(tmp_path, f'nodes:\n  - {{name: a, host: 10.0.0.1, group: "G\\ud800"}}\n'))
    assert "nodes[0].group: 'G\\ud800' is not valid UTF-8 text (lone surrogate U+D800" in message
    message = load_error(write(tmp_path, f'nodes:\n  - {NODE}\nprofile: "lab\\0gateway"\n'))
    assert "profile: 'lab\\x00gateway' contains a NUL byte" in message


IDENTIFIER_FIELDS = [
    # field as YAML, where it is named in the message
    ("nodes:\n  - {name: gw1, host: 10.0.0.1, user: \"de\\x1bploy\"}\n", "nodes[0] (gw1).user", "escape character"),
    ("nodes:\n  - {name: gw1, host: 10.0.0.1, group: \"Gate\\tway\"}\n", "nodes[0] (gw1).group", "tab"),
    ("nodes:\n  - {name: gw1, host: 10.0.0.1, roles: [gateway, \"x\\ny\"]}\n", "nodes[0] (gw1).roles[1]", "newline"),
    ("nodes:\n  - {name: gw1, host: 10.0.0.1, lb_server: \"s1\\r\"}\n", "nodes[0] (gw1).lb_server", "carriage return"),
    ("nodes:\n  - {name: \"gw1\\n\", host: 10.0.0.1}\n", "nodes[0].name", "newline"),
    ("nodes:\n  - {name: gw1, host: \"10.0.0.1\\n\"}\n", "nodes[0] (gw1).host", "newline"),
    ("ssh: {user: \"root\\x7f\"}\nnodes:\n  - {name: gw1, host: 10.0.0.1}\n", "ssh.user", "control character (U+007F)"),
    ("ssh: {key_file: \"/k\\ney\"}\nnodes:\n  - {name: gw1, host: 10.0.0.1}\n", "ssh.key_file", "newline"),
    ("ssh: {known_hosts: \"/kh\\x85\"}\nnodes:\n  - {name: gw1, host: 10.0.0.1}\n", "ssh.known_hosts", "U+0085"),
    ("profile: \"lab\\ngateway\"\nnodes:\n  - {name: gw1, host: 10.0.0.1}\n", "profile", "newline"),
    ("load_balancer: {type: haproxy, backend: \"gw\\nset server x/y state ready\", socket: /s}\n"
     "nodes:\n  - {name: gw1, host: 10.0.0.1}\n", "load_balancer.backend", "newline"),
    ("load_balancer: {type: haproxy, backend: gw, sockets: [/a, \"/b\\n\"]}\nnodes:\n  - {name: gw1, host: 10.0.0.1}\n",
     "load_balancer.sockets[1]", "newline"),
    ("load_balancer: {type: haproxy, backend: gw, socket: /s, via: \"gw1\\t\"}\nnodes:\n  - {name: gw1, host: 10.0.0.1}\n",
     "load_balancer.via", "tab"),
    ("load_balancer: {type: script, path: /bin/true, env: {\"A\\nB\": x}}\nnodes:\n  - {name: gw1, host: 10.0.0.1}\n",
     "load_balancer.env", "newline"),
    ("vars: {pw: {env: \"GW\\nPW\"}}\nnodes:\n  - {name: gw1, host: 10.0.0.1}\n", "vars.pw.env", "newline"),
]


@pytest.mark.parametrize("text,where,what", IDENTIFIER_FIELDS, ids=[c[1] for c in IDENTIFIER_FIELDS])
def test_control_characters_in_identifier_fields_are_refused(tmp_path: Path, text: str, where: str,
                                                             what: str) -> None:
    path = write(tmp_path, text)
    message = load_error(path)
    assert message.startswith(f"{path}: {where}: "), message
    assert what in message


def test_text_fields_keep_every_character_but_nul_and_surrogates(tmp_path: Path) -> None:
    """Variables and the hook's environment are text: shell-quoted on the way, so they reach the
    node byte for byte, control characters included."""
    text = (f"nodes:\n  - {{name: gw1, host: 10.0.0.1, vars: {{motd: \"a\\tb\\nc\\r\\x1b[31m\"}}}}\n"
            "load_balancer: {type: script, path: /bin/true, env: {BANNER: \"one\\ntwo\"}}\n")
    topo = load_topology(write(tmp_path, text))
    assert topo.nodes[0].vars["motd"] == "a\tb\nc\r\x1b[31m"
    assert topo.load_balancer.options["env"]["BANNER"] == "one\ntwo"
    path = write(tmp_path, f"nodes:\n  - {{name: gw1, host: 10.0.0.1, vars: {{motd: \"safe\\0\"}}}}\n")
    assert load_error(path).startswith(f"{path}: nodes[0].vars.motd: 'safe\\x00' contains a NUL byte")


def _profile_error(data: dict) -> str:  # type: ignore[type-arg]
    with pytest.raises(ConfigError) as info:
        parse_profile(data, source="p.yaml")
    return str(info.value)


@pytest.mark.parametrize("data,needle", [
    ({"name": "p\nq", "phases": {"EXPORT": ["x"]}}, "p.yaml: name: 'p\\nq' contains a newline"),
    ({"name": "p", "secrets": ["pw\t"], "phases": {"EXPORT": ["x"]}}, "p.yaml: secrets[0]: 'pw\\t' contains a tab"),
    ({"name": "p", "phases": {"EXPORT": [{"name": "ok\r\x1b[1Afake", "run": "x"}]}},
     "p.yaml: phases.EXPORT[0].name: 'ok\\r\\x1b[1Afake' contains a carriage return"),
    ({"name": "p", "phases": {"EXPORT": [{"name": 5, "run": "x"}]}},
     "p.yaml: phases.EXPORT[0].name: expected a non-empty string, got a number (5)"),
    ({"name": "p", "phases": {"EXPORT": [{"run": "echo \udce9"}]}},
     "p.yaml: phases.EXPORT[0].run: 'echo \\udce9' is not valid UTF-8 text"),
    ({"name": "p", "phases": {"EXPORT": [{"wait": {"tcp": "h:1\x00"}}]}},
     "p.yaml: phases.EXPORT[0].wait.tcp: 'h:1\\x00' contains a NUL byte"),
    ({"name": "p", "description": "a\x00", "phases": {"EXPORT": ["x"]}}, "p.yaml: description: 'a\\x00' contains a NUL"),
])
def test_profile_text_and_identifiers(data: dict, needle: str) -> None:  # type: ignore[type-arg]
    assert _profile_error(data).startswith(needle)


def test_profile_templates_keep_their_text() -> None:
    run = "if true; then\n\techo ok\r\nfi"
    profile = parse_profile({"name": "p", "description": "line one\nline two",
                             "phases": {"EXPORT": [{"run": run}]}}, source="p.yaml")
    assert profile.description == "line one\nline two"
    assert [step.run for step in profile.phases[Phase.EXPORT]] == [run]  # type: ignore[union-attr]


def test_profile_file_with_huge_integer_and_surrogate(tmp_path: Path) -> None:
    path = write(tmp_path, "name: p\nphases:\n  EXPORT: [{run: x, timeout: " + "1" * 6000 + "}]\n", "p.yaml")
    assert "phases.EXPORT[0].timeout: an integer of 6,000 digits is out of range (line 3)" in load_error(path, lambda p: load_profile(str(p)))
    path = write(tmp_path, json.dumps({"name": "p", "phases": {"EXPORT": [{"run": "echo \udce9"}]}}), "p.json")
    assert "phases.EXPORT[0].run: 'echo \\udce9' is not valid UTF-8 text (undecodable byte 0xe9" in load_error(path, lambda p: load_profile(str(p)))


# --------------------------------------------------------------------------- names

@pytest.mark.parametrize("name", sorted(RESERVED_NODE_NAMES) + ["Run", "JOURNAL", "Events"])
def test_node_names_of_run_folder_files_are_refused(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, f"nodes:\n  - {{name: {name}, host: 10.0.0.1}}\n")
    message = load_error(path)
    assert message.startswith(f"{path}: nodes[0] ({name}).name: {name!r} is reserved: the node's log "
                              f"({name}.log) would share its name with a file of the run folder")
    assert {"run", "journal", "events", "report", "control", "summary", "junit"} <= RESERVED_NODE_NAMES


def test_names_near_reserved_ones_are_fine(tmp_path: Path) -> None:
    text = "nodes:\n" + "".join(f"  - {{name: {n}, host: 10.0.0.{i + 1}}}\n"
                                for i, n in enumerate(["runner", "run-1", "run.log", "reports", "ctl"]))
    assert [n.name for n in load_topology(write(tmp_path, text)).nodes] == ["runner", "run-1", "run.log", "reports", "ctl"]


def test_node_names_differing_only_by_case_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "nodes:\n  - {name: gw-A, host: 10.0.0.1}\n  - {name: GW-a, host: 10.0.0.2}\n")
    assert load_error(path) == (f"{path}: nodes[1] (GW-a).name: 'GW-a' differs from node 'gw-A' (nodes[0]) only by "
                                "case: their logs would be one file on a case-insensitive file system")


@pytest.mark.parametrize("server,ok", [("gw-1", True), ("srv:8080", True), ("a.b_c", True),
                                       ("a b", False), ("a;b", False), ("a/b", False), ("#x", False),
                                       ("é", False), ("x" * 256, False)])
def test_lb_server_names_follow_haproxy_rules(tmp_path: Path, server: str, ok: bool) -> None:
    path = write(tmp_path, "nodes:\n  - " + json.dumps({"name": "gw1", "host": "10.0.0.1", "lb_server": server}) + "\n")
    if ok:
        assert load_topology(path).nodes[0].lb_name == server
    else:
        message = load_error(path)
        assert message.startswith(f"{path}: nodes[0] (gw1).lb_server: invalid value ")
        assert "letters, digits, '.', '_', ':' and '-' (HAProxy's rule)" in message


@pytest.mark.parametrize("user,ok", [("deploy", True), ("svc@corp", True), ("-oProxyCommand=x", False),
                                     ("a b", False)])
def test_ssh_user(tmp_path: Path, user: str, ok: bool) -> None:
    path = write(tmp_path, "nodes:\n  - " + json.dumps({"name": "gw1", "host": "10.0.0.1", "user": user}) + "\n")
    if ok:
        assert load_topology(path).nodes[0].user == user
    else:
        assert "nodes[0] (gw1).user: invalid value" in load_error(path)


# --------------------------------------------------------------------------- bounded messages

def test_messages_never_carry_a_whole_value(tmp_path: Path) -> None:
    big = "x" * 1_000_000
    for text in (f"nodes:\n  - {{name: gw1, host: 10.0.0.1, transport: {big}}}\n",
                 f"nodes:\n  - {{name: gw1, host: {big}}}\n",
                 f"nodes:\n  - {{name: {big}, host: 10.0.0.1}}\n",
                 f"load_balancer: {{type: '{big};'}}\nnodes:\n  - {NODE}\n"):
        message = load_error(write(tmp_path, text))
        assert "... (1,000,00" in message, message
    # YAML keys are at most 1024 characters (a syntax error says so); JSON keys are not
    for doc in ({"nodes": [{"name": "gw1", "host": "10.0.0.1", big: 1}]},
                {"nodes": [{"name": "gw1", "host": "10.0.0.1", "vars": {big + "-": 1}}]},
                {"nodes": [{"name": "gw1", "host": "10.0.0.1"}], "vars": {"v": {"env": big + "="}}}):
        message = load_error(write(tmp_path, json.dumps(doc), "t.json"))
        assert "... (1,000,00" in message, message


def test_profile_messages_never_carry_a_whole_value(tmp_path: Path) -> None:
    big = "y" * 1_000_000
    message = _profile_error({"name": "p", "phases": {big: ["x"]}})
    assert message.startswith("p.yaml: phases.'yyyy") and "unknown phase" in message and len(message) < 400
    message = _profile_error({"name": "p", "phases": {"EXPORT": [{"wait": {"tcp": "a:1", "state": big}}]}})
    assert "expected one of up, down, got 'yyyy" in message and len(message) < 400
    for ref in ("/" + big + ".yaml", big):
        with pytest.raises(ConfigError) as info:
            load_profile(ref)
        assert len(str(info.value)) < 400, str(info.value)[:400]
    with pytest.raises(ConfigError) as info:
        load_profile("/" + big + ".yaml")
    assert str(info.value).startswith("profile file not found: /yyyy")
    with pytest.raises(ConfigError) as info:
        load_topology(Path("/" + "z" * 5000 + ".yaml"))
    assert str(info.value).startswith("/zzzz") and "cannot read topology file: File name too long" in str(info.value)
    assert len(str(info.value)) < 400
    with pytest.raises(ConfigError, match=r"^the topology file name: 't\\nx.yaml' contains a newline"):
        load_topology(Path("t\nx.yaml"))


def test_describe_value_is_bounded() -> None:
    shared: list[object] = ["lol"] * 10
    for _ in range(8):
        shared = [shared] * 10  # 10**9 elements by reference
    assert describe_value(shared) == "a list of 10 items"
    assert describe_value({"a": shared}) == "a mapping of 1 keys"
    assert describe_value("y" * 10_000) == repr("y" * 80) + "... (10,000 characters)"
    assert describe_value(10**5000) == "an integer of about 5,001 digits"
    assert describe_value(12) == "12" and describe_value(None) == "None" and describe_value("a'b") == '"a\'b"'
    assert describe_value(object()) == "a object"


# --------------------------------------------------------------------------- check_text

def test_check_text() -> None:
    assert check_text("pässwörd\twith\nlines\r\x1b", "env GW_PW") == "pässwörd\twith\nlines\r\x1b"
    with pytest.raises(ConfigError, match=r"^env GW_PW: 'p\\udce4ss' is not valid UTF-8 text \(undecodable byte 0xe4 at position 1\)$"):
        check_text("p\udce4ss", "env GW_PW")
    with pytest.raises(ConfigError, match=r"^--profile: 'a\\x00' contains a NUL byte \(position 1\)"):
        check_text("a\x00", "--profile")
    with pytest.raises(ConfigError, match=r"contains an escape character \(U\+001B\) at position 0"):
        check_text("\x1b[31m", "x", identifier=True)
    with pytest.raises(ConfigError, match=r"^--log_dir: 'logs\\n' contains a newline \(U\+000A\) at position 4$"):
        check_text("logs\n", "--log_dir", identifier=True)
    with pytest.raises(ConfigError, match="is not valid UTF-8"):
        check_text("x" * 1000 + "\udc80", "v")
    # a secret from the environment: neither the value nor the byte is shown
    with pytest.raises(ConfigError) as info:
        check_text("s3cr\udce4t", "variable 'pw' (environment variable GW_PW)", reveal=False)
    assert str(info.value) == ("variable 'pw' (environment variable GW_PW): the value is not valid UTF-8 text "
                               "(at position 4)")
