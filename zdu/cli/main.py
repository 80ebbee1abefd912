"""Command line: ``zdupgrade --old_install_dir OLD --new_install_dir NEW [--config FILE] ...``

``main(argv, env) -> Status`` parses the command line, maps every error to a status (no
traceback ever reaches the operator) and is called in-process by the tests; the work itself
is in :mod:`zdu.cli.upgrade`.  Only ``zdu.cli`` touches argv, stdout/stderr and the exit status.
"""
from __future__ import annotations

import argparse
import errno
import gc
import importlib.util
import os
import sys
import threading
from typing import Mapping, Sequence, TextIO

from zdu import __version__
from zdu.config.values import describe_value
from zdu.config.profile import builtin_profiles
from zdu.errors import LockError, ZduError
from zdu.report.rundir import LOG_DIR
from zdu.status import Status

from .console import Console
from .signals import stop_on_signals

STATUS_HELP = "\n".join(f"  {int(s):>3}  {s.name}" for s in Status)

#: ``zdupgrade COMMAND ...`` (anything else is an upgrade run)
SUBCOMMANDS = ("continue", "abort", "runs", "show", "logs", "report", "lock")

EPILOG = f"""\
commands (zdupgrade COMMAND --help):
  continue [RUN_ID]       a paused run goes on
  abort [RUN_ID] [--keep] a paused run stops (rolling back what it upgraded, unless --keep)
  runs                    past runs under --log_dir, newest first
  show [RUN_ID]           one run: summary, decisions, phases per node, load balancer, traffic
  logs [RUN_ID] [NODE] [--phase P] [--failed]
                          the commands and their output
  report [RUN_ID] -o FILE.html
                          one self-contained HTML report (timeline, traffic, commands)
  lock status             who holds the fleet lock on which node (--config / --inventory)

exit status (the run's status):
{STATUS_HELP}

Without --config the built-in reference topology (Node-A, Node-B, Node-C on
127.0.0.11-13:2222, the local lab's addresses) is used.  Built-in profiles:
{', '.join(builtin_profiles()) or '(none)'}.
"""


