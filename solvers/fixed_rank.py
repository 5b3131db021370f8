"""A given rank, not an optimized one: least-energy on-time clocks and what they cost.

Used for rank sweeps (train at rank r whatever the budgets say), and for one rank given
per device (:func:`evaluate_ranks`: what a rank vector buys, 0 leaving a device out). The
result's status says whether every device meets T0 and E0 there (``fixed``) or not
(``over_budget``, with the devices that miss and by how much); it is never ``optimal`` or
``infeasible``, which are statements about the optimization problem.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
from numpy.typing import ArrayLike

from fsl_opt.problem import cost
from fsl_opt.problem.budgets import embed
from fsl_opt.problem.result import SolveResult, Violation
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


def evaluate_ranks(system: System, ranks: ArrayLike) -> SolveResult:
    """The allocation at one given rank per device (0: the device is left out): each
    device's least-energy on-time clock at its own rank, capped at f_max, and the costs,
    judged like :func:`evaluate_rank` (``fixed`` or ``over_budget``)."""
    started = time.perf_counter()
    r = np.asarray(ranks, dtype=np.int64)
    if r.shape != (system.n_devices,) or (r < 0).any() or not (r > 0).any():
        raise ValueError(
            f"ranks {r.tolist()}: expected one rank >= 0 for each of the {system.n_devices} "
            "devices, at least one above 0"
        )
    keep = r > 0
    if not keep.all():
        inner = evaluate_ranks(system.subset(np.flatnonzero(keep)), r[keep])
        out = [int(i) for i in np.flatnonzero(~keep)]
        return embed(inner, keep, system.n_devices, f"devices {out} left out (rank 0 given)")
    f = cost.operating_frequency(system, r)
    costs = cost.round_cost(system, r, f)
    late, over = cost.violations_at(system, r, f)
    violations = []
    for i in np.flatnonzero(late | over):
        if late[i]:
            needed = float(costs.latency_s[i])
            violations.append(Violation(int(i), "latency", needed, system.latency_s, int(r[i])))
        if over[i]:
            needed, limit = float(costs.energy_j[i]), float(system.energy_budget_j[i])
            violations.append(Violation(int(i), "energy", needed, limit, int(r[i])))
    missed = int((late | over).sum())
    shown = ",".join(str(int(x)) for x in r)
    return SolveResult(
        status="fixed" if missed == 0 else "over_budget",
        rank=int(r.max()),
        ranks=r.copy(),
        device_ranks=r.copy(),
        bandwidth_hz=np.array(system.bandwidth_hz),
        objective_value=float(r.sum()),
        frequencies_hz=f,
        cost=costs,
        binding=cost.binding(system, r, f),
        method="fixed_rank",
        iterations=0,
        wall_time_s=time.perf_counter() - started,
        message=(
            f"ranks {shown} given; every device fits"
            if missed == 0
            else f"ranks {shown} given; they miss T0 or E0 on {missed} devices"
        ),
        violations=tuple(violations),
    )
