"""The run folder ``<log_dir>/<run_id>/``, worked on through a directory file descriptor.

The log dir is checked before anything is written (hostile case 17): another local user who can
rename entries in it could swap the run folder for a symlink while the run goes on, and the run
(often root) would then write run.json and the node logs wherever that user points.  So:

- the log dir must be a directory owned by the current user or by root, not writable by group
  or others unless it has the sticky bit (like /tmp, where others cannot rename our entries);
  a group-writable dir is fine when the group is the user's own private group;
- the log dir may be a symbolic link only if the link itself belongs to the current user or
  root (an admin's ``logs -> /var/log/zdupgrade``); its target is checked as above;
- the run folder is created 0700 and opened once with O_DIRECTORY|O_NOFOLLOW; every later file
  operation is relative to that descriptor and never follows a symlink (O_NOFOLLOW,
  ``dir_fd=``), so renaming or replacing the folder's name afterwards redirects nothing;
- files are created 0600; ``write_atomic`` writes a temporary file, fsyncs it, renames it over
  the old one and fsyncs the folder, so a reader (``--resume``) never sees half a file.

Missing log dirs are created (0700).  Problems with the log dir or the run folder are
ConfigError naming ``--log_dir``; failures while writing are OSError.
"""
from __future__ import annotations

import errno
import grp
import os
import pwd
import re
import secrets
import stat
import threading
import datetime as _dt
from pathlib import Path
from typing import TextIO

from zdu.config.values import check_text, describe_value
from zdu.errors import ConfigError

#: where runs are kept when --log_dir is not given (relative to the working directory)
LOG_DIR = "logs"

RUN_DIR_MODE = 0o700
FILE_MODE = 0o600
#: largest file ``read_text`` reads (run.json of a large fleet is a few MB)
READ_LIMIT = 64 * 1024 * 1024

# names inside the run folder and run ids: one plain path component; a leading dot is kept
# for our temporary files
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,254}")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def new_run_id(now: _dt.datetime | None = None) -> str:
    """A sortable, unique-enough run id: 20261122-021500-123456."""
    now = now or _dt.datetime.now()
    return now.strftime("%Y%m%d-%H%M%S-%f")


def _user(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _private_group(gid: int) -> bool:
    """Whether ``gid`` is the current user's own group (named after the user, no other member)."""
    if gid != os.getegid():
        return False
    try:
        me = pwd.getpwuid(os.geteuid()).pw_name
        group = grp.getgrgid(gid)
    except KeyError:
        return False
    return group.gr_name == me and set(group.gr_mem) <= {me}


def _check_owned_dir(st: os.stat_result, where: str) -> None:
    """ConfigError unless ``st`` is a directory only the current user (or root) can change."""
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{where}: is not a directory")
    if st.st_uid not in (os.geteuid(), 0):
        raise ConfigError(f"{where}: is owned by {_user(st.st_uid)}, not by you ({_user(os.geteuid())}) "
                          "or root: its owner could replace the run folder while the run writes to it")
    mode = stat.S_IMODE(st.st_mode)
    if mode & stat.S_ISVTX:
        return
    if mode & stat.S_IWOTH or (mode & stat.S_IWGRP and not _private_group(st.st_gid)):
        who = "others" if mode & stat.S_IWOTH else "its group"
        raise ConfigError(f"{where}: is writable by {who} (mode {mode:04o}) without the sticky bit: another "
                          f"user could replace the run folder while the run writes to it (chmod go-w)")


def _log_dir_label(log_dir: Path) -> str:
    return f"--log_dir {describe_value(str(log_dir))}"


def _open_log_dir(log_dir: Path, *, create: bool) -> int:
    """An O_DIRECTORY descriptor of the checked log dir (created 0700 if missing and ``create``)."""
    where = _log_dir_label(log_dir)
    check_text(os.fspath(log_dir), "--log_dir", identifier=True)
    try:
        link = os.lstat(log_dir)
    except FileNotFoundError:
        if not create:
            raise ConfigError(f"{where}: does not exist") from None
        try:
            _make_dirs(Path(log_dir))
        except FileExistsError:  # made meanwhile: checked below like any other
            pass
        except OSError as exc:
            raise ConfigError(f"{where}: cannot create it: {exc.strerror or exc}") from None
        link = os.lstat(log_dir)
    except NotADirectoryError:
        raise ConfigError(f"{where}: a part of the path is not a directory") from None
    except OSError as exc:
        raise ConfigError(f"{where}: {exc.strerror or exc}") from None
    follow = stat.S_ISLNK(link.st_mode)
    if follow and link.st_uid not in (os.geteuid(), 0):
        raise ConfigError(f"{where}: is a symbolic link owned by {_user(link.st_uid)}, not by you or root")
    try:
        fd = os.open(log_dir, _DIR_FLAGS | (0 if follow else os.O_NOFOLLOW))
    except NotADirectoryError:
        raise ConfigError(f"{where}: is not a directory") from None
    except FileNotFoundError:
        raise ConfigError(f"{where}: is a symbolic link to {describe_value(os.readlink(log_dir))}, "
                          "which does not exist") from None
    except OSError as exc:  # ELOOP: it became a symlink after lstat
        raise ConfigError(f"{where}: cannot open it: {exc.strerror or exc}") from None
    try:
        _check_owned_dir(os.fstat(fd), where)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _make_dirs(path: Path) -> None:
    """``path`` and its missing parents created mode 0700 whatever the umask (``os.makedirs``
    gives the parents 0777 minus the umask: under ``umask 000`` a world-writable folder above
    the run folders, and under ``umask 0277`` a log dir the run cannot write in)."""
    missing: list[Path] = []
    while not os.path.lexists(path):
        missing.append(path)
        if path.parent == path:
            break
        path = path.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, RUN_DIR_MODE)
        except FileExistsError:
            if folder is missing[0]:
                raise
            continue          # made meanwhile by someone else: left as it is
        os.chmod(folder, RUN_DIR_MODE, follow_symlinks=False)


