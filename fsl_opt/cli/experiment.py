"""fsl-opt experiment: run a registered experiment."""

from __future__ import annotations

import argparse

from fsl_opt.cli.common import (
    add_output,
    output_folder,
)
from fsl_opt.errors import ConfigError

#: The run settings ``fsl-opt experiment`` lets a user give every run of an experiment
#: (``--model roberta-base --data ag_news``: the paper's; ``--precision``); each
#: experiment's own value otherwise.
EXPERIMENT_SETTINGS = ("model", "data", "torch_device", "precision")
OWN = "the experiment's own, see its summary"


def add(sub: argparse._SubParsersAction) -> None:
    from experiments import registry

    experiments = registry.entries("experiment")
    p = sub.add_parser(
        "experiment",
        help="reproduce one of the paper's figures, or another registered experiment",
        description="Run an experiment: CSV, then PNG from the CSV, and summary.md. "
        "Interrupted runs resume where they stopped. " + experiments.table("; "),
    )
    p.add_argument("name", nargs="?", choices=list(experiments), help="which experiment")
    p.add_argument(
        "--all",
        action="store_true",
        help="every experiment that `make experiments` remakes, one after another: "
        + ", ".join(experiments.with_capability("in_all")),
    )
    p.add_argument("--quick", action="store_true", help="tiny data, two rounds (< 1 minute)")
    add_output(p, "runs/experiments/NAME, or runs/quick/NAME with --quick")
    p.add_argument("--seeds", help="comma-separated seeds (default depends on the figure)")
    from fsl_opt.cli.flags import add_arguments

    add_arguments(  # the run settings an experiment's runs may take from the command line
        p, only=EXPERIMENT_SETTINGS, shown_defaults=dict.fromkeys(EXPERIMENT_SETTINGS, OWN)
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from experiments import registry

    experiments = registry.entries("experiment")
    if args.all == (args.name is not None):
        raise ConfigError("give one experiment NAME or --all (not both)")
    if args.all and args.out:
        raise ConfigError(
            "--all writes each experiment to its own folder: use --publish, not --out"
        )
    names = list(experiments.with_capability("in_all")) if args.all else [args.name]
    from fsl_opt.cli.flags import overrides_from_args
    from fsl_opt.federation.settings import check_settings

    overrides = check_settings(overrides_from_args(args))
    try:
        seeds = [int(x) for x in args.seeds.split(",")] if args.seeds else None
    except ValueError:
        raise ConfigError(f"--seeds {args.seeds!r}: expected integers like 0,1,2") from None
    if seeds is not None and len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {args.seeds}: a seed named twice (each seed runs once)")
    options = {"quick": args.quick or None, "seeds": seeds, "overrides": overrides or None}
    for name in names:  # every one checked before the first folder is made
        registry.check("experiment", name, options)
    for name in names:
        default = f"runs/quick/{name}" if args.quick else f"runs/experiments/{name}"
        out = output_folder(args, name, default)
        notes = registry.run("experiment", name, out, options)
        for line in notes if isinstance(notes, list) else []:
            print(line)
        print(f"results: {out}")
    return 0
