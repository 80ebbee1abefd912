"""Files the operator names on the command line (``report -o``, ``--junit``, ``--events``).

They hold commands and their output (masked, but still the fleet's business), so they are
created 0600.  A whole-file output is written to a temporary file beside the target and renamed
over it: a reader (a CI job, a browser) never sees half a file, and an existing symlink at the
name is replaced, not followed.  A name that is a stream is written in place instead: a FIFO or a
character device (``/dev/null``, a terminal), or a descriptor (``/dev/stdout``, ``/dev/fd/N``,
``/proc/self/fd/N``, whatever it is open on) -- also through symbolic links, if each of them is
yours or root's (another user's link is replaced, as before: never followed to where it points).
"""
from __future__ import annotations

import os
import pwd
import re
import secrets
import stat
from pathlib import Path
from typing import TextIO

from ..config.values import describe_value
from ..errors import ConfigError

FILE_MODE = 0o600
#: names of an open descriptor of this process: written in place, whatever it is open on
_DESCRIPTOR = re.compile(r"/dev/(?:stdin|stdout|stderr|fd/\d+)|/proc/(?:self|thread-self|\d+)(?:/task/\d+)?/fd/\d+")
#: symbolic links followed at most, looking for a stream
_MAX_LINKS = 40


def _label(option: str, path: Path) -> str:
    return f"{option} {describe_value(str(path))}"


def _owner(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _stream(target: Path, option: str) -> Path | None:
    """Where to write ``target`` in place (see the module docstring), or None: a regular file or a
    new name, replaced atomically.  ConfigError for a name zdupgrade must not write into (a block
    device, a socket, someone else's FIFO or device)."""
    path = os.path.abspath(target)
    descriptor = False
    for _ in range(_MAX_LINKS):
        if _DESCRIPTOR.fullmatch(path):
            descriptor = True           # the kernel's link to what the descriptor is open on
            break
        try:
            link = os.lstat(path)
        except OSError:
            return None
        if not stat.S_ISLNK(link.st_mode):
            break
        if link.st_uid not in (os.geteuid(), 0):
            return None                 # another user's link: replaced, never followed
        path = os.path.normpath(os.path.join(os.path.dirname(path), os.readlink(path)))
    else:
        return None
    try:
        st = os.stat(path)
    except OSError as exc:
        if descriptor:                  # not open: never a file made in its place (/dev as root)
            raise ConfigError(f"{_label(option, target)}: cannot write it: {exc.strerror or exc}") from None
        return None
    mode = st.st_mode
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return Path(path) if descriptor and stat.S_ISREG(mode) else None
    if not (stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)):
        raise ConfigError(f"{_label(option, target)}: is {_kind(mode)}, not a file zdupgrade writes")
    if st.st_uid not in (os.geteuid(), 0) and not descriptor:
        raise ConfigError(f"{_label(option, target)}: is {_kind(mode)} of {_owner(st.st_uid)}, not yours or root's")
    return Path(path)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def in_place(path: str | os.PathLike[str], *, option: str) -> bool:
    """Whether :func:`write_private` writes ``path`` in place (a stream), not as a new file."""
    return _stream(Path(path), option) is not None


def _write_in_place(target: Path, where: Path, data: bytes, option: str) -> Path:
    """``data`` written into the stream ``where`` (what ``target`` names): opened, written, closed."""
    try:
        st = os.stat(where)
        fd = os.open(where, os.O_WRONLY | os.O_CLOEXEC | os.O_NOCTTY | (os.O_TRUNC if stat.S_ISREG(st.st_mode) else 0))
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
    except OSError as exc:
        raise ConfigError(f"{_label(option, target)}: cannot write it: {exc.strerror or exc}") from None
    return target


def write_private(path: str | os.PathLike[str], data: bytes, *, option: str) -> Path:
    """Replace ``path`` with ``data`` atomically (mode 0600), or write it into ``path`` when that
    is a stream (a FIFO, a terminal, ``/dev/stdout``: see the module docstring); ConfigError
    naming ``option`` if the folder does not exist or cannot be written, or ``path`` is a
    directory or a file zdupgrade must not write into."""
    target = Path(path)
    folder = target.parent
    if target.is_dir():
        raise ConfigError(f"{_label(option, target)}: is a directory")
    stream = _stream(target, option)
    if stream is not None:
        return _write_in_place(target, stream, data, option)
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
