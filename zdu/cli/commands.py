"""The subcommands: ``zdupgrade continue|abort [RUN_ID]`` (answer a paused run), and the review
of past runs: ``runs``, ``show``, ``logs``, ``report``, ``lock status``.

The review commands only read: run folders through :mod:`zdu.report.review` (a damaged folder is
reported, never a traceback), and for ``lock status`` each node's ``owner.json``.
"""
from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TypeVar

from ..config.values import check_text
from ..errors import ConfigError, ZduError
from ..report.rundir import LOG_DIR
from ..report.runfolder import JOURNAL, read_journal
from ..run.conductor import PauseAnswer
from ..run.resume import find_run
from ..run.state import replay
from ..status import Phase, Status
from .console import Console
from .pause import ANSWER_FILE, leave_answer, withdraw_answer

T = TypeVar("T")


def _parser(name: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"zdupgrade {name}", allow_abbrev=False)
    parser.add_argument("run_id", nargs="?", default="", metavar="RUN_ID",
                        help="the run (default: the latest under --log_dir)")
    parser.add_argument("--log_dir", "--log-dir", dest="log_dir", default=LOG_DIR, metavar="DIR",
                        help="where run folders are (default: logs/)")
    return parser


def _review_parser(name: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"zdupgrade {name}", allow_abbrev=False, description=DESCRIPTIONS[name])
    if name in ("show", "report", "logs"):
        parser.add_argument("run_id", nargs="?", default="", metavar="RUN_ID",
                            help="the run (default: the latest under --log_dir)")
    if name == "logs":
        parser.add_argument("node", nargs="?", default=None, metavar="NODE",
                            help="only this node (or a run-level target: control, a host)")
        parser.add_argument("--phase", metavar="P",
                            help="only this phase: EXPORT, UPGRADE, PRE-APPLY, APPLY, POST-APPLY, ROLLBACK, "
                                 "BEFORE, AFTER, GATE, or LB (the load-balancer hook's actions and output)")
        parser.add_argument("--failed", action="store_true",
                            help="the failed steps first, with their full output")
    if name == "report":
        parser.add_argument("-o", "--output", required=True, metavar="FILE.html",
                            help="where to write the report (one self-contained HTML file)")
    if name == "lock":
        parser.add_argument("action", choices=("status",), help="status: who holds the fleet lock on which node")
        parser.add_argument("--config", metavar="FILE", help="topology file (default: the built-in reference topology)")
        parser.add_argument("-i", "--inventory", metavar="FILE", help="an Ansible inventory whose hosts are the nodes")
        parser.add_argument("--host-key-policy", "--host_key_policy", dest="host_key_policy",
                            choices=("strict", "accept-new"), help="override the topology's ssh.host_key_policy")
    else:
        parser.add_argument("--log_dir", "--log-dir", dest="log_dir", default=LOG_DIR, metavar="DIR",
                            help="where run folders are (default: logs/)")
    return parser


DESCRIPTIONS = {
    "runs": "Past runs under --log_dir, newest first.",
    "show": "One run: summary table, decisions, phases per node with times and out-of-rotation windows, "
            "load-balancer actions, traffic, pauses, tiers, run steps.",
    "logs": "The commands of a run and their output (masked as in every log), filtered.",
    "report": "One self-contained HTML file: phase timeline per node, traffic curve, decisions, every "
              "command with its output.",
    "lock": "Who holds the fleet lock on which node (read-only: asks every node of the topology).",
}


