"""The plan: everything that will run where, rendered, before anything runs.

Pure: no I/O.  ``build_plan`` renders every command of every node (so a missing
variable or a bad template fails here, before any node is touched), groups the
nodes into waves (ansible ``serial`` rules) and records each phase's rollback
path.  ``format_plan`` is what ``--dry-run`` prints.

Secrets are masked at render time: every template is rendered a second time with each secret
value replaced by ``******`` (:class:`~zdu.planning.masking.Secret` marks them in the context), and
that second rendering is what the plan, the logs and run.json show (``shown``).  Nothing else of
the text is touched.
"""
from __future__ import annotations

import ipaddress
import re
import shlex
from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping, Sequence

from zdu.errors import ConfigError, TemplateError
from zdu.model import CommandSpec, Node, Profile, Step, Topology, WaitSpec, frozen_map
from zdu.planning.masking import MASK, Masker
from zdu.planning.serial import Serial, parse_serial
from zdu.planning.templates import Raw, render
from zdu.status import ONLINE_PHASES, UPGRADE_PHASES, Phase, StepKind

__all__ = ["MASK", "Plan", "NodePlan", "PlannedStep", "PlannedWait", "Secret", "build_plan", "format_plan",
           "render_context"]


class Secret(str):
    """A template variable's value that is a secret: rendered for the node as it is, shown as
    ``******`` everywhere else."""


@dataclass(frozen=True)
class PlannedWait:
    """A rendered health gate."""

    kind: str
    where: Literal["node", "control"]
    target: str                  # rendered: URL, host:port, or the node-side poll command
    pattern: str | None
    status: int | None
    state: str
    deadline: float
    interval: float
    kill_command: str | None = None   # run on the node when the deadline passes (process, exited)
    shown: str = ""                   # ``target`` as the logs show it (secrets masked)
    shown_pattern: str | None = None  # ``pattern`` as shown


@dataclass(frozen=True)
class PlannedStep:
    """One rendered step of one node's phase."""

    node: str
    phase: Phase
    index: int
    name: str
    kind: StepKind
    command: str | None = None          # run: the shell command
    wait: PlannedWait | None = None
    timeout: float | None = None
    smoke: bool = False                 # a smoke check (runs last in POST-APPLY)
    shown: str = ""                     # the command / wait target as the logs show it (secrets masked)

    @property
    def key(self) -> str:
        """Stable identifier used by run.json (and resume)."""
        return f"{self.node}/{self.phase.value}/{self.index}"


@dataclass(frozen=True)
class NodePlan:
    """All the steps of one node."""

    node: Node
    phases: Mapping[Phase, tuple[PlannedStep, ...]]
    rollback: Mapping[Phase, tuple[PlannedStep, ...]]

    def rollback_for(self, furthest: Phase) -> tuple[PlannedStep, ...]:
        """Rollback steps for a node whose furthest phase entered is ``furthest``.

        The entry for ``furthest`` itself, else the nearest earlier online phase that
        has one (a POST-APPLY failure undoes what APPLY did).
        """
        order = list(UPGRADE_PHASES)
        for phase in reversed(order[: order.index(furthest) + 1]):
            if self.rollback.get(phase):
                return self.rollback[phase]
        return ()


@dataclass(frozen=True)
class Plan:
    """The whole run, rendered."""

    run_id: str
    old_install_dir: str
    new_install_dir: str
    profile: str
    topology: str
    nodes: tuple[NodePlan, ...]
    waves: tuple[tuple[str, ...], ...]
    parallel: int
    pauses: frozenset[int] = frozenset()   # indices of the waves after which the run pauses
    masker: Masker = Masker()           # the secret values, for text zdupgrade did not render
    lb_type: str = "none"

    def node_plan(self, name: str) -> NodePlan:
        for plan in self.nodes:
            if plan.node.name == name:
                return plan
        raise KeyError(name)

    @property
    def node_names(self) -> tuple[str, ...]:
        return tuple(p.node.name for p in self.nodes)

    def mask(self, text: str) -> str:
        """Free text (output, messages) with every secret value replaced by ******."""
        return self.masker(text)


# --------------------------------------------------------------------------- contexts

@dataclass(frozen=True)
class _Contexts:
    """What one node's templates see: ``real`` for the node, ``shown`` with secrets masked."""

    real: Mapping[str, Any]
    shown: Mapping[str, Any]
    secrets: frozenset[str]

    def render(self, template: str, *, where: str, shell: bool = True) -> tuple[str, str]:
        real = render(template, self.real, where=where, shell=shell)
        if not self.secrets:
            return real, real
        return real, render(template, self.shown, where=where, shell=shell)


