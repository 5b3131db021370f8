"""What several commands share: argument types, the output folder of an experiment or
benchmark, the flags of train and plan, a warning of extrapolation, JSON of numpy values."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from fsl_opt.errors import ConfigError


def seed_arg(text: str) -> int:
    """A seed: an integer >= 0 (numpy's generators take no negative seed)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected an integer >= 0") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value}: expected an integer >= 0")
    return value


def add_output(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--out", help=f"output folder (default {default})")
    p.add_argument(
        "--publish",
        action="store_true",
        help="write into the committed results, experiments/results/NAME (the only way "
        "to write there besides naming it with --out)",
    )


def output_folder(
    args: argparse.Namespace, name: str, default: str, kind: str = "experiment"
) -> Path:
    """Where a benchmark or experiment writes: claimed as a ``kind`` folder first."""
    from fsl_opt.federation import runfolder

    if args.out and args.publish:
        raise ConfigError("give --out or --publish, not both")
    out = Path(args.out or (f"experiments/results/{name}" if args.publish else default))
    runfolder.prepare(out, kind, name=name)
    return out


def add_run_flags(p: argparse.ArgumentParser, drawn: str) -> None:
    """The flags ``train`` and ``plan`` share beside the run settings."""
    p.add_argument("--config", help="run configuration (TOML); flags override it")
    p.add_argument(
        "--overwrite", action="store_true", help="delete --out first (only a fsl-opt run folder)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--no-plot", action="store_true", help=f"do not draw {drawn}")


def warn_extrapolation(cfg: Any, records: list[dict[str, Any]]) -> None:
    """One line on stderr where a plan's predictions go beyond the accuracy model's runs."""
    from fsl_opt.federation.pilot import extrapolation

    beyond = extrapolation(cfg, records)
    if beyond:
        print(
            "fsl-opt: warning: the predicted accuracy extrapolates the accuracy model beyond "
            f"its runs: {'; '.join(beyond)}",
            file=sys.stderr,
        )


def json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")
