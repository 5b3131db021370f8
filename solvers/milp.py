"""Discrete variant as a mixed-integer linear program (scipy's HiGHS).

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

import math
import os
import time
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from fsl_opt.errors import ConfigError
from fsl_opt.problem import cost
from fsl_opt.problem.result import SolveResult
from fsl_opt.problem.system import System
from solvers._common import build_result, error_result, largest_true, stopped_at_limit
from solvers.registry import register_solver


@register_solver("milp", "largest shared rank over discrete clock levels and resource blocks")
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
    """Largest shared rank over discrete frequency levels and resource blocks (HiGHS).

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
        HiGHS time limit (60 s by default; None: none); hitting it without proof of
        optimality returns HiGHS's best allocation as ``status="limit"`` with ``bound``
        (``error`` if it had none), never a wait without end (a MILP solver can take hours
        on tens of devices with reallocation).

    Returns
    -------
    SolveResult
        ``extra["blocks"]`` and ``extra["bandwidth_hz"]`` give the chosen bandwidth;
        the reported costs use it.
    """
    started = time.perf_counter()
    t = dvfs_tables(system, levels, resource_block_hz, pool_blocks, max_blocks, reallocate)
    table, choices, widths, frac = t.table, t.choices, t.widths, t.fractions
    n_dev = system.n_devices
    if not (table > 0).reshape(n_dev, -1).any(axis=1).all():
        return build_result(system, "milp", 0, started, 0)
    status, rank, chosen, message, bound = solve_tables(t, system.max_rank, time_limit_s)
    if status == "infeasible":
        return build_result(system, "milp", 0, started, 1)
    if status not in ("optimal", "limit"):
        return error_result(system, "milp", started, 1, message)
    wi, _, wn = np.nonzero(table > 0)
    n_idx = np.zeros(n_dev, dtype=np.int64)
    n_idx[wi[chosen]] = wn[chosen]
    rows_i = np.arange(n_dev)
    # Least energy: the slowest level that still reaches the rank with the chosen blocks.
    level = np.argmax(table[rows_i, :, n_idx] >= rank, axis=1)
    alloc = system.replace(bandwidth_hz=widths[rows_i, n_idx])
    found = build_result(
        alloc,
        "milp",
        rank,
        started,
        1,
        frequencies=system.f_max_hz * frac[level],
        extra={
            "blocks": choices[rows_i, n_idx],
            "bandwidth_hz": alloc.bandwidth_hz,
            "pool_blocks": t.pool,
            "variables": int((table > 0).sum()) + 1,
        },
    )
    if status == "limit":
        return stopped_at_limit(found, bound, f"HiGHS's time limit ({time_limit_s:g} s)")
    return found


#: Memory per binary variable of the model with its constraint terms and the expanded
#: system's row (measured with the pulp model this solver built before: 2.0-2.1 kB at 300
#: and 1000 devices x 16 levels x 8 blocks; the sparse HiGHS model needs less, so the
#: check is conservative).
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


@dataclass(frozen=True)
class DvfsTables:
    """The discrete problem's data: R_i(l, n) for every device, level and block count.

    ``table[i, l, n]`` is device i's largest rank at level ``fractions[l]`` of f_max on
    ``widths[i, n]`` Hz (``choices[i, n]`` blocks); ``pool`` the blocks to share (None: each
    device keeps its own sub-band).
    """

    table: np.ndarray
    choices: np.ndarray
    widths: np.ndarray
    fractions: np.ndarray
    pool: int | None


def dvfs_tables(
    system: System,
    levels: int | ArrayLike = 16,
    resource_block_hz: float | None = None,
    pool_blocks: int | None = None,
    max_blocks: int | None = None,
    reallocate: bool = True,
) -> DvfsTables:
    """R_i(l, n) by exact bisection on an expanded system, one row per (device, level,
    blocks); the options as :func:`solve_milp` documents them."""
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
    dev = np.repeat(np.arange(n_dev), n_lev * n_blk)
    lev = np.tile(np.repeat(np.arange(n_lev), n_blk), n_dev)
    blk = np.tile(np.arange(n_blk), n_dev * n_lev)
    big = system.subset(dev).replace(bandwidth_hz=widths[dev, blk])
    f_big = system.f_max_hz[dev] * frac[lev]
    hi = np.full(dev.shape, system.max_rank + 1, dtype=np.int64)
    ranks, _ = largest_true(lambda r: cost.feasible_at(big, r, f_big), np.zeros_like(hi), hi)
    return DvfsTables(
        ranks.reshape(n_dev, n_lev, n_blk), choices, widths, frac, pool if reallocate else None
    )


def solve_tables(
    t: DvfsTables, max_rank: int, time_limit_s: float | None
) -> tuple[str, int, np.ndarray, str, float]:
    """The MILP on ``t`` with scipy's HiGHS (no optimality gap)::

        maximize r  s.t.  one (l, n) per device,  r <= R_i(l, n) of its choice,
                          the blocks chosen <= pool,  r integer in [1, max_rank]

    Returns (status: optimal / infeasible / limit / error, rank, the chosen binaries as
    indices into ``np.nonzero(t.table > 0)``, a message, a bound on the rank: the rank when
    optimal, HiGHS's dual bound rounded down when stopped at the time limit)."""
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import csr_array, vstack

    n_dev = t.table.shape[0]
    wi, wl, wn = np.nonzero(t.table > 0)
    k = wi.size
    var = 1 + np.arange(k)  # column of each binary; column 0 is r
    one_each = csr_array((np.ones(k), (wi, var)), shape=(n_dev, k + 1))
    cover = csr_array(
        (
            np.concatenate([np.ones(n_dev), -t.table[wi, wl, wn].astype(np.float64)]),
            (np.concatenate([np.arange(n_dev), wi]), np.concatenate([np.zeros(n_dev, int), var])),
        ),
        shape=(n_dev, k + 1),
    )
    rows, lower, upper = (
        [one_each, cover],
        [np.ones(n_dev), np.full(n_dev, -np.inf)],
        [
            np.ones(n_dev),
            np.zeros(n_dev),
        ],
    )
    if t.pool is not None:
        rows.append(csr_array(np.concatenate([[0.0], t.choices[wi, wn]])[None, :]))
        lower.append(np.array([-np.inf]))
        upper.append(np.array([float(t.pool)]))
    res = milp(
        np.concatenate([[-1.0], np.zeros(k)]),
        integrality=np.ones(k + 1),
        bounds=Bounds(
            np.concatenate([[1.0], np.zeros(k)]), np.concatenate([[max_rank], np.ones(k)])
        ),
        constraints=LinearConstraint(vstack(rows), np.concatenate(lower), np.concatenate(upper)),
        options={
            "time_limit": np.inf if time_limit_s is None else time_limit_s,
            "mip_rel_gap": 0.0,
        },
    )
    none = np.zeros(0, dtype=np.int64)
    if res.status == 2:
        return "infeasible", 0, none, res.message, 0.0
    if res.x is None:
        return "error", 0, none, f"HiGHS: {res.message}", 0.0
    chosen = np.flatnonzero(res.x[1:] > 0.5)
    if res.status == 0:
        return "optimal", round(res.x[0]), chosen, res.message, float(round(res.x[0]))
    if res.status == 1:  # a limit, with an incumbent: the rank is an integer, so is the cap
        dual = getattr(res, "mip_dual_bound", None)
        cap = math.floor(-dual + 1e-9) if dual is not None and np.isfinite(dual) else max_rank
        return "limit", round(res.x[0]), chosen, res.message, float(min(cap, max_rank))
    return "error", 0, none, f"HiGHS: {res.message}", 0.0
