"""fsl-opt plot: draw run folders."""

from __future__ import annotations

import argparse
from pathlib import Path

from fsl_opt.files import new_file


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plot",
        help="draw runs: accuracy against round, modeled latency and energy; ranks",
        description="One line per run folder, from its log: accuracy against the round, the "
        "cumulative modeled latency and the cumulative modeled energy, and the rank per "
        "round (per device where ranks differ).",
    )
    p.add_argument("run_dirs", nargs="+", help="run folders")
    p.add_argument(
        "--out",
        help="PNG to write (default: RUN/run.png for one run, replaced there; runs.png); "
        "an existing file is replaced only with --overwrite",
    )
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--title", help="figure title")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from fsl_opt.federation.plot import draw_runs
    from fsl_opt.federation.runfolder import kind_of

    folders = [Path(f) for f in args.run_dirs]
    own = None if args.out or len(folders) != 1 else folders[0] / "run.png"
    # A run's own run.png is fsl-opt's to redraw; any other file is the user's.
    replace = args.overwrite or (own is not None and kind_of(folders[0]) == "run")
    out = new_file(args.out or own or "runs.png", overwrite=replace, suffix=".png")
    print(f"plot: {draw_runs(folders, out, args.title)}")
    return 0
