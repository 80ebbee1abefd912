"""An Ansible user's inventories, probed (December): what was wrong, each through the CLI.

* ``group_vars/`` and ``host_vars/`` next to the inventory file were ignored: a host whose
  ``ansible_user`` / ``ansible_port`` is in ``host_vars/web1.yml`` (Ansible's usual layout) was
  reached as another user on another port.  They are read now, with Ansible's precedence, and
  ``ansible-inventory --list`` is the oracle.
* ``-p 2222`` / ``-o User=root`` / ``-i key`` in ``ansible_ssh_common_args`` were dropped
  without a word (zdupgrade does not pass those args to ssh): refused, naming what to use.
* A UTF-8 byte-order mark made ``[web]`` a "host range [web]" error; an empty inventory was
  "nodes: expected a non-empty list of nodes, got a list"; a directory was "inventory file not
  found"; an INI host line ``[2001:db8::1]:2222`` was "invalid section".
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.badinput import PROFILE, config_error, dry_run, refused, write
from zdu.config.inventory import load_inventory, parse_ini
from zdu.status import Status

HOSTS = """\
w1 ansible_host=10.0.0.1 inline=from_inventory
[web]
w1
w2
[web:children]
api
[api]
a1
[all:vars]
k_all=inv_all
k_gv_all=inv_all
k_web=inv_all
[web:vars]
k_web=inv_web
k_web_vs_gv_all=inv_web
k_web_vs_gv_web=inv_web
[api:vars]
k_api=inv_api
"""


def _layout(root: Path) -> Path:
    """An inventory with group_vars/ (a file, a directory of two, an extension-less file) and
    host_vars/, each overriding something the inventory file says."""
    (root / "group_vars" / "web").mkdir(parents=True)
    (root / "host_vars").mkdir()
    write(root / "group_vars" / "all.yml", "k_gv_all: gv_all\nk_web_vs_gv_all: gv_all\n"
                                           "templated: \"{{ lookup('pipe', 'touch PWNED') }}\"\n")
    write(root / "group_vars" / "web" / "a.yml", "k_web_vs_gv_web: gv_web_a\nansible_user: deploy\n")
    write(root / "group_vars" / "web" / "b.yaml", "k_web_vs_gv_web: gv_web_b\n")
    write(root / "group_vars" / "web" / ".hidden.yml", "k_web_vs_gv_web: hidden\n")
    write(root / "group_vars" / "web" / "c.yml~", "k_web_vs_gv_web: backup\n")
    write(root / "group_vars" / "api", "k_api: gv_api\nk_web: gv_api\n")
    write(root / "host_vars" / "w1.yml", "inline: from_host_vars\nansible_port: 2200\n")
    return write(root / "hosts.ini", HOSTS)


def _refused(tmp_path: Path, inventory: Path, *needles: str) -> str:
    """The one error line of a dry run of ``inventory`` (exit 78, no traceback)."""
    return refused(dry_run(tmp_path, "--inventory", str(inventory), "--profile",
                           str(write(tmp_path / "p.yaml", PROFILE))), *needles)


def _ansible_hostvars(inventory: Path) -> dict[str, dict[str, object]]:
    exe = shutil.which("ansible-inventory")
    if exe is None:
        pytest.fail("ansible-inventory not found: pip install -e '.[test]' (ansible-core)")
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCAL_TEMP": "/tmp", "ANSIBLE_DEPRECATION_WARNINGS": "0"}
    out = subprocess.run([exe, "-i", str(inventory), "--list"], capture_output=True, text=True, env=env,
                         check=True, stdin=subprocess.DEVNULL, cwd=inventory.parent)
    hostvars: dict[str, dict[str, object]] = json.loads(out.stdout)["_meta"]["hostvars"]
    return hostvars


def test_group_vars_and_host_vars_are_read_as_ansible_reads_them(tmp_path: Path) -> None:
    inv = load_inventory(_layout(tmp_path))
    expected = _ansible_hostvars(tmp_path / "hosts.ini")
    for host in inv.hosts:
        assert dict(inv.host_vars[host]) == expected[host], host
    nodes = {n["name"]: n for n in inv.nodes}
    assert (nodes["w1"]["host"], nodes["w1"]["port"], nodes["w1"]["user"]) == ("10.0.0.1", 2200, "deploy")
    assert nodes["a1"]["vars"]["k_web"] == "gv_api" and nodes["w2"]["vars"]["k_web"] == "inv_web"
    # a template is text: it reaches commands quoted, never evaluated
    assert nodes["w2"]["vars"]["templated"] == "{{ lookup('pipe', 'touch PWNED') }}"


def test_the_cli_connects_as_host_vars_says(tmp_path: Path) -> None:
    _layout(tmp_path)
    status, out, err = dry_run(tmp_path, "--inventory", str(tmp_path / "hosts.ini"), "--profile",
                               str(write(tmp_path / "p.yaml", PROFILE)), "--limit", "web:!api")
    assert status is Status.SUCCESS, (status, err)
    assert "w1 (deploy@10.0.0.1:2200)" in out and "w2 (deploy@w2:22)" in out, out
    assert not (tmp_path / "PWNED").exists()


def test_mappings_in_group_vars_are_left_out_not_refused(tmp_path: Path) -> None:
    (tmp_path / "group_vars").mkdir()
    write(tmp_path / "group_vars" / "all.yml", "nginx: {port: 80}\nmaps: [{a: 1}]\nplain: 1\n")
    inv = load_inventory(write(tmp_path / "hosts", "[web]\nw1\n"))
    assert inv.nodes[0]["vars"] == {"plain": 1}


@pytest.mark.parametrize("path, text, needle", [
    ("group_vars/all/vault.yml", "$ANSIBLE_VAULT;1.1;AES256\n6231336539666234\n",
     "group_vars/all/vault.yml: the file is encrypted with ansible-vault, which zdupgrade cannot read"),
    ("group_vars/all.yml", "a: 1\npw: !vault |\n  $ANSIBLE_VAULT;1.1;AES256\n  6231\n",
     "group_vars/all.yml: line 2: a !vault value: zdupgrade cannot read vault-encrypted values"),
    ("group_vars/web.yml", "- a\n- b\n", "group_vars/web.yml: expected a mapping of variables, got a list"),
    ("group_vars/all.yml", "cmd: !unsafe '{{ x }}'\n", "group_vars/all.yml: line 1: a !unsafe value"),
    ("host_vars/w1.yaml", "a: [\n", "host_vars/w1.yaml: YAML syntax error"),
    ("host_vars/w1", "\udcff\udcfe", "host_vars/w1: host_vars file is not valid UTF-8"),
    ("host_vars/w1.yml", '"bad key": 1\n', "host_vars/w1.yml: invalid variable name 'bad key'"),
    ("host_vars/w1.yml", "ansible_host: \"{{ lookup('pipe','id') }}\"\n",
     "host w1: ansible_host: templated values are not supported here"),
    ("host_vars/w1.yml", "ansible_user: {a: 1}\n", "host w1: ansible_user: expected a non-empty string"),
])
def test_bad_vars_files_are_one_error_naming_the_file(tmp_path: Path, path: str, text: str, needle: str) -> None:
    target = tmp_path / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8", errors="surrogateescape")
    inv = write(tmp_path / "hosts.ini", "[web]\nw1\n")
    _refused(tmp_path, inv, needle)


def test_a_group_vars_symlink_loop_is_bounded(tmp_path: Path) -> None:
    (tmp_path / "group_vars" / "all").mkdir(parents=True)
    (tmp_path / "group_vars" / "all" / "loop").symlink_to("..")
    message = config_error(load_inventory, write(tmp_path / "hosts.ini", "[web]\nw1\n"))
    assert "group_vars directories are nested more than 8 deep" in message


@pytest.mark.parametrize("args, needle", [
    ("-p 2222", "ansible_ssh_common_args: -p is not supported here"),
    ("-o User=root", "-o User is not supported here"),
    ("-oPort=2200", "-o Port is not supported here"),
    ("-o 'HostName 10.9.9.9'", "-o HostName is not supported here"),
    ("-i ~/.ssh/other", "-i is not supported here"),
    ("-l root", "use ansible_user"),
])
def test_ssh_args_that_say_where_to_connect_are_refused(tmp_path: Path, args: str, needle: str) -> None:
    inv = write(tmp_path / "inv.ini", f"[web]\nw1 ansible_ssh_common_args=\"{args}\"\n")
    _refused(tmp_path, inv, f"{inv}: host w1: ", needle)


def test_harmless_ssh_args_still_load(tmp_path: Path) -> None:
    inv = write(tmp_path / "inv.ini", "[web]\nw1 ansible_ssh_common_args='-C -o StrictHostKeyChecking=no "
                                      "-o ControlMaster=auto -o ControlPersist=60s'\n")
    assert load_inventory(inv).nodes[0]["name"] == "w1"


def test_a_byte_order_mark_and_crlf(tmp_path: Path) -> None:
    inv = tmp_path / "inv.ini"
    inv.write_bytes(b"\xef\xbb\xbf[web]\r\nweb1 ansible_host=10.0.0.1\r\n[web:vars]\r\nx=1\r\n")
    loaded = load_inventory(inv)
    assert loaded.nodes[0]["host"] == "10.0.0.1" and loaded.nodes[0]["group"] == "web"
    status, out, err = dry_run(tmp_path, "--inventory", str(inv), "--profile", str(write(tmp_path / "p.yaml", PROFILE)))
    assert status is Status.SUCCESS, err


@pytest.mark.parametrize("name, text", [("inv.ini", ""), ("inv.ini", "# nothing\n[web]\n[web:children]\n"),
                                        ("inv.yml", "all:\n  children:\n    web:\n")])
def test_an_inventory_without_hosts(tmp_path: Path, name: str, text: str) -> None:
    inv = write(tmp_path / name, text)
    _refused(tmp_path, inv, f"{inv}: the inventory defines no hosts")


@pytest.mark.parametrize("name", ["inventory", "inventory.yml"])
def test_a_directory_as_inventory(tmp_path: Path, name: str) -> None:
    (tmp_path / name).mkdir()
    _refused(tmp_path, tmp_path / name, f"{tmp_path / name}: is a directory: give one inventory file")


def test_an_ipv6_host_with_a_port_is_a_host_line_as_in_ansible(tmp_path: Path) -> None:
    inv = load_inventory(write(tmp_path / "inv.ini", "[web]\n[2001:db8::1]:2222 x=1\n2001:db8::2\n"))
    assert [(n["host"], n.get("port")) for n in inv.nodes] == [("2001:db8::1", 2222), ("2001:db8::2", None)]
    assert inv.groups["web"] == ("2001:db8::1", "2001:db8::2")


def test_a_group_of_30000_child_groups_loads_in_linear_time() -> None:
    """``[top:children]`` naming 30,000 groups: each link was checked with ``in list`` (20,000
    took 7 s of CPU in add_child alone); now a set.  CPU time, so a loaded machine does not
    fail it."""
    text = "".join(f"[g{i}]\nh{i}\n" for i in range(30000)) + "[top:children]\n" + \
        "".join(f"g{i}\n" for i in range(30000))
    started = time.process_time()
    inventory = parse_ini(text, "inv.ini")
    assert time.process_time() - started < 6.0
    assert len(inventory.groups["top"]) == 30000 and inventory.children["top"][-1] == "g29999"


@pytest.mark.parametrize("name, text, needle", [
    ("inv.ini", "[web]\nw1\nw[3:1]\n", "line 3: host range '[3:1]': begin must not be after end"),
    ("inv.yml", "web:\n  hosts:\n    w1:\n    \"w[10:2]\":\n", "group web: hosts: host range '[10:2]': begin must not"),
])
def test_a_reversed_range_is_an_error_not_no_hosts(tmp_path: Path, name: str, text: str, needle: str) -> None:
    """Ansible makes no host of ``w[3:1]`` and says nothing: the hosts a typo dropped would not be upgraded."""
    inv = write(tmp_path / name, text)
    _refused(tmp_path, inv, f"{inv}: {needle}")


@pytest.mark.parametrize("name, text, needle", [
    ("hosts", "all:\n  hosts:\n    a:\n", "line 1: host 'all:' ends in ':' (reserved for a port) -- this looks like YAML"),
    ("hosts.ini", "---\nweb:\n  hosts:\n", "line 1: invalid host '---' -- this looks like YAML"),
    ("hosts.yml", "[web]\nw1\nw2\n", "YAML syntax error at line 2, column 1: expected '<document start>', "
                                     "but found '<scalar>' -- this looks like an INI inventory"),
    ("hosts.yaml", "# a comment\n[web]\n", "expected a mapping of groups (all: {hosts: ..., children: ...}) -- "
                                          "this looks like an INI inventory"),
])
def test_an_inventory_in_the_other_format_says_so(tmp_path: Path, name: str, text: str, needle: str) -> None:
    """The format is taken from the file name, as Ansible's plugins do; a mix-up was only a
    puzzling parse error."""
    inv = write(tmp_path / name, text)
    _refused(tmp_path, inv, f"{inv}: ", needle)


def test_a_port_colon_in_a_section_gets_no_yaml_hint(tmp_path: Path) -> None:
    message = config_error(load_inventory, write(tmp_path / "inv.ini", "[web]\nw1:\n"))
    assert message.endswith("line 2: host 'w1:' ends in ':' (reserved for a port)"), message


@pytest.mark.parametrize("name, text, needle", [
    ("inv.ini", "[web]\nw1 x=" + "a" * 2_000_000 + "\n", "line 2: the host line is longer than 100,000 characters"),
    ("inv.yml", "web:\n  hosts:\n    w1:\n      ansible_ssh_common_args: \"-o ProxyJump=" + "a" * 2_000_000 + "\"\n",
     "host w1: ansible_ssh_common_args: longer than 10,000 characters"),
])
def test_a_huge_host_line_or_ssh_args_is_refused_at_once(tmp_path: Path, name: str, text: str, needle: str) -> None:
    """shlex's cost grows with the square of a word: a 9 MB host line had not loaded after 12
    minutes (2 MB: about a minute)."""
    inv = write(tmp_path / name, text)
    started = time.process_time()
    message = config_error(load_inventory, inv)
    assert time.process_time() - started < 3.0
    assert needle in message, message


def test_a_chain_of_20000_child_groups_is_bounded() -> None:
    """Each group holds its children's hosts, so a chain of children is quadratic: 20,000 deep had
    not loaded after 5 minutes (and held 200 million memberships).  Now one error, in seconds."""
    text = "".join(f"[g{i}]\nh{i}\n[g{i}:children]\ng{i + 1}\n" for i in range(20000)) + "[g20000]\nlast\n"
    started = time.process_time()
    message = config_error(parse_ini, text, "inv.ini")
    assert time.process_time() - started < 20.0
    assert message.startswith("inv.ini: the groups hold more than 5,000,000 hosts in all (a group holds its "
                              "children's hosts: group 'g"), message


@pytest.mark.parametrize("tag, value, needle", [
    ("!vault", "|\n        $ANSIBLE_VAULT;1.1;AES256\n        6231", "a !vault value: zdupgrade cannot read vault-encrypted"),
    ("!unsafe", "'{{ x }}'", "a !unsafe value: Ansible's YAML tags are not read by zdupgrade"),
])
def test_ansibles_yaml_tags_in_an_inventory_are_named(tmp_path: Path, tag: str, value: str, needle: str) -> None:
    """Was "YAML syntax error ...: could not determine a constructor for the tag '!vault'"
    (group_vars files: test_bad_vars_files_are_one_error_naming_the_file)."""
    inv = write(tmp_path / "inv.yml", f"web:\n  hosts:\n    w1:\n      v: {tag} {value}\n")
    _refused(tmp_path, inv, f"{inv}: line 4: {needle}")


@pytest.mark.parametrize("command, jump", [
    ("ssh -o StrictHostKeyChecking=no -W %h:%p -q bastion", ["bastion"]),
    ("ssh -oUserKnownHostsFile=/dev/null -o Port=2200 -o User=ops -W %h:%p bastion", ["ops@bastion:2200"]),
    ("ssh -o ServerAliveInterval=30 -o ControlMaster=no -W %h:%p ops@bastion", ["ops@bastion"]),
])
def test_a_proxy_command_with_harmless_ssh_options(tmp_path: Path, command: str, jump: list[str]) -> None:
    """``ProxyCommand="ssh -o StrictHostKeyChecking=no -W %h:%p bastion"`` (a common Ansible
    setup) was refused as unsupported; options that do not change the jump host or its user are
    ignored (the jump host's key is checked with zdupgrade's own policy), Port and User are taken."""
    inv = write(tmp_path / "inv.ini", f"[web]\nw1 ansible_ssh_common_args='-o ProxyCommand=\"{command}\"'\n")
    assert load_inventory(inv).nodes[0]["proxy_jump"] == jump


@pytest.mark.parametrize("option", ["-o ProxyCommand=evil", "-o IdentityFile=/k", "-o Hostname=other", "-F /cfg"])
def test_a_proxy_command_with_other_options_is_still_refused(tmp_path: Path, option: str) -> None:
    inv = write(tmp_path / "inv.ini",
                f"[web]\nw1 ansible_ssh_common_args='-o ProxyCommand=\"ssh {option} -W %h:%p bastion\"'\n")
    _refused(tmp_path, inv, f"{inv}: host w1: ansible_ssh_common_args: ProxyCommand ", "is not supported")


def test_a_group_vars_tree_of_too_many_directories_is_bounded(tmp_path: Path) -> None:
    for i in range(1001):
        (tmp_path / "group_vars" / "all" / f"d{i}").mkdir(parents=True)
    message = config_error(load_inventory, write(tmp_path / "hosts.ini", "[web]\nw1\n"))
    assert message.endswith(": more than 1000 group_vars directories"), message
