"""ssh_config resolution: precedence, patterns, Include, ProxyJump chains, errors (no network)."""
from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from zdu.config.ssh_config import (JumpSyntaxError, ResolvedTarget, check, check_all,
                                   load_config, parse_jump, parse_jumps, resolve, resolve_all)
from zdu.errors import ConfigError
from zdu.model import Node, SshSettings

UNSET_NODE = frozenset({"port", "user"})
UNSET_SSH = frozenset({"user", "connect_timeout"})


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    return home


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def key(home: Path, name: str) -> str:
    return str(write(home / ".ssh" / name, "not really a key\n"))


def settings(config: Path | None, **kw: Any) -> SshSettings:
    kw.setdefault("defaulted", UNSET_SSH)
    return SshSettings(config_file=str(config) if config else None, **kw)


def gw(name: str = "gw1", **kw: Any) -> Node:
    kw.setdefault("defaulted", UNSET_NODE)
    return Node(name=name, host=kw.pop("host", name), **kw)


# --------------------------------------------------------------------------- precedence

def test_ssh_config_fills_what_the_topology_does_not_say(home: Path) -> None:
    k1, k2 = key(home, "k1"), key(home, "k2")
    cfg = write(home / "cfg", f"""
Host gw1
    HostName 10.1.0.1
    Port 2222
    User admin
    IdentityFile {k1}
    IdentityFile ~/.ssh/k2
    IdentityFile ~/.ssh/missing
    ConnectTimeout 7
""")
    t = resolve(gw(), settings(cfg))
    assert (t.address, t.port, t.user, t.key_files, t.connect_timeout) == (
        "10.1.0.1", 2222, "admin", (k1, k2), 7.0)
    assert t.agent and not t.default_keys and t.jumps == ()
    assert dict(t.sources) == {"address": "ssh_config", "port": "ssh_config", "user": "ssh_config",
                               "key_files": "ssh_config", "agent": "default",
                               "connect_timeout": "ssh_config", "jumps": "default"}
    assert t.notes == (f"node gw1: ssh_config IdentityFile {home}/.ssh/missing does not exist (skipped)",)
    assert t.config_files == (str(cfg),)


def test_what_the_topology_says_wins(home: Path) -> None:
    cfg = write(home / "cfg", "Host gw1\n HostName 10.1.0.1\n Port 2222\n User admin\n"
                              " IdentityFile ~/.ssh/k1\n ConnectTimeout 7\n ProxyJump bastion\n")
    key(home, "k1")
    node_key = key(home, "node_key")
    t = resolve(gw(port=22, user="deploy", key_file=node_key, proxy_jump=(), defaulted=frozenset()),
                settings(cfg, connect_timeout=3.0, defaulted=frozenset()))
    assert (t.address, t.port, t.user, t.key_files, t.connect_timeout, t.jumps) == (
        "10.1.0.1", 22, "deploy", (node_key,), 3.0, ())
    assert not t.agent                          # a key file from the topology: no agent
    assert [t.sources[k] for k in ("port", "user", "key_files", "jumps")] == ["node"] * 4
    # ssh: level values beat ssh_config too, and lose to the node's
    ssh = settings(cfg, user="ops", key_file=node_key, proxy_jump=("other",),
                   defaulted=frozenset({"connect_timeout"}))
    t = resolve(gw(), ssh)
    assert (t.user, t.sources["user"], t.sources["key_files"]) == ("ops", "ssh", "ssh")
    assert [j.name for j in t.jumps] == ["other"] and t.sources["jumps"] == "ssh"
    assert resolve(gw(user="me", proxy_jump=("b2",)), ssh).jumps[0].name == "b2"


def test_defaults_without_any_ssh_config(home: Path) -> None:
    t = resolve(Node("n", "10.0.0.9"), SshSettings(config_file=None))
    assert (t.address, t.port, t.user, t.key_files, t.agent, t.default_keys) == (
        "10.0.0.9", 22, "root", (), True, True)
    assert t.config_files == ()


