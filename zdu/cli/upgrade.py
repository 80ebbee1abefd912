"""The upgrade command: load, plan, preflight, lock, conduct, report.

``Upgrade(args, ...).run()`` is the program behind ``zdupgrade --old_install_dir ...``; errors
it raises (ConfigError, LockError, ...) are mapped to a status by :mod:`zdu.cli.main`.
"""
from __future__ import annotations

import argparse
import dataclasses
import getpass
import hashlib
import importlib
import math
import os
import socket
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

from .. import __version__
from ..config.profile import load_profile
from ..config.install_dirs import validate_install_dirs
from ..config.values import check_text
from ..config.limit import select
from ..config.ssh_config import check_all, resolve_all
from ..config.topology import (limit_groups, load_topology, reference_topology, topology_from_inventory,
                               topology_notes)
from ..planning.serial import parse_serial
from ..errors import ConfigError, LockError
from ..lb import make_load_balancer
from ..lb.base import LoadBalancer
from ..model import Topology
from ..planning.masking import NO_SECRETS, Masker
from ..planning.plan import Plan, build_plan, format_plan
from ..report.rundir import RunDir, check_log_dir, new_run_id
from ..run.policy import describe_policy, load_policy
from ..status import Status
from ..transport.pool import Connections
from .console import Console

if TYPE_CHECKING:
    from ..run import events as ev
    from ..report.runfolder import RunFolder
    from ..run.lock import FleetLock
    from ..run.resume import ControlLock, Previous
    from ..run.state import Recorder, RunView

# What only a run needs (the conductor, the run folder, the lock, the live view...) is imported
# when the run starts: a dry run of 1,000 nodes is 60 ms faster without it.


def fleet_topology(args: argparse.Namespace) -> Topology:
    """The topology of ``--config`` / ``--inventory`` (the reference one without either), with
    ``--host-key-policy`` applied; ConfigError on any problem."""
    if args.config:
        topology = load_topology(args.config, inventory=args.inventory)
    elif args.inventory:
        topology = topology_from_inventory(args.inventory)
    else:
        topology = reference_topology()
    if args.host_key_policy:
        topology = dataclasses.replace(topology, ssh=dataclasses.replace(
            topology.ssh, host_key_policy=args.host_key_policy))
    return topology


def prepare(args: argparse.Namespace, run_id: str, env: Mapping[str, str]) -> tuple[Topology, Plan]:
    """Load topology and profile and render the plan; ConfigError on any problem."""
    topology = fleet_topology(args)
    profile_ref = args.profile or topology.profile
    if not profile_ref:
        raise ConfigError(f"{topology.source}: no profile: set 'profile' in the topology or pass --profile")
    base_dir = Path(args.config).parent if args.config and not args.profile else None
    profile = load_profile(profile_ref, base_dir)
    whole = topology
    skipped: tuple[str, ...] = ()
    if args.limit is not None and not args.limit.strip(" ,"):
        raise ConfigError("--limit: empty (name nodes, groups or patterns; leave the option out for every node)")
    if args.limit:
        selected, skipped = select(args.limit, topology.nodes, limit_groups(topology))
        topology = limited(topology, selected)
    plan = build_plan(topology, profile, old_install_dir=args.old_install_dir,
                      new_install_dir=args.new_install_dir, run_id=run_id,
                      serial=parse_serial(args.serial, "--serial") if args.serial is not None else None, env=env,
                      pause_after=frozenset(args.pause_after_wave or ()))
    if skipped:
        # the capacity guards count what --limit leaves out: those nodes serve all the same
        tier_nodes = {t.name: t.nodes for t in whole.tiers}
        tiers = tuple(dataclasses.replace(t, backend=tier_nodes.get(t.name, ())) if t.name else t for t in plan.tiers)
        plan = dataclasses.replace(plan, skipped=tuple(skipped), backend=whole.nodes, tiers=tiers)
    return whole, plan


