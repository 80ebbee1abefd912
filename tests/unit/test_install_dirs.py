"""--old_install_dir / --new_install_dir: two separate, unambiguous directories, or one clear error."""
from __future__ import annotations

import os

import pytest

from zdu.config.install_dirs import validate_install_dir, validate_install_dirs
from zdu.errors import ConfigError


@pytest.mark.parametrize("old,new,expected", [
    ("/opt/app", "/opt/app2", ("/opt/app", "/opt/app2")),
    ("/opt/app/", "/opt/new///", ("/opt/app", "/opt/new")),
    ("/opt/gw 7.5", "/opt/gw 7.7", ("/opt/gw 7.5", "/opt/gw 7.7")),
    ("/opt/app-1.0", "/opt/app", ("/opt/app-1.0", "/opt/app")),
    ("/opt/ünï", "/opt/日本", ("/opt/ünï", "/opt/日本")),
    ("/a", "/b", ("/a", "/b")),
    ("/opt/.app", "/opt/..app", ("/opt/.app", "/opt/..app")),
])
def test_good_pairs_are_normalised(old: str, new: str, expected: tuple[str, str]) -> None:
    assert validate_install_dirs(old, new) == expected


@pytest.mark.parametrize("old,new,message", [
    # hostile case 14: the new release unpacked inside the old directory, and the reverse
    ("/opt/app", "/opt/app/release-2",
     "--new_install_dir '/opt/app/release-2' is inside --old_install_dir '/opt/app': the upgrade moves "
     "whole directories, so neither may contain the other"),
    ("/opt/app/old", "/opt/app/",
     "--old_install_dir '/opt/app/old' is inside --new_install_dir '/opt/app': the upgrade moves "
     "whole directories, so neither may contain the other"),
    ("/opt/app", "/opt/app/", "--old_install_dir and --new_install_dir are the same directory: '/opt/app'"),
    ("/", "/opt/new", "--old_install_dir: '/' is the root directory; give the directory of the installation"),
    ("/opt/old", "///", "--new_install_dir: '///' is the root directory; give the directory of the installation"),
    ("opt/app", "/opt/new", "--old_install_dir: 'opt/app' is not an absolute path (the same path is used on every node)"),
    ("~/app", "/opt/new", "--old_install_dir: '~/app' is not an absolute path"),
    ("/opt/new/../app", "/opt/new", "--old_install_dir: '/opt/new/../app' contains a '..' component; give the path without it"),
    ("/opt/./app", "/opt/new", "--old_install_dir: '/opt/./app' contains a '.' component"),
    ("/opt/app", "/opt//new", "--new_install_dir: '/opt//new' contains '//'; write each directory once"),
    ("", "/opt/new", "--old_install_dir: the directory is empty"),
    ("  ", "/opt/new", "--old_install_dir: the directory is empty"),
    ("/opt/app ", "/opt/new", "--old_install_dir: '/opt/app ' starts or ends with white space"),
    ("/opt/app", "/opt/n\x00ew", "--new_install_dir: '/opt/n\\x00ew' contains a NUL byte (position 6)"),
    ("/opt/app", "/opt/new\n", "--new_install_dir: '/opt/new\\n' contains a newline (U+000A) at position 8"),
    ("/opt/a\tb", "/opt/new", "--old_install_dir: '/opt/a\\tb' contains a tab (U+0009) at position 6"),
    ("/opt/a\x1b[2Kb", "/opt/new", "--old_install_dir: '/opt/a\\x1b[2Kb' contains an escape character"),
    # hostile case 15: a byte that is not UTF-8 in argv arrives as a surrogate (os.fsdecode)
    (os.fsdecode(b"/opt/gw-\xe9"), "/usr",
     "--old_install_dir: '/opt/gw-\\udce9' is not valid UTF-8 text (undecodable byte 0xe9 at position 8)"),
    ("/opt/" + "x" * 256, "/opt/new", "has a component longer than 255 bytes"),
    ("/opt" + "/x" * 2100, "/opt/new", "is longer than 4095 bytes"),
    (None, "/opt/new", "--old_install_dir: expected a directory path, got None"),
])
def test_bad_pairs_name_the_option(old: str, new: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate_install_dirs(old, new)
    text = str(info.value)
    assert text.startswith(message) if message.startswith("--") else message in text, text
    assert len(text) < 400


def test_prefix_without_a_slash_is_not_nesting() -> None:
    assert validate_install_dirs("/opt/app", "/opt/app2") == ("/opt/app", "/opt/app2")
    assert validate_install_dirs("/opt/app2", "/opt/app") == ("/opt/app2", "/opt/app")
    assert validate_install_dirs("/opt/app-new", "/opt/app") == ("/opt/app-new", "/opt/app")


def test_one_dir() -> None:
    assert validate_install_dir("/opt/x//", "--x") == "/opt/x"
    with pytest.raises(ConfigError, match=r"^--x: 'a' is not an absolute path"):
        validate_install_dir("a", "--x")
