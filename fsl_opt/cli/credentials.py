"""fsl-opt credentials: TLS and node keys for a Flower deployment."""

from __future__ import annotations

import argparse


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "credentials",
        help="TLS certificates and SuperNode keys for a Flower deployment",
        description="Write into OUT a certificate authority (ca.crt, ca.key), the "
        "SuperLink's TLS certificate for the --host names (superlink.crt, superlink.key) "
        "and one authentication key pair per SuperNode (node-I.key, node-I.pub), as "
        "flower-superlink, flower-supernode and `flwr supernode register` read them "
        "(docs/flower.md). Nothing is overwritten.",
    )
    p.add_argument("--out", required=True, help="the folder to write (made if missing)")
    p.add_argument(
        "--host",
        action="append",
        required=True,
        help="an address or name the SuperLink is reached at (repeat for more)",
    )
    p.add_argument("--nodes", type=int, required=True, help="SuperNode key pairs to make")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from fsl_opt.federation.credentials import write_credentials

    written = write_credentials(args.out, args.host, args.nodes)
    print(f"credentials: {len(written)} files in {args.out} (keep ca.key off the devices)")
    return 0