def limited(topology: Topology, selected: Sequence[str]) -> Topology:
    """The topology with only ``selected`` nodes upgraded: the others become hosts (a before/after
    step may still name them), tiers keep their selected nodes."""
    keep = set(selected)
    tiers = tuple(dataclasses.replace(t, nodes=tuple(n for n in t.nodes if n in keep)) for t in topology.tiers)
    return dataclasses.replace(topology, nodes=tuple(n for n in topology.nodes if n.name in keep),
                               hosts=topology.hosts + tuple(n for n in topology.nodes if n.name not in keep),
                               tiers=tuple(t for t in tiers if t.nodes))


def _absolute(ref: str | None) -> str | None:
    """A file reference (anything with a / or a YAML/JSON suffix) made absolute; names stay."""
    if ref and (os.sep in ref or ref.endswith((".yaml", ".yml", ".json"))):
        return os.path.abspath(os.path.expanduser(ref))
    return ref


def invocation(args: argparse.Namespace) -> dict[str, Any]:
    """What --resume needs to rebuild the same plan: file references absolute, and the working
    directory (relative paths inside the topology, and config/profiles/NAME, are found from it)."""
    absolute = _absolute
    return {"old_install_dir": args.old_install_dir, "new_install_dir": args.new_install_dir,
            "config": absolute(args.config), "profile": absolute(args.profile), "serial": args.serial,
            "rollback_policy": args.rollback_policy, "host_key_policy": args.host_key_policy,
            "traffic": args.traffic, "traffic_rate": args.traffic_rate, "min_free_mb": args.min_free_mb,
            "cwd": os.getcwd(), "pause_after_wave": list(args.pause_after_wave or []),
            "inventory": args.inventory, "limit": args.limit}


def plan_fingerprint(plan: Plan) -> str:
    return hashlib.sha256(format_plan(plan).encode()).hexdigest()


def _check_known_hosts(topology: Topology) -> None:
    """ConfigError when the known_hosts file is ``~/...`` and ``~`` means nothing here (HOME
    unset and a user id without a passwd entry, as in a container run with an arbitrary uid):
    the path would be taken relative to the working directory, and accept-new would write the
    nodes' host keys into a folder named ``~`` there."""
    configured = topology.ssh.known_hosts_file
    if os.path.expanduser(configured).startswith("~"):
        raise ConfigError(f"{topology.source}: ssh.known_hosts {configured!r}: '~' cannot be expanded on this "
                          f"machine (HOME is not set and user id {os.getuid()} has no passwd entry); set HOME, "
                          "or ssh.known_hosts to an absolute path")


def _in_topology(exc: ConfigError, topology: Topology) -> ConfigError:
    """``exc`` prefixed with the topology file it is about (unless it names it already)."""
    text = str(exc)
    return ConfigError(text if text.startswith(f"{topology.source}:") else f"{topology.source}: {text}")


#: what only a run's end needs (the summary's table): imported while the nodes work (see :func:`preload`)
END_MODULES = ("tabulate",)


def preload(modules: Sequence[str]) -> threading.Thread:
    """Import ``modules`` in a background thread and return it.  The control process spends
    most of a run waiting for the nodes, so a module that only the run's end needs is imported in
    that wait instead of after the last node (tabulate: 0.02-0.04 s of each run's end on the build
    machine).  The end imports it as before if the thread has not got there: the import system's
    module locks make the two one import, and an import that fails here fails there again, with
    the error in its place."""
    def load() -> None:
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 - reported where the module is really imported
                return
    thread = threading.Thread(target=load, name="zdu-preload", daemon=True)
    thread.start()
    return thread


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


