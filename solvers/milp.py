"""Discrete variant as a mixed-integer linear program (pulp + CBC).

Each device picks one DVFS frequency level and a number of bandwidth resource blocks
from a shared pool; the shared rank is maximized. With the choices fixed, delay (11) and
energy (12) are affine in r, so device i's largest rank for choice (l, n) is a number
R_i(l, n) computed with the exact cost model. With binaries w_iln (one choice per device)
the problem is linear::

    maximize r
    s.t.  sum_{l,n} w_iln = 1                  for every device i
          r <= sum_{l,n} R_i(l, n) w_iln       for every device i
          sum_{i,l,n} n w_iln <= pool
          r integer in [1, max_rank],  w binary

The noise power N0 stays that of eq. (6) whatever the width, so the rate grows linearly with
the number of blocks. With ``reallocate=False`` every device keeps its own sub-band and, with
fine enough levels, the answer agrees with bisection.
"""

from __future__ import annotations

import os
import time

import numpy as np
from numpy.typing import ArrayLike

from fsl_opt.errors import ConfigError
from fsl_opt.problem import cost
from fsl_opt.problem.result import SolveResult
from fsl_opt.problem.system import System
from solvers._common import build_result, cbc_solver, error_result, largest_true
from solvers.registry import register_solver


@register_solver("milp")
def solve_milp(
    system: System,
    *,
    rng: np.random.Generator | None = None,
    levels: int | ArrayLike = 16,
    resource_block_hz: float | None = None,
    pool_blocks: int | None = None,
    max_blocks: int | None = None,
    reallocate: bool = True,
    time_limit_s: float | None = 60.0,
) -> SolveResult:
    """Largest shared rank over discrete frequency levels and resource blocks (CBC).

    Parameters
    ----------
    levels : int or array of fractions in (0, 1]
        DVFS levels as fractions of each device's f_max; an int L means j / L, j = 1..L.
    resource_block_hz : float, optional
        Width of one resource block; defaults to the narrowest sub-band / 4.
    pool_blocks : int, optional
        Blocks in the shared pool; defaults to the blocks the sub-bands hold now.
    max_blocks : int, optional
        Most blocks one device may take; defaults to twice the largest own share.
    reallocate : bool
        False keeps every device on its own sub-band (only the level is chosen).
    time_limit_s : float, optional
        CBC time limit (60 s by default; None: none); hitting it without proof of
        optimality is ``status="error"``, never a wait without end (CBC can take hours on
        tens of devices with reallocation).

    Returns
    -------
    SolveResult
        ``extra["blocks"]`` and ``extra["bandwidth_hz"]`` give the chosen bandwidth;
        the reported costs use it.
    """
    import pulp

    started = time.perf_counter()
    frac = _levels(levels)
    rb = (
        float(resource_block_hz)
        if resource_block_hz is not None
        else float(system.bandwidth_hz.min()) / 4
    )
    if not (np.isfinite(rb) and rb > 0):
        raise ConfigError(f"resource_block_hz = {resource_block_hz!r}: expected a number > 0")
    own = np.maximum(np.round(system.bandwidth_hz / rb), 1).astype(np.int64)
    pool = int(pool_blocks) if pool_blocks is not None else int(own.sum())
    if reallocate:
        top = int(max_blocks) if max_blocks is not None else int(2 * own.max())
        choices = np.tile(np.arange(1, top + 1), (system.n_devices, 1))
        widths = choices * rb
    else:
        # Each device keeps its sub-band exactly (no rounding to whole blocks).
        choices, widths = own[:, None], system.bandwidth_hz[:, None]
    n_dev, n_lev, n_blk = system.n_devices, len(frac), choices.shape[1]
    _check_size(n_dev, n_lev, n_blk)

    # R_i(l, n) by exact bisection on an expanded system, one row per (device, level, blocks).
    dev = np.repeat(np.arange(n_dev), n_lev * n_blk)
    lev = np.tile(np.repeat(np.arange(n_lev), n_blk), n_dev)
    blk = np.tile(np.arange(n_blk), n_dev * n_lev)
    big = system.subset(dev).replace(bandwidth_hz=widths[dev, blk])
    f_big = system.f_max_hz[dev] * frac[lev]
    hi = np.full(dev.shape, system.max_rank + 1, dtype=np.int64)
    ranks, _ = largest_true(lambda r: cost.feasible_at(big, r, f_big), np.zeros_like(hi), hi)
    table = ranks.reshape(n_dev, n_lev, n_blk)

    prob = pulp.LpProblem("fsl_rank", pulp.LpMaximize)
    r = prob.add_variable("r", lowBound=1, upBound=system.max_rank, cat="Integer")
    prob += r
    w: dict[tuple[int, int, int], pulp.LpVariable] = {}
    for i in range(n_dev):
        keys = [(i, j, n) for j in range(n_lev) for n in range(n_blk) if table[i, j, n] > 0]
        if not keys:
            return build_result(system, "milp", 0, started, 0)
        for key in keys:
            w[key] = prob.add_variable(f"w_{key[0]}_{key[1]}_{key[2]}", cat="Binary")
        prob += pulp.lpSum(w[key] for key in keys) == 1
        prob += r <= pulp.lpSum(int(table[key]) * w[key] for key in keys)
    if reallocate:
        prob += pulp.lpSum(int(choices[i, n]) * var for (i, _, n), var in w.items()) <= pool
    prob.solve(cbc_solver(time_limit_s))
    status = pulp.LpStatus[prob.status]
    if status == "Infeasible":
        return build_result(system, "milp", 0, started, 1)
    if status != "Optimal" or prob.sol_status != pulp.LpSolutionOptimal:
        return error_result(system, "milp", started, 1, f"CBC status {status}")
    rank = round(r.value())
    n_idx = np.zeros(n_dev, dtype=np.int64)
    for (i, _, n), var in w.items():
        if var.value() > 0.5:
            n_idx[i] = n
    rows = np.arange(n_dev)
    # Least energy: the slowest level that still reaches the rank with the chosen blocks.
    level = np.argmax(table[rows, :, n_idx] >= rank, axis=1)
    alloc = system.replace(bandwidth_hz=widths[rows, n_idx])
    return build_result(
        alloc,
        "milp",
        rank,
        started,
        1,
        frequencies=system.f_max_hz * frac[level],
        extra={
            "blocks": choices[rows, n_idx],
            "bandwidth_hz": alloc.bandwidth_hz,
            "pool_blocks": pool if reallocate else None,
            "variables": len(w) + 1,
        },
    )


