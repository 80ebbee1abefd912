"""The subcommands: ``zdupgrade continue|abort [RUN_ID]`` (answer a paused run)."""
from __future__ import annotations

import argparse
import errno
import fcntl
import os
from pathlib import Path
from typing import Mapping, Sequence

from ..errors import ConfigError, ZduError
from ..report.runfolder import JOURNAL, read_journal
from ..run.resume import CONTROL_LOCK, find_run
from ..run.state import replay
from ..status import Status
from .console import Console
from .pause import write_answer


def _parser(name: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"zdupgrade {name}", allow_abbrev=False)
    parser.add_argument("run_id", nargs="?", default="", metavar="RUN_ID",
                        help="the run (default: the latest under --log_dir)")
    parser.add_argument("--log_dir", "--log-dir", dest="log_dir", default="logs", metavar="DIR",
                        help="where run folders are (default: logs/)")
    return parser


def run_command(argv: Sequence[str], console: Console, env: Mapping[str, str]) -> Status:
    """Run ``argv[0]`` with its arguments; errors become a status, never a traceback."""
    name, rest = argv[0], list(argv[1:])
    parser = _parser(name)
    if name == "abort":
        parser.add_argument("--keep", action="store_true",
                            help="stop without rolling back the nodes already upgraded")
    if name not in ("continue", "abort"):
        console.error(f"zdupgrade {name}: not available in this version")
        return Status.USAGE_ERROR
    try:
        args = parser.parse_args(rest)
    except SystemExit as exc:
        return Status.SUCCESS if exc.code == 0 else Status.USAGE_ERROR
    try:
        return _answer(args, console, "continue" if name == "continue" else ("abort-keep" if args.keep else "abort"))
    except ZduError as exc:
        console.error(str(exc))
        return Status.CONFIG_ERROR


def _answer(args: argparse.Namespace, console: Console, answer: str) -> Status:
    run_dir = find_run(Path(args.log_dir), args.run_id, option=f"zdupgrade {answer.split('-')[0]}")
    try:
        state = replay(read_journal(run_dir.read_text(JOURNAL)))
        open_pauses = [p for p in state.pauses if p["ended"] is None]
        if state.ended is not None or not open_pauses:
            raise ConfigError(f"run {state.run_id} is not paused"
                              + (f" (it ended with {state.status.name})" if state.status and state.ended else ""))
        wave = int(open_pauses[-1]["wave"])
        write_answer(run_dir, wave, answer)
        alive = _alive(run_dir)
        what = {"continue": "continue", "abort": "abort (rolling back what it upgraded)",
                "abort-keep": "abort (keeping the nodes already upgraded)"}[answer]
        if alive:
            console.line(f"run {state.run_id}, paused after wave {wave}: told to {what}")
        else:
            console.line(f"run {state.run_id} is paused after wave {wave} but its process is gone; the answer "
                         f"({what}) is left in its folder: `zdupgrade --resume {state.run_id}` takes it")
        return Status.SUCCESS
    finally:
        run_dir.close()


def _alive(run_dir: object) -> bool:
    """Whether a process holds the run folder's control lock (the run is being driven)."""
    from ..report.rundir import RunDir
    assert isinstance(run_dir, RunDir)
    fd = run_dir.open_fd(CONTROL_LOCK)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        return exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)