def check_log_dir(log_dir: str | os.PathLike[str]) -> None:
    """ConfigError if ``log_dir`` exists and may not hold run folders (see the module docstring);
    a missing one is fine (``RunDir.create`` makes it).  Nothing is created or changed."""
    path = Path(log_dir)
    check_text(os.fspath(path), "--log_dir", identifier=True)
    if os.path.lexists(path):
        os.close(_open_log_dir(path, create=False))


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"not a plain file name for the run folder: {describe_value(name)}")
    return name


class RunDir:
    """One run folder, open as a directory descriptor; every file operation goes through it.

    Make one with ``RunDir.create`` (a new run) or ``RunDir.open_existing`` (``--resume``).
    Thread-safe; ``close`` it when the run is over (files from ``append`` are closed by their user).
    """

    def __init__(self, fd: int, path: Path) -> None:
        self._fd = fd
        self._lock = threading.Lock()
        #: where the folder is, for messages (the descriptor, not this path, is what is used)
        self.dir = path

    @classmethod
    def create(cls, log_dir: str | os.PathLike[str], run_id: str) -> "RunDir":
        """Check (or create) ``log_dir`` and create ``log_dir/run_id`` 0700; ConfigError if either fails."""
        log_path = Path(log_dir)
        where = _log_dir_label(log_path)
        run_id = check_run_id(run_id)
        parent = _open_log_dir(log_path, create=True)
        try:
            try:
                os.mkdir(run_id, RUN_DIR_MODE, dir_fd=parent)
            except FileExistsError:
                raise ConfigError(f"{where}: a run folder {run_id} exists already") from None
            except OSError as exc:
                raise ConfigError(f"{where}: cannot create the run folder {run_id}: {exc.strerror or exc}") from None
            fd = _open_run_folder(parent, run_id, where)
            try:
                os.fchmod(fd, RUN_DIR_MODE)  # mkdir's mode went through the umask
                _probe_space(fd, where, run_id)
            except BaseException:
                os.close(fd)
                try:
                    os.rmdir(run_id, dir_fd=parent)     # ours, just made, and empty
                except OSError:
                    pass
                raise
        finally:
            os.close(parent)
        return cls(fd, log_path / run_id)

    @classmethod
    def open_existing(cls, log_dir: str | os.PathLike[str], run_id: str) -> "RunDir":
        """The run folder ``log_dir/run_id`` of an earlier run, checked as at creation
        (a directory of yours, not a symlink, writable by no one else)."""
        log_path = Path(log_dir)
        where = _log_dir_label(log_path)
        run_id = check_run_id(run_id)
        parent = _open_log_dir(log_path, create=False)
        try:
            fd = _open_run_folder(parent, run_id, where)
        finally:
            os.close(parent)
        return cls(fd, log_path / run_id)

    # ----------------------------------------------------------------------- files

    def path(self, name: str) -> Path:
        """``name`` inside the folder, for display (never opened by path)."""
        return self.dir / _check_name(name)

    def append(self, name: str) -> TextIO:
        """``name`` opened for appending text (created 0600, line-buffered, UTF-8); never a symlink."""
        fd = self._open(name, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        return os.fdopen(fd, "a", encoding="utf-8", errors="replace", buffering=1)

    def open_fd(self, name: str) -> int:
        """``name`` opened read-write (created 0600) as a raw descriptor, e.g. to hold a lock on it."""
        return self._open(name, os.O_RDWR | os.O_CREAT)

    def write_atomic(self, name: str, data: bytes) -> None:
        """Replace ``name`` with ``data`` so that a reader sees the old or the new file, never a part."""
        _check_name(name)
        temp = f".{name}.{secrets.token_hex(6)}.tmp"
        fd = self._open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, checked=True)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            dir_fd = self._dir_fd()
            os.replace(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            os.fsync(dir_fd)
        except BaseException:
            try:
                os.unlink(temp, dir_fd=self._dir_fd())
            except OSError:
                pass
            raise

    def read_text(self, name: str, *, limit: int = READ_LIMIT) -> str:
        """The UTF-8 text of ``name`` (FileNotFoundError if missing; ConfigError if it is not a
        regular file, is larger than ``limit`` or is not UTF-8)."""
        fd = self._open(name, os.O_RDONLY)
        with os.fdopen(fd, "rb") as handle:
            data = handle.read(limit + 1)
        if len(data) > limit:
            raise ConfigError(f"{self.path(name)}: larger than {limit:,} bytes")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{self.path(name)}: not valid UTF-8 (byte {exc.start})") from None

    def remove(self, name: str) -> None:
        """Remove the file ``name`` (missing is fine)."""
        try:
            os.unlink(_check_name(name), dir_fd=self._dir_fd())
        except FileNotFoundError:
            pass

    def exists(self, name: str) -> bool:
        """Whether the folder has an entry ``name`` (of any kind; symlinks are not followed)."""
        try:
            os.stat(_check_name(name), dir_fd=self._dir_fd(), follow_symlinks=False)
        except FileNotFoundError:
            return False
        return True

    def names(self) -> list[str]:
        """The entries of the folder, sorted, our temporary files left out."""
        return sorted(n for n in os.listdir(self._dir_fd()) if not n.startswith("."))

    def close(self) -> None:
        """Close the folder's descriptor (files already opened stay usable); idempotent."""
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def __enter__(self) -> "RunDir":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RunDir({str(self.dir)!r})"

    def _dir_fd(self) -> int:
        fd = self._fd
        if fd < 0:
            raise ValueError(f"run folder {self.dir} is closed")
        return fd

    def _open(self, name: str, flags: int, *, checked: bool = False) -> int:
        if not checked:
            _check_name(name)
        # O_NONBLOCK: opening a FIFO planted under a name must fail the check below, not hang
        fd = os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK, FILE_MODE,
                     dir_fd=self._dir_fd())
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise ConfigError(f"{self.dir / name}: is not a regular file")
            if flags & (os.O_WRONLY | os.O_RDWR) and stat.S_IMODE(st.st_mode) != FILE_MODE:
                os.fchmod(fd, FILE_MODE)
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        return fd