def run_command(argv: Sequence[str], console: Console, env: Mapping[str, str]) -> Status:
    """Run ``argv[0]`` with its arguments; errors become a status, never a traceback."""
    name, rest = argv[0], list(argv[1:])
    if name in ("continue", "abort"):
        parser = _parser(name)
        if name == "abort":
            parser.add_argument("--keep", action="store_true",
                                help="stop without rolling back the nodes already upgraded")
    elif name in DESCRIPTIONS:
        parser = _review_parser(name)
    else:
        console.error(f"zdupgrade {name}: not available in this version")
        return Status.USAGE_ERROR
    try:
        args = parser.parse_args(rest)
    except SystemExit as exc:
        return Status.SUCCESS if exc.code == 0 else Status.USAGE_ERROR
    try:
        if name in ("continue", "abort"):
            return _answer(args, console, "continue" if name == "continue" else
                           ("abort-keep" if args.keep else "abort"))
        for option in ("log_dir", "output", "config", "inventory"):
            if getattr(args, option, None) == "":      # an unset shell variable, not the default
                raise ConfigError(f"--{option}: empty (leave the option out for its default)")
        for option in ("log_dir", "run_id", "node", "phase", "output", "config", "inventory"):
            value = getattr(args, option, None)
            if value:
                check_text(value, f"--{option}" if option not in ("run_id", "node") else option.upper(),
                           identifier=True)
        return REVIEW[name](args, console, env)
    except ZduError as exc:
        console.error(str(exc))
        return Status.CONFIG_ERROR


# --------------------------------------------------------------------------- review

def _runs(args: argparse.Namespace, console: Console, env: Mapping[str, str]) -> Status:
    from ..report.review import LoadedRun, list_runs, unreadable
    from ..report.views import render_runs, runs_rows
    log_dir = Path(args.log_dir)
    if not log_dir.exists() and not log_dir.is_symlink():
        if args.log_dir != LOG_DIR:           # named on the command line: a typo, most likely
            raise ConfigError(f"--log_dir {args.log_dir}: no such directory")
        console.line(f"no runs (there is no {args.log_dir}/ folder here)")
        return Status.SUCCESS
    runs = list_runs(log_dir)
    for i, run in enumerate(runs):
        try:
            runs_rows([run])
        except Exception as exc:  # noqa: BLE001 - the last resort: one bad folder must not hide the others
            runs[i] = LoadedRun(run.run_id, run.path, None, problem=unreadable(exc), alive=run.alive)
    console.line(render_runs(runs))
    return Status.SUCCESS


def _reading(run: Any, command: str, render: Callable[[], T]) -> T:
    """``render()`` of a run read back; an unexpected error out of it (a value the checks when
    reading missed) is a ConfigError about the run folder, not a traceback."""
    from ..report.review import unreadable
    try:
        return render()
    except Exception as exc:  # noqa: BLE001 - the last resort
        raise ConfigError(f"zdupgrade {command}: run folder {run.path} is damaged or {unreadable(exc)}") from None


def _one_run(args: argparse.Namespace, command: str) -> Any:
    """The run named by ``args.run_id`` (latest when empty), read; ConfigError if there is none
    or it is damaged."""
    from ..report.review import latest_run_id, load_run
    from ..report.rundir import check_run_id
    log_dir = Path(args.log_dir)
    run_id = check_run_id(args.run_id) if args.run_id else latest_run_id(log_dir, f"zdupgrade {command}")
    if not (log_dir / run_id).exists() and not (log_dir / run_id).is_symlink():
        raise ConfigError(f"zdupgrade {command}: no run {run_id} under {log_dir}/")
    run = load_run(log_dir, run_id)
    if run.damaged:
        raise ConfigError(f"zdupgrade {command}: run {run_id} ({log_dir / run_id}) is damaged: {run.problem}")
    return run


def _show(args: argparse.Namespace, console: Console, env: Mapping[str, str]) -> Status:
    from ..report.views import render_show
    run = _one_run(args, "show")
    console.line(_reading(run, "show", lambda: render_show(run)))
    return Status.SUCCESS


