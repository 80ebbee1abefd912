"""``python3 -m zdu.lab image|up|down``: build the node image, run a lab by hand, clean up."""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python3 -m zdu.lab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("image", help="build the node image if needed and print its tag")
    up = sub.add_parser("up", help="start a lab and keep it running until Ctrl-C")
    up.add_argument("--size", type=int, default=3)
    up.add_argument("--workdir", default=".lab", help="keys, known_hosts, haproxy socket (default .lab)")
    up.add_argument("--lb", choices=("none", "haproxy", "script"), default="haproxy",
                    help="load balancer written into the topology file")
    up.add_argument("--product", default="gateway",
                    help="what the nodes run: gateway, tarball, docker, compose, webmethods (zdu/lab/products.py)")
    down = sub.add_parser("down", help="remove the containers of labs whose process died")
    down.add_argument("--force", action="store_true", help="also those of labs still running")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    if args.command == "image":
        from zdu.lab.image import ensure_image
        started = time.monotonic()
        tag = ensure_image()
        logging.info("image ready in %.1fs", time.monotonic() - started)
        print(tag)
        return 0
    if args.command == "down":
        from zdu.lab.fleet import remove_lab_containers
        print(f"removed {remove_lab_containers(force=args.force)} container(s)")
        return 0

    from zdu.lab.fleet import Lab, placement_from_env
    started = time.monotonic()
    placement = placement_from_env(product=args.product)     # ZDU_LAB_SLOT moves it
    placement.pop("product", None)
    with Lab(size=args.size, workdir=Path(args.workdir), product=args.product, **placement) as lab:
        topology = lab.write_topology(lab.workdir / "topology.yaml", lb=args.lb)
        print(f"lab up in {time.monotonic() - started:.1f}s")
        for node in lab.nodes:
            print(f"  {node.name}: ssh root@{node.host} -p {node.ssh_port}   gateway {node.url}   lb {node.lb_server}")
        print(f"  haproxy: {lab.frontend_url}  runtime API {lab.haproxy_socket} and tcp:{lab.haproxy_tcp[0]}:{lab.haproxy_tcp[1]}")
        print(f"  ssh -i {lab.key_file} -o UserKnownHostsFile={lab.known_hosts} -p {lab.ssh_port} root@{lab.nodes[0].host}")
        print(f"  topology: {topology} (profile {lab.product.profile}; --old_install_dir "
              f"{lab.product.old_install_dir} --new_install_dir {lab.product.new_install_dir})")
        print("Ctrl-C to stop", flush=True)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