def test_agent_setting(home: Path) -> None:
    k = key(home, "k")
    cfg = write(home / "cfg", f"Host only\n IdentityFile {k}\n IdentitiesOnly yes\n")
    assert resolve(gw(key_file=k), settings(None, agent=True)).agent is True
    assert resolve(gw(), settings(None, agent=False)).agent is False
    assert resolve(gw("only"), settings(cfg)).agent is False        # IdentitiesOnly yes


# --------------------------------------------------------------------------- patterns

def test_host_patterns_negation_and_first_value_wins(home: Path) -> None:
    cfg = write(home / "cfg", """
Host web* !web-legacy
    User webadmin
Host web1 db?
    Port 2201
Host *
    User everyone
    Port 22
""")
    s = settings(cfg)
    assert (resolve(gw("web1"), s).user, resolve(gw("web1"), s).port) == ("webadmin", 2201)
    assert resolve(gw("web-legacy"), s).user == "everyone"
    assert (resolve(gw("db7"), s).user, resolve(gw("db7"), s).port) == ("everyone", 2201)
    assert resolve(gw("Web1"), s).user == "everyone"           # case-sensitive, as in OpenSSH


def test_hostname_tokens_and_match(home: Path) -> None:
    cfg = write(home / "cfg", """
Match originalhost gw-* user root
    HostName %h.internal.example
Host gw-*
    User nobody
""")
    t = resolve(gw("gw-7"), settings(cfg))
    assert t.address == "gw-7.internal.example" and t.user == "nobody"


