"""Validation of ``--old_install_dir`` and ``--new_install_dir``.

Both are used verbatim on every node, by profiles that move whole directories (the ``tarball``
profile swaps them with ``mv OLD OLD.bak && mv NEW OLD``), so they must name two separate,
unambiguous directories: absolute, not ``/``, spelled without ``.``, ``..`` or ``//`` (so that
comparing the strings compares the directories), and neither inside the other.  A new release
unpacked inside the old directory passed the old check and made the swap fail half-way with a
rollback that could not undo it (hostile case 14).
"""
from __future__ import annotations

from typing import Any

from zdu.config.documents import check_text, describe_value
from zdu.errors import ConfigError

#: Linux limits (PATH_MAX, NAME_MAX): a longer path could not be used on any node
_PATH_MAX = 4095
_NAME_MAX = 255

OLD_OPTION = "--old_install_dir"
NEW_OPTION = "--new_install_dir"


def validate_install_dir(value: Any, option: str) -> str:
    """``value`` without trailing slashes, or ConfigError ``"{option}: ..."`` saying what is wrong."""
    if not isinstance(value, str):
        raise ConfigError(f"{option}: expected a directory path, got {describe_value(value)}")
    if not value.strip():
        raise ConfigError(f"{option}: the directory is empty")
    check_text(value, option, identifier=True)
    shown = describe_value(value)
    if value != value.strip():
        raise ConfigError(f"{option}: {shown} starts or ends with white space")
    if not value.startswith("/"):
        raise ConfigError(f"{option}: {shown} is not an absolute path (the same path is used on every node)")
    path = value.rstrip("/")
    if not path:
        raise ConfigError(f"{option}: {shown} is the root directory; give the directory of the installation")
    if "//" in path:
        raise ConfigError(f"{option}: {shown} contains '//'; write each directory once")
    for part in path.split("/")[1:]:
        if part in (".", ".."):
            raise ConfigError(f"{option}: {shown} contains a {part!r} component; give the path without it")
        if len(part.encode("utf-8")) > _NAME_MAX:
            raise ConfigError(f"{option}: {shown} has a component longer than {_NAME_MAX} bytes")
    if len(path.encode("utf-8")) > _PATH_MAX:
        raise ConfigError(f"{option}: {shown} is longer than {_PATH_MAX} bytes")
    return path


def validate_install_dirs(old: Any, new: Any) -> tuple[str, str]:
    """Both install dirs, normalised (trailing slashes removed); ConfigError naming the option.

    Refused: anything ``validate_install_dir`` refuses, the same directory twice, and one
    directory inside the other ("/opt/app" and "/opt/app/new"; "/opt/app2" is fine).
    """
    old_path = validate_install_dir(old, OLD_OPTION)
    new_path = validate_install_dir(new, NEW_OPTION)
    if old_path == new_path:
        raise ConfigError(f"{OLD_OPTION} and {NEW_OPTION} are the same directory: {describe_value(old_path)}")
    for inner, inner_option, outer, outer_option in ((new_path, NEW_OPTION, old_path, OLD_OPTION),
                                                     (old_path, OLD_OPTION, new_path, NEW_OPTION)):
        if inner.startswith(outer + "/"):
            raise ConfigError(f"{inner_option} {describe_value(inner)} is inside {outer_option} "
                              f"{describe_value(outer)}: the upgrade moves whole directories, so neither "
                              "may contain the other")
    return old_path, new_path