def _secret(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_secret(v) for v in value]
    if value is None or value == "":
        return value
    return Secret(value if isinstance(value, str) else str(value))


def _masked(value: Any) -> Any:
    if isinstance(value, Secret):
        return Raw(MASK)
    if isinstance(value, list):
        return [_masked(v) for v in value]
    return value


def _values(value: Any) -> list[str]:
    if isinstance(value, Secret):
        return [str(value)]
    if isinstance(value, list):
        return [s for v in value for s in _values(v)]
    return []


def render_context(topology: Topology, profile: Profile, node: Node, *, old_install_dir: str,
                   new_install_dir: str, run_id: str, env: Mapping[str, str] | None = None,
                   secrets: set[str] | None = None) -> dict[str, Any]:
    """The variables a node's templates see (later wins): profile vars, topology vars,
    node vars, then the run's own values, which cannot be overridden.

    A variable written ``{env: NAME}`` takes its value from the control machine's
    environment variable NAME; such values are always secret.  Secret values (those and the
    profile's ``secrets``) are :class:`Secret` strings (lists: each element); their values are
    added to ``secrets``.
    """
    context: dict[str, Any] = {"work_dir": f"/var/tmp/zdupgrade/{run_id}"}
    for source, variables in (("profile", profile.vars), ("topology", topology.vars),
                              (f"node {node.name}", node.vars)):
        for name, value in variables.items():
            context[name] = _resolve(name, value, source, env)
    for name in profile.secrets:
        if name in context:
            context[name] = _secret(context[name])
    context.update(
        old_install_dir=old_install_dir,
        new_install_dir=new_install_dir,
        run_id=run_id,
        node=_NodeView(node),
    )
    if secrets is not None:
        for value in context.values():
            secrets.update(_values(value))
    return context


def _contexts(topology: Topology, profile: Profile, node: Node, **kw: Any) -> _Contexts:
    values: set[str] = set()
    real = render_context(topology, profile, node, secrets=values, **kw)
    shown = {k: _masked(v) for k, v in real.items()} if values else real
    return _Contexts(real, shown, frozenset(values))


def _resolve(name: str, value: Any, source: str, env: Mapping[str, str] | None) -> Any:
    if not (isinstance(value, Mapping) and set(value) == {"env"}):
        return value
    key = value["env"]
    if env is None or not isinstance(key, str) or key not in env:
        raise ConfigError(f"{source} variable {name!r}: environment variable {key!r} is not set "
                          "on the control machine")
    text = env[key]
    if "\x00" in text or any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        raise ConfigError(f"{source} variable {name!r}: environment variable {key!r} holds a NUL byte or "
                          "bytes that are not UTF-8")
    return _secret(text) if text else text


@dataclass(frozen=True)
class _NodeView:
    """What templates see as ``node``: plain attributes, no methods."""

    _node: Node

    @property
    def name(self) -> str:
        return self._node.name

    @property
    def host(self) -> str:
        return self._node.host

    @property
    def port(self) -> int:
        return self._node.port

    @property
    def group(self) -> str:
        return self._node.group

    @property
    def roles(self) -> tuple[str, ...]:
        return self._node.roles

    @property
    def lb_server(self) -> str:
        return self._node.lb_name

    def __str__(self) -> str:
        return self._node.name


# --------------------------------------------------------------------------- building

def build_plan(topology: Topology, profile: Profile, *, old_install_dir: str, new_install_dir: str,
               run_id: str, serial: Serial | None = None, env: Mapping[str, str] | None = None) -> Plan:
    """Render every step for every node; raise ConfigError (naming the template) on any problem.

    ``env`` is the control machine's environment, for ``{env: NAME}`` variables.  A template
    error's message is masked: it may quote a secret value."""
    node_plans: list[NodePlan] = []
    secrets: set[str] = set()
    for node in topology.nodes:
        ctx = _contexts(topology, profile, node, old_install_dir=old_install_dir,
                        new_install_dir=new_install_dir, run_id=run_id, env=env)
        secrets |= ctx.secrets
        try:
            node_plans.append(_node_plan(profile, node, ctx))
        except TemplateError as exc:
            raise TemplateError(Masker(secrets)(str(exc))) from None
    chosen: Any = topology.serial if serial is None else serial
    if not isinstance(chosen, Serial):
        chosen = parse_serial(chosen, f"{topology.source}: serial")
    names = [n.name for n in topology.nodes]
    return Plan(run_id=run_id, old_install_dir=old_install_dir, new_install_dir=new_install_dir,
                profile=profile.name, topology=topology.source, nodes=tuple(node_plans),
                waves=chosen.waves(names), pauses=chosen.pauses(names),
                parallel=topology.ssh.parallel, masker=Masker(secrets), lb_type=topology.load_balancer.type)


