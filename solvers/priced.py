"""The priced round: each device-round's utility against its energy (and the round's time) at
a price, solved exactly.

A whole-run policy turns its budgets into prices: the drift-plus-penalty policy
(:mod:`fsl_opt.federation.drift_plus_penalty`) prices each device's joules by its energy
queue and the round's seconds by the time queue; the ``energy_priced`` policy
(:mod:`fsl_opt.federation.priced`) prices every joule alike. Each round then solves

    max  V U(r) - sum_i p_i E_i(r_i, f_i) - q T

under the round's deadline T <= T0 and each device's budget, where U is the run's
objective (``shared``: the rank; ``sum``: sum w_i r_i; ``log``: sum w_i log(1 + r_i);
``accuracy``: the round's predicted accuracy gain). A device left out (r_i = 0) spends
nothing; a round in which every option costs more than it buys is skipped (nobody trains,
nothing is spent).

The per-round step is exact:

- For a fixed rank every cost but the compute energy is fixed, and the compute energy
  grows with the clock, so the least-energy on-time clock (:func:`~fsl_opt.problem.cost.
  operating_frequency`) is the best clock: each device's choice is one rank, scored
  V w_i u(r) - p_i E_i(r), enumerated over its feasible ranks.
- **No pool.** ``sum`` / ``log``: the devices decouple; each takes its best rank if it is
  worth more than sitting out, and if fewer than ``min_devices`` do, the best of the
  others join (a cardinality constraint on a separable sum: sorting is exact).
  ``shared``: for each rank r the devices reaching r that cost least join (every device
  when all must take part); the best r is kept. Then the whole round against skipping it.
- **Pool.** Each device's options are (rank, bandwidth) pairs: its least bandwidth for the
  rank (bisection, as ``per_device``) and ``bandwidth_levels - 1`` more up to its limit on
  a geometric grid (more bandwidth shortens the upload and lets the clock slow down). A
  multiple-choice knapsack over the pool, solved as a MILP (scipy's HiGHS, no optimality
  gap): exact over that option set, and it contains ``per_device``'s answer when every
  price is 0.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fsl_opt.errors import ConfigError
from fsl_opt.problem import cost, power
from fsl_opt.problem.result import SolveResult
from fsl_opt.problem.system import System
from solvers._common import NotProven, error_result, knapsack
from solvers.bandwidth_curve import options
from solvers.per_device import (
    MAX_MILP_VARIABLES,
    allocation_result,
    knapsack_room,
    least_bandwidth,
    max_ranks,
)

METHOD = "drift_plus_penalty"
#: Bandwidths tried per (device, rank) with a pool: the least one and more up to the limit.
BANDWIDTH_LEVELS = 4
#: With a pool and ``shared``, ties between allocations of equal cost go to the one with
#: more devices: each device taking part adds this much (times V) to the MILP's objective.
TIE_BREAK = 1e-9


def option_energy(system: System) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Each device's largest feasible rank R_i and its energy at ranks 1..max R_i.

    Returns ``(R, E)`` with ``E[i, r - 1]`` the energy of device i at rank r with its
    least-energy operating point (clock, and power with ``power_control``), ``inf`` where
    rank r is not feasible for it (judged exactly, :func:`~fsl_opt.problem.power.
    operating_point`). ``system`` has fixed bands (no pool).
    """
    top = max_ranks(system.replace(min_devices=None, objective="shared"))
    width = int(top.max()) if top.size else 0
    energy = np.full((system.n_devices, width), np.inf)
    for r in range(1, width + 1):
        at = power.operating_point(system, r)
        energy[:, r - 1] = np.where(at.feasible & (r <= top), at.energy_j, np.inf)
    return top, energy


def _utility(
    system: System, dev: NDArray[np.int64], rank: NDArray[np.int64]
) -> NDArray[np.float64]:
    """Each option's share of U: its gain (``sum``, ``log``, ``accuracy``); the rank for
    ``shared``."""
    if system.objective == "shared":
        return rank.astype(np.float64)
    return system.gain(dev, rank)


def skip_round(system: System, started: float, why: str, nobody_can: bool = False) -> SolveResult:
    """The round is not trained: nobody takes part, nothing is spent (``nobody_can``: not
    by choice, no allocation meets the round's constraints)."""
    n = system.n_devices
    result = SolveResult.without_allocation(
        n, "optimal", METHOD, f"round skipped: {why}", wall_time_s=time.perf_counter() - started
    )
    return replace(
        result,
        ranks=np.zeros(n, dtype=np.int64),
        bandwidth_hz=np.zeros(n),
        objective=system.objective,
        extra={"value": 0.0, "skipped": True, "nobody_can": nobody_can},
    )