class Upgrade:
    """One ``zdupgrade`` upgrade (or ``--resume``) run."""

    def __init__(self, args: argparse.Namespace, console: Console, env: Mapping[str, str],
                 stop: threading.Event, argv: list[str]) -> None:
        self.args = args
        self.console = console
        self.env = env
        self.stop = stop
        self.argv = argv
        #: masks secrets in messages printed if something goes wrong (known once the plan exists)
        self.masker: Masker = NO_SECRETS
        self._cwd: str | None = None
        self._control: ControlLock | None = None
        self._rundir: RunDir | None = None
        self._recorder: Recorder | None = None
        #: the conductor has started: from here on a stopping run still retries its connects
        self._conducting = False
        #: what preflight found already on the new version (the profile's ``upgraded`` check)
        self._already: list[Any] = []

    def run(self) -> Status:
        try:
            return self._run()
        finally:
            if self._control is not None:
                self._control.release()
            if self._rundir is not None:
                self._rundir.close()
            if self._cwd is not None:
                os.chdir(self._cwd)

    def _run(self) -> Status:
        args = self.args
        for option, value in (("--config", args.config), ("--profile", args.profile), ("--inventory", args.inventory),
                              ("--log_dir", args.log_dir), ("--rollback-policy", args.rollback_policy),
                              ("--traffic", args.traffic)):
            if value == "":     # an unset shell variable: not "the default", which may be another fleet
                raise ConfigError(f"{option}: empty (leave the option out for its default)")
        for option, value in (("--config", args.config), ("--profile", args.profile), ("--serial", args.serial),
                              ("--inventory", args.inventory), ("--limit", args.limit),
                              ("--rollback-policy", args.rollback_policy), ("--log_dir", args.log_dir),
                              ("--traffic", args.traffic), ("--resume", args.resume),
                              ("--lock-message", args.lock_message)):
            if value:
                check_text(value, option, identifier=True)
        previous: Previous | None = None
        if args.resume is not None:
            log_dir = Path(args.log_dir).absolute()
            args.log_dir = str(log_dir)
            from ..run.resume import ControlLock, find_run, load_previous
            run_dir = find_run(log_dir, args.resume)
            self._rundir = run_dir
            control = ControlLock(run_dir)
            control.acquire()
            self._control = control
            previous = load_previous(run_dir)
            for key, value in previous.invocation.items():
                if key != "cwd":
                    setattr(args, key, value)
            cwd = previous.invocation.get("cwd")
            if cwd:
                if not os.path.isdir(cwd):
                    raise ConfigError(f"run {previous.state.run_id} was started in {cwd}, which no longer exists")
                self._cwd = os.getcwd()
                os.chdir(cwd)
            run_id = previous.state.run_id
        else:
            args.old_install_dir, args.new_install_dir = validate_install_dirs(args.old_install_dir,
                                                                               args.new_install_dir)
            # file references absolute from the start, so that a resume from elsewhere plans the same
            args.config, args.profile = _absolute(args.config), _absolute(args.profile)
            args.inventory = os.path.abspath(os.path.expanduser(args.inventory)) if args.inventory else None
            run_id = new_run_id()
        topology, plan = prepare(args, run_id, self.env)
        self.masker = plan.masker
        if not args.traffic and not math.isfinite(args.traffic_rate):
            # unused without --traffic, but kept in run.json, where nan/inf are not JSON
            raise ConfigError(f"--traffic-rate {args.traffic_rate:g}: not a number of requests per second")
        if args.traffic:  # a bad URL or rate is a usage error now, not a failure after nodes were locked
            from ..run.traffic import TrafficProbe
            try:
                TrafficProbe(args.traffic, rate=args.traffic_rate)
            except ValueError as exc:
                raise ConfigError(f"--traffic {args.traffic!r} --traffic-rate {args.traffic_rate:g}: {exc}") from None
        if not args.dry_run:
            check_log_dir(args.log_dir)
        # the whole plan's text, hashed: a dry run without --resume needs none (1,000 nodes: 0.1 s)
        fingerprint = plan_fingerprint(plan) if previous is not None or not args.dry_run else ""
        if previous is not None and previous.state.plan_fingerprint != fingerprint:
            raise ConfigError(f"run {run_id}: the topology, profile or environment changed since the run "
                              "started, so the plan is not the same; refusing to resume (see run.log for "
                              "where it stopped)")
        # the hook is built and its settings checked before anything is created or contacted;
        # --dry-run runs no code a topology or an option names: custom hooks are not imported
        targets = resolve_all((*topology.nodes, *topology.hosts), topology.ssh)
        connections = Connections(topology, self._host_key_accepted, targets=targets, on_warning=self._warning,
                                  give_up=self._connects_abandoned)
        try:
            lb = make_load_balancer(topology.load_balancer, handler_factory=connections.by_name,
                                    load_code=not args.dry_run)
        except ConfigError as exc:   # "load_balancer.KEY: ..." -- in which file
            raise _in_topology(exc, topology) from None
        try:
            try:
                lb.validate(topology.nodes)
            except ConfigError as exc:   # a node the hook refuses (a built-in's or a plugin's words)
                raise _in_topology(exc, topology) from None
            if args.dry_run:
                policy_text = describe_policy(args.rollback_policy)
                self.console.write(format_plan(plan, lb.describe))
                self.console.line(f"rollback policy: {policy_text}")
                for note in topology_notes(topology):
                    self.console.line(f"note: {note}")
                if targets:
                    self.console.line("how each node is reached (topology, then ssh_config):")
                    for name, target in targets.items():
                        self.console.line(f"  {target.describe()}")
                        for note in target.notes:
                            self.console.line(f"    note: {note}")
                return Status.SUCCESS
            problems = check_all(targets.values())
            if problems:
                raise ConfigError("; ".join(str(p) for p in problems))
            if targets:
                _check_known_hosts(topology)
            policy = load_policy(args.rollback_policy)
            return self._execute(topology, plan, fingerprint, previous, policy, connections, lb, targets)
        finally:
            lb.close()
            connections.close()

    def _connects_abandoned(self) -> bool:
        """An interrupt before the conductor runs ends the run with nothing changed: a connect
        that fails then gets no retry (Ctrl-C in preflight against a node that accepts and never
        answers waited for every retry, 4 x connect_timeout).  Once the conductor runs, a
        stopping run still retries: it may need that node to put it back."""
        return self.stop.is_set() and not self._conducting

    def _warning(self, message: str) -> None:
        if self._recorder is not None:
            from ..run import events as ev
            self._recorder.emit(ev.Warned(message=self.masker(message)))
        else:
            self.console.err_line(f"zdupgrade: warning: {self.masker(message)}")

    def _host_key_accepted(self, node: str, key_type: str, fingerprint: str) -> None:
        if self._recorder is not None:
            from ..run import events as ev
            self._recorder.emit(ev.HostKeyAccepted(node=node, key_type=key_type, fingerprint=fingerprint))

    # ------------------------------------------------------------------ the run

    def _execute(self, topology: Topology, plan: Plan, fingerprint: str, previous: Previous | None,
                 policy: Any, connections: Connections, lb: LoadBalancer, targets: Mapping[str, Any]) -> Status:
        from ..report.runfolder import RunFolder
        from ..report.summary import render_summary
        from ..run import events as ev
        from ..run.conductor import Conductor
        from ..run.lock import FleetLock, LockOwner
        from ..run.resume import ControlLock
        from ..run.state import Recorder, RunState
        from .live import Outputs
        from .pause import OperatorPauser
        args = self.args
        outputs = Outputs(args, self.console, self.env, waves=plan.waves, nodes=[p.node.name for p in plan.nodes],
                          events_out=getattr(args, "events_stream", None))
        if previous is None:
            run_dir = RunDir.create(args.log_dir, plan.run_id)
            self._rundir = run_dir
            self._control = ControlLock(run_dir)
            self._control.acquire()
            opened = ev.RunOpened(run_id=plan.run_id, old_install_dir=plan.old_install_dir,
                                  new_install_dir=plan.new_install_dir, profile=plan.profile,
                                  topology=plan.topology, node_names=tuple(n.name for n in plan.backend_nodes),
                                  skipped=plan.skipped,
                                  lb=topology.load_balancer.type, invocation=invocation(args),
                                  plan_fingerprint=fingerprint, tool_version=__version__, user=_user(),
                                  host=socket.gethostname(), argv=tuple(self.argv),
                                  tiers={t.name: list(t.nodes) for t in plan.tiers if t.name},
                                  targets={n: t.to_dict() for n, t in targets.items()})
            state = RunState.opened(opened)
        else:
            run_dir, state = previous.run_dir, previous.state
        folder = RunFolder(run_dir)
        recorder = Recorder(state)
        for listener in folder.listeners(recorder):
            recorder.subscribe(listener)
        for listener in outputs.listeners():     # --events, --junit, then the console (live or plain)
            recorder.subscribe(listener)
        if previous is None:
            recorder.emit(opened)
        resuming = previous is not None
        doing = "repairing " if previous is not None and previous.repair else \
            "giving back the fleet lock of " if previous is not None and previous.lock_only else \
            "resuming " if resuming else ""
        self.console.line(f"zdupgrade {__version__}: {doing}run {plan.run_id}, logs in {run_dir.dir}")
        if previous is not None and previous.repair:
            self.console.line(f"  left behind by the run: {', '.join(previous.repair)}")
        self._recorder = recorder
        if previous is None:       # what the inventory said that this run does not do, in its record
            for note in topology_notes(topology):
                self._warning(note)
        if folder.torn:
            self._warning(f"the run record ended in an unfinished line ({folder.torn} bytes: the write the "
                          "kill cut short); it was cut off before this resume's events")
        # preflight takes the fleet lock in the same round trip as its checks, and gives it back
        # if it finds anything (or is interrupted)
        lock = FleetLock([p.node for p in plan.nodes], connections,
                         LockOwner.current(plan.run_id, args.lock_message), break_lock=args.break_lock,
                         lock_dir=topology.lock_dir, parallel=topology.ssh.parallel)
        summarized = False
        try:
            status = self._preflight(plan, topology, connections, lb, recorder, resuming, lock,
                                     keep_lock=previous is not None and previous.holds_lock)
            if status is not None:
                return status
            recorder.emit(ev.LockTaken(owner=dataclasses.asdict(lock.owner), broken=tuple(lock.broken)))
            for found in self._already:
                recorder.emit(ev.AlreadyUpgraded(node=found.node, message=found.message))
            if previous is not None and previous.lock_only:
                return self._give_lock_back(previous, recorder, lock, folder)
            probe = self._start_traffic(recorder)
            conductor = Conductor(plan, recorder, handlers=connections, lb=lb, policy=policy,
                                  command_timeout=topology.ssh.command_timeout, stop_event=self.stop,
                                  resume=resuming, pauser=OperatorPauser(run_dir, self.console),
                                  repair=previous.repair if previous is not None else ())
            self._conducting = True
            preload(END_MODULES)
            status = conductor.execute()
            if probe is not None:
                probe.stop()
                report = probe.report()
                recorder.emit(ev.TrafficMeasured(report={**report.to_dict(), "summary_line": report.summary_line()}))
            recorder.emit(ev.LockReleased(problems=tuple(lock.release())))
            if status is Status.SUCCESS and recorder.listener_failures:
                status = Status.RECORD_FAILED
            final = recorder.snapshot()
            final.status = status
            written = outputs.finish(final)    # the live view stops before the summary; --junit is written
            if written:
                for name, problem in written.items():
                    final.listener_failures.setdefault(name, problem)
                if status is Status.SUCCESS:
                    status = final.status = Status.RECORD_FAILED
            summary = render_summary(final)
            self.console.line("")
            self.console.line(summary)
            summarized = True
            try:
                folder.log(summary)
                if self.console.lost:
                    folder.log(f"(the console was lost during the run: {self.console.lost})")
                folder.write_json(final.to_dict())
            except OSError as exc:
                # the upgrade is done: a full disk at the very end is a record that failed (79),
                # not an internal error (80); the summary printed above is what was done
                self.console.error(f"the run's record could not be completed in {run_dir.dir} ({exc}); "
                                   "the summary above says what was done")
                if status is Status.SUCCESS:
                    status = Status.RECORD_FAILED
            self.console.line(f"run log: {folder.run_log_path}")
            return status
        finally:
            self._release(lock)                   # what an early return or an error left held
            problems = outputs.finish(recorder.snapshot())   # a run that stopped early: its --junit too
            if not summarized:                    # (the summary names them when there is one)
                for name, problem in {**recorder.listener_failures, **problems}.items():
                    self.console.error(f"the run record is incomplete: {name} failed: {problem}")
            folder.close()

    def _preflight(self, plan: Plan, topology: Topology, connections: Connections, lb: LoadBalancer,
                   recorder: Recorder, resuming: bool, lock: FleetLock, *, keep_lock: bool = False) -> Status | None:
        """Preflight and the fleet lock (one round trip per node): None when the run may go on,
        holding the lock; else the status, the lock given back."""
        from ..run import events as ev
        from ..run.preflight import capacity_problems, out_of_rotation, preflight
        with self._interrupt_cuts_connects(connections):
            found = preflight(plan, connections, lb, parallel=topology.ssh.parallel,
                              min_free_mb=self.args.min_free_mb,
                              check_dirs=not resuming and plan.check_install_dirs, stop=self.stop.is_set, lock=lock,
                              probe=not resuming)
        # nodes the profile's `upgraded` check finds on the new version: left out (a new run only)
        self._already = [p for p in found if p.kind == "upgraded"]
        found = [p for p in found if p.kind != "upgraded"]
        locked = [p for p in found if p.kind == "locked"]
        problems = [p for p in found if p.kind != "locked"]
        if not problems and not locked:
            problems.extend(capacity_problems(plan, lb))
        stopped = self.stop.is_set()
        if not stopped and not problems and not locked:
            for name in [] if resuming else out_of_rotation(plan, lb):
                self._warning(f"{name} is not serving before the run (the load balancer shows it out of rotation "
                              "or down); once upgraded and healthy it is put in rotation (--limit leaves it out)")
            return None
        if keep_lock:
            # the run stays resumable, and the fleet it left half-done stays its own: the lock
            # it took back stays (naming this process, gone in a moment: stale, as it was).  A
            # run that had given its lock back (a repair of a finished run) gets nothing kept
            lock.keep()
            self.console.line("  the run's fleet lock stays in place: --resume takes it back")
        self._release(lock)      # before the run's end is recorded, so the summary has its notes
        if stopped:
            return self._stopped_early(recorder, resuming, "during preflight")
        if not problems:     # only the lock: another run holds (part of) the fleet
            if not resuming:
                recorder.emit(ev.RunFinished(status=Status.LOCKED, message="the fleet is locked"))
            raise LockError("the fleet is locked by another run; nothing was changed:\n  - "
                            + "\n  - ".join(p.message for p in locked))
        # the status is the checks' (a node another run holds is reported, and is not why)
        unreachable = all(p.kind in ("unreachable", "host-key", "auth", "unchecked") for p in problems)
        status = Status.NODE_UNREACHABLE if unreachable else Status.CONFIG_ERROR
        if all(p.kind == "capacity" for p in problems):
            status = Status.CAPACITY_REFUSED     # the same refusal as before a wave, only earlier
        problems += locked
        self.console.error(f"preflight found {len(problems)} problem(s); nothing was changed:")
        for problem in problems:
            self.console.err_line(f"  - {self.masker(str(problem))}")
        recorder.emit(ev.PreflightFailed(problems=tuple(self.masker(str(p)) for p in problems), status=status))
        if not resuming:  # a failed resume leaves the run resumable
            recorder.emit(ev.RunFinished(status=status, message=f"preflight: {len(problems)} problem(s)"))
        return status

    @contextmanager
    def _interrupt_cuts_connects(self, connections: Connections) -> Iterator[None]:
        """Within the block (preflight), an interrupt also ends the SSH connects under way
        (a node that accepts and never answers held the exit back until its connect_timeout),
        and every 0.2 s after it any connect that began meanwhile.  A thread watches: the
        signal handler itself must not take the pool's locks, which the interrupted main thread
        may hold."""
        over = threading.Event()
        guard = threading.Lock()      # no cut once the block is over (the lock's release may connect)

        def watch() -> None:
            while not self.stop.wait(0.1):
                if over.is_set():
                    return
            while True:
                with guard:
                    if over.is_set():
                        return
                    connections.abandon_connects()
                over.wait(0.2)
        threading.Thread(target=watch, name="zdu-interrupt-connects", daemon=True).start()
        try:
            yield
        finally:
            with guard:
                over.set()

    def _give_lock_back(self, previous: Previous, recorder: Recorder, lock: FleetLock,
                        folder: RunFolder) -> Status:
        """``--resume`` of a run that had finished but died before it gave its fleet lock back:
        preflight took the lock back; give it back, and end as the run ended."""
        from ..run import events as ev
        status = previous.state.status
        assert status is not None
        problems = tuple(lock.release())
        recorder.emit(ev.LockReleased(problems=problems))
        for problem in problems:
            self._warning(problem)
        self.console.line(f"run {previous.state.run_id} had finished with {status.name} ({int(status)}) but its "
                          "process died before it gave the fleet lock back; "
                          + ("given back now" if not problems else "not every node's lock could be given back"))
        try:
            folder.write_json(recorder.snapshot().to_dict())
        except OSError as exc:
            self.console.error(f"run.json could not be written in {previous.run_dir.dir} ({exc})")
        return status

    def _release(self, lock: FleetLock) -> None:
        """Give back the fleet lock where this run still holds it; a node that does not answer
        keeps its lock, and that is said loudly."""
        for note in lock.release():
            self._warning(note)

    def _stopped_early(self, recorder: Recorder, resuming: bool, where: str) -> Status:
        from ..run import events as ev
        message = f"interrupted {where}: nothing was changed"
        self.console.error(message)
        if resuming:
            recorder.emit(ev.Warned(message=message))
        else:
            recorder.emit(ev.RunFinished(status=Status.INTERRUPTED, message=message))
        return Status.INTERRUPTED

    def _start_traffic(self, recorder: Recorder) -> Any:
        if not self.args.traffic:
            return None
        from ..run import events as ev
        from ..run.traffic import TrafficProbe
        probe = TrafficProbe(self.args.traffic, rate=self.args.traffic_rate)
        probe.start()
        opened: dict[str, str] = {}
        count: dict[str, int] = {}

        def windows(event: ev.Event, state: RunView) -> None:  # one window per time a node is out
            if not isinstance(event, (ev.LbStarted, ev.LbFinished)) or not event.node:
                return
            if isinstance(event, ev.LbStarted) and event.action.value == "disable" and event.node not in opened:
                count[event.node] = count.get(event.node, 0) + 1
                label = event.node if count[event.node] == 1 else f"{event.node} ({count[event.node]})"
                opened[event.node] = label
                probe.open_window(label)
            elif isinstance(event, ev.LbFinished) and event.action.value == "enable" and event.ok \
                    and event.node in opened:
                probe.close_window(opened.pop(event.node))
        windows.name = "traffic windows"  # type: ignore[attr-defined]
        recorder.subscribe(windows)
        return probe
