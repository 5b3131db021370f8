"""fsl-opt calibrate: measure this machine's compute constants."""

from __future__ import annotations

import argparse

from fsl_opt.cli.common import (
    add_output,
    output_folder,
)


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate",
        help="fit the compute model to local training timed on this machine",
        description="Time one device's local round of the model at several ranks, sample "
        "counts and sequence lengths (alone, after a warm-up, the fastest of --repeats), "
        "fit eq. (2)'s compute constants and write OUT/preset.toml (load it with --preset "
        "PATH), OUT/cases.csv (modeled and measured per case, held-out cases apart) and "
        "OUT/calibration.png. Run it with nothing else on the machine.",
    )
    add_output(p, "runs/calibrate")
    from fsl_opt.cli.flags import add_arguments

    add_arguments(p, only=("model", "precision"))  # what is timed, as a run names it
    p.add_argument("--repeats", type=int, default=5, help="timed runs per case (default 5)")
    p.add_argument("--clock-ghz", type=float, help="this machine's clock (default: /proc/cpuinfo)")
    p.add_argument(
        "--base",
        default="calibrated",
        help="the preset whose devices, radios and channel the file keeps (default calibrated)",
    )
    p.add_argument("--quick", action="store_true", help="a tiny model and small cases (seconds)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from experiments.calibrate import check_options
    from experiments.calibrate import main as calibrate
    from fsl_opt.cli.flags import given_settings

    timed = given_settings(args, ("model", "precision"))
    check_options(args.repeats, args.base)  # before the output folder is made
    out = output_folder(args, "calibrate", "runs/calibrate")
    notes = calibrate(
        out,
        model=timed["model"],
        repeats=args.repeats,
        precision=timed["precision"],
        clock_ghz=args.clock_ghz,
        base=args.base,
        quick=args.quick,
    )
    for line in notes:
        print(line)
    print(f"results: {out}")
    return 0