def test_match_exec_is_never_run(home: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    cfg = write(home / "cfg", f'Match host gw1 exec "touch {marker}"\n    User fromexec\n')
    t = resolve(gw(), settings(cfg))
    assert not marker.exists() and t.user == "root"
    assert t.notes == ("ssh_config 'Match exec' is not evaluated by zdupgrade: that block was ignored",)
    assert resolve(gw("other"), settings(cfg)).notes == ()      # block not applicable: no note


def test_include_top_level_and_inside_a_host_block(home: Path) -> None:
    write(home / ".ssh" / "conf.d" / "10-web.conf", "Host web1\n    User webby\n")
    write(home / ".ssh" / "conf.d" / "20-any.conf", "Port 2022\nHost *\n    ForwardAgent no\n")
    write(home / ".ssh" / "only-db.conf", "User dbadmin\nHost *\n    Port 5432\n")
    cfg = write(home / ".ssh" / "config", """
Include conf.d/*.conf
Host db1
    Include ~/.ssh/only-db.conf
    HostName 10.9.9.9
Host web1
    HostName 10.8.8.8
""")
    s = SshSettings(config_file="~/.ssh/config", defaulted=UNSET_SSH)   # the default: + system file
    web, db, other = (resolve(gw(h), s) for h in ("web1", "db1", "other"))
    assert (web.user, web.port, web.address) == ("webby", 2022, "10.8.8.8")
    # lines of an Include inside 'Host db1' apply to db1 only; the block goes on after it
    assert (db.user, db.port, db.address) == ("dbadmin", 2022, "10.9.9.9")
    assert (other.user, other.port, other.address) == ("root", 2022, "other")
    assert str(cfg) in web.config_files and any("20-any.conf" in f for f in web.config_files)


def test_include_inside_an_unmatched_block_does_not_leak(home: Path) -> None:
    write(home / ".ssh" / "inc", "Host *\n    User leaked\n")
    cfg = write(home / ".ssh" / "cfg", "Host db1\n    Include inc\nHost *\n    User fine\n")
    assert resolve(gw("web"), settings(cfg)).user == "fine"
    assert resolve(gw("db1"), settings(cfg)).user == "leaked"


# --------------------------------------------------------------------------- jumps

def test_proxy_jump_chains(home: Path) -> None:
    cfg = write(home / "cfg", """
Host gw1
    ProxyJump ops@outer:2200,inner
Host outer
    HostName 192.0.2.10
    User ignored-because-spec-says-ops
    ProxyJump front
Host inner
    HostName 10.0.0.2
    Port 2022
    ProxyJump should-be-ignored
Host front
    HostName 192.0.2.1
    ProxyJump none
Host direct
    ProxyJump none
Host *
    ProxyJump catchall
""")
    s = settings(cfg)
    t = resolve(gw(), s)
    assert [(j.name, j.user, j.address, j.port) for j in t.jumps] == [
        ("front", "root", "192.0.2.1", 22),           # the first hop's own ProxyJump first
        ("outer", "ops", "192.0.2.10", 2200),
        ("inner", "root", "10.0.0.2", 2022)]
    assert t.jumps[1].sources["user"] == "proxy_jump" and t.jumps[1].sources["port"] == "proxy_jump"
    assert resolve(gw("direct"), s).jumps == ()
    assert [j.name for j in resolve(gw("x"), s).jumps] == ["catchall"]
    assert resolve(gw("catchall"), s).jumps == ()       # Host * matched itself: no self-jump
    assert "via root@192.0.2.1:22 (front) -> ops@192.0.2.10:2200 (outer)" in t.describe()


def test_proxy_jump_loop_is_an_error(home: Path) -> None:
    cfg = write(home / "cfg", "Host gw1\n ProxyJump a\nHost a\n ProxyJump b\nHost b\n ProxyJump a\n")
    with pytest.raises(ConfigError, match=r"node gw1: jump host 'a' loops back \(ProxyJump chain gw1 -> a -> b -> a\)"):
        resolve(gw(), settings(cfg))


def test_proxy_command_is_refused_unless_the_topology_jumps(home: Path) -> None:
    cfg = write(home / "cfg", "Host gw1\n ProxyCommand nc -X connect %h %p\n")
    with pytest.raises(ConfigError, match="ProxyCommand for 'gw1'.*use ProxyJump"):
        resolve(gw(), settings(cfg))
    assert [j.name for j in resolve(gw(proxy_jump=("b",)), settings(cfg)).jumps] == ["b"]


def test_jump_host_keys_and_keys(home: Path) -> None:
    k = key(home, "bastion_key")
    fleet_key = key(home, "fleet")
    cfg = write(home / "cfg", f"Host bastion\n HostName 10.0.0.1\n IdentityFile {k}\n")
    pin = "SHA256:" + "x" * 43
    s = settings(cfg, key_file=fleet_key, proxy_jump=("bastion", "10.0.0.2:2200"),
                 jump_host_keys={"bastion": pin, "10.0.0.2:2200": pin[:-1] + "y"})
    first, second = resolve(gw(), s).jumps
    assert (first.host_key, first.key_files, first.agent) == (pin, (k,), True)
    assert (second.host_key, second.key_files, second.agent) == (pin[:-1] + "y", (fleet_key,), False)


@pytest.mark.parametrize("text, expected", [
    ("bastion", ("bastion", None, None)),
    ("ops@bastion.example.com:2200", ("bastion.example.com", "ops", 2200)),
    ("ssh://ops@10.0.0.1:22", ("10.0.0.1", "ops", 22)),
    ("[fd00::1]:2222", ("fd00::1", None, 2222)),
    ("fd00::1", ("fd00::1", None, None)),
])
def test_parse_jump(text: str, expected: tuple[Any, ...]) -> None:
    spec = parse_jump(text)
    assert (spec.host, spec.user, spec.port) == expected


@pytest.mark.parametrize("text, message", [
    ("", "non-empty"), ("a b", "invalid host"), ("ops@host:99999", "invalid port"),
    ("bad user@host", "invalid user"), ("host;rm -rf /", "invalid host"), ("[::1", "unclosed"),
])
def test_parse_jump_errors(text: str, message: str) -> None:
    with pytest.raises(JumpSyntaxError, match=message):
        parse_jump(text)


def test_parse_jumps() -> None:
    assert parse_jumps("none") == () and parse_jumps("NONE") == ()
    assert parse_jumps("a, ops@b:2") == ("a", "ops@b:2")
    assert parse_jumps(["a", "b"]) == ("a", "b")
    for bad in ([], 5, ["a", 7], {"a": 1}, ",".join(["h"] * 9)):
        with pytest.raises(JumpSyntaxError):
            parse_jumps(bad)


# --------------------------------------------------------------------------- config errors

def test_bad_config_lines_name_file_and_line(home: Path) -> None:
    cfg = write(home / "cfg", "Host a\n    User x\n  =broken\n")
    with pytest.raises(ConfigError, match=rf"^{cfg}:3: cannot parse ssh_config line '=broken'$"):
        load_config(str(cfg))
    bad_port = write(home / "cfg2", "Host a\n Port http\n")
    with pytest.raises(ConfigError, match="gives Port 'http', which is not a port number"):
        resolve(gw("a"), settings(bad_port))
    bad_timeout = write(home / "cfg3", "Host a\n ConnectTimeout soon\n")
    with pytest.raises(ConfigError, match="ConnectTimeout 'soon'"):
        resolve(gw("a"), settings(bad_timeout))
    bad_jump = write(home / "cfg4", "Host a\n ProxyJump 'b c'\n")
    with pytest.raises(ConfigError, match="node a: ssh_config .* ProxyJump: invalid host"):
        resolve(gw("a"), settings(bad_jump))


@pytest.mark.parametrize("line, what", [
    ("HostName \"bad host;id\"", "HostName 'bad host;id'"),
    ("HostName 127.0.0.1\x1b]0;title\x07", "HostName '127.0.0.1\\\\x1b]0;title\\\\x07'"),
    ("HostName -oProxyCommand=x", "HostName '-oProxyCommand=x'"),
    ("User -oProxyCommand=x", "User '-oProxyCommand=x'"),
    ("User \"ops admin\"", "User 'ops admin'"),
    ("User ops\x1b[2J", "User 'ops\\\\x1b\\[2J'"),
])
def test_hostname_and_user_from_ssh_config_are_checked_like_the_topologys(
        home: Path, line: str, what: str) -> None:
    # they reach the socket, known_hosts and every message; the topology refuses the same values
    for where, text in (("node a", f"Host a\n {line}\n"),
                        ("node a: jump host j", f"Host a\n ProxyJump j\nHost j\n {line}\n")):
        cfg = write(home / "cfg", text)
        with pytest.raises(ConfigError, match=rf"^{where}: ssh_config \({cfg}\) gives {what}"):
            resolve(gw("a"), settings(cfg))


def test_good_hostname_and_user_from_ssh_config_are_taken(home: Path) -> None:
    cfg = write(home / "cfg", "Host a\n HostName gw_1.example.com\n User svc.deploy@corp\n")
    target = resolve(gw("a"), settings(cfg))
    assert (target.address, target.user) == ("gw_1.example.com", "svc.deploy@corp")


def test_named_config_file_must_exist_default_need_not(home: Path) -> None:
    with pytest.raises(ConfigError, match="ssh.config_file: .*/nope: no such file"):
        load_config(str(home / "nope"))
    files = load_config("~/.ssh/config")          # ~/.ssh/config absent: only the system file
    assert files is not None and str(home) not in " ".join(files.files)
    assert load_config(None) is None


def test_config_cache_sees_edits(home: Path) -> None:
    cfg = write(home / "cfg", "Host a\n User one\n")
    assert resolve(gw("a"), settings(cfg)).user == "one"
    cfg.write_text("Host a\n User two-changed\n")
    assert resolve(gw("a"), settings(cfg)).user == "two-changed"


# --------------------------------------------------------------------------- output, DNS check

def test_describe_and_to_dict(home: Path) -> None:
    cfg = write(home / "cfg", "Host gw1\n HostName 10.1.0.1\n User admin\n ProxyJump b@10.0.0.1\n")
    t = resolve(gw(host_key="SHA256:" + "k" * 43), settings(cfg))
    assert t.describe() == (f"gw1: admin@10.1.0.1:22, default keys + agent, via b@10.0.0.1:22, "
                            f"host key pinned SHA256:{'k' * 43} [ssh_config: address, user, jumps]")
    data = json.loads(json.dumps(t.to_dict()))
    assert data["address"] == "10.1.0.1" and data["jumps"][0]["user"] == "b"
    assert data["sources"]["user"] == "ssh_config" and data["config_files"] == [str(cfg)]
    assert ResolvedTarget("n", "h", "fd00::1", 22, "u").endpoint == "[fd00::1]:22"


def _resolver(known: set[str]) -> Any:
    asked: list[str] = []

    def resolver(host: str, port: int, **kw: Any) -> Any:
        asked.append(host)
        if host not in known:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.1", port))]
    resolver.asked = asked  # type: ignore[attr-defined]
    return resolver


def test_check_names_node_alias_and_config(home: Path) -> None:
    cfg = write(home / "cfg", "Host gw1\n HostName gw1.corp.example\nHost behind\n ProxyJump jb\n")
    s = settings(cfg)
    r = _resolver({"gw2.example"})
    with pytest.raises(ConfigError) as info:
        check(resolve(gw(), s), resolver=r)
    assert str(info.value) == (f"node gw1: host 'gw1' is HostName 'gw1.corp.example' in ssh_config "
                               f"({cfg}), which does not resolve (Name or service not known)")
    with pytest.raises(ConfigError, match=r"^node gw-x: cannot resolve host 'gw-typo': it is not a Host alias"):
        check(resolve(gw("gw-x", host="gw-typo"), s), resolver=r)
    # behind a jump host only the jump host is looked up here
    with pytest.raises(ConfigError, match="node behind: cannot resolve its jump host 'jb'"):
        check(resolve(gw("behind"), s), resolver=r)
    check(resolve(gw("ok", host="gw2.example"), s), resolver=r)
    check(resolve(gw("ip", host="192.0.2.7"), s), resolver=r)           # an IP: no lookup
    assert "192.0.2.7" not in r.asked and "behind" not in r.asked


def test_check_all_and_resolve_all(home: Path) -> None:
    nodes = [gw("a", host="192.0.2.1"), gw("b", host="nowhere"),
             Node("local", "localhost", transport="local"), gw("c", host="nowhere2")]
    targets = resolve_all(nodes, settings(None))
    assert list(targets) == ["a", "b", "c"]
    problems = check_all(targets.values(), resolver=_resolver(set()))
    assert [str(p).split(":")[0] for p in problems] == ["node b", "node c"]


# --------------------------------------------------------------------------- against OpenSSH

ORACLE_CONFIG = """
Host web* !web-legacy
    User webadmin
Host web1 db?
    Port 2201
Host db1
    Include {inc}
    HostName 10.9.9.9
Match originalhost gw-* user root
    HostName %h.internal.example
Host gw-*
    User nobody
    ProxyJump ops@b1:2200,b2
Host legacy*
    ConnectTimeout 13
    ProxyJump none
Host *
    User everyone
    Port 22
    ProxyJump catch
"""


@pytest.mark.parametrize("host", ["web1", "web-legacy", "web7", "db1", "db2", "gw-3", "legacy1",
                                  "other", "WEB1"])
def test_same_answers_as_ssh_dash_G(host: str, tmp_path: Path) -> None:
    """``ssh -G`` prints what OpenSSH resolved, without connecting: the oracle."""
    import shutil
    import subprocess
    if shutil.which("ssh") is None:
        pytest.fail("the OpenSSH client is needed (apt-get install openssh-client)")
    inc = write(tmp_path / "inc.conf", "User dbadmin\nHost *\n    Port 5432\n")
    cfg = write(tmp_path / "cfg", ORACLE_CONFIG.format(inc=inc))
    out = subprocess.run(["ssh", "-G", "-F", str(cfg), host], capture_output=True, text=True,
                         check=True, stdin=subprocess.DEVNULL).stdout
    ssh = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
    t = resolve(gw(host), settings(cfg))
    options, _ = load_config(str(cfg)).lookup(host)  # type: ignore[union-attr]
    assert t.address == ssh["hostname"] or (t.address == host and ssh["hostname"] == host.lower())
    assert (t.port, t.user) == (int(ssh["port"]), ssh["user"])
    assert options.get("proxyjump", "none") == ssh.get("proxyjump", "none")
    assert str(int(t.connect_timeout)) == ssh.get("connecttimeout", "10").replace("none", "10")


# --------------------------------------------------------------------------- files that set nothing read

STOCK_DEBIAN = """Include /nonexistent/ssh_config.d/*.conf
Host *
    SendEnv LANG LC_*
    HashKnownHosts yes
    GSSAPIAuthentication yes
    UserKnownHostsFile ~/.ssh/known_hosts2
    PortForwarding=no
"""


def test_a_config_that_sets_nothing_resolution_reads_is_not_handed_to_paramiko(home: Path) -> None:
    cfg = write(home / "cfg", STOCK_DEBIAN)
    files = load_config(str(cfg))
    assert files is not None and files.files == (str(cfg),) and files._config is None
    t = resolve(gw(host="10.1.0.9"), settings(cfg))
    assert (t.address, t.port, t.user, t.key_files, t.agent, t.connect_timeout, t.jumps) == (
        "10.1.0.9", 22, "root", (), True, 10.0, ())
    assert t.config_files == (str(cfg),) and t.notes == ()
    # one option resolution reads (even in a block for another host) and paramiko parses the files
    for extra in ("Host other\n    User someone\n", "Port=2200\n", "Match host x exec true\n    ForwardX11 no\n",
                  "CanonicalizeHostname yes\n"):
        write(cfg, STOCK_DEBIAN + extra)
        assert load_config(str(cfg))._config is not None, extra
    write(cfg, STOCK_DEBIAN + "Host gw1\n    Port=2200\n")
    assert resolve(gw(), settings(cfg)).port == 2200


def test_a_dry_run_with_such_a_config_imports_no_ssh_library(home: Path, tmp_path: Path) -> None:
    """The whole ``--dry-run`` (topology, plan, the hook, how each node is reached), as a process;
    the same file with one HostName added is read through paramiko, and the dry run shows it."""
    import subprocess
    import sys
    cfg = write(home / "cfg", STOCK_DEBIAN)
    topology = write(tmp_path / "topology.yaml",
                     f"profile: lab-gateway\nssh: {{user: root, config_file: {json.dumps(str(cfg))}}}\n"
                     "load_balancer: {type: none}\n"
                     "nodes:\n  - {name: a, host: 10.0.0.1}\n  - {name: b, host: 10.0.0.2}\n")
    code = ("import sys\n"
            "from zdu.cli.main import main\n"
            f"status = main(['--dry-run', '--config', {str(topology)!r}, '--old_install_dir', '/opt/gateway-1.0',"
            " '--new_install_dir', '/opt/gateway-2.0'])\n"
            "print('status', int(status))\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'paramiko', 'fabric', 'invoke'}))\n")

    def dry_run() -> list[str]:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             cwd=Path(__file__).resolve().parents[2])
        return out.stdout.strip().splitlines()
    lines = dry_run()
    assert "  a: root@10.0.0.1:22, default keys + agent" in lines, lines      # the name once
    assert lines[-2:] == ["status 0", "[]"], lines
    write(cfg, STOCK_DEBIAN + "Host 10.0.0.1\n    HostName 10.9.9.9\n")
    lines = dry_run()
    assert any(line.startswith("  a: root@10.9.9.9:22") for line in lines), lines
    assert lines[-2] == "status 0" and "'paramiko'" in lines[-1], lines


def test_identityfile_none_means_no_key_file_without_a_note(home: Path) -> None:
    cfg = write(home / "cfg", "Host a\n IdentityFile none\n")
    target = resolve(gw("a"), settings(cfg))
    assert target.key_files == () and not target.default_keys and target.notes == ()
    assert "no key file" in target.describe()


def test_a_proxyjump_naming_the_node_itself_is_ignored_with_a_note(home: Path) -> None:
    cfg = write(home / "cfg", "Host a\n ProxyJump a\n")
    target = resolve(gw("a"), settings(cfg))
    assert target.jumps == ()
    assert target.notes == ("node a: ssh_config ProxyJump for 'a' names 'a' itself: ignored (reached directly)",)
