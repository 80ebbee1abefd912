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

import dataclasses
import functools
import hashlib
import json
import re
import shlex
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping, Sequence

from zdu.config.values import check_text, describe_value, port_number, valid_host
from zdu.errors import ConfigError, TemplateError
from zdu.model import CommandSpec, HttpSpec, Node, Profile, RunStep, Step, Topology, WaitSpec, frozen_map
from zdu.planning.masking import MASK, Masker
from zdu.planning.serial import Serial, parse_serial
from zdu.planning.sandbox import render_session
from zdu.planning.templates import Raw, referenced_names, render
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
    request: "PlannedRequest | None" = None   # http: polled with this request (headers, auth, tls)


@dataclass(frozen=True)
class PlannedRequest:
    """A rendered HTTP request (``http:`` step)."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    body: bytes | None
    user: str | None
    password: str | None
    status: tuple[int, ...]
    match: str | None
    verify: bool
    ca_file: str | None
    client_cert: str | None
    client_key: str | None
    proxy: bool
    where: Literal["control", "node"]
    timeout: float
    curl: str | None = None             # where: node -- the curl command that makes the request there


@dataclass(frozen=True)
class PlannedStep:
    """One rendered step of one node's phase (or of the run: before, after, a tier's gate)."""

    node: str                           # a node, or "control" / a host of the topology's hosts
    phase: Phase
    index: int
    name: str
    kind: StepKind
    command: str | None = None          # run: the shell command
    wait: PlannedWait | None = None
    timeout: float | None = None
    smoke: bool = False                 # a smoke check (runs last in POST-APPLY)
    shown: str = ""                     # the command / wait target / request as the logs show it (masked)
    request: PlannedRequest | None = None

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
    #: the profile's ``upgraded`` check rendered for this node: (command, as logs show it)
    upgraded: tuple[str, str] | None = None

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
class PlannedTier:
    """A tier of the plan: its nodes, its waves, the gate that must hold after it."""

    name: str                            # "" when the topology has no tiers
    nodes: tuple[str, ...]
    waves: tuple[tuple[str, ...], ...]
    gate: tuple[PlannedStep, ...] = ()
    min_in_service: int | str | None = None
    max_fail_percentage: float | None = None
    #: every node of the tier, those --limit leaves out too (empty: ``nodes``): the capacity
    #: guard's scope, since a node left out still serves
    backend: tuple[str, ...] = ()

    @property
    def scope(self) -> tuple[str, ...]:
        """The nodes the tier's capacity guard counts."""
        return self.backend or self.nodes


#: the control machine as a target of before/after steps and gates
CONTROL = Node(name="control", host="localhost", transport="local")


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
    tiers: tuple[PlannedTier, ...] = ()
    before: tuple[PlannedStep, ...] = ()
    after: tuple[PlannedStep, ...] = ()
    hosts: Mapping[str, Node] = field(default_factory=frozen_map)   # targets that are not nodes: control, the topology's hosts
    min_in_service: int | str | None = None
    max_fail_percentage: float | None = None
    pause_timeout: float = 3600.0
    pause_timeout_action: str = "abort"
    soak: float = 0.0                   # seconds the nodes put back are watched before each later wave and the end
    skipped: tuple[str, ...] = ()       # nodes --limit left out (not upgraded; still in the balancer)
    check_install_dirs: bool = True     # preflight looks for the install dirs on every node
    backend: tuple[Node, ...] = ()      # every node of the topology (the balancer's backend); () : nodes

    @property
    def backend_nodes(self) -> tuple[Node, ...]:
        return self.backend or tuple(p.node for p in self.nodes)

    def node_plan(self, name: str) -> NodePlan:
        return self._by_name[name]

    @functools.cached_property
    def _by_name(self) -> dict[str, NodePlan]:
        return {plan.node.name: plan for plan in self.nodes}

    def target(self, name: str) -> Node:
        """The node or host a step runs on."""
        if name in self.hosts:
            return self.hosts[name]
        return self.node_plan(name).node

    def tier_of(self, wave: int) -> PlannedTier:
        """The tier of the plan's wave number ``wave`` (0-based)."""
        count = 0
        for tier in self.tiers:
            count += len(tier.waves)
            if wave < count:
                return tier
        raise IndexError(wave)

    @property
    def node_names(self) -> tuple[str, ...]:
        return tuple(p.node.name for p in self.nodes)

    def mask(self, text: str) -> str:
        """Free text (output, messages) with every secret value replaced by ******."""
        return self.masker(text)