def _no_pool(
    system: System, price: NDArray[np.float64], v: float
) -> tuple[NDArray[np.int64], float]:
    """The best ranks on fixed bands (see the module) and their value before the time price
    (all zeros and -inf when fewer than ``min_devices`` can take part)."""
    n, m = system.n_devices, system.required_devices
    top, energy = option_energy(system)
    none = np.zeros(n, dtype=np.int64)
    if int((top > 0).sum()) < m:
        return none, -math.inf
    feasible = np.isfinite(energy)
    spend = np.where(feasible, price[:, None] * np.where(feasible, energy, 0.0), np.inf)
    if system.objective == "shared":
        best_value, best = -math.inf, none
        for r in range(1, energy.shape[1] + 1):
            reach = np.flatnonzero(top >= r)
            if reach.size < m:
                break
            c = spend[reach, r - 1]
            order = np.argsort(c, kind="stable")
            # The m that cost least join, and any device that costs nothing (more data).
            join = np.union1d(order[:m], np.flatnonzero(c <= 0.0))
            value = v * r - math.fsum(c[join])
            if value > best_value:
                best_value, best = value, none.copy()
                best[reach[join]] = r
        return best, best_value
    width = energy.shape[1]
    grid = np.broadcast_to(np.arange(1, width + 1), (n, width))
    u = system.gain(np.repeat(np.arange(n), width), grid.ravel()).reshape(n, width)
    gain = np.where(feasible, v * u - np.where(feasible, spend, 0.0), -np.inf)
    ranks = np.argmax(gain, axis=1) + 1
    value = gain[np.arange(n), ranks - 1]
    take = np.isfinite(value) & (value > 0.0)
    if int(take.sum()) < m:
        others = np.flatnonzero(np.isfinite(value) & ~take)
        more = others[np.argsort(-value[others], kind="stable")[: m - int(take.sum())]]
        take[more] = True
    return np.where(take, ranks, 0).astype(np.int64), math.fsum(value[take])


def pool_options(
    system: System, levels: int
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]]:
    """Every (device, rank, bandwidth) option with a pool, and its energy.

    For each device and each rank it can reach on its whole limit: its least bandwidth for
    that rank (:func:`~solvers.per_device.least_bandwidth`) and ``levels - 1`` more, on a
    geometric grid up to the limit; every option judged exactly at its least-energy
    operating point (:func:`~fsl_opt.problem.power.operating_point`).
    Returns ``(device, rank, bandwidth, energy)``, one entry per feasible option.
    """
    limit = cost.bandwidth_limit(system)
    top = max_ranks(cost.at_bandwidth(system, limit))
    size = int(top.sum()) * levels
    if size > MAX_MILP_VARIABLES:
        raise ConfigError(
            f"drift_plus_penalty with a pool builds one binary per (device, rank, bandwidth "
            f"level): {size:,} here, more than {MAX_MILP_VARIABLES:,}; lower max_rank or "
            "bandwidth_levels"
        )
    dev, rank = options(top)
    if not dev.size:
        empty = np.zeros(0)
        return dev, rank, empty, empty
    sub = system.subset(dev)
    need = least_bandwidth(sub, rank)
    devs, ranks, bands, energies = [], [], [], []
    for j in range(levels):
        frac = j / (levels - 1) if levels > 1 else 0.0
        with np.errstate(invalid="ignore", divide="ignore"):
            band = np.where(np.isfinite(need), need * (limit[dev] / need) ** frac, limit[dev])
        if j == levels - 1:
            band = limit[dev].copy()
        at = power.operating_point(cost.at_bandwidth(sub, band), rank)
        ok = at.feasible & np.isfinite(need)
        devs.append(dev[ok])
        ranks.append(rank[ok])
        bands.append(band[ok])
        energies.append(at.energy_j[ok])
    return (
        np.concatenate(devs).astype(np.int64),
        np.concatenate(ranks).astype(np.int64),
        np.concatenate(bands),
        np.concatenate(energies),
    )