def _logs(args: argparse.Namespace, console: Console, env: Mapping[str, str]) -> Status:
    from ..report.review import run_ids
    from ..report.views import LB_PHASE, render_logs
    log_dir = Path(args.log_dir)
    # `logs NODE` (latest run) or `logs RUN_ID [NODE]`: a first word that is no run folder is a node
    if args.run_id and args.node is None and args.run_id not in run_ids(log_dir):
        args.run_id, args.node = "", args.run_id
    run = _one_run(args, "logs")
    phase = None
    if args.phase:
        if args.phase.strip().upper() == LB_PHASE:
            phase = LB_PHASE
        else:
            try:
                phase = Phase.parse(args.phase).value
            except ValueError as exc:
                raise ConfigError(f"--phase: {exc}, or LB") from None
    state = run.state
    if args.node is not None:
        targets = set(state.node_names) | {s.target for s in state.steps if s.target}
        if args.node not in targets:
            raise ConfigError(f"zdupgrade logs: run {run.run_id} has no node {args.node!r} "
                              f"(nodes: {', '.join(state.node_names)})")
    if not run.has_output:
        raise ConfigError(f"zdupgrade logs: run {run.run_id}: commands' output is only in journal.jsonl, "
                          f"which cannot be read ({run.problem})")
    text = _reading(run, "logs", lambda: render_logs(run, args.node, phase, failed_first=args.failed))
    if run.problem:
        console.err_line(f"zdupgrade logs: warning: run {run.run_id}: {run.problem}")
    if not text:
        what = " ".join(x for x in (args.node, phase) if x)
        console.line(f"run {run.run_id}: no command ran" + (f" for {what}" if what else ""))
        return Status.SUCCESS
    console.write(text)
    return Status.SUCCESS


def _report(args: argparse.Namespace, console: Console, env: Mapping[str, str]) -> Status:
    from ..report.html import render_html
    from ..report.output import in_place, write_private
    run = _one_run(args, "report")
    page = _reading(run, "report", lambda: render_html(run))
    stream = in_place(args.output, option="-o")
    path = write_private(args.output, page.encode("utf-8"), option="-o")
    # written to a pipe or the terminal (`-o /dev/stdout`): the report alone goes there
    (console.err_line if stream else console.line)(f"report of run {run.run_id}: {path}")
    return Status.SUCCESS


def _lock(args: argparse.Namespace, console: Console, env: Mapping[str, str]) -> Status:
    from ..config.ssh_config import check_all, resolve_all
    from ..report.lockstatus import lock_status, render_lock_status
    from ..transport.pool import Connections
    from .upgrade import fleet_topology
    topology = fleet_topology(args)
    targets = resolve_all(topology.nodes, topology.ssh)
    problems = check_all(targets.values())
    if problems:
        raise ConfigError("; ".join(str(p) for p in problems))
    interrupted = threading.Event()
    connections = Connections(topology, targets=targets, give_up=interrupted.is_set,
                              on_warning=lambda m: console.err_line(f"zdupgrade: warning: {m}"))

    def interrupt() -> None:          # no more retries, and the connects under way cut short
        interrupted.set()
        connections.abandon_connects()
    try:
        locks = lock_status(topology.nodes, connections, topology.lock_dir, parallel=topology.ssh.parallel,
                            on_interrupt=interrupt)
    finally:
        connections.close()
    console.line(render_lock_status(locks, topology.lock_dir))
    if any(lock.state == "locked" for lock in locks):
        return Status.LOCKED
    if any(lock.state == "unknown" for lock in locks):
        return Status.NODE_UNREACHABLE
    return Status.SUCCESS


REVIEW: Mapping[str, Callable[[argparse.Namespace, Console, Mapping[str, str]], Status]] = {
    "runs": _runs, "show": _show, "logs": _logs, "report": _report, "lock": _lock,
}


