"""fsl-opt plan: the planner of a run alone, no training."""

from __future__ import annotations

import argparse
from pathlib import Path

from fsl_opt.cli.common import (
    add_run_flags,
    warn_extrapolation,
)
from fsl_opt.errors import ConfigError


def add(sub: argparse._SubParsersAction) -> None:
    from fsl_opt.cli.flags import add_arguments
    from fsl_opt.federation.settings import PLANNER_SETTINGS

    p = sub.add_parser(
        "plan",
        help="the planner alone: each round's ranks, clocks and modeled costs, no training",
        description="Plan every round of a run as fsl-opt train would (same population, "
        "channels, budgets and policy for the same settings and seed) without training: "
        "writes config.toml, log.jsonl and log.csv (ranks, clocks, bandwidths, modeled "
        "latency and energy per device, energy and time left, the policy's queues) into "
        "--out, and plan.png. The flags are fsl-opt train's that concern the planner.",
    )
    add_run_flags(p, "plan.png")
    p.add_argument(
        "--resume",
        action="store_true",
        help="refused with the reason: a plan is made again whole (use --overwrite)",
    )
    add_arguments(p, only=PLANNER_SETTINGS)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import time

    from fsl_opt.cli.flags import overrides_from_args
    from fsl_opt.federation.plan_run import plan, plan_settings
    from fsl_opt.federation.settings import load_config

    if args.resume:
        raise ConfigError(
            "plan --resume: a plan is not resumed; it trains nothing and is made again whole "
            "in seconds to minutes (pass --overwrite to plan into the same folder)"
        )
    cfg, note = plan_settings(load_config(args.config), overrides_from_args(args))
    if note:
        print(note)
    started = time.perf_counter()
    records = plan(cfg, overwrite=args.overwrite, progress=not args.quiet)
    took = time.perf_counter() - started
    trained = [r for r in records if r.get("selected_devices")]
    energy = sum(r.get("total_energy_j") or 0.0 for r in records)
    latency = sum(r.get("round_latency_s") or 0.0 for r in records)
    print(
        f"planned {len(records)} rounds for {cfg.devices} devices in {took:.2f} s: "
        f"{len(trained)} trained, modeled time {latency:.6g} s, energy {energy:.6g} J "
        "(all devices)"
    )
    if records and records[-1].get("stop"):
        print(f"stopped at round {records[-1]['round']}: {records[-1]['stop']}")
    print(f"log: {cfg.out}/log.csv, {cfg.out}/log.jsonl")
    warn_extrapolation(cfg, records)
    if not args.no_plot and records:
        from fsl_opt.federation.plot import draw_runs

        print(f"plot: {draw_runs([Path(cfg.out)], Path(cfg.out) / 'plan.png')}")
    return 0
