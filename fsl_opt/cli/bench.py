"""fsl-opt bench: run a registered benchmark."""

from __future__ import annotations

import argparse

from fsl_opt.cli.common import (
    add_output,
    output_folder,
    seed_arg,
)


def add(sub: argparse._SubParsersAction) -> None:
    from experiments import registry

    benches = registry.entries("bench")
    p = sub.add_parser(
        "bench",
        help=f"benchmarks: {', '.join(benches)}",
        description=benches.table("; "),
    )
    p.add_argument("what", choices=list(benches), help="which benchmark")
    add_output(p, "runs/bench/WHAT")
    p.add_argument("--quick", action="store_true", help="small sizes, few instances (seconds)")
    p.add_argument("--seed", type=seed_arg, help="solvers: the instances' seed (default 0; >= 0)")
    p.add_argument(
        "--parts",
        help="training: comma-separated parts among round,speed,memory,masks,evaluation,ops; "
        "per-device: among scaling,policies,knapsack,milp,pool-scale; budget-policy: among "
        "offline,frontier,scale,target (default: all)",
    )
    p.add_argument(
        "--torch-device",
        dest="torch_device",
        help="training: where the round profile runs (cpu, cuda, auto; default cpu)",
    )
    p.add_argument(
        "--model",
        dest="model_name",
        help="training: the round profile's encoder (default minilm; e.g. "
        "random:roberta-base, offline)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from experiments import registry

    if args.torch_device is not None:
        from fsl_opt.federation.settings import check_torch_device

        check_torch_device(args.torch_device, "--torch-device")
    options = {
        "quick": args.quick or None,
        "seed": args.seed,
        "parts": tuple(args.parts.split(",")) if args.parts else None,
        "torch_device": args.torch_device,
        "model_name": args.model_name,
    }
    registry.check("bench", args.what, options)  # before the output folder is made
    out = output_folder(args, args.what, f"runs/bench/{args.what}", kind="benchmark")
    registry.run("bench", args.what, out, options)
    print(f"results: {out}")
    return 0
