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
from zdu.model import CommandSpec, HttpSpec, Profile, RunStep, Step, WaitSpec, frozen_map
from zdu.status import ONLINE_PHASES, UPGRADE_PHASES, Phase
from zdu.planning.templates import check_syntax
from zdu.config.documents import _Checker, _kind as _kind_of, check_text, describe_value, field_path, read_document, shorten

BUILTIN_DIR = Path(__file__).resolve().parent.parent / "profiles"
USER_DIR = Path("config") / "profiles"

_TOP = {"name", "description", "vars", "secrets", "phases", "smoke", "rollback", "before", "after",
        "check_install_dirs", "upgraded"}
_CMD = {"name", "run", "timeout"}
_WAIT_KINDS = ("command", "http", "tcp", "process", "log")
_WAIT_FIELDS = set(_WAIT_KINDS) | {"status", "body", "pattern", "state", "where", "deadline", "interval", "kill"}
#: what an http wait may say of the request it polls with (as an http step does)
_WAIT_REQUEST = {"method", "headers", "auth", "tls", "proxy", "json", "data"}
_HTTP_FIELDS = {"method", "url", "headers", "json", "data", "auth", "status", "body", "tls", "proxy", "where",
                "timeout"}
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
_STEP_KINDS = ("run", "wait", "http")


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
    return parse_profile(read_document(path, what="profile"), source=str(path), values_checked=True)


def parse_profile(data: Any, *, source: str, values_checked: bool = False) -> Profile:
    """Validate a parsed profile document."""
    c = _Checker(source)
    top = c.document(data, "profile", _TOP, ("name", "phases"), values_checked=values_checked)
    name = c.string(top["name"], "name")
    raw_phases = c.mapping(top["phases"], "phases")
    phases: dict[Phase, tuple[Step, ...]] = {}
    for key, value in raw_phases.items():
        phase = _phase_key(c, key, "phases")
        if phase in phases:
            raise c.fail(f"phases.{key}", f"duplicate phase: {key!r} is {phase} again")
        if phase not in UPGRADE_PHASES:
            raise c.fail(f"phases.{key}", "not an upgrade phase: ROLLBACK steps go under the top-level "
                                          "'rollback' field, BEFORE and AFTER under 'before' and 'after'")
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
            if phase not in UPGRADE_PHASES:
                raise c.fail(f"rollback.{key}", f"a rollback is keyed by an upgrade phase, not {phase}")
            rollback[phase] = _steps(c, value, f"rollback.{phase}")
    if any(phases[p] for p in ONLINE_PHASES) and not any(rollback.get(p) for p in ONLINE_PHASES):
        raise c.fail("rollback", "the profile changes nodes (PRE-APPLY/APPLY/POST-APPLY) but has no "
                                 "rollback steps; a failed node could not be put back")

    secrets = c.optional(top, "secrets", "", c.string_list, ())
    variables = c.optional(top, "vars", "", c.vars, frozen_map())
    return Profile(name=name, source=source, phases=frozen_map(phases), rollback=frozen_map(rollback),
                   smoke=smoke, vars=variables, secrets=secrets,
                   description=c.optional(top, "description", "", lambda v, w: c.string(v, w, text=True), ""),
                   before=run_steps(c, top.get("before"), "before"), after=run_steps(c, top.get("after"), "after"),
                   check_install_dirs=_flag(c, top, "check_install_dirs", True),
                   upgraded=c.optional(top, "upgraded", "", lambda v, w: _command(c, v, w), None))


def _command(c: _Checker, value: Any, where: str) -> str:
    """A command template (``upgraded:``): text, its jinja2 syntax checked."""
    text = c.string(value, where, text=True)
    check_syntax(text, where=f"{c.source}: {where}")
    return text


def _flag(c: _Checker, data: Any, key: str, default: bool) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise c.fail(key, f"expected true or false, got {_kind_of(value)}")
    return value


