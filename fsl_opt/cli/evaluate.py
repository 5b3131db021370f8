"""fsl-opt evaluate: a run's exported adapter reloaded through peft."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="reload a run's exported adapters through peft and report accuracy",
        description="Load RUN/adapter into a fresh base model with peft "
        "(PeftModel.from_pretrained) and the head beside it, run every layer on the run's "
        "test split (or --data) and print accuracy and loss.",
    )
    p.add_argument("run_dir", help="a run folder (holds config.toml and adapter/)")
    p.add_argument("--data", help="evaluate on this dataset's whole test split instead")
    p.add_argument("--adapter", help="another adapter folder (default RUN/adapter)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from fsl_opt.federation.evaluation import evaluate_run

    res = evaluate_run(Path(args.run_dir), args.data, Path(args.adapter) if args.adapter else None)
    if args.json:
        print(json.dumps(res))
    else:
        print(
            f"{res['adapter']} on {res['data']} ({res['samples']} test samples): "
            f"accuracy {res['accuracy']:.4f}, loss {res['loss']:.4f}"
        )
    return 0
