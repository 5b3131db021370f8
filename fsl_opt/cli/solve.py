"""fsl-opt solve: one round's rank and clocks from a SYSTEM.toml or a drawn preset."""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np

from fsl_opt.cli.common import (
    devices_arg,
    json_default,
    seed_arg,
)
from fsl_opt.errors import ConfigError
from fsl_opt.federation.settings import DeprecatedFlag

#: Exit status of ``fsl-opt solve`` by result status (2 is bad input).
EXIT_CODES = {"optimal": 0, "error": 1, "infeasible": 3, "limit": 4}


def add(sub: argparse._SubParsersAction) -> None:
    from channels import CHANNEL_MODELS
    from fsl_opt.problem.system import OBJECTIVES
    from solvers import SOLVERS

    p = sub.add_parser(
        "solve",
        help="solve one round's rank and frequencies",
        description="Solve the LoRA rank and CPU frequencies of one round.",
    )
    p.add_argument("system", nargs="?", help="SYSTEM.toml (see README); or use --preset")
    p.add_argument("--preset", help="paper or calibrated: draw a system instead of reading one")
    p.add_argument(
        "--method",
        default="auto",
        help="auto (bisection for the paper's problem, per_device for the extended one) "
        f"or one of: {', '.join(SOLVERS)}",
    )
    p.add_argument("--latency-s", type=float, help="per-round deadline T0 [s]")
    p.add_argument("--energy-budget-j", type=float, help="energy budget E0 per device [J]")
    for old, new, dest in (
        ("--T0", "--latency-s", "latency_s"),
        ("--E0", "--energy-budget-j", "energy_budget_j"),
    ):
        p.add_argument(
            old, type=float, dest=dest, action=DeprecatedFlag, new=new, help=argparse.SUPPRESS
        )
    p.add_argument("--devices", type=devices_arg, default=3, help="devices to draw with --preset")
    p.add_argument(
        "--channel",
        default="rayleigh",
        choices=CHANNEL_MODELS,
        help="with --preset: the fading model of the drawn round",
    )
    p.add_argument(
        "--seed", type=seed_arg, default=0, help="seed of the device and channel draws (>= 0)"
    )
    p.add_argument(
        "--objective",
        choices=OBJECTIVES,
        help="what to maximize: one shared rank, the weighted sum of the devices' ranks "
        "or of log(1 + rank) (per-device ranks), or the predicted accuracy gain of the "
        "round (accuracy: needs --accuracy-model)",
    )
    p.add_argument(
        "--accuracy-model",
        metavar="FILE",
        help="an accuracy model (fsl-opt fit-accuracy): objective accuracy values each "
        "device's round by it, at the start of a run (no round trained yet), each device "
        "bringing its samples once",
    )
    p.add_argument(
        "--bandwidth-total-hz",
        type=float,
        help="a bandwidth pool shared by the devices [Hz]; each device's own band becomes the "
        "most it may take",
    )
    p.add_argument(
        "--noise-psd-w-per-hz",
        type=float,
        help="with a pool: the noise per Hz (default: the system's noise over its per-device "
        "band, where every device has the same band)",
    )
    p.add_argument("--min-devices", type=int, help="how many devices must take part (default: all)")
    p.add_argument(
        "--power-control",
        action="store_true",
        help="each device chooses its uplink power (up to its tx_power_w) with its clock "
        "(per_device; no pool)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="solver option, e.g. --option levels=32 --option reallocate=false "
        "(milp) or --option solver=SCS (bnb); values are TOML",
    )
    p.set_defaults(run=run)


def _solver_options(items: list[str]) -> dict[str, Any]:
    from fsl_opt.problem.system_file import tomllib

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--option {item!r}: expected KEY=VALUE")
        try:
            out[key.strip()] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = value  # a bare word: a string
    return out


def run(args: argparse.Namespace) -> int:
    from solvers import solve

    rng = np.random.default_rng(args.seed)
    if args.system is not None and args.preset is not None:
        raise ConfigError("give either a SYSTEM.toml path or --preset NAME, not both")
    if args.system is None and args.preset is None:
        raise ConfigError("give a SYSTEM.toml path or --preset NAME (e.g. --preset paper)")
    placement: dict[str, Any] | None = None
    if args.preset is not None:
        from channels import preset_round
        from fsl_opt.problem.presets import get_preset

        system, refs = preset_round(
            get_preset(args.preset),
            args.devices,
            rng,
            channel=args.channel,
            latency_s=args.latency_s,
            energy_budget_j=args.energy_budget_j,
        )
        placement = refs.to_dict()
    else:
        from fsl_opt.problem.system_file import load_system

        system = load_system(args.system)
        if args.latency_s is not None:
            system = system.replace(latency_s=args.latency_s)
        if args.energy_budget_j is not None:
            system = system.replace(energy_budget_j=np.full(system.n_devices, args.energy_budget_j))
    from fsl_opt.problem.extended import extend

    system = extend(
        system,
        objective=args.objective,
        accuracy_model=args.accuracy_model,
        min_devices=args.min_devices,
        bandwidth_total_hz=args.bandwidth_total_hz,
        noise_psd_w_per_hz=args.noise_psd_w_per_hz,
        power_control=args.power_control,
    )
    with np.errstate(all="ignore"):  # degenerate inputs (a zero rate) are judged, not warned
        result = solve(system, args.method, rng=rng, **_solver_options(args.option))
    if args.json:
        out = result.to_dict()
        if placement is not None:
            out["placement"] = placement
        print(json.dumps(out, default=json_default))
    else:
        from fsl_opt.cli.report import result_table

        print(result_table(system, result))
        if placement is not None:
            print(
                f"references of this placement at its mean channel, rank "
                f"{placement['reference_rank']}: T_ref = {placement['t_ref_s']:.4g} s, "
                f"E_ref = {placement['e_ref_j']:.4g} J"
            )
    return EXIT_CODES[result.status]
