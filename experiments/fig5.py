"""Fig. 5: accuracy against the device energy budget E0, optimized vs random frequencies.

T0 = 2 T_ref leaves the clocks room, so the energy budget decides: at E0 = 0.3 E_ref the
optimizer's rank is about 28 and the random draws rarely fit the budget; from E_ref on the
optimizer sits at the rank cap (64) and the baselines train in most (on time) or about half
(the paper's draw) of the rounds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from experiments.budget_sweep import sweep

NAME = "fig5"
FACTORS = (0.3, 0.5, 1.0, 1.5)
#: T0 loose enough that the energy budget binds over the sweep.
FIXED = {"latency_factor": 2.0}


def main(
    out: str | Path,
    quick: bool = False,
    seeds: list[int] | None = None,
    overrides: dict[str, Any] | None = None,
) -> list[str]:
    """E0 = factor x the largest energy a device needs at rank 16; T0 = 2 T_ref."""
    return sweep(
        NAME,
        "energy_factor",
        FACTORS,
        (0.3, 1.5),
        FIXED,
        "E0 / E_ref (E_ref: largest energy a device needs at rank 16)",
        "Fig. 5: accuracy vs energy budget E0",
        "E0",
        out,
        quick,
        seeds,
        overrides,
    )
