"""fsl-opt train: a federated LoRA run driven by the solver."""

from __future__ import annotations

import argparse
from pathlib import Path

from fsl_opt.cli.common import (
    add_run_flags,
    warn_extrapolation,
)


def add(sub: argparse._SubParsersAction) -> None:
    from fsl_opt.cli.flags import add_arguments

    p = sub.add_parser(
        "train",
        help="federated LoRA fine-tuning driven by the solver",
        description="Run federated LoRA rounds; the solver picks rank and "
        "frequencies each round. Settings: the defaults, then --config FILE, then flags "
        "(every flag is a run setting; 'none' unsets an optional one).",
    )
    add_run_flags(p, "run.png at the end of the run")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    add_arguments(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from fsl_opt.cli.flags import overrides_from_args
    from fsl_opt.federation.settings import load_config

    cfg = load_config(args.config).replace(**overrides_from_args(args))
    from fsl_opt.federation.loop import run
    from fsl_opt.federation.runlog import summary_table

    records = run(cfg, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet)
    print(summary_table(records))
    if records and records[-1].get("stop"):
        print(f"stopped at round {records[-1]['round']}: {records[-1]['stop']}")
    print(f"log: {cfg.out}/log.csv, {cfg.out}/log.jsonl; checkpoint: {cfg.out}/checkpoint")
    if cfg.export_adapter != "no" and (Path(cfg.out) / "adapter").is_dir():
        print(f"adapter (peft format, with the head): {cfg.out}/adapter")
    warn_extrapolation(cfg, records)
    if not args.no_plot:
        from fsl_opt.federation.plot import draw_runs

        print(f"plot: {draw_runs([Path(cfg.out)], Path(cfg.out) / 'run.png')}")
    return 0