def _node_plan(profile: Profile, node: Node, ctx: _Contexts) -> NodePlan:
    phases: dict[Phase, tuple[PlannedStep, ...]] = {}
    for phase in UPGRADE_PHASES:
        steps = [_plan_step(profile, node, phase, i, step, ctx, f"phases.{phase}[{i}]")
                 for i, step in enumerate(profile.phases.get(phase, ()))]
        if phase is Phase.POST_APPLY:
            base = len(steps)
            steps += [_plan_step(profile, node, phase, base + i, step, ctx, f"smoke[{i}]", smoke=True)
                      for i, step in enumerate(profile.smoke)]
        phases[phase] = tuple(steps)
    rollback: dict[Phase, tuple[PlannedStep, ...]] = {}
    for key, steps_spec in profile.rollback.items():
        rollback[key] = tuple(_plan_step(profile, node, Phase.ROLLBACK, i, step, ctx, f"rollback.{key}[{i}]")
                              for i, step in enumerate(steps_spec))
    return NodePlan(node=node, phases=frozen_map(phases), rollback=frozen_map(rollback))


def _plan_step(profile: Profile, node: Node, phase: Phase, index: int, step: Step,
               ctx: _Contexts, section: str, smoke: bool = False) -> PlannedStep:
    where = f"{profile.source}: {section}"
    if isinstance(step, CommandSpec):
        command, shown = ctx.render(step.run, where=f"{where} step {step.name!r} (node {node.name})")
        return PlannedStep(node=node.name, phase=phase, index=index, name=step.name, kind=StepKind.RUN,
                           command=command, timeout=step.timeout, smoke=smoke, shown=shown)
    wait = _plan_wait(step, ctx, where=f"{where} wait {step.name!r} (node {node.name})")
    return PlannedStep(node=node.name, phase=phase, index=index, name=step.name, kind=StepKind.WAIT,
                       wait=wait, smoke=smoke, shown=wait.shown)


def _plan_wait(spec: WaitSpec, ctx: _Contexts, *, where: str) -> PlannedWait:
    pattern, shown_pattern = (ctx.render(spec.pattern, where=where, shell=False) if spec.pattern
                              else (None, None))
    if spec.kind == "process":
        pattern, shown_pattern = ctx.render(spec.target, where=where, shell=False)
    plain, shown_plain = ctx.render(spec.target, where=where, shell=False)
    if spec.kind == "tcp":
        _check_tcp_target(plain, where)
    if spec.where == "control":
        target, shown = plain, shown_plain
    elif spec.kind == "command":
        target, shown = ctx.render(spec.target, where=where)
    else:
        target = _node_poll_command(spec.kind, spec.state, plain, pattern)
        shown = _node_poll_command(spec.kind, spec.state, shown_plain, shown_pattern)
    kill_command = f"pkill -KILL -f -- {_hidden(pattern or '')}" if spec.kill else None
    return PlannedWait(kind=spec.kind, where=spec.where, target=target, pattern=pattern, status=spec.status,
                       state=spec.state, deadline=spec.deadline, interval=spec.interval, kill_command=kill_command,
                       shown=shown, shown_pattern=shown_pattern)


_TCP_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$")


def _check_tcp_target(target: str, where: str) -> None:
    """A tcp wait's target must be HOST:PORT with a plain host name or IP address."""
    host, sep, port = target.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    ok = bool(sep) and port.isdigit() and 0 < int(port) < 65536
    if ok:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            ok = bool(_TCP_HOST.match(host)) and ".." not in host
    if not ok:
        raise TemplateError(f"{where}: a tcp wait needs HOST:PORT (a host name or IP address and a port "
                            f"number), got {target[:80]!r}")


def _hidden(text: str) -> str:
    """A shell word that expands to ``text`` but does not contain it, so ``pgrep -f`` in a
    shell whose own command line holds the pattern does not find that shell."""
    octal = "".join(f"\\0{b:03o}" for b in text.encode("utf-8", "surrogateescape"))
    return f"\"$(printf '%b' '{octal}')\""


