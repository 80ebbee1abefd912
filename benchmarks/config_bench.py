#!/usr/bin/env python3
"""Benchmark: loading documents and rendering the plan, good and hostile input (prints figures; not a test).

    python3 benchmarks/config_bench.py [--nodes 1000]

Figures (time, and peak RSS growth of this process) for:

1. loading a topology of ``--nodes`` nodes (YAML and JSON), and a 5 MB one (comments and a 1 MB var);
2. refusing hostile documents: the 629-byte alias bomb, a 5,000-digit integer, 20,000 levels of nesting;
3. building the plan of the ``--nodes`` topology with the built-in ``tarball`` profile (every step
   of every node rendered; templates are compiled once and rendered per node);
4. refusing hostile templates: nested range(), 7**(10**9), string doubling, a slow filter (ended by
   the wall clock).

Run it against another checkout to compare: ``python3 benchmarks/config_bench.py --root ../main``
(the layout before the packages is understood too; step 4 there does not end: add
``--skip-templates``).
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable


def measure(label: str, work: Callable[[], object]) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    try:
        work()
        outcome = "ok"
    except Exception as exc:  # a refusal is the expected outcome for hostile input
        outcome = f"{type(exc).__name__}: {str(exc)[:90]}"
    elapsed = time.perf_counter() - started
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    print(f"  {label:44s} {elapsed * 1000:9.1f} ms  +{grown / 1024:7.1f} MB peak  {outcome}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--skip-templates", action="store_true")
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1],
                        help="the checkout whose zdu is measured (default: this one)")
    args = parser.parse_args()
    sys.path.insert(0, str(args.root.resolve()))
    try:
        from zdu.config.profile import load_profile
        from zdu.config.topology import load_topology
        from zdu.planning.plan import build_plan
        from zdu.planning.templates import render
    except ModuleNotFoundError:  # a checkout from before the packages
        from zdu.plan import build_plan  # type: ignore[no-redef]
        from zdu.profile import load_profile  # type: ignore[no-redef]
        from zdu.templates import render  # type: ignore[no-redef]
        from zdu.topology import load_topology  # type: ignore[no-redef]
    import zdu
    print(f"zdu from {Path(zdu.__file__).parent}")

    folder = Path(tempfile.mkdtemp(prefix="zdu-config-bench-"))
    nodes = [{"name": f"gw-{i:05d}", "host": f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}",
              "port": 22, "group": "Gateway", "roles": ["gateway", "node-manager"], "vars": {"slot": i}}
             for i in range(args.nodes)]
    yaml_path = folder / "big.yaml"
    yaml_path.write_text("profile: tarball\nvars: {owner: 'gw:gw', conf_files: [conf/a.env, conf/b.env]}\nnodes:\n"
                         + "".join(f"  - {json.dumps(n)}\n" for n in nodes))
    json_path = folder / "big.json"
    json_path.write_text(json.dumps({"profile": "tarball", "nodes": nodes}))
    huge = folder / "huge.yaml"
    huge.write_text("".join(f"# filler {i:07d} {'x' * 90}\n" for i in range(40_000))
                    + "nodes:\n  - {name: a, host: 10.0.0.1}\nvars:\n  blob: '" + "y" * 1_000_000 + "'\n")

    print(f"1. loading documents ({args.nodes} nodes)")
    measure(f"topology YAML ({yaml_path.stat().st_size // 1024} kB)", lambda: load_topology(yaml_path))
    measure(f"topology JSON ({json_path.stat().st_size // 1024} kB)", lambda: load_topology(json_path))
    measure(f"topology YAML, 5 MB of comments and a 1 MB var", lambda: load_topology(huge))

    print("2. hostile documents")
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    bomb = folder / "bomb.yaml"
    bomb.write_text("profile: tarball\nload_balancer:\n  type: script\n  path: /bin/true\n  env:\n"
                    + "\n".join("    " + line for line in lines) + "\nnodes:\n  - {name: A, host: 127.0.0.1}\n")
    big_int = folder / "bigint.yaml"
    big_int.write_text("nodes: [{name: A, host: 127.0.0.1}]\nvars: {big: " + "9" * 5000 + "}\n")
    deep = folder / "deep.json"
    deep.write_text('{"nodes": ' + "[" * 20_000 + "]" * 20_000 + "}")
    measure(f"alias bomb ({bomb.stat().st_size} bytes, 9**10 strings)", lambda: load_topology(bomb))
    measure("5,000-digit integer", lambda: load_topology(big_int))
    measure("20,000 levels of JSON lists", lambda: load_topology(deep))

    print(f"3. plan of {args.nodes} nodes with the tarball profile")
    topology = load_topology(yaml_path)
    profile = load_profile("tarball")
    build = lambda: build_plan(topology, profile, old_install_dir="/opt/gw-1", new_install_dir="/opt/gw-2",  # noqa: E731
                               run_id="bench", env={})
    measure("build_plan (first: templates compiled)", build)
    measure("build_plan (again)", build)

    if args.skip_templates:
        return
    print("4. hostile templates (each refused)")
    for label, template in (
            ("nested range(100000)", "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"),
            ("7 ** (10 ** 9)", "{{ 7 ** (10 ** 9) }}"),
            ("string doubling x40", "{% set ns = namespace(s='ab') %}{% for i in range(40) %}"
                                    "{% set ns.s = ns.s ~ ns.s %}{% endfor %}"),
            ("slow filter in a loop (wall clock)", "{% for i in range(1000) %}{{ (big|wordwrap(3))|length }}{% endfor %}")):
        measure(label, lambda: render(template, {"big": "ab " * 100_000}, where="bench"))


if __name__ == "__main__":
    sys.exit(main())
