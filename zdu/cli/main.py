"""Command line: ``zdupgrade --old_install_dir OLD --new_install_dir NEW [--config FILE] ...``

The only module that touches argv, stdout/stderr and the exit status.
``main(argv, env) -> Status`` is called in-process by the tests.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping, Sequence, TextIO

from zdu import __version__
from zdu.run.conductor import Conductor
from zdu.errors import ConfigError, LockError, ZduError
from zdu.run.events import Event, EventBus
from zdu.transport.base import CommandHandler
from zdu.lb import make_load_balancer
from zdu.lb.base import LoadBalancer
from zdu.run.lock import FleetLock, LockOwner
from zdu.report.runfolder import LineWriter, RunFolder, make_run_dir, new_run_id
from zdu.model import Node, Topology
from zdu.planning.plan import Plan, build_plan, format_plan
from zdu.run.preflight import preflight
from zdu.config.profile import builtin_profiles, load_profile
from zdu.run.state import RunState
from zdu.run.policy import load_policy
from zdu.status import Status
from zdu.report.summary import render_summary
from zdu.config.topology import load_topology, reference_topology

STATUS_HELP = "\n".join(f"  {int(s):>3}  {s.name}" for s in Status)

EPILOG = f"""\
exit status (the run's status):
{STATUS_HELP}

Without --config the built-in reference topology (Node-A, Node-B, Node-C on
127.0.0.11-13:2222, the local lab's addresses) is used.  Built-in profiles:
{', '.join(builtin_profiles()) or '(none)'}.
"""


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
    parser.add_argument("--log_dir", "--log-dir", dest="log_dir", metavar="DIR", default="logs",
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
    parser.add_argument("--min-free-mb", "--min_free_mb", dest="min_free_mb", type=int, default=0, metavar="MB",
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
    parser.add_argument("--version", action="version", version=f"zdupgrade {__version__}")
    return parser


class Console:
    """Where the CLI writes (stdout/stderr by default; tests pass StringIO)."""

    def __init__(self, out: TextIO, err: TextIO) -> None:
        self.out, self.err = out, err
        self._lock = threading.Lock()

    def line(self, text: str) -> None:
        with self._lock:
            self.out.write(text + "\n")
            self.out.flush()

    def error(self, text: str) -> None:
        with self._lock:
            self.err.write(f"zdupgrade: error: {text}\n")
            self.err.flush()


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None, *,
         out: TextIO | None = None, err: TextIO | None = None,
         stop_event: threading.Event | None = None) -> Status:
    """Run zdupgrade; return the status (the caller turns it into the exit status).

    ``env`` is the control machine's environment (default ``os.environ``), read for
    ``{env: NAME}`` variables.
    """
    console = Console(out or sys.stdout, err or sys.stderr)
    parser = build_parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:
        return Status.SUCCESS if exc.code == 0 else Status.USAGE_ERROR
    environ = dict(os.environ if env is None else env)
    if args.resume is None:
        missing = [opt for opt, value in (("--old_install_dir", args.old_install_dir),
                                          ("--new_install_dir", args.new_install_dir)) if value is None]
        if missing:
            console.error(f"the following arguments are required: {', '.join(missing)}")
            return Status.USAGE_ERROR
    elif args.lab or args.dry_run:
        console.error("--resume continues a stopped run as it was planned; it does not go with --lab or --dry-run")
        return Status.USAGE_ERROR
    previous_hook = threading.excepthook

    def thread_error(hook_args: threading.ExceptHookArgs) -> None:  # one line, not a traceback
        console.error(f"internal error in thread {hook_args.thread.name if hook_args.thread else '?'}: "
                      f"{hook_args.exc_type.__name__}: {hook_args.exc_value}")
    threading.excepthook = thread_error
    try:
        if args.resume is None:
            _check_dirs(args.old_install_dir, args.new_install_dir)
        if args.lab:
            return _run_lab(args, console, lambda a: _run(a, console, environ, stop_event))
        return _run(args, console, environ, stop_event)
    except LockError as exc:
        console.error(str(exc))
        return Status.LOCKED
    except ZduError as exc:
        console.error(str(exc))
        return Status.CONFIG_ERROR
    except Exception as exc:  # a bug: say so plainly; the conductor has already put nodes back
        console.error(f"internal error: {type(exc).__name__}: {exc} (this is a zdupgrade bug; the run "
                      "folder's run.json and run.log say what was done)")
        return Status.FATAL_ERROR
    finally:
        threading.excepthook = previous_hook


def _check_dirs(old: str, new: str) -> None:
    for option, value in (("--old_install_dir", old), ("--new_install_dir", new)):
        if not value.strip():
            raise ConfigError(f"{option}: the directory is empty")
        if "\x00" in value:
            raise ConfigError(f"{option}: the directory contains a NUL byte")
        if not value.startswith("/"):
            raise ConfigError(f"{option}: {value!r} is not an absolute path (the same path is used on every node)")
    if os.path.normpath(old) == os.path.normpath(new):
        raise ConfigError(f"--old_install_dir and --new_install_dir are the same directory: {old!r}")


def _parse_serial(text: str | None) -> Any:
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",") if p.strip()]
    values: list[int | str] = [int(p) if p.isdigit() else p for p in parts]
    return values if len(values) != 1 else values[0]


def prepare(args: argparse.Namespace, run_id: str, env: Mapping[str, str]) -> tuple[Topology, Plan]:
    """Load topology and profile and render the plan; ConfigError on any problem."""
    topology = load_topology(args.config) if args.config else reference_topology()
    if args.host_key_policy:
        topology = dataclasses.replace(topology, ssh=dataclasses.replace(
            topology.ssh, host_key_policy=args.host_key_policy))
    profile_ref = args.profile or topology.profile
    if not profile_ref:
        raise ConfigError(f"{topology.source}: no profile: set 'profile' in the topology or pass --profile")
    base_dir = Path(args.config).parent if args.config and not args.profile else None
    profile = load_profile(profile_ref, base_dir)
    plan = build_plan(topology, profile, old_install_dir=args.old_install_dir,
                      new_install_dir=args.new_install_dir, run_id=run_id,
                      serial=_parse_serial(args.serial), env=env)
    return topology, plan


class HandlerPool:
    """One handler per node, created on first use and shared by preflight and the conductor."""

    def __init__(self, topology: Topology, on_host_key: Callable[[str, str, str], None]) -> None:
        from zdu.transport import make_handler
        self._make = lambda node: make_handler(node, topology.ssh, on_host_key_accepted=on_host_key)
        self._handlers: dict[str, CommandHandler] = {}
        self._lock = threading.Lock()
        self._topology = topology

    def __call__(self, node: Node) -> CommandHandler:
        with self._lock:
            if node.name not in self._handlers:
                self._handlers[node.name] = self._make(node)
            return self._handlers[node.name]

    def by_name(self, name: str) -> CommandHandler:
        """The handler of a topology node, or of another host given as ``[user@]host[:port]``
        (a load balancer reached over SSH: ``load_balancer.via``)."""
        try:
            return self(self._topology.node(name))
        except KeyError:
            pass
        match = re.fullmatch(r"(?:([^@\s]+)@)?([A-Za-z0-9.\-]+|\[[0-9a-fA-F:]+\])(?::(\d{1,5}))?", name)
        if not match:
            raise ConfigError(f"load_balancer.via: {name!r} is neither a node of the topology nor "
                              "[user@]host[:port]")
        user, host, port = match.groups()
        return self(Node(name=f"lb-{host}", host=host.strip("[]"), port=int(port or 22), user=user))

    def close(self) -> None:
        for handler in self._handlers.values():
            try:
                handler.close()
            except Exception:
                pass


def _invocation(args: argparse.Namespace) -> dict[str, Any]:
    """What --resume needs to rebuild the same plan (file paths made absolute)."""
    def absolute(ref: str | None) -> str | None:
        if ref and (os.sep in ref or ref.endswith((".yaml", ".yml", ".json"))):
            return os.path.abspath(os.path.expanduser(ref))
        return ref
    return {"old_install_dir": args.old_install_dir, "new_install_dir": args.new_install_dir,
            "config": absolute(args.config), "profile": absolute(args.profile), "serial": args.serial,
            "rollback_policy": args.rollback_policy, "host_key_policy": args.host_key_policy,
            "traffic": args.traffic, "traffic_rate": args.traffic_rate, "min_free_mb": args.min_free_mb}


def _load_previous(args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    """The run folder and run.json of the run to resume (the latest by default)."""
    log_dir = Path(args.log_dir)
    if args.resume:
        run_dir = log_dir / args.resume
        if not (run_dir / "run.json").is_file():
            raise ConfigError(f"--resume {args.resume}: no run.json in {run_dir}")
    else:
        runs = sorted(p.parent for p in log_dir.glob("*/run.json"))
        if not runs:
            raise ConfigError(f"--resume: no run to resume under {log_dir}/")
        run_dir = runs[-1]
    try:
        data = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{run_dir / 'run.json'}: cannot read the run record: {exc}") from None
    if not data.get("invocation") or not data.get("plan_fingerprint"):
        raise ConfigError(f"{run_dir}: run {data.get('run_id')} never started changing nodes "
                          "(it stopped in preflight); start a new run instead")
    if data.get("status") and data.get("ended"):
        raise ConfigError(f"run {data['run_id']} already finished with {data['status']['name']} "
                          f"({data['status']['code']}); nothing to resume")
    return run_dir, data


def _run(args: argparse.Namespace, console: Console, env: Mapping[str, str],
         stop_event: threading.Event | None) -> Status:
    previous: dict[str, Any] | None = None
    run_dir: Path | None = None
    if args.resume is not None:
        run_dir, previous = _load_previous(args)
        for key, value in previous["invocation"].items():
            setattr(args, key, value)
        run_id = previous["run_id"]
    else:
        run_id = new_run_id()
    topology, plan = prepare(args, run_id, env)
    if args.traffic:  # a bad URL or rate is a usage error now, not a failure after nodes were locked
        from zdu.run.traffic import TrafficProbe
        try:
            TrafficProbe(args.traffic, rate=args.traffic_rate)
        except ValueError as exc:
            raise ConfigError(f"--traffic {args.traffic!r} --traffic-rate {args.traffic_rate:g}: {exc}") from None
    fingerprint = hashlib.sha256(format_plan(plan).encode()).hexdigest()
    if previous is not None:
        if previous["plan_fingerprint"] != fingerprint:
            raise ConfigError(f"run {run_id}: the topology, profile or environment changed since the run "
                              "started, so the plan is not the same; refusing to resume (see run.log for "
                              "where it stopped)")
        state = RunState.from_dict(previous)
        state.status, state.ended = None, None
        state.resumed.append(time.time())
    else:
        state = RunState(run_id=run_id, old_install_dir=plan.old_install_dir,
                         new_install_dir=plan.new_install_dir, profile=plan.profile, topology=plan.topology,
                         node_names=list(plan.node_names), lb=topology.load_balancer.type,
                         invocation=_invocation(args), plan_fingerprint=fingerprint)
    pool = HandlerPool(topology, lambda node, kind, fp: state.host_keys_accepted.append(
        {"node": node, "key_type": kind, "fingerprint": fp}))
    policy = load_policy(args.rollback_policy)
    lb = make_load_balancer(topology.load_balancer, handler_factory=pool.by_name)
    if args.dry_run:
        console.out.write(format_plan(plan, lb.describe))
        return Status.SUCCESS
    try:
        return _execute(args, console, stop_event, topology, plan, state, pool, lb, policy, run_dir)
    finally:
        lb.close()
        pool.close()


def _execute(args: argparse.Namespace, console: Console, stop_event: threading.Event | None,
             topology: Topology, plan: Plan, state: RunState, pool: HandlerPool, lb: LoadBalancer,
             policy: Any, run_dir: Path | None) -> Status:
    resuming = run_dir is not None
    run_dir = run_dir or make_run_dir(Path(args.log_dir), plan.run_id)
    folder = RunFolder(run_dir, state)
    bus = EventBus([LineWriter(console.line), folder])
    console.line(f"zdupgrade {__version__}: {'resuming ' if resuming else ''}run {plan.run_id}, logs in {run_dir}")
    lock: FleetLock | None = None
    try:
        problems = preflight(plan, pool, lb, parallel=max(topology.ssh.parallel, len(plan.nodes)),
                             min_free_mb=args.min_free_mb, check_dirs=not resuming)
        if problems:
            console.error(f"preflight found {len(problems)} problem(s); nothing was changed:")
            for problem in problems:
                console.err.write(f"  - {problem}\n")
                folder.log(f"PREFLIGHT: {problem}")
            unreachable = all(p.kind in ("unreachable", "host-key", "auth") for p in problems)
            status = Status.NODE_UNREACHABLE if unreachable else Status.CONFIG_ERROR
            if not resuming:  # a failed resume leaves the run resumable
                state.status, state.ended = status, time.time()
            state.warnings.extend(f"preflight: {p}" for p in problems)
            folder.write_json()
            return status
        lock = FleetLock([p.node for p in plan.nodes], pool, LockOwner.current(plan.run_id, args.lock_message),
                         break_lock=args.break_lock)
        lock.acquire()
        state.lock = dataclasses.asdict(lock.owner)
        for broken in lock.broken:
            state.warnings.append(f"lock broken with --break-lock: {broken}")
        probe = _start_traffic(args, bus)
        stop = stop_event or threading.Event()
        conductor = Conductor(plan, state, handler_factory=pool, lb=lb, bus=bus, policy=policy,
                              command_timeout=topology.ssh.command_timeout, stop_event=stop, resume=resuming)
        with _signals(stop, console):
            status = conductor.execute()
        if probe is not None:
            probe.stop()
            report = probe.report()
            state.traffic = {**report.to_dict(), "summary_line": report.summary_line()}
        state.warnings.extend(lock.release())
        summary = render_summary(state)
        console.line("")
        console.line(summary)
        folder.log(summary)
        folder.write_json()
        console.line(f"run log: {folder.run_log_path}")
        return status
    except LockError as exc:
        state.warnings.append(str(exc))
        folder.log(f"LOCKED: {exc}")
        folder.write_json()
        raise
    finally:
        if lock is not None and lock.held:
            lock.release()
        folder.close()


def _start_traffic(args: argparse.Namespace, bus: EventBus) -> Any:
    if not args.traffic:
        return None
    from zdu.run.traffic import TrafficProbe
    probe = TrafficProbe(args.traffic, rate=args.traffic_rate)
    probe.start()

    opened: dict[str, str] = {}
    count: dict[str, int] = {}

    def windows(event: Event) -> None:  # one traffic window per time a node is out: disable .. enable
        if event.kind != "lb_action" or not event.node:
            return
        if event.data.get("action") == "disable" and event.node not in opened:
            count[event.node] = count.get(event.node, 0) + 1
            label = event.node if count[event.node] == 1 else f"{event.node} ({count[event.node]})"
            opened[event.node] = label
            probe.open_window(label)
        elif event.data.get("action") == "enable" and event.data.get("ok") and event.node in opened:
            probe.close_window(opened.pop(event.node))
    bus.subscribe(windows)
    return probe


@contextmanager
def _signals(stop: threading.Event, console: Console) -> Iterator[None]:
    """First Ctrl-C/SIGTERM: stop at the next safe point; second: say loudly what that means."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    count = 0

    def handler(signum: int, frame: Any) -> None:
        nonlocal count
        count += 1
        stop.set()
        if count == 1:
            console.line(f"\n*** {signal.Signals(signum).name}: stopping at the next safe point; nodes taken "
                         "out of the load balancer will be put back (or rolled back per policy). "
                         "Press again only if you accept nodes left out of traffic. ***")
        else:
            console.line("*** Interrupt again: still finishing the safe stop. Killing zdupgrade now may "
                         "leave a node OUT OF THE LOAD BALANCER or half-upgraded; see run.json. ***")

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _run_lab(args: argparse.Namespace, console: Console, run: Callable[[argparse.Namespace], Status]) -> Status:
    from zdu.lab.demo import run_lab
    return run_lab(args, console, run)


def entry_point() -> None:
    """Console-script entry: exit with the run's status."""
    sys.exit(int(main()))