def _megabytes(text: str) -> int:
    """--min-free-mb: a whole number of MB, 0 (no check) or more (a negative one turned the check
    off without a word)."""
    if not (text.isascii() and text.isdigit()) or len(text) > 9:
        raise argparse.ArgumentTypeError(f"must be a whole number of MB from 0 to 999999999, got {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zdupgrade",
        description="Upgrade a fleet of nodes from an old installation to a new one with zero downtime, "
                    "over SSH, node by node behind a load balancer, rolling back on failure.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument("--old_install_dir", "--old-install-dir", dest="old_install_dir", metavar="DIR",
                        help="the current installation directory on every node (required, except with --resume)")
    parser.add_argument("--new_install_dir", "--new-install-dir", dest="new_install_dir", metavar="DIR",
                        help="the new installation directory on every node (required, except with --resume)")
    parser.add_argument("--config", metavar="FILE",
                        help="topology file (YAML or JSON); default: the built-in reference topology")
    parser.add_argument("--profile", metavar="NAME|FILE",
                        help="what the phases do: a built-in profile name, config/profiles/NAME.yaml, "
                             "or a file; default: the topology's 'profile'")
    parser.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true",
                        help="print the whole plan (every command, load-balancer action and rollback path) "
                             "and exit; connects to nothing")
    parser.add_argument("--log_dir", "--log-dir", dest="log_dir", metavar="DIR", default=LOG_DIR,
                        help="where run folders go (default: logs/)")
    parser.add_argument("--serial", metavar="N|N%|LIST",
                        help="nodes per wave in the online phases: a count, a percentage, or a comma "
                             "list like 1,50%% whose last value repeats (default: topology's serial, 1)")
    parser.add_argument("--rollback-policy", "--rollback_policy", dest="rollback_policy", metavar="REF",
                        help="default (roll back the failed node and every switched node), node-only, "
                             "or module.path:function")
    parser.add_argument("--host-key-policy", "--host_key_policy", dest="host_key_policy",
                        choices=("strict", "accept-new"),
                        help="override the topology's ssh.host_key_policy (default strict: unknown keys refused)")
    parser.add_argument("--traffic", metavar="URL",
                        help="send requests to URL (through the load balancer) for the whole run and report "
                             "sent/failed/latency in the summary")
    parser.add_argument("--traffic-rate", "--traffic_rate", dest="traffic_rate", type=float, default=200.0,
                        metavar="N", help="requests per second for --traffic (default 200)")
    parser.add_argument("--min-free-mb", "--min_free_mb", dest="min_free_mb", type=_megabytes, default=0, metavar="MB",
                        help="preflight: refuse nodes with less free space under /var/tmp (default: no check)")
    parser.add_argument("--lab", action="store_true",
                        help="bring up the local lab (3 OpenSSH nodes in Docker + HAProxy), upgrade it with "
                             "traffic flowing, print the summary, tear it down; needs root and Docker")
    parser.add_argument("--resume", nargs="?", const="", metavar="RUN_ID",
                        help="continue a run whose control process died (latest run under --log_dir by "
                             "default) from its first unfinished step, with the same plan")
    parser.add_argument("--break-lock", "--break_lock", dest="break_lock", action="store_true",
                        help="take the fleet lock even if another run holds it (only when that run is dead)")
    parser.add_argument("--lock-message", "--lock_message", dest="lock_message", default="", metavar="TEXT",
                        help="a note stored with the fleet lock, shown to anyone who finds it taken")
    parser.add_argument("-i", "--inventory", metavar="FILE",
                        help="an Ansible inventory (INI or YAML) whose hosts are the nodes (with or without --config)")
    parser.add_argument("-l", "--limit", metavar="PATTERN",
                        help="work on the nodes that match (Ansible's patterns: names, groups, globs, ~regex, "
                             "!exclude, &intersect, comma lists); the others are listed as skipped")
    parser.add_argument("--pause-after-wave", "--pause_after_wave", dest="pause_after_wave", type=int,
                        action="append", metavar="N",
                        help="pause after wave N (repeatable) until `zdupgrade continue` / `abort` or the "
                             "topology's pause_timeout; a canary: --serial 1,100%% --pause-after-wave 1")
    parser.add_argument("--plain", action="store_true",
                        help="plain progress lines even on a terminal (no live view)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings, failures and the summary")
    parser.add_argument("-v", "--verbose", action="store_true", help="also every command as it starts")
    parser.add_argument("--junit", metavar="FILE",
                        help="write a JUnit XML report (a test case per node x phase) to FILE at the end")
    parser.add_argument("--events", metavar="FILE|-",
                        help="write every event as a JSON line to FILE as it happens (-: stdout, and the "
                             "console goes to stderr); format in docs/run-json.md")
    parser.add_argument("--version", action="version", version=f"zdupgrade {__version__}")
    return parser


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None, *,
         out: TextIO | None = None, err: TextIO | None = None,
         stop_event: threading.Event | None = None) -> Status:
    """Run zdupgrade; return the status (the caller turns it into the exit status).

    ``env`` is the control machine's environment (default ``os.environ``), read for
    ``{env: NAME}`` variables.  ``stop_event`` lets a caller (a test) interrupt the run as a
    signal would.
    """
    console = Console(out or sys.stdout, err or sys.stderr)
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        arguments = _home_expanded(arguments)
    except ValueError as exc:
        console.error(str(exc))
        return Status.CONFIG_ERROR
    gone = _cwd_gone(arguments)
    if gone:
        console.error(gone)
        return Status.CONFIG_ERROR
    if arguments and arguments[0] in SUBCOMMANDS:
        from .commands import run_command
        return run_command(arguments, console, dict(os.environ if env is None else env))
    if arguments and arguments[0] and not arguments[0].startswith("-"):
        # before argparse, which would answer "zdupgrade statuss --help" with the main help and 0
        console.error(f"unknown command {ascii(arguments[0])}; the commands are {', '.join(SUBCOMMANDS)} "
                      "(zdupgrade --help)")
        return Status.USAGE_ERROR
    parser = build_parser()
    try:
        args = parser.parse_args(arguments)
    except SystemExit as exc:
        return Status.SUCCESS if exc.code == 0 else Status.USAGE_ERROR
    environ = dict(os.environ if env is None else env)
    if args.events == "-":          # stdout carries the events; everything for people goes to stderr
        args.events_stream, console.out = console.out, console.err
    if args.quiet and args.verbose:
        console.error("-q and -v do not go together")
        return Status.USAGE_ERROR
    if args.resume is None:
        missing = [opt for opt, value in (("--old_install_dir", args.old_install_dir),
                                          ("--new_install_dir", args.new_install_dir)) if value is None]
        if missing:
            console.error(f"the following arguments are required: {', '.join(missing)}")
            return Status.USAGE_ERROR
    elif args.lab or args.dry_run:
        console.error("--resume continues a stopped run as it was planned; it does not go with --lab or --dry-run")
        return Status.USAGE_ERROR
    stop = stop_event or threading.Event()
    previous_hook = threading.excepthook

    def thread_error(hook_args: threading.ExceptHookArgs) -> None:  # one line, not a traceback
        console.error(f"internal error in thread {hook_args.thread.name if hook_args.thread else '?'}: "
                      f"{hook_args.exc_type.__name__}: {hook_args.exc_value}")
    threading.excepthook = thread_error
    from .upgrade import Upgrade
    upgrade: Upgrade | None = None
    if not args.dry_run:        # a terminal or pipe that is not read must not hold up a run (a plan
        console.start_writer()  # is only output: it waits for its reader, and never drops a line)
    try:
        with stop_on_signals(stop, console):
            try:
                if args.lab:
                    if importlib.util.find_spec("testcontainers") is None:
                        console.error("--lab needs the lab extra (testcontainers is not installed): "
                                      "pip install 'zdupgrade[lab]', or run scripts/setup.sh")
                        return Status.CONFIG_ERROR
                    from zdu.lab.demo import run_lab
                    return run_lab(args, console, lambda a: Upgrade(a, console, environ, stop, arguments).run())
                upgrade = Upgrade(args, console, environ, stop, arguments)
                return upgrade.run()
            finally:
                # the console's last lines (the summary) reach a slow reader while a Ctrl-C
                # still only sets the stop: it must not turn a finished run's status into 130
                console.drain()
    except LockError as exc:
        console.error(_masked(upgrade, str(exc)))
        return Status.LOCKED
    except ZduError as exc:
        console.error(_masked(upgrade, str(exc)))
        return Status.CONFIG_ERROR
    except Exception as exc:  # a bug: say so plainly; the conductor has already put nodes back
        console.error(_masked(upgrade, f"internal error: {type(exc).__name__}: {exc} (this is a zdupgrade bug; "
                                       "the run folder's run.json and run.log say what was done)"))
        return Status.FATAL_ERROR
    finally:
        threading.excepthook = previous_hook


