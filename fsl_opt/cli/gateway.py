"""fsl-opt gateway: a proxy that passes only the Fleet API."""

from __future__ import annotations

import argparse
from pathlib import Path


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "gateway",
        help="the devices' gateway: an nginx configuration that passes the Fleet API alone",
        description="Write OUT/nginx.conf: nginx listening on --listen (the address the "
        "devices dial) with the SuperLink's certificate, passing the Fleet API (/v1/fleet/, "
        "what a SuperNode calls) to the SuperLink at --superlink (its loopback address) and "
        "refusing everything else, so that registering or unregistering node keys and "
        "starting, stopping or listing runs stay with the server's owner (docs/flower.md). "
        "Start it with nginx -p OUT -c nginx.conf.",
    )
    p.add_argument("--creds", required=True, help="the folder fsl-opt credentials wrote")
    p.add_argument("--listen", required=True, help="HOST:PORT the devices dial")
    p.add_argument("--superlink", required=True, help="the SuperLink's loopback HOST:PORT")
    p.add_argument("--out", required=True, help="the folder to write nginx.conf into")
    p.add_argument("--overwrite", action="store_true", help="replace OUT/nginx.conf")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from fsl_opt.federation.gateway import write_gateway

    path = write_gateway(args.out, args.creds, args.listen, args.superlink, args.overwrite)
    print(f"gateway: {path}; start it with: nginx -p {Path(args.out).resolve()} -c nginx.conf")
    return 0