def run_steps(c: _Checker, raw: Any, where: str) -> tuple[RunStep, ...]:
    """``before:`` / ``after:``: steps, each with ``on:`` (control, all, or a node or host name)."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise c.fail(where, f"expected a list of steps, got {_kind_of(raw)}")
    result = []
    for i, item in enumerate(raw):
        w = f"{where}[{i}]"
        data = dict(c.mapping(item if not isinstance(item, str) else {"run": item}, w))
        on = data.pop("on", "control")
        on = c.string(on, f"{w}.on")
        result.append(RunStep(_step(c, data, w), on))
    return tuple(result)


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


def step(c: _Checker, raw: Any, where: str) -> Step:
    """One step of a profile (or a topology's before/after/gate): ``run``, ``wait`` or ``http``."""
    return _step(c, raw, where)


def _step(c: _Checker, raw: Any, where: str) -> Step:
    if isinstance(raw, str):
        raw = {"run": raw}
    data = c.mapping(raw, where)
    if sum(k in data for k in _STEP_KINDS) != 1:
        raise c.fail(where, "a step needs exactly one of 'run', 'wait' or 'http'")
    if "http" in data:
        c.known(data, {"name", "http"}, where)
        return _http(c, data["http"], where, _name(c, data, where))
    if "run" in data:
        c.known(data, _CMD, where)
        run = c.string(data["run"], f"{where}.run", text=True)
        check_syntax(run, where=f"{c.source}: {where}.run")
        timeout = c.optional(data, "timeout", where, seconds(c, 0.1, 86400), None)
        return CommandSpec(name=_name(c, data, where) or _short(run), run=run, timeout=timeout)
    c.known(data, {"name", "wait"}, where)
    return _wait(c, data["wait"], where, _name(c, data, where))


def _name(c: _Checker, data: Any, where: str) -> str | None:
    """A step's name: shown in every log line, so one line of plain text."""
    return c.optional(data, "name", where, lambda v, w: c.string(v, w), None)  # type: ignore[no-any-return]


def _wait(c: _Checker, raw: Any, where: str, name: str | None) -> WaitSpec:
    w = f"{where}.wait"
    data = c.mapping(raw, w)
    c.known(data, _WAIT_FIELDS | (_WAIT_REQUEST if "http" in data else set()), w)
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
        state=c.optional(data, "state", w, lambda v, x: c.choice(
            v, x, ("up", "down") if kind in ("http", "tcp") else ("running", "exited")),
            "up" if kind in ("http", "tcp") else "running"),
        where=c.optional(data, "where", w, lambda v, x: c.choice(v, x, ("node", "control")), default_where),
        deadline=c.optional(data, "deadline", w, seconds(c, 0.1, 86400), 60.0),
        interval=c.optional(data, "interval", w, seconds(c, 0.01, 3600), 1.0),
    )
    if "kill" in data:
        if not isinstance(data["kill"], bool):
            raise c.fail(f"{w}.kill", f"expected true or false, got {_kind_of(data['kill'])}")
        if data["kill"] and (kind != "process" or spec.state != "exited"):
            raise c.fail(f"{w}.kill", "kill goes with a process wait for state: exited")
        spec = dataclasses.replace(spec, kill=data["kill"])
    if kind == "http" and _WAIT_REQUEST & set(data):
        fields = {k: data[k] for k in _WAIT_REQUEST & set(data)}
        request = _http(c, {"url": target, **fields, "status": spec.status or 200,
                            **({"body": pattern} if pattern else {}), "where": spec.where,
                            "timeout": min(30.0, spec.deadline) if isinstance(spec.deadline, float) else 30.0},
                        where, spec.name)
        spec = dataclasses.replace(spec, request=request)
    if spec.where == "control" and kind in ("process", "log", "command"):
        raise c.fail(f"{w}.where", f"a {kind} wait runs on the node; 'where: control' is only for http and tcp")
    return spec