def _node_poll_command(kind: str, state: str, plain: str, pattern: str | None) -> str:
    """The command a node-side wait polls with (every value a separate, quoted word)."""
    if kind == "process":
        found = f"pgrep -f -- {_hidden(plain)} >/dev/null"
        return found if state == "running" else f"! {found}"
    if kind == "log":
        return f"grep -Eq -- {shlex.quote(pattern or '')} {shlex.quote(plain)}"
    if kind == "tcp":
        host, _, port = plain.rpartition(":")
        probe = 'exec 3<>"/dev/tcp/$1/$2"'
        return f"timeout 5 bash -c {shlex.quote(probe)} zdu-tcp {shlex.quote(host.strip('[]'))} {shlex.quote(port)}"
    # http, polled from the node: print the body, then the status on the last line
    return f"curl -sS -m 5 --noproxy '*' -w '\\n%{{http_code}}' -- {shlex.quote(plain)}"


# --------------------------------------------------------------------------- dry run

def format_plan(plan: Plan, describe_lb: Callable[[str, Node], str] | None = None) -> str:
    """The human-readable plan printed by ``--dry-run`` (secrets masked)."""
    describe = describe_lb or (lambda action, node: f"{plan.lb_type} {action} {node.lb_name}")
    out: list[str] = [
        f"PLAN {plan.run_id}: profile {plan.profile}, topology {plan.topology}",
        f"  old install dir: {shlex.quote(plan.old_install_dir)}",
        f"  new install dir: {shlex.quote(plan.new_install_dir)}",
        f"  nodes: {', '.join(plan.node_names)}; offline phases {plan.parallel} node(s) at a time; "
        f"waves: {' | '.join(', '.join(w) for w in plan.waves)}",
        "",
        "1. Offline phases on every node (nothing running is changed; any failure stops the run here):",
    ]
    for phase in (Phase.EXPORT, Phase.UPGRADE):
        for node_plan in plan.nodes:
            out.append(f"  [{phase}] {node_plan.node.name}")
            out.extend(_format_steps(node_plan.phases[phase], "    "))
    out.append("")
    out.append("2. Online phases, wave by wave:")
    for number, wave in enumerate(plan.waves, 1):
        out.append(f"  wave {number}: {', '.join(wave)}")
        for name in wave:
            np_ = plan.node_plan(name)
            node = np_.node
            out.append(f"    {name} ({node.user + '@' if node.user else ''}{node.host}:{node.port})")
            out.append(f"      [{Phase.PRE_APPLY}]")
            out.extend(_format_steps(np_.phases[Phase.PRE_APPLY], "        "))
            out.append(f"      [load balancer] disable: {describe('disable', node)}")
            for phase in (Phase.APPLY, Phase.POST_APPLY):
                out.append(f"      [{phase}]")
                out.extend(_format_steps(np_.phases[phase], "        "))
            out.append(f"      [load balancer] enable: {describe('enable', node)}")
            out.append("      rollback path (on failure, per policy; run inside disable/enable):")
            for phase in ONLINE_PHASES:
                steps = np_.rollback_for(phase)
                out.append(f"        after a failure in {phase}:" + ("" if steps else " nothing to undo"))
                out.extend(_format_steps(steps, "          "))
    return "\n".join(out) + "\n"


def _format_steps(steps: Sequence[PlannedStep], indent: str) -> list[str]:
    if not steps:
        return [f"{indent}(no steps)"]
    lines = []
    for step in steps:
        label = " (smoke)" if step.smoke else ""
        if step.kind is StepKind.RUN:
            lines.append(f"{indent}- {step.name}{label}:")
            lines.extend(f"{indent}    $ {line}" for line in step.shown.splitlines() or [""])
        else:
            assert step.wait is not None
            w = step.wait
            pattern = w.shown_pattern
            cond = {"http": f"HTTP {w.status}" + (f" body ~ /{pattern}/" if pattern else ""),
                    "tcp": "port open", "process": f"process matching /{pattern}/ {w.state}",
                    "log": f"log line ~ /{pattern}/", "command": "exit 0"}[w.kind]
            then = ", then SIGKILL what is left" if w.kill_command else ""
            lines.append(f"{indent}- wait{label}: {step.name}: {cond}, from {w.where}, "
                         f"every {w.interval:g}s, deadline {w.deadline:g}s{then}:")
            lines.append(f"{indent}    {'$ ' if w.where == 'node' else ''}{w.shown}")
    return lines

