"""A given rank, not an optimized one: least-energy on-time clocks and what they cost.

Used for rank sweeps (train at rank r whatever the budgets say). The result's status says
whether every device meets T0 and E0 there (``fixed``) or not (``over_budget``, with the
devices that miss and by how much); it is never ``optimal`` or ``infeasible``, which are
statements about the optimization problem.
"""

from __future__ import annotations

import time
from dataclasses import replace

from fsl_opt.problem import cost
from fsl_opt.problem.result import SolveResult
from fsl_opt.problem.system import System
from solvers._common import build_result, rank_violations


def evaluate_rank(system: System, rank: int) -> SolveResult:
    """The allocation at ``rank``: f_i = min(f_lo(rank), f_max) (made on time against
    rounding: :func:`~fsl_opt.problem.cost.operating_frequency`), with its costs.

    Returns
    -------
    SolveResult
        ``status="fixed"`` when every device meets T0 and E0 at that rank,
        ``"over_budget"`` otherwise (``violations`` names the devices and constraints).
    """
    started = time.perf_counter()
    f = cost.operating_frequency(system, rank)
    res = build_result(system, "fixed_rank", rank, started, 0, frequencies=f, check=False)
    viol, missed = rank_violations(system, f, rank)
    if missed == 0:
        return replace(res, status="fixed", message=f"rank {rank} given; every device fits")
    return replace(
        res,
        status="over_budget",
        message=f"rank {rank} given; it misses T0 or E0 on {missed} devices",
        violations=viol,
    )