#: Memory per binary variable of the pulp model with its constraint terms and the expanded
#: system's row (measured: 2.0-2.1 kB at 300 and 1000 devices x 16 levels x 8 blocks), with
#: room for CBC's own process.
BYTES_PER_VARIABLE = 3000


def _memory_limit() -> float:
    """Half the memory this machine has free (a quarter of its total if that is unknown)."""
    try:
        return 0.5 * os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return 4e9


def _check_size(n_dev: int, n_lev: int, n_blk: int) -> None:
    """Refuse a model that would not fit in memory, naming the size that would."""
    per_device = n_lev * n_blk
    need = n_dev * per_device * BYTES_PER_VARIABLE
    limit = _memory_limit()
    if need > limit:
        fits = int(limit / (per_device * BYTES_PER_VARIABLE))
        raise ConfigError(
            f"milp would build {n_dev * per_device:,} binary variables ({n_dev} devices x "
            f"{n_lev} levels x {n_blk} block counts), about {need / 1e9:.1f} GB, over the "
            f"{limit / 1e9:.1f} GB this machine has to spare: it takes about {fits:,} devices "
            "at these settings (fewer levels or reallocate=false take more)"
        )


def _levels(levels: int | ArrayLike) -> np.ndarray:
    if isinstance(levels, (int, np.integer)) and not isinstance(levels, bool):
        if levels < 1:
            raise ConfigError(f"levels = {levels}: expected at least 1 frequency level")
        return np.arange(1, levels + 1) / levels
    try:
        frac = np.sort(np.asarray(levels, dtype=np.float64))
    except (TypeError, ValueError):
        raise ConfigError(
            f"levels = {levels!r}: expected a number of levels or fractions of f_max"
        ) from None
    if frac.ndim != 1 or frac.size == 0 or not ((frac > 0) & (frac <= 1)).all():
        raise ConfigError("levels: expected fractions of f_max in (0, 1]")
    return frac
