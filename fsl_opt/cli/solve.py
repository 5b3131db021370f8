"""fsl-opt solve: one round's rank and clocks from a SYSTEM.toml or a drawn preset."""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np

from fsl_opt.cli.common import json_default
from fsl_opt.errors import ConfigError

#: Exit status of ``fsl-opt solve`` by result status (2 is bad input).
EXIT_CODES = {"optimal": 0, "error": 1, "infeasible": 3, "limit": 4}


#: Where ``fsl-opt solve``'s defaults differ from a run's: a system comes from a SYSTEM.toml
#: unless a preset is named, and keeps its own objective unless one is given.
SOLVE_DEFAULTS: dict[str, Any] = {"preset": None, "objective": None}
#: The settings that shape a population drawn from a preset, which a SYSTEM.toml states
#: itself (given with one, they would be ignored).
PRESET_ONLY = ("devices", "channel", "reference_rank")


def add(sub: argparse._SubParsersAction) -> None:
    from fsl_opt.cli.flags import add_arguments
    from fsl_opt.federation.settings import SOLVE_SETTINGS

    p = sub.add_parser(
        "solve",
        help="solve one round's rank and frequencies",
        description="Solve the LoRA rank and CPU frequencies of one round, of a SYSTEM.toml "
        "or of a round drawn from a preset (--preset). The settings flags are fsl-opt "
        "train's that shape one round, with train's names, checks and help; objective "
        "none keeps the system's own (shared for a preset); --accuracy-model values each "
        "device's round as at the start of a run (no round trained yet), each device "
        "bringing its samples once; --devices, --channel and --reference-rank shape a "
        "population drawn with --preset.",
    )
    p.add_argument("system", nargs="?", help="SYSTEM.toml (see README); or use --preset")
    add_arguments(p, only=SOLVE_SETTINGS, shown_defaults=SOLVE_DEFAULTS)
    solve = p.add_argument_group("solve: what is not a run setting")
    solve.add_argument(
        "--noise-psd-w-per-hz",
        type=float,
        metavar="FLOAT",
        help="with a pool: the noise per Hz (default: the system's noise over its per-device "
        "band, where every device has the same band)",
    )
    solve.add_argument("--json", action="store_true", help="print JSON instead of a table")
    solve.add_argument(
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
    from fsl_opt.cli.flags import given_settings, overrides_from_args
    from fsl_opt.federation.settings import SOLVE_SETTINGS
    from solvers import solve

    given = given_settings(args, SOLVE_SETTINGS, SOLVE_DEFAULTS)
    rng = np.random.default_rng(given["seed"])
    if args.system is not None and given["preset"] is not None:
        raise ConfigError("give either a SYSTEM.toml path or --preset NAME, not both")
    drawn = sorted(set(overrides_from_args(args)) & set(PRESET_ONLY))
    if args.system is not None and drawn:
        flags = ", ".join("--" + name.replace("_", "-") for name in drawn)
        raise ConfigError(
            f"{flags}: shape a population drawn with --preset; {args.system} has its own "
            "devices and channels (leave them out, or draw with --preset)"
        )
    if args.system is None and given["preset"] is None:
        raise ConfigError("give a SYSTEM.toml path or --preset NAME (e.g. --preset paper)")
    placement: dict[str, Any] | None = None
    if given["preset"] is not None:
        from channels import preset_round
        from fsl_opt.problem.presets import get_preset

        system, refs = preset_round(
            get_preset(given["preset"]),
            given["devices"],
            rng,
            channel=given["channel"],
            latency_s=given["latency_s"],
            energy_budget_j=given["energy_budget_j"],
            reference_rank=given["reference_rank"],
        )
        placement = refs.to_dict()
    else:
        from fsl_opt.problem.system_file import load_system

        system = load_system(args.system)
        if given["latency_s"] is not None:
            system = system.replace(latency_s=given["latency_s"])
        if given["energy_budget_j"] is not None:
            system = system.replace(
                energy_budget_j=np.full(system.n_devices, given["energy_budget_j"])
            )
    from fsl_opt.problem.extended import extend

    system = extend(
        system,
        objective=given["objective"],
        accuracy_model=given["accuracy_model"] or None,
        min_devices=given["min_devices"],
        bandwidth_total_hz=given["bandwidth_total_hz"],
        noise_psd_w_per_hz=args.noise_psd_w_per_hz,
        power_control=given["power_control"],
    )
    with np.errstate(all="ignore"):  # degenerate inputs (a zero rate) are judged, not warned
        result = solve(system, given["method"], rng=rng, **_solver_options(args.option))
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
