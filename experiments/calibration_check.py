"""A calibrated preset held to a real run: measured / modeled compute time per device.

``python -m experiments.calibration_check --preset runs/calibrate/preset.toml`` trains the
default run (its model, devices and data) for ``--rounds`` rounds in process on this
machine with the preset, each device alone (``--grouped``: in stacked groups, each charged
its share of its group's time), and prints, per round and device, the seconds its local
training took against the preset's modeled compute time at the machine's own clock
(eq. (1) at f_max, since the preset runs every device at the clock it was measured at).
Run it alone on the machine, as ``fsl-opt calibrate``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np


def ratios(records: list[dict[str, Any]], f_max_hz: list[float]) -> list[list[float]]:
    """Measured / modeled-at-f_max compute time, per round and device (nan: not trained)."""
    f_max = np.asarray(f_max_hz, dtype=float)
    out = []
    for r in records[1:]:
        f = np.array([np.nan if x is None else x for x in r["frequencies_hz"]], dtype=float)
        t = np.array([np.nan if x is None else x for x in r["compute_time_s"]], dtype=float)
        measured = np.array(
            [np.nan if x is None else x for x in r["measured_compute_s"]], dtype=float
        )
        out.append((measured / (t * f / f_max)).tolist())
    return out


def main(argv: list[str] | None = None) -> None:
    from fsl_opt.federation.backends.inprocess import InProcessBackend
    from fsl_opt.federation.loop import run
    from fsl_opt.federation.settings import RunConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", required=True, help="a preset file from fsl-opt calibrate")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default="runs/calibration-check", help="a new run folder")
    parser.add_argument("--grouped", action="store_true", help="devices in stacked groups")
    args = parser.parse_args(argv)
    cfg = RunConfig(preset=args.preset, rounds=args.rounds, out=args.out)
    records = run(cfg, backend=InProcessBackend(batch_devices=args.grouped))
    f_max = json.loads((Path(cfg.out) / "placement.json").read_text())["f_max_hz"]
    for r, row in zip(records[1:], ratios(records, f_max), strict=True):
        cells = " ".join("  -  " if np.isnan(x) else f"{x:.3f}" for x in row)
        print(f"round {r['round']}: measured / modeled compute time per device: {cells}")


if __name__ == "__main__":
    main()