#: options of the review and lock commands whose value is a path (a relative one needs the
#: working directory)
_PATH_OPTIONS = ("--log_dir", "--log-dir", "--config", "-i", "--inventory", "-o", "--output")


def _cwd_gone(arguments: Sequence[str]) -> str | None:
    """Why the command cannot run in this working directory, or None.  A shell keeps its working
    directory after another shell removed it (a release folder cleaned up, a checkout replaced);
    ``getcwd`` then fails.  A run records its working directory (``--resume`` needs it), runs
    local steps and hooks in it and finds relative paths from it, so it is refused at once, before
    anything is read or touched (without this it failed after taking its run folder and the fleet
    lock, as an internal error).  A review command may go on when every path it was given is
    absolute (``logs/``, the default ``--log_dir``, is relative)."""
    try:
        os.getcwd()
        return None
    except FileNotFoundError:
        pass
    except OSError as exc:            # EACCES on some systems: a parent no longer searchable
        if exc.errno != errno.EACCES:
            return None
    if any(a in ("-h", "--help", "--version") for a in arguments):
        return None
    if arguments and arguments[0] in SUBCOMMANDS:
        values = _option_values(arguments, _PATH_OPTIONS)
        given_log_dir = any(opt in ("--log_dir", "--log-dir") for _, opt, _, _ in values)
        if all(os.path.isabs(value) for _, _, value, _ in values) \
                and (given_log_dir or arguments[0] == "lock"):
            return None
    shell = os.environ.get("PWD", "")
    where = f" ({describe_value(shell)}, as the shell calls it)" if shell else ""
    return (f"the current directory{where} no longer exists (it was removed or renamed after this shell entered "
            "it): cd to an existing directory and run zdupgrade again; nothing was done")