#: what a new run folder must take at once (the run's first records), or the run is refused
PROBE_BYTES = 16 * 1024
#: ... and its first files (control.lock, the journal, run.json and its temporary file, run.log,
#: a few node logs): fewer free inodes than this and the run is refused
PROBE_INODES = 16


def _probe_space(fd: int, where: str, run_id: str) -> None:
    """ConfigError if the new run folder cannot take its first records: a log disk that filled
    up (blocks or inodes) before the run began was an internal error (80) once the run folder was
    made, and left a damaged folder behind.  The free inodes are counted (statvfs), and a file of
    :data:`PROBE_BYTES` is written and removed (ext4 and XFS reserve the blocks at write(), tmpfs
    allocates them)."""
    try:
        vfs = os.statvfs(fd)
    except OSError:
        vfs = None
    free_inodes = (vfs.f_ffree if os.geteuid() == 0 else vfs.f_favail) if vfs is not None else 0
    if vfs is not None and vfs.f_files > 0 and free_inodes < PROBE_INODES:   # f_files 0: not counted
        raise ConfigError(f"{where}: its file system has {free_inodes} free inode(s) left, and a run folder "
                          f"needs about {PROBE_INODES}; nothing was changed")
    name = f".space.{secrets.token_hex(6)}.tmp"
    try:
        probe = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE,
                        dir_fd=fd)
        try:
            os.write(probe, bytes(PROBE_BYTES))
        finally:
            os.close(probe)
            os.unlink(name, dir_fd=fd)
    except OSError as exc:
        raise ConfigError(f"{where}: cannot write in the run folder {run_id}: {exc.strerror or exc}; "
                          "nothing was changed") from None


def check_run_id(run_id: str) -> str:
    """``run_id`` if it can name a run folder (letters, digits, ".", "_", "-"); ConfigError otherwise."""
    try:
        return _check_name(run_id)
    except ValueError:
        raise ConfigError(f"invalid run id {describe_value(run_id)}: letters, digits, '.', '_' and '-'") from None


def _open_run_folder(parent: int, run_id: str, where: str) -> int:
    label = f"{where}: run folder {run_id}"
    try:
        fd = os.open(run_id, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=parent)
    except FileNotFoundError:
        raise ConfigError(f"{label}: does not exist") from None
    except OSError as exc:  # ENOTDIR (a file, or a symlink with O_NOFOLLOW|O_DIRECTORY), ELOOP, ...
        try:
            link = stat.S_ISLNK(os.stat(run_id, dir_fd=parent, follow_symlinks=False).st_mode)
        except OSError:
            link = False
        if link or exc.errno == errno.ELOOP:
            raise ConfigError(f"{label}: is a symbolic link") from None
        if exc.errno == errno.ENOTDIR:
            raise ConfigError(f"{label}: is not a directory") from None
        raise ConfigError(f"{label}: cannot open it: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid():
            raise ConfigError(f"{label}: is owned by {_user(st.st_uid)}, not by you ({_user(os.geteuid())})")
        if stat.S_IMODE(st.st_mode) & 0o022:
            raise ConfigError(f"{label}: is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})")
    except BaseException:
        os.close(fd)
        raise
    return fd