def _answer(args: argparse.Namespace, console: Console, answer: str) -> Status:
    command = f"zdupgrade {answer.split('-')[0]}"
    if args.log_dir == "":                     # an unset shell variable, not the default
        raise ConfigError("--log_dir: empty (leave the option out for its default)")
    run_dir = find_run(Path(args.log_dir), args.run_id, option=command)
    try:
        state = replay(read_journal(run_dir.read_text(JOURNAL)))
        open_pauses = [p for p in state.pauses if p["ended"] is None]
        if state.ended is not None or not open_pauses:
            other = "" if args.run_id else _paused_elsewhere(Path(args.log_dir), state.run_id, command)
            last = state.pauses[-1] if state.pauses else None
            answered = (f"; its pause after wave {last['wave']} was answered: {last['answer']} (by {last['by']})"
                        if last is not None else "")
            ended = state.status is not None and state.ended is not None   # SUCCESS is 0: not a truth test
            raise ConfigError(f"run {state.run_id} is not paused"
                              + (f" (it ended with {state.status.name})" if ended else "") + answered + other)
        pause = open_pauses[-1]
        wave = int(pause["wave"])
        # an answer the live run took counts from the pause's start, or from the resume that came back to it
        since = max([float(pause["started"]), *state.resumed])
        alive = _alive(run_dir)
        left = leave_answer(run_dir, wave, answer, alive=alive, since=since)
        what = {"continue": "continue", "abort": "abort (rolling back what it upgraded)",
                "abort-keep": "abort (keeping the nodes already upgraded)"}[answer]
        if left.outcome == "same":
            assert left.earlier is not None
            console.line(f"run {state.run_id}, paused after wave {wave}: already told to {what} "
                         f"(by {left.earlier.by}); nothing more to do")
        elif alive:
            try:
                taken = _taken(run_dir, wave, float(pause["started"]), answer)
            except KeyboardInterrupt:   # the answer is left all the same: say so, then end as interrupted
                console.line(f"run {state.run_id}, paused after wave {wave}: told to {what} (left in its folder; "
                             "interrupted before the run took it)")
                raise
            if taken is not None and taken.answer != answer:      # typed on its terminal meanwhile, say
                raise ConfigError(f"run {state.run_id}, paused after wave {wave}, took another answer first: "
                                  f"{taken.answer} (by {taken.by}); yours ({answer}) was not used")
            console.line(f"run {state.run_id}, paused after wave {wave}: told to {what}" + (
                "" if taken is not None else " (left in its folder: the run has not taken it yet; is its process "
                                             "stopped?)"))
        else:
            replaced = (f", replacing the one left earlier ({left.earlier.answer} by {left.earlier.by})"
                        if left.earlier is not None else "")
            console.line(f"run {state.run_id} is paused after wave {wave} but its process is gone; the answer "
                         f"({what}) is left in its folder{replaced}: `zdupgrade --resume {state.run_id}` takes it")
        return Status.SUCCESS
    finally:
        run_dir.close()


#: how long ``continue`` / ``abort`` wait for the live run to take the answer (it looks every 0.2 s)
TAKEN_WAIT = 2.0


def _taken(run_dir: Any, wave: int, started: float, answer: str) -> PauseAnswer | None:
    """The answer the live run took for its pause after ``wave`` (begun at ``started``): ours
    once it is gone from the folder; the run's own when the pause ended otherwise (ours is then
    taken back); None if it took none within TAKEN_WAIT."""
    deadline = time.monotonic() + TAKEN_WAIT
    while time.monotonic() < deadline:
        if not run_dir.exists(ANSWER_FILE):
            return PauseAnswer(answer)
        time.sleep(0.05)
    try:
        state = replay(read_journal(run_dir.read_text(JOURNAL)))
    except (OSError, ValueError, KeyError, TypeError, AssertionError, ZduError):
        return None
    ended = next((p for p in state.pauses if p["wave"] == wave and p["started"] == started and p["ended"]), None)
    if ended is None:
        return None
    withdraw_answer(run_dir, wave, answer)
    return PauseAnswer(str(ended["answer"]), str(ended["by"]))


def _paused_elsewhere(log_dir: Path, latest: str, command: str) -> str:
    """For the error about a latest run that is not paused: the other runs under ``log_dir``
    that are (named, never answered: the operator says which)."""
    found = []
    for path in sorted(log_dir.glob(f"*/{JOURNAL}"), reverse=True)[:50]:
        run_id = path.parent.name
        if run_id == latest:
            continue
        try:
            other = find_run(log_dir, run_id, option=command)
        except ZduError:
            continue
        try:
            state = replay(read_journal(other.read_text(JOURNAL)))
        except (OSError, ValueError, KeyError, TypeError, AssertionError, ZduError):
            continue
        finally:
            other.close()
        waves = [p["wave"] for p in state.pauses if p["ended"] is None]
        if state.ended is None and waves:
            found.append(f"{run_id} (after wave {waves[-1]})")
    if not found:
        return ""
    return (f"; paused under {log_dir}/: {', '.join(found)}: name the run (`{command} RUN_ID`)")


def _alive(run_dir: object) -> bool:
    """Whether a process holds the run folder's control lock (the run is being driven)."""
    from ..report.review import driven
    from ..report.rundir import RunDir
    assert isinstance(run_dir, RunDir)
    return driven(run_dir)