# --------------------------------------------------------------------------- contexts

@dataclass
class _Shared:
    """What every node's renders share: a template that reads none of the names whose value
    differs between nodes (``node`` and every node or host variable) renders the same for all."""

    varying: frozenset[str]
    renders: dict[tuple[str, bool], tuple[str, str]] = field(default_factory=dict)
    #: steps whose every template rendered from ``renders``: the same for every node but its name
    steps: dict[tuple[Any, ...], "PlannedStep"] = field(default_factory=dict)
    #: renders that read something node-specific so far (plans are built in one thread): a step
    #: whose planning did not add to it is the fleet's
    own_renders: int = 0


@dataclass(frozen=True)
class _Contexts:
    """What one node's templates see: ``real`` for the node, ``shown`` with secrets masked."""

    real: Mapping[str, Any]
    shown: Mapping[str, Any]
    secrets: frozenset[str]
    secret_names: frozenset[str] = frozenset()     # the names whose value holds a secret
    shared: _Shared | None = None

    def render(self, template: str, *, where: str, shell: bool = True) -> tuple[str, str]:
        names = referenced_names(template)
        key = (template, shell)
        shared = self.shared
        same = shared if shared is not None and names is not None and not names & shared.varying else None
        if same is not None and key in same.renders:
            return same.renders[key]
        if same is None and shared is not None:
            shared.own_renders += 1
        real = render(template, self.real, where=where, shell=shell)
        if not self.secrets or (names is not None and not names & self.secret_names):
            result = (real, real)             # no secret in it: shown as it is
        else:
            result = (real, render(template, self.shown, where=where, shell=shell))
        if same is not None:
            same.renders[key] = result
        return result


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


def _contexts(topology: Topology, profile: Profile, node: Node, shared: _Shared | None = None,
              **kw: Any) -> _Contexts:
    values: set[str] = set()
    real = render_context(topology, profile, node, secrets=values, **kw)
    shown = {k: _masked(v) for k, v in real.items()} if values else real
    secret_names = frozenset(k for k, v in real.items() if _values(v))
    return _Contexts(real, shown, frozenset(values), secret_names, shared)


#: variable values that are never ``{env: NAME}`` (checked before the slower Mapping ABC test)
_PLAIN_VALUES = frozenset({str, int, float, bool, list, tuple, type(None)})


def _resolve(name: str, value: Any, source: str, env: Mapping[str, str] | None) -> Any:
    if type(value) in _PLAIN_VALUES or not (isinstance(value, Mapping) and set(value) == {"env"}):
        return value
    key = value["env"]
    if env is None or not isinstance(key, str) or key not in env:
        raise ConfigError(f"{source} variable {name!r}: environment variable {key!r} is not set "
                          "on the control machine")
    text = check_text(env[key], f"{source} variable {name!r} (environment variable {key!r})", reveal=False)
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
               run_id: str, serial: Serial | None = None, env: Mapping[str, str] | None = None,
               pause_after: frozenset[int] = frozenset()) -> Plan:
    """Render every step for every node; raise ConfigError (naming the template) on any problem.

    ``env`` is the control machine's environment, for ``{env: NAME}`` variables.  A template
    error's message is masked: it may quote a secret value.  ``serial`` (``--serial``) replaces
    the topology's and every tier's; ``pause_after`` adds pauses after those waves (1-based,
    ``--pause-after-wave``)."""
    node_plans: list[NodePlan] = []
    secrets: set[str] = set()
    contexts: dict[str, _Contexts] = {}
    kw = dict(old_install_dir=old_install_dir, new_install_dir=new_install_dir, run_id=run_id, env=env)
    hosts = {"control": CONTROL, **{h.name: h for h in topology.hosts}}
    shared = _Shared(frozenset({"node"}).union(*(n.vars for n in (*topology.nodes, *hosts.values()))))
    try:
        with render_session():        # one SIGALRM handler for the fleet's renders
            for node in topology.nodes:
                ctx = contexts[node.name] = _contexts(topology, profile, node, shared, **kw)
                secrets |= ctx.secrets
                node_plans.append(_node_plan(profile, node, ctx))
            for name, host in hosts.items():
                contexts[name] = _contexts(topology, profile, host, shared, **kw)
                secrets |= contexts[name].secrets
            before = _run_steps(profile, topology, Phase.BEFORE, (*profile.before, *topology.before), contexts)
            after = _run_steps(profile, topology, Phase.AFTER, (*profile.after, *topology.after), contexts)
            tiers = _tiers(topology, profile, serial, contexts)
    except TemplateError as exc:
        raise TemplateError(Masker(secrets)(str(exc))) from None
    waves = tuple(w for tier in tiers for w in tier.waves)
    pauses: set[int] = set()
    offset = 0
    for tier, chosen in zip(tiers, _serials(topology, serial)):
        offset += len(tier.waves)
        # a pause after a tier's last wave is kept when a later tier has waves: it comes before that tier
        pauses |= {offset - len(tier.waves) + i for i in chosen.pauses(list(tier.nodes), last=offset == len(waves))}
    for number in pause_after:
        if not 1 <= number < len(waves):
            where = (f"a pause goes after wave 1 to {len(waves) - 1}" if len(waves) > 2 else
                     "a pause goes after wave 1" if len(waves) == 2 else
                     "there is no wave after the first to pause before")
            raise ConfigError(f"--pause-after-wave {number}: the plan has {len(waves)} wave(s); {where}")
        pauses.add(number - 1)
    return Plan(run_id=run_id, old_install_dir=old_install_dir, new_install_dir=new_install_dir,
                profile=profile.name, topology=topology.source, nodes=tuple(node_plans),
                waves=waves, pauses=frozenset(pauses),
                parallel=topology.ssh.parallel, masker=Masker(secrets), lb_type=topology.load_balancer.type,
                tiers=tiers, before=before, after=after, hosts=frozen_map(hosts),
                min_in_service=topology.min_in_service, max_fail_percentage=topology.max_fail_percentage,
                pause_timeout=topology.pause_timeout, pause_timeout_action=topology.pause_timeout_action,
                soak=float(topology.soak), check_install_dirs=profile.check_install_dirs)


