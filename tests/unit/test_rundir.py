"""The run folder: a checked log dir, and every write through a directory descriptor.

Hostile case 17 for real: another local user (``nobody``, in a child process that gives up root)
owns or can write the log dir and swaps the run folder for a symlink while the run writes.
Needs root (to chown to nobody and to become nobody), as the lab does.
"""
from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import stat
import tempfile
import threading
from pathlib import Path
from typing import Callable, Iterator

import pytest

from zdu.errors import ConfigError
from zdu.report.rundir import RunDir, check_log_dir

NOBODY = pwd.getpwnam("nobody")
USERS_GID = grp.getgrnam("users").gr_gid
RUN_ID = "20261122-021500-123456"


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def shared() -> Iterator[Path]:
    """A folder under /tmp that ``nobody`` can reach (pytest's tmp_path is 0700 root)."""
    root = Path(tempfile.mkdtemp(prefix="zdu-rundir-", dir="/tmp"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def as_nobody(action: Callable[[], None]) -> int:
    """Run ``action`` in a child process as user nobody; its exit status (0: it succeeded)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover (child)
        try:
            os.setgroups([])
            os.setgid(NOBODY.pw_gid)
            os.setuid(NOBODY.pw_uid)
            action()
            os._exit(0)
        except PermissionError:
            os._exit(13)
        except BaseException:
            os._exit(1)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


# --------------------------------------------------------------------------- the good path

def test_create_makes_a_private_folder_and_files(tmp_path: Path) -> None:
    log_dir = tmp_path / "a" / "logs"
    old = os.umask(0o002)  # a permissive umask changes nothing
    try:
        with RunDir.create(log_dir, RUN_ID) as run:
            with run.append("run.log") as log:
                log.write("started\n")
            with run.append("run.log") as log:
                log.write("ünïcode \udce9\n")  # a surrogate is written replaced, never raised
            run.write_atomic("run.json", b'{"a": 1}\n')
            run.write_atomic("run.json", b'{"a": 2}\n')
            assert run.read_text("run.json") == '{"a": 2}\n'
            assert run.exists("run.log") and not run.exists("gw1.log")
            assert run.names() == ["run.json", "run.log"]
            assert run.path("run.json") == log_dir / RUN_ID / "run.json"
    finally:
        os.umask(old)
    folder = log_dir / RUN_ID
    assert mode(log_dir) == 0o700 and mode(folder) == 0o700
    assert mode(folder / "run.log") == 0o600 and mode(folder / "run.json") == 0o600
    assert (folder / "run.log").read_text() == "started\nünïcode ?\n"
    assert sorted(p.name for p in folder.iterdir()) == ["run.json", "run.log"]  # no temporary file left


def test_open_existing_for_resume(tmp_path: Path) -> None:
    with RunDir.create(tmp_path, RUN_ID) as run:
        run.write_atomic("run.json", json.dumps({"run_id": RUN_ID}).encode())
    (tmp_path / RUN_ID / "gw1.log").write_text("old\n")
    (tmp_path / RUN_ID / "gw1.log").chmod(0o644)
    with RunDir.open_existing(tmp_path, RUN_ID) as run:
        assert json.loads(run.read_text("run.json")) == {"run_id": RUN_ID}
        with run.append("gw1.log") as log:
            log.write("resumed\n")
    assert (tmp_path / RUN_ID / "gw1.log").read_text() == "old\nresumed\n"
    assert mode(tmp_path / RUN_ID / "gw1.log") == 0o600


def test_concurrent_atomic_writes_never_show_half_a_file(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path, RUN_ID)
    payloads = [json.dumps({"n": i, "pad": "x" * 200_000}).encode() for i in range(4)]
    seen: list[str] = []

    def writer(data: bytes) -> None:
        for _ in range(15):
            run.write_atomic("run.json", data)

    threads = [threading.Thread(target=writer, args=(p,)) for p in payloads]
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads):
        try:
            seen.append(json.loads(run.read_text("run.json"))["pad"][:1])
        except FileNotFoundError:
            pass
    for thread in threads:
        thread.join()
    run.close()
    assert seen and set(seen) == {"x"}
    assert sorted(p.name for p in (tmp_path / RUN_ID).iterdir()) == ["run.json"]


# --------------------------------------------------------------------------- the log dir

def test_log_dir_owned_by_another_user_is_refused(shared: Path) -> None:
    """The case's setup: a log dir owned by nobody.  Its owner can rename anything in it, so it
    is refused before anything is written; and it is shown that nobody could indeed do it."""
    log_dir = shared / "logs"
    log_dir.mkdir(mode=0o755)
    os.chown(log_dir, NOBODY.pw_uid, NOBODY.pw_gid)
    with pytest.raises(ConfigError) as info:
        RunDir.create(log_dir, RUN_ID)
    assert str(info.value) == (f"--log_dir '{log_dir}': is owned by nobody (uid {NOBODY.pw_uid}), not by you "
                               "(root (uid 0)) or root: its owner could replace the run folder while the run "
                               "writes to it")
    assert list(log_dir.iterdir()) == []
    with pytest.raises(ConfigError, match="is owned by nobody"):
        check_log_dir(log_dir)
    # what the refusal prevents: nobody renames a folder root made in it
    (log_dir / "x").mkdir(mode=0o700)
    assert as_nobody(lambda: os.rename(log_dir / "x", log_dir / "moved")) == 0
    assert (log_dir / "moved").is_dir()


@pytest.mark.parametrize("bits,who", [(0o777, "others"), (0o775, "its group"), (0o757, "others")])
def test_log_dir_writable_by_others_without_sticky_bit_is_refused(tmp_path: Path, bits: int, who: str) -> None:
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    os.chown(log_dir, 0, USERS_GID)  # a group that is not root's own
    log_dir.chmod(bits)
    with pytest.raises(ConfigError) as info:
        RunDir.create(log_dir, RUN_ID)
    assert f"is writable by {who} (mode {bits:04o}) without the sticky bit" in str(info.value)
    assert list(log_dir.iterdir()) == []


def test_sticky_world_writable_log_dir_is_accepted_and_others_cannot_swap(shared: Path) -> None:
    """Like /tmp: anyone may create entries, but only their owner may rename or remove them."""
    log_dir = shared / "logs"
    log_dir.mkdir()
    log_dir.chmod(0o1777)
    run = RunDir.create(log_dir, RUN_ID)
    folder = log_dir / RUN_ID
    assert as_nobody(lambda: os.rename(folder, log_dir / "moved")) == 13   # EPERM: sticky bit
    assert as_nobody(lambda: shutil.rmtree(folder)) != 0
    run.write_atomic("run.json", b"{}")
    run.close()
    assert (folder / "run.json").read_bytes() == b"{}"


def test_private_group_may_write(tmp_path: Path) -> None:
    """root's own group (named root, no other member) writing the log dir is the user's own."""
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    log_dir.chmod(0o770)
    RunDir.create(log_dir, RUN_ID).close()
    assert (log_dir / RUN_ID).is_dir()


def test_log_dir_that_is_a_file(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("")
    with pytest.raises(ConfigError, match=r"^--log_dir '.*/afile': is not a directory$"):
        RunDir.create(afile, RUN_ID)
    with pytest.raises(ConfigError, match="is not a directory"):
        check_log_dir(afile)
    with pytest.raises(ConfigError, match=r"afile/logs': a part of the path is not a directory$"):
        RunDir.create(afile / "logs", RUN_ID)


def test_log_dir_symlinks(shared: Path) -> None:
    target = shared / "var-log-zdu"
    target.mkdir(mode=0o700)
    mine = shared / "logs"
    mine.symlink_to(target)
    RunDir.create(mine, RUN_ID).close()  # an admin's link to a good dir: followed
    assert (target / RUN_ID).is_dir()

    theirs = shared / "their-link"
    theirs.symlink_to(target)
    os.lchown(theirs, NOBODY.pw_uid, NOBODY.pw_gid)
    with pytest.raises(ConfigError, match=r"is a symbolic link owned by nobody \(uid 65534\), not by you or root"):
        RunDir.create(theirs, "other")

    bad_target = shared / "nobodys"
    bad_target.mkdir()
    os.chown(bad_target, NOBODY.pw_uid, NOBODY.pw_gid)
    to_bad = shared / "to-bad"
    to_bad.symlink_to(bad_target)
    with pytest.raises(ConfigError, match="is owned by nobody"):
        RunDir.create(to_bad, "other")

    dangling = shared / "dangling"
    dangling.symlink_to(shared / "nowhere")
    with pytest.raises(ConfigError, match=r"is a symbolic link to '.*/nowhere', which does not exist"):
        RunDir.create(dangling, "other")
    assert not (shared / "nowhere").exists()


def test_check_log_dir_changes_nothing(tmp_path: Path) -> None:
    check_log_dir(tmp_path / "not" / "yet")
    assert not (tmp_path / "not").exists()
    check_log_dir(tmp_path)
    with pytest.raises(ConfigError, match=r"^--log_dir: 'logs\\n' contains a newline"):
        check_log_dir("logs\n")
    with pytest.raises(ConfigError, match="is not valid UTF-8"):
        check_log_dir(os.fsdecode(b"/tmp/l\xe9"))


# --------------------------------------------------------------------------- the swap

def test_run_folder_replaced_by_a_symlink_after_creation_redirects_nothing(shared: Path) -> None:
    """The attack of case 17 on an acceptable log dir (only our process could do it there):
    the folder is renamed and a symlink to a victim dir takes its name.  Every write still goes
    to the real folder, which the descriptor keeps pointing at."""
    log_dir = shared / "logs"
    log_dir.mkdir(mode=0o700)
    victim = shared / "victim"
    victim.mkdir()
    (victim / "run.json").write_text("precious")
    run = RunDir.create(log_dir, RUN_ID)
    log = run.append("run.log")
    log.write("before\n")
    os.rename(log_dir / RUN_ID, log_dir / "moved")
    (log_dir / RUN_ID).symlink_to(victim)

    log.write("after\n")
    run.write_atomic("run.json", b'{"state": "after"}')
    with run.append("gw1.log") as node_log:
        node_log.write("node\n")
    assert run.read_text("run.json") == '{"state": "after"}'
    log.close()
    run.close()

    assert sorted(p.name for p in victim.iterdir()) == ["run.json"]
    assert (victim / "run.json").read_text() == "precious"
    moved = log_dir / "moved"
    assert (moved / "run.log").read_text() == "before\nafter\n"
    assert (moved / "run.json").read_text() == '{"state": "after"}' and (moved / "gw1.log").read_text() == "node\n"

    # and --resume of that name refuses the symlink instead of following it
    with pytest.raises(ConfigError, match=rf"run folder {RUN_ID}: is a symbolic link$"):
        RunDir.open_existing(log_dir, RUN_ID)


def test_files_planted_as_symlinks_are_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    run = RunDir.create(tmp_path / "logs", RUN_ID)
    (tmp_path / "logs" / RUN_ID / "gw1.log").symlink_to(victim)
    (tmp_path / "logs" / RUN_ID / "run.json").symlink_to(victim)
    with pytest.raises(OSError):
        run.append("gw1.log")
    with pytest.raises(OSError):
        run.read_text("run.json")
    run.write_atomic("run.json", b"{}")  # replaces the link itself, not its target
    assert victim.read_text() == "precious" and not (tmp_path / "logs" / RUN_ID / "run.json").is_symlink()
    os.mkfifo(tmp_path / "logs" / RUN_ID / "fifo.log")
    with pytest.raises(ConfigError, match="fifo.log: is not a regular file"):
        run.read_text("fifo.log")
    run.close()


# --------------------------------------------------------------------------- resume and names

def test_open_existing_refusals(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=rf"run folder {RUN_ID}: does not exist"):
        RunDir.open_existing(tmp_path, RUN_ID)
    with pytest.raises(ConfigError, match=r"--log_dir '.*/nope': does not exist"):
        RunDir.open_existing(tmp_path / "nope", RUN_ID)
    (tmp_path / "open").mkdir(mode=0o770)
    (tmp_path / "open").chmod(0o770)
    with pytest.raises(ConfigError, match=r"run folder open: is writable by group or others \(mode 0770\)"):
        RunDir.open_existing(tmp_path, "open")
    (tmp_path / "theirs").mkdir(mode=0o700)
    os.chown(tmp_path / "theirs", NOBODY.pw_uid, NOBODY.pw_gid)
    with pytest.raises(ConfigError, match=r"run folder theirs: is owned by nobody"):
        RunDir.open_existing(tmp_path, "theirs")
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="run folder file: is not a directory"):
        RunDir.open_existing(tmp_path, "file")
    RunDir.create(tmp_path, RUN_ID).close()
    with pytest.raises(ConfigError, match=f"a run folder {RUN_ID} exists already"):
        RunDir.create(tmp_path, RUN_ID)


@pytest.mark.parametrize("name", ["../run.json", "a/b", ".hidden", "", ".", "..", "x\n", "x" * 300])
def test_names_are_one_plain_component(tmp_path: Path, name: str) -> None:
    run = RunDir.create(tmp_path, RUN_ID)
    for action in (run.append, lambda n: run.write_atomic(n, b""), run.read_text, run.path, run.exists):
        with pytest.raises(ValueError, match="not a plain file name"):
            action(name)
    with pytest.raises(ConfigError, match="invalid run id"):
        RunDir.create(tmp_path, name)
    run.close()
    assert sorted(p.name for p in (tmp_path / RUN_ID).iterdir()) == []


def test_read_text_limits(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path, RUN_ID)
    run.write_atomic("run.json", b"x" * 1001)
    with pytest.raises(ConfigError, match="run.json: larger than 1,000 bytes"):
        run.read_text("run.json", limit=1000)
    run.write_atomic("run.json", b"{\xff}")
    with pytest.raises(ConfigError, match=r"run.json: not valid UTF-8 \(byte 1\)"):
        run.read_text("run.json")
    with pytest.raises(FileNotFoundError):
        run.read_text("other.json")
    run.close()
    run.close()
    with pytest.raises(ValueError, match="is closed"):
        run.append("run.log")
