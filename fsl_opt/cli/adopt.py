"""fsl-opt adopt: mark a folder as a fsl-opt run."""

from __future__ import annotations

import argparse
from pathlib import Path


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "adopt",
        help="mark a run made before fsl-opt marked its folders as fsl-opt's (once)",
        description="fsl-opt writes into, resumes and deletes only folders it marked when it "
        "created them. A run folder made by an older version (config.toml and log.jsonl, no "
        ".fsl-opt marker) is adopted once with this command; nothing in it changes but the "
        "marker.",
    )
    p.add_argument("folder", help="the old run's folder")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from fsl_opt.federation import runfolder

    runfolder.adopt(Path(args.folder))
    print(f"adopted {args.folder} as a fsl-opt run folder")
    return 0