def _serial(value: Any, where: str) -> Serial:
    return value if isinstance(value, Serial) else parse_serial(value, where)


def _serials(topology: Topology, override: Serial | None) -> list[Serial]:
    """The serial of each tier (``--serial`` wins over the tier's, which wins over the topology's)."""
    default = _serial(topology.serial if override is None else override, f"{topology.source}: serial")
    if not topology.tiers:
        return [default]
    return [default if override is not None or tier.serial is None else tier.serial for tier in topology.tiers]


def _tiers(topology: Topology, profile: Profile, override: Serial | None,
           contexts: Mapping[str, _Contexts]) -> tuple[PlannedTier, ...]:
    serials = _serials(topology, override)
    if not topology.tiers:
        names = tuple(n.name for n in topology.nodes)
        return (PlannedTier("", names, serials[0].waves(list(names))),)
    tiers = []
    control_index = 0
    for tier, chosen in zip(topology.tiers, serials):
        gate: list[PlannedStep] = []
        where = f"{topology.source}: tiers ({tier.name}).gate"
        targets = tier.nodes if tier.gate_on == "each" else ("control",)
        for target in targets:
            for i, spec in enumerate(tier.gate):
                index = i if target != "control" else control_index
                control_index += target == "control"
                gate.append(_plan_step(profile, topology.host(target) if target != "control" else CONTROL,
                                       Phase.GATE, index, spec, contexts[target], f"tiers ({tier.name}).gate[{i}]",
                                       where=where))
        tiers.append(PlannedTier(tier.name, tier.nodes, chosen.waves(list(tier.nodes)), tuple(gate),
                                 tier.min_in_service, tier.max_fail_percentage))
    return tuple(tiers)


def _run_steps(profile: Profile, topology: Topology, phase: Phase, steps: Sequence[RunStep],
               contexts: Mapping[str, _Contexts]) -> tuple[PlannedStep, ...]:
    """before/after steps: ``on: all`` becomes one step per node."""
    planned: list[PlannedStep] = []
    section = phase.value.lower()
    for i, item in enumerate(steps):
        targets = [n.name for n in topology.nodes] if item.on == "all" else [item.on]
        for target in targets:
            node = CONTROL if target == "control" else topology.host(target)
            planned.append(_plan_step(profile, node, phase, len(planned), item.step, contexts[target],
                                      f"{section}[{i}]"))
    return tuple(planned)


