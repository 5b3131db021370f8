"""Fig. 5: accuracy against the device energy budget E0, optimized vs random frequencies.

T0 = 2 T_ref leaves the clocks room, so the energy budget decides: at E0 = 0.3 E_ref the
optimizer's rank is about 28 and the random draws rarely fit the budget; from E_ref on the
optimizer sits at the rank cap (64) and the baselines train in most (on time) or about half
(the paper's draw) of the rounds.
"""

from __future__ import annotations

from experiments.budget_sweep import declare

NAME = "fig5"
FACTORS = (0.3, 0.5, 1.0, 1.5)
#: T0 loose enough that the energy budget binds over the sweep.
FIXED = {"latency_factor": 2.0}


EXPERIMENT = declare(
    NAME,
    field="energy_factor",
    factors=FACTORS,
    quick_factors=(0.3, 1.5),
    fixed=FIXED,
    xlabel="E0 / E_ref (E_ref: largest energy a device needs at rank 16)",
    title="Fig. 5: accuracy vs energy budget E0",
    what="E0",
)
main = EXPERIMENT.main