def _http(c: _Checker, raw: Any, where: str, name: str | None) -> HttpSpec:
    w = f"{where}.http"
    if isinstance(raw, str):
        raw = {"url": raw}
    data = c.mapping(raw, w)
    c.known(data, _HTTP_FIELDS, w)
    if "url" not in data:
        raise c.fail(w, "missing required field 'url'")

    def template(value: Any, at: str) -> str:
        text = c.string(value, at, text=True)
        check_syntax(text, where=f"{c.source}: {at}")
        return text
    url = template(data["url"], f"{w}.url")
    method = c.choice(str(data.get("method", "GET")).upper(), f"{w}.method", _METHODS)
    headers: dict[str, str] = {}
    for key, value in c.mapping(data.get("headers") or {}, f"{w}.headers").items():
        if not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", key):
            raise c.fail(f"{w}.headers", f"invalid header name {describe_value(key)}")
        headers[key] = template(value, f"{w}.headers.{key}")
    if "json" in data and "data" in data:
        raise c.fail(w, "give either json (a document) or data (a raw body), not both")
    body_json = data.get("json")
    if body_json is not None:
        _check_json_templates(c, body_json, f"{w}.json")
    raw_data = template(data["data"], f"{w}.data") if "data" in data else None
    user = password = None
    if "auth" in data:
        auth = c.mapping(data["auth"], f"{w}.auth")
        c.known(auth, {"user", "password"}, f"{w}.auth")
        if set(auth) != {"user", "password"}:
            raise c.fail(f"{w}.auth", "basic auth needs both user and password")
        user, password = template(auth["user"], f"{w}.auth.user"), template(auth["password"], f"{w}.auth.password")
    status_raw = data.get("status", 200)
    statuses = status_raw if isinstance(status_raw, list) else [status_raw]
    if not statuses:
        raise c.fail(f"{w}.status", "expected a status or a non-empty list of statuses")
    status = tuple(c.integer(v, f"{w}.status", 100, 599) for v in statuses)
    match = data.get("body")
    if match is not None:
        match = c.string(match, f"{w}.body", text=True)
        try:
            re.compile(match)
        except re.error as exc:
            raise c.fail(f"{w}.body", f"invalid regular expression: {shorten(str(exc))}") from None
    tls = c.mapping(data.get("tls") or {}, f"{w}.tls")
    c.known(tls, {"verify", "ca_file", "cert", "key"}, f"{w}.tls")
    verify = tls.get("verify", True)
    if not isinstance(verify, bool):
        raise c.fail(f"{w}.tls.verify", f"expected true or false, got {_kind_of(verify)}")
    proxy = data.get("proxy", False)
    if not isinstance(proxy, bool):
        raise c.fail(f"{w}.proxy", f"expected true or false, got {_kind_of(proxy)}")
    return HttpSpec(
        name=name or _short(f"{method} {url}"), url=url, method=method, headers=frozen_map(headers),
        json=body_json, body=raw_data, user=user, password=password, status=status, match=match,
        verify=verify, ca_file=c.optional(tls, "ca_file", f"{w}.tls", lambda v, x: template(v, x), None),
        client_cert=c.optional(tls, "cert", f"{w}.tls", lambda v, x: template(v, x), None),
        client_key=c.optional(tls, "key", f"{w}.tls", lambda v, x: template(v, x), None),
        proxy=proxy, where=c.optional(data, "where", w, lambda v, x: c.choice(v, x, ("control", "node")), "control"),
        timeout=c.optional(data, "timeout", w, seconds(c, 0.1, 86400), 30.0))


def _check_json_templates(c: _Checker, value: Any, where: str) -> None:
    """Every string inside a json body is a template: check its syntax."""
    if isinstance(value, str):
        check_syntax(value, where=f"{c.source}: {where}")
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise c.fail(where, "keys must be strings")
            _check_json_templates(c, item, f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_json_templates(c, item, f"{where}[{i}]")
    elif value is not None and not isinstance(value, (int, float, bool)):
        raise c.fail(where, f"expected JSON values, got {_kind_of(value)}")


def seconds(c: _Checker, lo: float, hi: float) -> Any:
    """A number of seconds, or a template that renders to one per node (``"{{ drain + 30 }}"``)."""
    def parse(value: Any, where: str) -> float | str:
        if isinstance(value, str) and "{{" in value:
            check_syntax(value, where=f"{c.source}: {where}")
            return value
        return c.number(value, where, lo, hi)
    return parse


def _short(command: str) -> str:
    first = command.strip().splitlines()[0] if command.strip() else command
    return first if len(first) <= 60 else first[:57] + "..."