def _pool(
    system: System,
    price: NDArray[np.float64],
    v: float,
    levels: int,
    time_limit_s: float,
) -> tuple[NDArray[np.int64], NDArray[np.float64], float]:
    """The best (rank, bandwidth) per device within the pool (a multiple-choice knapsack)
    and its value before the time price (zeros and -inf when none fits)."""
    n, m = system.n_devices, system.required_devices
    dev, rank, band, energy = pool_options(system, levels)
    room = knapsack_room(system)
    best: tuple[NDArray[np.int64], NDArray[np.float64], float] = (
        np.zeros(n, dtype=np.int64),
        np.zeros(n),
        -math.inf,
    )
    if np.unique(dev).size < m:
        return best
    spend = price[dev] * energy
    if system.objective == "shared":
        groups = [np.flatnonzero(rank == r) for r in range(1, int(rank.max()) + 1)]
    else:
        groups = [np.arange(dev.size)]
    for js in groups:
        if np.unique(dev[js]).size < m:
            continue
        if system.objective == "shared":
            # One rank for all: the utility is r whoever joins, so the cost decides; of
            # equal costs, the allocation with more devices (TIE_BREAK per device).
            gain = -spend[js] + TIE_BREAK * v
        else:
            gain = v * _utility(system, dev[js], rank[js]) - spend[js]
        chosen = knapsack(dev[js], band[js], gain, n, m, room, time_limit_s)
        if chosen is None:
            continue
        picked = js[chosen]
        ranks, bands = np.zeros(n, dtype=np.int64), np.zeros(n)
        ranks[dev[picked]] = rank[picked]
        bands[dev[picked]] = band[picked]
        if system.objective == "shared":
            value = v * float(rank[js[0]]) - math.fsum(spend[picked])
        else:
            value = math.fsum(v * _utility(system, dev[picked], rank[picked]) - spend[picked])
        if picked.size and value > best[2]:
            best = ranks, bands, value
    return best


def solve_priced(
    system: System,
    energy_price: ArrayLike,
    time_price: float = 0.0,
    v: float = 1.0,
    *,
    bandwidth_levels: int = BANDWIDTH_LEVELS,
    time_limit_s: float = 60.0,
) -> SolveResult:
    """One round of the drift-plus-penalty policy, exactly (see the module docstring).

    Maximizes ``v U(r) - sum_i energy_price_i E_i - time_price T`` (T: the system's
    deadline, the round's length, paid when anyone trains) over each device's rank (0:
    left out), clock and, with a pool, bandwidth, under T0, E0 and the pool.

    Returns
    -------
    SolveResult
        ``status="optimal"`` with the allocation (``extra["value"]``: the priced value;
        ``extra["skipped"]``: whether the round is better not trained, in which case every
        rank is 0 and nothing is spent), or ``error`` if HiGHS did not prove the pooled
        knapsack optimal within ``time_limit_s``.
    """
    started = time.perf_counter()
    price = np.broadcast_to(np.asarray(energy_price, dtype=np.float64), (system.n_devices,))
    if not (np.all(np.isfinite(price)) and np.all(price >= 0)):
        raise ConfigError(f"energy_price = {energy_price!r}: expected finite values >= 0")
    if not (math.isfinite(time_price) and time_price >= 0):
        raise ConfigError(f"time_price = {time_price!r}: expected a finite value >= 0")
    if not (math.isfinite(v) and v > 0):
        raise ConfigError(f"v = {v!r}: expected a finite value > 0")
    if isinstance(bandwidth_levels, bool) or not bandwidth_levels >= 1:
        raise ConfigError(f"bandwidth_levels = {bandwidth_levels!r}: expected an integer >= 1")
    cost.check_in_range(system)
    if system.bandwidth_total_hz is None:
        ranks, value = _no_pool(system, price, v)
        band = np.array(system.bandwidth_hz)
    else:
        try:
            ranks, band, value = _pool(system, price, v, bandwidth_levels, time_limit_s)
        except NotProven as exc:
            return error_result(
                system,
                METHOD,
                started,
                1,
                f"HiGHS did not prove the pooled knapsack optimal within {time_limit_s:g} s "
                f"(status {exc}); raise time_limit_s or lower max_rank",
            )
    value -= time_price * system.latency_s
    if not ranks.any():
        why = f"fewer than {system.required_devices} devices can take part"
        return skip_round(system, started, why, nobody_can=True)
    if not value > 0.0:
        return skip_round(
            system, started, f"the best allocation is worth {value:.6g} <= 0 at these prices"
        )
    result = allocation_result(system, METHOD, ranks, band, started, 1)
    if result.status != "optimal":
        return result
    return replace(
        result, extra={**result.extra, "value": value, "skipped": False, "nobody_can": False}
    )
