"""Profile loading: what each phase does for one product.

A profile is a YAML (or JSON) file::

    name: lab-gateway
    vars: {service_port: 8080}          # defaults; topology vars and node vars override
    secrets: [admin_password]           # values masked in every log
    phases:
      EXPORT:   [ {name: ..., run: "cmd {{ old_install_dir }}", timeout: 60}, ... ]
      UPGRADE:  [...]
      PRE-APPLY: [...]
      APPLY:    [ {run: ...}, {name: healthy, wait: {http: "http://...", status: 200}} ]
      POST-APPLY: [...]
    smoke: [...]                        # before traffic returns; a failure is a POST-APPLY failure
    rollback:                           # a list (any phase) or keyed by the furthest phase entered
      APPLY: [...]

``NAME`` on the command line is looked up as ``config/profiles/NAME.yaml`` (the
user's own, relative to the working directory), then among the profiles that
ship with zdupgrade (``zdu/profiles/``); anything else is a file path.
"""
from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any

from zdu.errors import ConfigError
from zdu.model import CommandSpec, Profile, Step, WaitSpec, frozen_map
from zdu.status import ONLINE_PHASES, UPGRADE_PHASES, Phase
from zdu.planning.templates import check_syntax
from zdu.config.documents import _Checker, _kind as _kind_of, check_text, describe_value, field_path, read_document, shorten

BUILTIN_DIR = Path(__file__).resolve().parent.parent / "profiles"
USER_DIR = Path("config") / "profiles"

_TOP = {"name", "description", "vars", "secrets", "phases", "smoke", "rollback"}
_CMD = {"name", "run", "timeout"}
_WAIT_KINDS = ("command", "http", "tcp", "process", "log")
_WAIT_FIELDS = set(_WAIT_KINDS) | {"status", "body", "pattern", "state", "where", "deadline", "interval", "kill"}


def builtin_profiles() -> list[str]:
    """Names of the profiles that ship with zdupgrade."""
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


def resolve_profile(ref: str, base_dir: Path | None = None) -> Path:
    """Find the file for a profile name or path; ConfigError if there is none.

    A relative path is taken relative to ``base_dir`` (the topology file's folder,
    when the topology names the profile), else to the working directory.
    """
    check_text(ref, "profile", identifier=True)
    if os.sep in ref or ref.endswith((".yaml", ".yml", ".json")):
        path = Path(ref).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        if not _is_file(path):
            raise ConfigError(f"profile file not found: {shorten(ref)}")
        return path
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", ref):
        raise ConfigError(f"invalid profile name {describe_value(ref)}")
    for folder in (USER_DIR, BUILTIN_DIR):
        for suffix in (".yaml", ".yml", ".json"):
            candidate = folder / f"{ref}{suffix}"
            if _is_file(candidate):
                return candidate
    raise ConfigError(f"unknown profile {describe_value(ref)}: not in {USER_DIR}/ nor among the built-in profiles "
                      f"({', '.join(builtin_profiles())}); give a file path for your own")


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # a name too long, a path through a file: no profile there
        return False


def load_profile(ref: str, base_dir: Path | None = None) -> Profile:
    """Resolve, read and validate a profile."""
    path = resolve_profile(ref, base_dir)
    return parse_profile(read_document(path, what="profile"), source=str(path))


def parse_profile(data: Any, *, source: str) -> Profile:
    """Validate a parsed profile document."""
    c = _Checker(source)
    top = c.document(data, "profile", _TOP, ("name", "phases"))
    name = c.string(top["name"], "name")
    raw_phases = c.mapping(top["phases"], "phases")
    phases: dict[Phase, tuple[Step, ...]] = {}
    for key, value in raw_phases.items():
        phase = _phase_key(c, key, "phases")
        if phase in phases:
            raise c.fail(f"phases.{key}", f"duplicate phase: {key!r} is {phase} again")
        if phase not in UPGRADE_PHASES:
            raise c.fail(f"phases.{key}", "ROLLBACK steps go under the top-level 'rollback' field")
        phases[phase] = _steps(c, value, f"phases.{phase}")
    for phase in UPGRADE_PHASES:
        phases.setdefault(phase, ())

    smoke = _steps(c, top.get("smoke") or [], "smoke")
    rollback: dict[Phase, tuple[Step, ...]] = {}
    raw_rb = top.get("rollback")
    if isinstance(raw_rb, list):
        steps = _steps(c, raw_rb, "rollback")
        rollback = {phase: steps for phase in UPGRADE_PHASES}
    elif raw_rb is not None:
        for key, value in c.mapping(raw_rb, "rollback").items():
            phase = _phase_key(c, key, "rollback")
            if phase in rollback:
                raise c.fail(f"rollback.{key}", f"duplicate phase: {key!r} is {phase} again")
            if phase is Phase.ROLLBACK:
                raise c.fail(f"rollback.{key}", "a rollback cannot be keyed by ROLLBACK")
            rollback[phase] = _steps(c, value, f"rollback.{phase}")
    if any(phases[p] for p in ONLINE_PHASES) and not any(rollback.get(p) for p in ONLINE_PHASES):
        raise c.fail("rollback", "the profile changes nodes (PRE-APPLY/APPLY/POST-APPLY) but has no "
                                 "rollback steps; a failed node could not be put back")

    secrets = c.optional(top, "secrets", "", c.string_list, ())
    variables = c.optional(top, "vars", "", c.vars, frozen_map())
    return Profile(name=name, source=source, phases=frozen_map(phases), rollback=frozen_map(rollback),
                   smoke=smoke, vars=variables, secrets=secrets,
                   description=c.optional(top, "description", "", lambda v, w: c.string(v, w, text=True), ""))