def _node_plan(profile: Profile, node: Node, ctx: _Contexts) -> NodePlan:
    phases: dict[Phase, tuple[PlannedStep, ...]] = {}
    for phase in UPGRADE_PHASES:
        label = f"phases.{phase.value}"
        steps = [_plan_step(profile, node, phase, i, step, ctx, f"{label}[{i}]")
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
    upgraded = None if profile.upgraded is None else \
        ctx.render(profile.upgraded, where=f"{profile.source}: upgraded (node {node.name})")
    return NodePlan(node=node, phases=frozen_map(phases), rollback=frozen_map(rollback), upgraded=upgraded)


def _plan_step(profile: Profile, node: Node, phase: Phase, index: int, step: Step,
               ctx: _Contexts, section: str, smoke: bool = False, where: str | None = None) -> PlannedStep:
    """``step`` planned for ``node``; a step that reads nothing node-specific is planned once for
    the fleet and copied with each node's name (12 of the 17 steps of a node of the axway profile)."""
    shared = ctx.shared
    if shared is None:
        return _plan_one_step(profile, node, phase, index, step, ctx, section, smoke, where)
    key = (id(step), phase, index, smoke, section, where)
    planned = shared.steps.get(key)
    if planned is not None:
        return planned if planned.node == node.name else _for_node(planned, node.name)
    own = shared.own_renders
    planned = _plan_one_step(profile, node, phase, index, step, ctx, section, smoke, where)
    if shared.own_renders == own:
        shared.steps[key] = planned
    return planned


def _for_node(planned: PlannedStep, name: str) -> PlannedStep:
    """``planned`` with another node's name (a field copy: dataclasses.replace re-runs __init__,
    three times slower, and PlannedStep has no __post_init__ to re-run)."""
    copy = object.__new__(PlannedStep)
    copy.__dict__.update(planned.__dict__)
    object.__setattr__(copy, "node", name)
    return copy


def _plan_one_step(profile: Profile, node: Node, phase: Phase, index: int, step: Step,
                   ctx: _Contexts, section: str, smoke: bool, where: str | None) -> PlannedStep:
    where = where or f"{profile.source}: {section}"
    if isinstance(step, HttpSpec):
        request, shown = _plan_request(step, ctx, where=f"{where} request {step.name!r} (node {node.name})")
        return PlannedStep(node=node.name, phase=phase, index=index, name=step.name, kind=StepKind.HTTP,
                           request=request, timeout=request.timeout, smoke=smoke, shown=shown)
    if isinstance(step, CommandSpec):
        command, shown = ctx.render(step.run, where=f"{where} step {step.name!r} (node {node.name})")
        timeout = _seconds(step.timeout, ctx, f"{where} step {step.name!r} (node {node.name}): timeout", 0.1, 86400)
        return PlannedStep(node=node.name, phase=phase, index=index, name=step.name, kind=StepKind.RUN,
                           command=command, timeout=timeout, smoke=smoke, shown=shown)
    wait = _plan_wait(step, ctx, where=f"{where} wait {step.name!r} (node {node.name})")
    return PlannedStep(node=node.name, phase=phase, index=index, name=step.name, kind=StepKind.WAIT,
                       wait=wait, smoke=smoke, shown=wait.shown)


def _seconds(value: float | str | None, ctx: _Contexts, where: str, lo: float, hi: float) -> float | None:
    """A number of seconds from the profile: a number, or a template rendered for this node."""
    if value is None or isinstance(value, (int, float)):
        return None if value is None else float(value)
    text = ctx.render(value, where=where, shell=False)[0].strip()
    try:
        number = float(text)
    except ValueError:
        raise TemplateError(f"{where}: {value!r} rendered to {text[:40]!r}, not a number of seconds") from None
    if not lo <= number <= hi:
        raise TemplateError(f"{where}: {value!r} rendered to {number:g} seconds, expected {lo:g} to {hi:g}")
    return number


def _render_json(value: Any, ctx: _Contexts, where: str) -> tuple[Any, Any]:
    """Every string of a JSON document rendered as a template (real, shown)."""
    if isinstance(value, str):
        return ctx.render(value, where=where, shell=False)
    if isinstance(value, dict):
        pairs = {k: _render_json(v, ctx, where) for k, v in value.items()}
        return {k: v[0] for k, v in pairs.items()}, {k: v[1] for k, v in pairs.items()}
    if isinstance(value, list):
        items = [_render_json(v, ctx, where) for v in value]
        return [v[0] for v in items], [v[1] for v in items]
    return value, value


#: an http(s) URL as a request may carry it: no space or control character anywhere (a newline
#: after a valid URL was taken by a search for "^https?://HOST"); used with fullmatch
_URL = re.compile(r"https?://[^\x00-\x20\x7f/]+[^\x00-\x20\x7f]*")


def _plan_request(spec: HttpSpec, ctx: _Contexts, *, where: str) -> tuple[PlannedRequest, str]:
    url, shown_url = ctx.render(spec.url, where=where, shell=False)
    if not _URL.fullmatch(url):
        raise TemplateError(f"{where}: the url must be http(s)://HOST... with no space or control character, "
                            f"got {describe_value(shown_url)}")
    headers = [(k, *ctx.render(v, where=where, shell=False)) for k, v in spec.headers.items()]
    for _, value, _shown in headers:
        if "\n" in value or "\r" in value:
            raise TemplateError(f"{where}: a header value cannot hold a line break")
    body: bytes | None = None
    shown_body = ""
    content_type: str | None = None
    if spec.json is not None:
        real, shown_json = _render_json(spec.json, ctx, where)
        body = json.dumps(real).encode()
        shown_body = " " + json.dumps(shown_json)
        content_type = "application/json"
    elif spec.body is not None:
        real_text, shown_text = ctx.render(spec.body, where=where, shell=False)
        body = real_text.encode()
        shown_body = f" ({len(body)} bytes)" if shown_text == real_text else " (body with secrets)"
    if content_type and not any(k.lower() == "content-type" for k, _, _ in headers):
        headers.append(("Content-Type", content_type, content_type))
    user, password, shown_user = None, None, None
    if spec.user is not None and spec.password is not None:
        user, shown_user = ctx.render(spec.user, where=where, shell=False)
        password = ctx.render(spec.password, where=where, shell=False)[0]
    paths = [ctx.render(p, where=where, shell=False)[0] if p else None
             for p in (spec.ca_file, spec.client_cert, spec.client_key)]
    request = PlannedRequest(method=spec.method, url=url, headers=tuple((k, v) for k, v, _ in headers), body=body,
                             user=user, password=password, status=spec.status, match=spec.match,
                             verify=spec.verify, ca_file=paths[0], client_cert=paths[1], client_key=paths[2],
                             proxy=spec.proxy, where=spec.where,
                             timeout=_seconds(spec.timeout, ctx, f"{where}: timeout", 0.1, 86400) or 30.0)
    if spec.where == "node":
        request = dataclasses.replace(request, curl=_curl(request))
    auth = f" as {shown_user}" if user else ""        # the masked render: the user may be a secret
    expect = "/".join(str(s) for s in spec.status)
    return request, f"{spec.method} {shown_url}{auth}{shown_body} -> {expect}"


def _curl(request: PlannedRequest) -> str:
    """The curl command that makes ``request`` on the node.  Headers, credentials and the body go
    in a curl config read from a here-document, so none of them is an argument ``ps`` would show."""
    def quoted(value: str) -> str:
        if "\n" in value or "\r" in value or "\x00" in value:
            raise TemplateError(f"a value for the request to {request.url[:80]!r} holds a line break")
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    lines = [f"request = {quoted(request.method)}", f"max-time = {request.timeout:g}",
             'write-out = "\\n%{http_code}"', "silent", "show-error", f"url = {quoted(request.url)}"]
    if not request.proxy:
        lines.append('noproxy = "*"')
    if not request.verify:
        lines.append("insecure")
    for option, path in (("cacert", request.ca_file), ("cert", request.client_cert), ("key", request.client_key)):
        if path:
            lines.append(f"{option} = {quoted(path)}")
    lines += [f"header = {quoted(f'{k}: {v}')}" for k, v in request.headers]
    if request.user is not None:
        lines.append(f"user = {quoted(f'{request.user}:{request.password}')}")
    body = ""
    if request.body is not None:
        lines.append("data-binary = @-")
    config = "\n".join(lines)
    digest = hashlib.sha256(config.encode("utf-8", "surrogateescape") + (request.body or b""))
    marker = "ZDU_CURL_CONFIG_" + digest.hexdigest()[:16]
    if request.body is not None:
        # the body on stdin (a second here-document), the config from a file descriptor
        body_marker = marker + "_BODY"
        body = request.body.decode("utf-8", "surrogateescape")
        return (f"curl -K /dev/fd/3 3<<'{marker}' <<'{body_marker}'\n{config}\n{marker}\n"
                f"{body}\n{body_marker}")
    return f"curl -K - <<'{marker}'\n{config}\n{marker}"


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
    request = None
    if spec.request is not None:
        request, shown_request = _plan_request(spec.request, ctx, where=where)
        if spec.where == "node":
            assert request.curl is not None
            target, shown = request.curl, shown_request
    return PlannedWait(kind=spec.kind, where=spec.where, target=target, pattern=pattern, status=spec.status,
                       state=spec.state, deadline=_seconds(spec.deadline, ctx, f"{where}: deadline", 0.1, 86400) or 60.0,
                       interval=_seconds(spec.interval, ctx, f"{where}: interval", 0.01, 3600) or 1.0,
                       kill_command=kill_command,
                       shown=shown, shown_pattern=shown_pattern, request=request)


def _check_tcp_target(target: str, where: str) -> None:
    """A tcp wait's target must be HOST:PORT with a plain host name or IP address."""
    host, sep, port = target.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    ok = bool(sep) and port_number(port) is not None and valid_host(host)
    if not ok:
        raise TemplateError(f"{where}: a tcp wait needs HOST:PORT (a host name or IP address and a port "
                            f"number), got {target[:80]!r}")


@functools.lru_cache(maxsize=1024)
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
    """The human-readable plan printed by ``--dry-run`` (secrets masked at render time)."""
    describe = describe_lb or (lambda action, node: f"{plan.lb_type} {action} {node.lb_name}")
    tiers = [t for t in plan.tiers if t.name]
    out: list[str] = [
        f"PLAN {plan.run_id}: profile {plan.profile}, topology {plan.topology}",
        f"  old install dir: {shlex.quote(plan.old_install_dir)}",
        f"  new install dir: {shlex.quote(plan.new_install_dir)}",
        f"  nodes: {', '.join(plan.node_names)}; offline phases {plan.parallel} node(s) at a time; "
        f"waves: {' | '.join(', '.join(w) for w in plan.waves)}",
    ]
    if plan.skipped:
        out.append(f"  skipped (--limit): {', '.join(plan.skipped)} -- not upgraded, still in the load balancer")
    probes = [p.upgraded for p in plan.nodes if p.upgraded is not None]
    if probes:
        one = " ".join(probes[0][1].split())
        shown = one if all(q[1] == probes[0][1] for q in probes) else f"{one} (per node)"
        out.append(f"  already upgraded? preflight runs `{shown}` on each node: a node where it exits 0 "
                   "runs the new version already and is left out, untouched")
    if tiers:
        out.append("  tiers, in order: " + "; ".join(f"{t.name} ({', '.join(t.nodes)})" for t in tiers))
    guards = []
    if plan.max_fail_percentage is not None:
        guards.append(f"failure budget {plan.max_fail_percentage:g}% of a wave")
    if plan.min_in_service is not None:
        guards.append(f"at least {plan.min_in_service} node(s) in service")
    if plan.soak:
        guards.append(f"soak {plan.soak:g}s: the nodes put back are watched that long before each later wave "
                      "and the end, and must still serve")
    if guards:
        out.append("  guards: " + ", ".join(guards))
    out.extend(f"  WARNING: {problem}" for problem in never_started(plan))
    if plan.pauses:
        out.append(f"  pauses after wave(s) {', '.join(str(p + 1) for p in sorted(plan.pauses))}; a pause waits "
                   f"{plan.pause_timeout:g}s for `zdupgrade continue` / `abort`, then: {plan.pause_timeout_action}")
    out.append("")
    number = 1
    if plan.before:
        out.append(f"{number}. Before any node is changed, once (a failure stops the run; nothing changed):")
        out.extend(_format_run_steps(plan.before))
        out.append("")
        number += 1
    out.append(f"{number}. Offline phases on every node (nothing running is changed; any failure stops the run here):")
    number += 1
    for phase in (Phase.EXPORT, Phase.UPGRADE):
        for node_plan in plan.nodes:
            out.append(f"  [{phase}] {node_plan.node.name}")
            out.extend(_format_steps(node_plan.phases[phase], "    "))
    out.append("")
    out.append(f"{number}. Online phases, wave by wave:")
    number += 1
    wave_number = 0
    for tier in plan.tiers:
        if tier.name:
            left_out = [n for n in tier.scope if n not in tier.nodes]
            out.append(f"  tier {tier.name}: {', '.join(tier.nodes)}"
                       + (f" (--limit leaves out {', '.join(left_out)})" if left_out else "")
                       + (f"; at least {tier.min_in_service} in service" if tier.min_in_service is not None else "")
                       + (f"; failure budget {tier.max_fail_percentage:g}%" if tier.max_fail_percentage is not None
                          else ""))
        for index, wave in enumerate(tier.waves):
            wave_number += 1
            out.append(f"  wave {wave_number}: {', '.join(wave)}")
            for name in wave:
                out.extend(_format_node(plan, name, describe))
            if tier.gate and index == len(tier.waves) - 1:
                out.extend(_format_gate(tier))
            if wave_number - 1 in plan.pauses:
                out.append(f"  PAUSE after wave {wave_number}: wait for the operator (zdupgrade continue | abort)")
        if tier.gate and not tier.waves:
            out.extend(_format_gate(tier))
    if plan.after:
        out.append("")
        out.append(f"{number}. After a successful run, once:")
        out.extend(_format_run_steps(plan.after))
    return "\n".join(out) + "\n"


def never_started(plan: Plan) -> list[str]:
    """The waves the capacity guard refuses even with every node serving: ``min_in_service``
    asks for more nodes than the wave leaves (a tier's larger than the tier, say).  The run
    would be refused at preflight (84); the dry run says so beforehand."""
    from zdu.run.walk import Walker, capacity        # the walk is built on the plan
    everyone = {n.name: True for n in plan.backend_nodes}
    problems = []
    for wave in Walker(plan).waves():
        check = capacity(plan, wave, everyone)
        if check is not None and check[0] < check[1]:
            left, want, scope = check
            whole = (f"tier {wave.tier.name}" if wave.tier.name and scope == list(wave.tier.scope)
                     else "the backend")
            problems.append(f"the capacity guard can never start wave {wave.number} ({', '.join(wave.nodes)}): "
                            f"{whole} has {len(scope)} node(s), at least {want} must stay in service, and the "
                            f"wave takes {len(wave.nodes)} out; the run would be refused (84). Lower min_in_service "
                            "or the serial")
    return problems


def _format_gate(tier: PlannedTier) -> list[str]:
    return [f"  gate of tier {tier.name}: must hold before the next tier starts:",
            *_format_steps(tier.gate, "    ", show_node=True)]


def _format_node(plan: Plan, name: str, describe: Callable[[str, Node], str]) -> list[str]:
    np_ = plan.node_plan(name)
    node = np_.node
    out = [f"    {name} ({node.user + '@' if node.user else ''}{node.host}:{node.port})",
           f"      [{Phase.PRE_APPLY}]"]
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
    return out


def _format_run_steps(steps: Sequence[PlannedStep]) -> list[str]:
    return _format_steps(steps, "  ", show_node=True)


def _format_steps(steps: Sequence[PlannedStep], indent: str, show_node: bool = False) -> list[str]:
    if not steps:
        return [f"{indent}(no steps)"]
    lines = []
    for step in steps:
        label = " (smoke)" if step.smoke else ""
        if show_node:
            label += f" on {step.node}"
        if step.kind is StepKind.HTTP:
            assert step.request is not None
            lines.append(f"{indent}- request{label}: {step.name}, from {step.request.where}:")
            lines.append(f"{indent}    {step.shown}")
        elif step.kind is StepKind.RUN:
            lines.append(f"{indent}- {step.name}{label}:")
            lines.extend(f"{indent}    $ {line}" for line in step.shown.splitlines() or [""])
        else:
            assert step.wait is not None
            w = step.wait
            pattern = w.shown_pattern
            cond = {"http": f"HTTP {w.status}" + (f" body ~ /{pattern}/" if pattern else ""),
                    "tcp": "port open", "process": f"process matching /{pattern}/ {w.state}",
                    "log": f"log line ~ /{pattern}/", "command": "exit 0"}[w.kind]
            if w.kind in ("http", "tcp") and w.state == "down":
                cond = f"until it no longer answers {cond}" if w.kind == "http" else "port closed"
            then = ", then SIGKILL what is left" if w.kill_command else ""
            lines.append(f"{indent}- wait{label}: {step.name}: {cond}, from {w.where}, "
                         f"every {w.interval:g}s, deadline {w.deadline:g}s{then}:")
            lines.append(f"{indent}    {'$ ' if w.where == 'node' else ''}{w.shown}")
    return lines

