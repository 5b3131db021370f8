"""Fig. 5: accuracy against the device energy budget E0, optimized vs random frequencies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from experiments.budget_sweep import sweep

NAME = "fig5"
FACTORS = (0.65, 0.75, 0.85, 1.0)
#: T0 loose enough that the energy budget binds over the sweep.
FIXED = {"latency_factor": 1.25}


def main(
    out: str | Path,
    quick: bool = False,
    seeds: list[int] | None = None,
    overrides: dict[str, Any] | None = None,
) -> list[str]:
    """E0 = factor x the largest energy a device needs at rank 16; T0 = 1.25 T_ref."""
    return sweep(
        NAME,
        "energy_factor",
        FACTORS,
        (0.65, 1.0),
        FIXED,
        "E0 / E_ref (E_ref: largest energy a device needs at rank 16)",
        "Fig. 5: accuracy vs energy budget E0",
        "E0",
        out,
        quick,
        seeds,
        overrides,
    )
