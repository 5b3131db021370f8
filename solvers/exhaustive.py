"""Exhaustive search: every rank 1..max_rank checked with the exact cost model.

The test oracle. It does not assume that feasibility is monotone in r: the answer is the
largest r at which every device is feasible, whatever happens between.
"""

from __future__ import annotations

import time

import numpy as np

from fsl_opt.errors import ConfigError
from fsl_opt.problem import cost
from fsl_opt.problem.result import SolveResult
from fsl_opt.problem.system import System
from solvers._common import build_result
from solvers.registry import register_solver

#: Most ranks enumerated in one call (about a minute for a few devices).
MAX_ENUMERATED = 1_000_000


@register_solver("exhaustive", "largest shared rank by checking every rank", exact=True)
def solve_exhaustive(system: System, *, rng: np.random.Generator | None = None) -> SolveResult:
    """Largest shared rank by checking every rank; ``iterations`` = ranks checked.

    Every rank up to ``max_rank`` is checked. When that is more than
    :data:`MAX_ENUMERATED`, the ranks whose upload and download alone exceed T0 on every
    device are certainly infeasible (transfer time grows with r) and are not checked; if
    that still leaves too many, the call is refused.
    """
    started = time.perf_counter()
    device_ranks = np.zeros(system.n_devices, dtype=np.int64)
    rank = 0
    top = system.max_rank
    if top > MAX_ENUMERATED:
        top = int(cost.communication_rank_bound(system).max())
        if top > MAX_ENUMERATED:
            raise ConfigError(
                f"exhaustive would check {top} ranks (max_rank = {system.max_rank}); it "
                f"enumerates at most {MAX_ENUMERATED}: use bisection, which is exact too"
            )
    for r in range(1, top + 1):
        ok = cost.feasible(system, r)
        device_ranks[ok] = r
        if ok.all():
            rank = r
    return build_result(system, "exhaustive", rank, started, top, device_ranks=device_ranks)