#: options whose ``~`` zdupgrade expands itself (--config, --inventory and --profile are expanded
#: where they are read): a shell leaves ``--log_dir=~/logs`` as it is
_HOME_OPTIONS = ("--log_dir", "--log-dir", "--junit", "--events", "-o", "--output")


def _home_expanded(arguments: Sequence[str]) -> list[str]:
    """``arguments`` with a leading ``~`` or ``~user`` of the path options expanded.  Left as
    they were, ``--log_dir=~/logs`` made a folder named ``~`` in the working directory -- the
    one an operator later removes with ``rm -rf ~`` -- and ``--config=~/t.yaml`` beside it was
    expanded.  ValueError when ``~`` cannot be expanded (no HOME and no passwd entry)."""
    expanded = list(arguments)
    for at, option, value, joined in _option_values(arguments, _HOME_OPTIONS):
        if not value.startswith("~"):
            continue
        home = os.path.expanduser(value)
        if home.startswith("~"):
            user = value.split("/")[0]
            why = (f"there is no user {describe_value(user[1:])}" if user != "~" else
                   "HOME is not set, and this user has no entry in the passwd database")
            raise ValueError(f"{option} {describe_value(value)}: cannot expand {user}: {why}")
        expanded[at] = f"{option}={home}" if joined else home
    return expanded


def _option_values(arguments: Sequence[str], options: Sequence[str]) -> list[tuple[int, str, str, bool]]:
    """Each of ``options`` given in ``arguments`` (``--opt value`` or ``--opt=value``): where its
    value is, the option, the value, and whether it was joined with ``=``."""
    found: list[tuple[int, str, str, bool]] = []
    for index, token in enumerate(arguments):
        if token == "--":
            break
        option, equals, value = token.partition("=")
        if option in options:
            if equals:
                found.append((index, option, value, True))
            elif index + 1 < len(arguments):
                found.append((index + 1, option, arguments[index + 1], False))
    return found


def _standard_descriptors() -> None:
    """Descriptors 0, 1 and 2 opened on /dev/null where they are closed (``<&-``, ``>&-``,
    ``2>&-`` in a cron line or a script), and Python's streams made again for them.  Without this
    ``sys.stdout`` is None (the run ended 80, "internal error", right after taking the fleet lock)
    and, worse, the first file the run opens gets descriptor 1 or 2: whatever writes to "stdout"
    then writes into run.log or the journal."""
    for fd, flags in ((0, os.O_RDONLY), (1, os.O_WRONLY), (2, os.O_WRONLY)):
        try:
            os.fstat(fd)
            continue
        except OSError:
            pass
        try:
            opened = os.open(os.devnull, flags)
        except OSError:               # no /dev/null (a bare chroot): leave it as it is
            continue
        if opened != fd:
            os.dup2(opened, fd)
            os.close(opened)
    for name, fd, mode in (("stdin", 0, "r"), ("stdout", 1, "w"), ("stderr", 2, "w")):
        if getattr(sys, name) is None:
            try:
                stream = open(fd, mode, buffering=1, closefd=False,
                              errors="strict" if name == "stdin" else "backslashreplace")
            except OSError:
                continue
            setattr(sys, name, stream)


def _masked(upgrade: object, text: str) -> str:
    masker = getattr(upgrade, "masker", None)
    return masker(text) if masker is not None else text


def entry_point() -> None:
    """Run the command line and exit with its status (``zdu.__main__.launch`` calls it: the
    console script, ``python3 -m zdu`` and ``./zdupgrade``)."""
    _standard_descriptors()
    status = int(main())
    # The run has closed what it opened.  At exit the interpreter's collector would walk every
    # object once more (modules, the plan, the run's records) only to free memory the process is
    # giving back: 0.1 s of a 3-node run.  Frozen objects are skipped; atexit handlers, flushing
    # and closing work as before.
    gc.freeze()
    sys.exit(status)
