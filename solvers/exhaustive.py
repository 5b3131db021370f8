"""Exhaustive search: every rank 1..max_rank checked with the exact cost model.

The test oracle. It does not assume that feasibility is monotone in r: the answer is the
largest r at which every device is feasible, whatever happens between.
"""

from __future__ import annotations

import time

import numpy as np

from fsl_opt.problem import cost
from fsl_opt.problem.result import SolveResult
from fsl_opt.problem.system import System
from solvers._common import build_result


def solve_exhaustive(system: System, *, rng: np.random.Generator | None = None) -> SolveResult:
    """Largest shared rank by checking every rank; ``iterations`` = ranks checked."""
    started = time.perf_counter()
    device_ranks = np.zeros(system.n_devices, dtype=np.int64)
    rank = 0
    for r in range(1, system.max_rank + 1):
        ok = cost.feasible(system, r)
        device_ranks[ok] = r
        if ok.all():
            rank = r
    return build_result(
        system, "exhaustive", rank, started, system.max_rank, device_ranks=device_ranks
    )
