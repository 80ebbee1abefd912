"""Files the operator names on the command line (``report -o``, ``--junit``, ``--events``).

They hold commands and their output (masked, but still the fleet's business), so they are
created 0600.  A whole-file output is written to a temporary file beside the target and renamed
over it: a reader (a CI job, a browser) never sees half a file, and an existing symlink at the
name is replaced, not followed.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import TextIO

from ..config.values import describe_value
from ..errors import ConfigError

FILE_MODE = 0o600


def _label(option: str, path: Path) -> str:
    return f"{option} {describe_value(str(path))}"


def write_private(path: str | os.PathLike[str], data: bytes, *, option: str) -> Path:
    """Replace ``path`` with ``data`` atomically (mode 0600); ConfigError naming ``option``
    if the folder does not exist or cannot be written, or ``path`` is a directory."""
    target = Path(path)
    folder = target.parent
    if target.is_dir():
        raise ConfigError(f"{_label(option, target)}: is a directory")
    if not folder.is_dir():
        raise ConfigError(f"{_label(option, target)}: the folder {describe_value(str(folder))} does not exist")
    temp = folder / f".{target.name}.{secrets.token_hex(6)}.tmp"
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, target)
        except BaseException:
            try:
                os.unlink(temp)
            except OSError:
                pass
            raise
    except OSError as exc:
        raise ConfigError(f"{_label(option, target)}: cannot write it: {exc.strerror or exc}") from None
    return target


def open_private(path: str | os.PathLike[str], *, option: str) -> TextIO:
    """``path`` opened for writing text (truncated, created 0600, line-buffered); a FIFO or a
    ``/dev/fd/N`` the operator names works too.  ConfigError naming ``option`` if it cannot be opened."""
    target = Path(path)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOCTTY,
                     FILE_MODE)
    except OSError as exc:
        raise ConfigError(f"{_label(option, target)}: cannot write it: {exc.strerror or exc}") from None
    return os.fdopen(fd, "w", encoding="utf-8", errors="replace", buffering=1)