def _phase_key(c: _Checker, key: str, where: str) -> Phase:
    try:
        return Phase.parse(key)
    except ValueError:
        raise c.fail(field_path(where, key), f"unknown phase {describe_value(key)} (expected one of: "
                                             f"{', '.join(p.value for p in Phase)})") from None


def _steps(c: _Checker, raw: Any, where: str) -> tuple[Step, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise c.fail(where, f"expected a list of steps, got a {type(raw).__name__}")
    return tuple(_step(c, item, f"{where}[{i}]") for i, item in enumerate(raw))


def _step(c: _Checker, raw: Any, where: str) -> Step:
    if isinstance(raw, str):
        raw = {"run": raw}
    data = c.mapping(raw, where)
    if ("run" in data) == ("wait" in data):
        raise c.fail(where, "a step needs exactly one of 'run' or 'wait'")
    if "run" in data:
        c.known(data, _CMD, where)
        run = c.string(data["run"], f"{where}.run", text=True)
        check_syntax(run, where=f"{c.source}: {where}.run")
        timeout = c.optional(data, "timeout", where, lambda v, w: c.number(v, w, 0.1, 86400), None)
        return CommandSpec(name=_name(c, data, where) or _short(run), run=run, timeout=timeout)
    c.known(data, {"name", "wait"}, where)
    return _wait(c, data["wait"], where, _name(c, data, where))


def _name(c: _Checker, data: Any, where: str) -> str | None:
    """A step's name: shown in every log line, so one line of plain text."""
    return c.optional(data, "name", where, lambda v, w: c.string(v, w), None)  # type: ignore[no-any-return]


def _wait(c: _Checker, raw: Any, where: str, name: str | None) -> WaitSpec:
    w = f"{where}.wait"
    data = c.mapping(raw, w)
    c.known(data, _WAIT_FIELDS, w)
    kinds = [k for k in _WAIT_KINDS if k in data]
    if len(kinds) != 1:
        raise c.fail(w, f"a wait needs exactly one of {', '.join(_WAIT_KINDS)}")
    kind = kinds[0]
    target = c.string(data[kind], f"{w}.{kind}", text=True)
    check_syntax(target, where=f"{c.source}: {w}.{kind}")
    pattern = data.get("body") if kind == "http" else data.get("pattern")
    if kind == "http" and "pattern" in data:
        raise c.fail(f"{w}.pattern", "an http wait matches its response with 'body'")
    if kind == "log" and pattern is None:
        raise c.fail(w, "a log wait needs 'pattern' (a regular expression)")
    if pattern is not None:
        pattern = c.string(pattern, f"{w}.{'body' if kind == 'http' else 'pattern'}", text=True)
        try:
            re.compile(pattern)
        except re.error as exc:
            raise c.fail(f"{w}.pattern", f"invalid regular expression: {shorten(str(exc))}") from None
    default_where = "control" if kind in ("http", "tcp") else "node"
    spec = WaitSpec(
        name=name or _short(f"wait {kind} {target}"),
        kind=kind,  # type: ignore[arg-type]
        target=target,
        pattern=pattern,
        status=c.optional(data, "status", w, lambda v, x: c.integer(v, x, 100, 599), 200 if kind == "http" else None),
        state=c.optional(data, "state", w, lambda v, x: c.choice(v, x, ("running", "exited")), "running"),
        where=c.optional(data, "where", w, lambda v, x: c.choice(v, x, ("node", "control")), default_where),
        deadline=c.optional(data, "deadline", w, lambda v, x: c.number(v, x, 0.1, 86400), 60.0),
        interval=c.optional(data, "interval", w, lambda v, x: c.number(v, x, 0.01, 3600), 1.0),
    )
    if "kill" in data:
        if not isinstance(data["kill"], bool):
            raise c.fail(f"{w}.kill", f"expected true or false, got {_kind_of(data['kill'])}")
        if data["kill"] and (kind != "process" or spec.state != "exited"):
            raise c.fail(f"{w}.kill", "kill goes with a process wait for state: exited")
        spec = dataclasses.replace(spec, kill=data["kill"])
    if spec.where == "control" and kind in ("process", "log", "command"):
        raise c.fail(f"{w}.where", f"a {kind} wait runs on the node; 'where: control' is only for http and tcp")
    return spec


def _short(command: str) -> str:
    first = command.strip().splitlines()[0] if command.strip() else command
    return first if len(first) <= 60 else first[:57] + "..."

