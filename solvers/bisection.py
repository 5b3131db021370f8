"""Bisection over the integer rank, each device its own bracket (paper Algorithm 1, corrected).

For a fixed rank r, device i is feasible iff f_lo(r) <= min(f_max, f_E(r)),
and every cost grows with r, so feasibility is monotone and bisection on integers is exact.
Each device bisects its own bracket [0, r_rig + 1) at once, vectorized; the network rank
is the smallest device rank (Algorithm 1 line 14).

Corrections to the printed algorithm: r_rig is a rank bound (eq. 23 prints
a time), and the loop returns the largest *feasible* rank r_lef, not r_rig (line 11).
"""

from __future__ import annotations

import time

import numpy as np

from fsl_opt.problem import cost
from fsl_opt.problem.result import SolveResult
from fsl_opt.problem.system import System
from solvers._common import build_result, largest_true, upper_bracket
from solvers.registry import register_solver


@register_solver(
    "bisection",
    "the paper's problem exactly: largest shared rank by per-device bisection",
    exact=True,
)
def solve_bisection(system: System, *, rng: np.random.Generator | None = None) -> SolveResult:
    """Largest shared rank and least-energy frequencies by per-device bisection.

    Parameters
    ----------
    system : System
        The round to solve.
    rng : numpy.random.Generator, optional
        Unused; accepted so every solver has the same call.

    Returns
    -------
    SolveResult
        ``iterations`` counts vectorized feasibility evaluations: ceil(log2(r_rig + 1)).
    """
    started = time.perf_counter()
    affine = cost.Affine.of(system)  # rates and counts once, not once per step
    hi = upper_bracket(affine)
    lo = np.zeros_like(hi)
    device_ranks, calls = largest_true(affine.feasible, lo, hi)
    rank = int(device_ranks.min())
    return build_result(
        system, "bisection", rank, started, calls, device_ranks=device_ranks, affine=affine
    )
