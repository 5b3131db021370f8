"""Per-device ranks, a shared bandwidth pool and device selection, solved exactly.

The problem (one round): choose for each device a rank r_i in {0, 1, ..., R} (0: left out),
a clock f_i and a bandwidth B_i so that every device taking part meets T_i <= T0 and
E_i <= E_i0, at least ``min_devices`` take part, and (with a pool) the bandwidths of the
devices taking part sum to at most ``bandwidth_total_hz``; maximize the ``objective``:

    shared   r, every device taking part at the same rank r
    sum      sum_i w_i r_i,              w_i = |D_i| / sum_j |D_j|
    log      sum_i w_i log(1 + r_i)
    accuracy sum_i v_i r_i / (r_i + c),  the round's predicted accuracy gain

Structure used, and why each case is exact:

- For a fixed rank and bandwidth the devices decouple (the one feasibility kernel decides
  each). Every cost grows with the rank, and a wider band only raises the rates, so device
  i's feasibility is monotone in r_i and in B_i.
- **No pool.** Each device's largest rank R_i (bisection, exact by monotonicity) is all
  there is to know. ``shared``: the best rank that at least m devices reach is the m-th
  largest R_i; every device reaching it takes part. ``sum`` / ``log``: every device takes
  R_i (every separable objective grows with each r_i); infeasible if fewer than m have
  R_i >= 1.
- **Pool, shared.** Device i needs at least B_i*(r) Hz for rank r (the least bandwidth,
  found by bisection on B: monotone), B_i*(r) grows with r, so "the m cheapest devices fit
  the pool at rank r" is monotone in r: bisection on r is exact. Then the devices join in
  order of B_i*(r) while the pool lasts (every device that fits takes part).
- **Pool, sum / log / accuracy.** A multiple-choice knapsack: each device picks one rank (or none),
  paying B_i*(r) from the pool. A marginal-gain greedy is *not* exact here even when every
  B_i*(r) is convex in r (pool 10; device a: one step of cost 6, gain 6; device b: two
  steps of cost 5, gain 4.9 each; greedy by gain per hertz takes a, 6, the optimum is b
  twice, 9.8). Every device's curve B_i*(1..R_i) comes from
  :mod:`solvers.bandwidth_curve`, and the knapsack from :mod:`solvers.mckp` (an LP-hull
  price, a Lagrangian bound, reduced-cost fixing, HiGHS on the core left): proven optimal,
  or ``limit`` with a certified bound. The pool keeps a margin of 1e-9 against rounding and
  HiGHS's feasibility tolerance; every answer is re-checked against the pool and the cost
  model.
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
from solvers._common import (
    error_result,
    largest_true,
    rank_violations,
    recheck,
    stopped_at_limit,
    upper_bracket,
)
from solvers.bandwidth_curve import curve_table, options, roots
from solvers.mckp import CORE_LIMIT, Answer, solve_mckp
from solvers.registry import register_solver

#: Bisection steps on log(B): the bracket [limit 1e-12, limit] shrinks to 1e-16 of itself.
BANDWIDTH_STEPS = 64
#: Relative margin the knapsack MILP keeps under the pool (a MILP solver accepts a row
#: violated by its own feasibility tolerance; the answer must not exceed the pool when a user
#: adds it up, and the re-check refuses one that would).
MILP_POOL_MARGIN = 1e-9
EPS = float(np.finfo(np.float64).eps)
#: Most raises of a band by :func:`verified_bandwidth` (4 ulps doubling: up to 6e-11 of it, far
#: inside :data:`MILP_POOL_MARGIN` summed over the devices).
BAND_NUDGES = 16
#: A device's energy within this many ulps of E0 is at E0 (the least band's root, as
#: :func:`least_bandwidth` finds it with the power free).
ROOT_ULPS = 16
#: Most (device, rank) binaries the sum/log-with-pool MILP builds.
MAX_MILP_VARIABLES = 400_000


def utility(objective: str, r: ArrayLike) -> NDArray[np.float64]:
    """u(r) of the objective, per device (r = 0 gives 0)."""
    x = np.asarray(r, dtype=np.float64)
    return np.asarray(np.log1p(x) if objective == "log" else x, dtype=np.float64)


def objective_value(system: System, ranks: NDArray[np.int64]) -> float:
    """The objective of an allocation with these per-device ranks."""
    if system.objective == "shared":
        taking = ranks[ranks > 0]
        return float(taking.min()) if taking.size else 0.0
    return float(np.sum(system.gain(np.arange(system.n_devices), ranks)))


def max_ranks(system: System) -> NDArray[np.int64]:
    """Each device's largest feasible rank on its fixed band (0: none), judged exactly.

    The bisection runs on a screen (the permissive fixed-power one, or, with
    ``power_control``, :func:`~fsl_opt.problem.power.least_energy`'s verdict: every cost
    grows with the rank, so feasibility is monotone in it); a device whose screened rank
    fails the exact test (:func:`~fsl_opt.problem.power.operating_point`: a rounding
    boundary) steps down until it passes, so every rank returned is one the cost model
    accepts as computed, at the power reported.
    """
    if system.power_control:
        hi = np.full(system.n_devices, system.max_rank + 1, dtype=np.int64)
        ranks, _ = largest_true(
            lambda r: power.least_energy(system, r).feasible, np.zeros_like(hi), hi
        )
    else:
        affine = cost.Affine.of(system)
        hi = upper_bracket(affine)
        ranks, _ = largest_true(affine.feasible, np.zeros_like(hi), hi)
    while True:
        some = ranks > 0
        if not some.any():
            return ranks
        ok = power.operating_point(system, np.maximum(ranks, 1)).feasible
        fail = some & ~ok
        if not fail.any():
            return ranks
        ranks = np.where(fail, ranks - 1, ranks)


def reachable_ranks(system: System) -> NDArray[np.int64]:
    """Each device's largest feasible rank on the most bandwidth it may take (its limit, or
    the pool): the ranks its least-bandwidth curve covers."""
    return max_ranks(_fixed_band(system, cost.bandwidth_limit(system)))


def pool_room(pool: float, n_devices: int) -> float:
    """The part of the pool an allocation may fill: pool (1 - 2 n eps).

    Bandwidths chosen so that their running sum stays within this have an exact sum below
    pool (1 - n eps), so any order of adding them up in floating point (n - 1 roundings)
    stays within the pool: a user's own ``sum(...) <= pool`` check passes.
    """
    return pool * (1.0 - 2.0 * n_devices * EPS)


def knapsack_room(system: System) -> float:
    """The part of the pool a knapsack over the devices' options may fill: within
    :func:`pool_room`, and :data:`MILP_POOL_MARGIN` below the pool (a MILP solver's
    feasibility tolerance, a floating-point root's rounding)."""
    pool = float(system.bandwidth_total_hz or 0.0)
    return min(pool_room(pool, system.n_devices), pool * (1.0 - MILP_POOL_MARGIN))


def within_pool(bandwidth: NDArray[np.float64], pool: float) -> bool:
    """Whether every floating-point order of adding ``bandwidth`` up stays <= ``pool``
    (the correctly rounded sum, widened by the worst rounding of n - 1 additions)."""
    exact = math.fsum(float(b) for b in bandwidth)
    return exact * (1.0 + max(len(bandwidth) - 1, 0) * EPS) <= pool


def least_bandwidth(system: System, ranks: NDArray[np.int64]) -> NDArray[np.float64]:
    """B_i*(r_i): the least pool bandwidth on which device i meets T0 and E0 at rank r_i.

    0 where r_i = 0; inf where even the device's limit is not enough. Bisection on log B in
    [limit 1e-12, limit], every device at once, each step judged exactly at the device's
    operating point (:func:`~fsl_opt.problem.power.operating_point`: with
    ``power_control`` its power is chosen too); the returned value is a bandwidth that was
    tested and passed, so the allocation built on it passes the same test. With
    ``power_control``, :func:`_least_bandwidth_power` (regula falsi on the energy) instead.
    """
    ranks = np.asarray(ranks, dtype=np.int64)
    limit = cost.bandwidth_limit(system)
    need = ranks > 0
    r = np.maximum(ranks, 1)
    if system.power_control:
        return np.where(need, _least_bandwidth_power(system, r), 0.0)
    ok_hi = power.operating_point(cost.at_bandwidth(system, limit), r).feasible
    lo = np.log(limit * 1e-12)
    hi = np.log(limit)
    band = limit.copy()  # the feasible end, kept as the exact value that was tested
    for _ in range(BANDWIDTH_STEPS):
        mid = np.exp(0.5 * (lo + hi))
        ok = power.operating_point(cost.at_bandwidth(system, mid), r).feasible
        band = np.where(ok, mid, band)
        hi = np.where(ok, np.log(mid), hi)
        lo = np.where(ok, lo, np.log(mid))
    out = np.where(ok_hi, band, np.inf)
    return np.where(need, out, 0.0)


def _least_bandwidth_power(system: System, r: NDArray[np.int64]) -> NDArray[np.float64]:
    """:func:`least_bandwidth` with each device's power free: the root of
    g(B) = E_min(B) - E0 (E_min: the least energy over (clock, power) on band B, continuous
    and decreasing in B) between the fixed-power deadline root B_L (no band below it is on
    time even at full power) and the fixed-power least band (power control never needs
    more; the limit where there is none), by regula falsi with the Illinois rule, the
    bracket's right end always a band the exact verdict
    (:func:`~fsl_opt.problem.power.operating_point`) accepted. A step that would not land
    strictly inside the bracket, or where g is not finite on both ends, bisects it (on
    log B)."""
    n = system.n_devices
    limit = cost.bandwidth_limit(system)
    left = system.energy_budget_j

    def judge(band: NDArray[np.float64]) -> tuple[NDArray[np.bool_], NDArray[np.float64]]:
        at = power.operating_point(cost.at_bandwidth(system, band), r)
        over = at.energy_j - left
        # Infeasible within E0: late (no finite measure of how far); infeasible over it: g > 0.
        g = np.where(at.feasible, np.minimum(over, 0.0), np.where(over > 0, over, np.inf))
        return at.feasible, g

    on_time, fixed = roots(system, np.arange(n), r)
    hi = np.where(np.isfinite(fixed), np.minimum(fixed, limit), limit)
    ok_hi, g_hi = judge(hi)
    redo = ~ok_hi & (hi < limit)  # rounding at the fixed-power root: the limit instead
    if redo.any():
        hi = np.where(redo, limit, hi)
        ok_hi, g_hi = judge(hi)
    lo = np.where(np.isfinite(on_time), np.minimum(on_time, hi), hi * 1e-12)
    ok_lo, g_lo = judge(lo)
    # Where the deadline binds, B_L itself is the answer, and rounding can leave it an ulp
    # late: a few ulps above it settle that (and spare a bisection down to it).
    step = 4.0 * EPS
    for _ in range(BAND_NUDGES):
        late = ~ok_lo & ~np.isfinite(g_lo) & ok_hi & (lo < hi)
        if not late.any():
            break
        up = np.where(late, np.minimum(lo * (1.0 + step), hi), lo)
        ok_up, g_up = judge(up)
        lo = up
        ok_lo, g_lo = ok_up, g_up
        step *= 2.0
    # A feasible end with E_min = E0 (within the energy's rounding) is the root: E_min falls
    # strictly with B, so no band below it is within E0.
    at_root = ROOT_ULPS * EPS * left
    live = ok_hi & ~ok_lo & (lo < hi) & (g_hi < -at_root)
    a, b, ga, gb = lo.copy(), hi.copy(), g_lo.copy(), g_hi.copy()
    side = np.zeros(n, dtype=np.int8)  # which end moved last (+1: b, -1: a)
    for _ in range(BANDWIDTH_STEPS):
        if not live.any():
            break
        with np.errstate(all="ignore"):
            m = b - gb * (b - a) / (gb - ga)
        inside = np.isfinite(ga) & np.isfinite(gb) & (ga > 0) & (gb < 0) & (m > a) & (m < b)
        m = np.where(inside, m, np.sqrt(a * b))
        m = np.where(live, m, b)
        ok, g = judge(m)
        move_b = live & ok
        move_a = live & ~ok
        # Illinois: an end kept twice in a row has its value halved (superlinear, no stall).
        ga = np.where(move_b & (side == 1), 0.5 * ga, ga)
        gb = np.where(move_a & (side == -1), 0.5 * gb, gb)
        b = np.where(move_b, m, b)
        gb = np.where(move_b, g, gb)
        a = np.where(move_a, m, a)
        ga = np.where(move_a, g, ga)
        side = np.where(move_b, 1, np.where(move_a, -1, side)).astype(np.int8)
        live &= (b - a > 4.0 * EPS * b) & (gb < -at_root)
    band = np.where(ok_lo, lo, b)
    return np.where(ok_hi | ok_lo, band, np.inf)


def allocation_result(
    system: System,
    method: str,
    ranks: NDArray[np.int64],
    bandwidth: NDArray[np.float64],
    started: float,
    iterations: int,
    bound: float | None = None,
    extra: dict[str, object] | None = None,
) -> SolveResult:
    """Assemble and re-check an allocation (per-device ranks and bandwidths) as ``optimal``;
    ``bound``, where the method certifies one, caps the optimum (an answer not proven
    becomes a ``limit`` through :func:`solvers._common.stopped_at_limit`)."""
    n = system.n_devices
    taking = ranks > 0
    if taking.sum() < system.required_devices or not taking.any():
        viol, count = rank_violations(_fixed_band(system, cost.bandwidth_limit(system)))
        more = f" (and {count - 1} more devices)" if count > 1 else ""
        shown = str(viol[0]) if viol else "no device fails alone; the pool is too small"
        return replace(
            error_result(system, method, started, iterations, ""),
            status="infeasible",
            message=f"fewer than {system.required_devices} devices can take part: {shown}{more}",
            violations=viol,
            ranks=np.zeros(n, dtype=np.int64),
            bandwidth_hz=np.zeros(n),
            objective=system.objective,
        )
    band = np.where(taking, bandwidth, cost.bandwidth_limit(system))
    alloc = _fixed_band(system, band)
    r = np.maximum(ranks, 1)
    if system.power_control:  # judged at each device's chosen power
        p = power.operating_point(alloc, r).tx_power_w
        alloc = alloc.replace(tx_power_w=p)
        extra = {**(extra or {}), "tx_power_w": np.where(taking, p, np.nan)}
    f = cost.operating_frequency(alloc, r)
    costs = cost.round_cost(alloc, r, f)
    pool = system.bandwidth_total_hz
    problem = recheck(alloc, costs, f, where=taking)
    if problem:
        problem = f"(among the devices taking part) {problem}"
    elif pool is not None and not within_pool(bandwidth[taking], pool):
        problem = f"the bandwidths sum to {bandwidth[taking].sum():.17g} Hz > the pool {pool:.17g}"
    if problem:
        return error_result(system, method, started, iterations, f"re-check failed: {problem}")
    costs = costs.map(lambda a: np.where(taking, a, 0.0))  # a left-out device costs nothing
    binding = np.where(taking, cost.binding(alloc, r), cost.Binding.NONE).astype(np.int8)
    value = objective_value(system, ranks)
    left = int((~taking).sum())
    if bound is not None:
        bound = max(bound, value)  # a bound computed in other roundings never below the value
    return SolveResult(
        status="optimal",
        rank=int(ranks[taking].min()),
        frequencies_hz=np.where(taking, f, np.nan),
        cost=costs,
        binding=binding,
        method=method,
        iterations=iterations,
        wall_time_s=time.perf_counter() - started,
        message=f"{system.objective} objective {value:.6g}; {int(taking.sum())} devices take "
        f"part, {left} left out",
        ranks=ranks.astype(np.int64),
        bandwidth_hz=np.where(taking, bandwidth, 0.0),
        objective=system.objective,
        objective_value=value,
        bound=bound,
        extra=extra or {},
    )


def verified_bandwidth(
    system: System, ranks: NDArray[np.int64], bandwidth: NDArray[np.float64]
) -> NDArray[np.float64]:
    """``bandwidth`` with each band of a device taking part raised a hair (at most
    :data:`BAND_NUDGES` times, from 4 ulps, each step twice the last, never above the
    device's limit) where the cost model, as it computes, finds the device late or over
    budget there: a floating-point root sits within rounding of the boundary, on either side
    (the energy's, a difference of nearly equal terms, within about 1e-12 of the band)."""
    taking = np.flatnonzero(ranks > 0)
    if taking.size == 0:
        return bandwidth
    band = bandwidth.copy()
    limit = cost.bandwidth_limit(system)[taking]
    sub = system.subset(taking)
    r = ranks[taking]
    b = band[taking]
    step = 4 * EPS
    for _ in range(BAND_NUDGES):
        ok = power.operating_point(cost.at_bandwidth(sub, b), r).feasible
        if ok.all():
            break
        b = np.where(ok, b, np.minimum(b * (1.0 + step), limit))
        step *= 2.0
    band[taking] = b
    return band


def _fixed_band(system: System, bandwidth: NDArray[np.float64]) -> System:
    """The system with these bandwidths fixed (pool or not), selection rule dropped."""
    if system.bandwidth_total_hz is None:
        return system.replace(bandwidth_hz=bandwidth, min_devices=None, objective="shared")
    return cost.at_bandwidth(system, bandwidth)


def _no_pool(system: System) -> tuple[NDArray[np.int64], int]:
    best = max_ranks(system.replace(min_devices=None, objective="shared"))
    if system.objective == "shared":
        return _at_shared_rank(best, _mth_largest(best, system.required_devices)), 1
    return best, 1


def _mth_largest(best: NDArray[np.int64], m: int) -> int:
    """The best shared rank that at least ``m`` devices reach (their own largest ``best``)."""
    return int(np.sort(best)[::-1][m - 1])


def _at_shared_rank(best: NDArray[np.int64], r: int) -> NDArray[np.int64]:
    """Every device whose largest rank reaches ``r`` takes it; the others, and every device
    when r < 1, are left out."""
    return np.where(best >= max(r, 1), max(r, 0), 0).astype(np.int64)


def power_controlled_ranks(system: System) -> NDArray[np.int64]:
    """Each device's largest rank under T0 and E0 on its fixed band with its uplink power
    free in (0, P_i] (:func:`max_ranks` with ``power_control``; 0: none)."""
    return max_ranks(system.replace(power_control=True))


def _pool_shared(system: System) -> tuple[NDArray[np.int64], NDArray[np.float64], int]:
    m, pool = system.required_devices, float(system.bandwidth_total_hz or 0.0)
    n = system.n_devices
    top = reachable_ranks(system)

    room = pool_room(pool, n)

    def fits(r: int) -> tuple[bool, NDArray[np.float64]]:
        need = least_bandwidth(system, np.full(n, r, dtype=np.int64))
        cheapest = np.sort(need)[:m]
        return bool(np.isfinite(cheapest).all() and np.cumsum(cheapest)[-1] <= room), need

    lo, hi, calls = 0, int(np.sort(top)[::-1][m - 1]) + 1, 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        calls += 1
        if fits(mid)[0]:
            lo = mid
        else:
            hi = mid
    if lo == 0:
        return np.zeros(n, dtype=np.int64), np.zeros(n), calls
    _, need = fits(lo)
    order = np.argsort(need, kind="stable")
    ranks = np.zeros(n, dtype=np.int64)
    band = np.zeros(n)
    used = 0.0
    for i in order:
        if not np.isfinite(need[i]) or used + need[i] > room:
            break
        used += need[i]
        ranks[i], band[i] = lo, need[i]
    return ranks, band, calls


def knapsack_tables(
    system: System,
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]]:
    """The pooled ``sum`` / ``log`` problem as options: for each device and each rank it can
    reach on its whole limit, the least bandwidth for it and its gain w_i u(r).

    Returns ``(device, rank, bandwidth, gain)``, options a device cannot meet at any
    bandwidth left out. Raises :class:`ConfigError` above :data:`MAX_MILP_VARIABLES`.
    """
    top = reachable_ranks(system)
    size = int(top.sum())
    if size > MAX_MILP_VARIABLES:
        raise ConfigError(
            f"per_device with a pool and objective {system.objective!r} builds one binary per "
            f"(device, feasible rank): {size:,} here, more than {MAX_MILP_VARIABLES:,}; lower "
            "max_rank, or use objective 'shared' (exact by bisection at any size)"
        )
    return _tables(system, top)


def _tables(
    system: System, top: NDArray[np.int64]
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]]:
    if system.power_control:  # each entry's least band with its power chosen too
        dev, rank = options(top)
        need = least_bandwidth(system.subset(dev), rank) if dev.size else np.zeros(0)
    else:
        dev, rank, need = curve_table(system, top)
    ok = np.isfinite(need)
    dev, rank, need = dev[ok], rank[ok], need[ok]
    return dev, rank, need, system.gain(dev, rank)


def _pool_knapsack(
    system: System, time_limit_s: float
) -> tuple[NDArray[np.int64], NDArray[np.float64], Answer]:
    """The pooled ``sum`` / ``log`` problem by :func:`solvers.mckp.solve_mckp` on every
    device's least-bandwidth curve (:func:`solvers.bandwidth_curve.curve_table`)."""
    m, n = system.required_devices, system.n_devices
    top = reachable_ranks(system)
    dev, rank, need, gain = _tables(system, top)
    room = knapsack_room(system)
    weights = system.weights
    unit = float(weights.max()) if n else 1.0
    if system.objective == "accuracy" and system.device_value is not None:
        unit = float(system.device_value.max()) if n else 1.0
    # Equal weights and the sum: every answer's objective is a multiple of the weight.
    same = system.objective == "sum" and n and bool(np.all(weights == weights[0]))
    quantum = float(weights[0]) if same else None
    answer = solve_mckp(dev, need, gain, n, m, room, time_limit_s, unit=unit, quantum=quantum)
    ranks = np.zeros(n, dtype=np.int64)
    band = np.zeros(n)
    if answer.feasible and answer.chosen.size:
        chosen = answer.chosen
        ranks[dev[chosen]] = rank[chosen]
        band[dev[chosen]] = need[chosen]
    return ranks, band, answer


@register_solver(
    "per_device",
    "the extended problem exactly: per-device ranks, pool, selection, power",
    extended=True,
    power_control=True,
)
def solve_per_device(
    system: System, *, rng: np.random.Generator | None = None, time_limit_s: float = 60.0
) -> SolveResult:
    """Per-device ranks, pool and selection, exactly (see the module docstring for why).

    Returns
    -------
    SolveResult
        ``ranks`` (0: left out), ``bandwidth_hz`` (0: left out), ``objective_value``;
        ``rank`` is the smallest rank of a device taking part (the shared rank for
        ``shared``); frequencies are the least-energy clocks (nan when left out). With a
        pool and ``sum``/``log``, ``bound`` certifies the answer; HiGHS runs on the core at
        most ``time_limit_s``, and an allocation not proven optimal by then (or whose core
        is too large to search) is ``status="limit"`` with its ``bound`` and ``gap``,
        never ``optimal``.
    """
    started = time.perf_counter()
    if system.bandwidth_total_hz is None:
        ranks, calls = _no_pool(system)
        return allocation_result(
            system, "per_device", ranks, np.array(system.bandwidth_hz), started, calls
        )
    if system.objective == "shared":
        ranks, band, calls = _pool_shared(system)
        return allocation_result(system, "per_device", ranks, band, started, calls)
    ranks, band, answer = _pool_knapsack(system, time_limit_s)
    if not answer.feasible and not answer.proven:
        return error_result(
            system,
            "per_device",
            started,
            1,
            f"no allocation found before a limit: min_devices = {system.required_devices} "
            f"binds the pool and the exact search ({answer.core} options) stopped "
            f"(time_limit_s = {time_limit_s:g} s, or too large); raise time_limit_s",
        )
    band = verified_bandwidth(system, ranks, band)
    res = allocation_result(
        system,
        "per_device",
        ranks,
        band,
        started,
        1,
        bound=answer.bound,
        extra={"core_options": answer.core, "price_per_hz": answer.price},
    )
    if answer.proven:
        return res
    why = (
        f"the core's size ({answer.core:,} options, more than {CORE_LIMIT:,})"
        if answer.core > CORE_LIMIT
        else f"HiGHS's time limit ({time_limit_s:g} s) on a core of {answer.core:,} options"
    )
    return stopped_at_limit(res, answer.bound, why)


def _fixed_power_only(system: System, method: str) -> None:
    if system.power_control:
        raise ConfigError(
            f"method {method!r} plans with each device's fixed power; this system has "
            "power_control = true: use per_device"
        )


@register_solver("equal_split", "baseline: the pool split equally over every device", extended=True)
def solve_equal_split(system: System, *, rng: np.random.Generator | None = None) -> SolveResult:
    """Baseline: the pool split equally over every device (capped at each one's limit),
    then the best per-device ranks and selection on those fixed bands."""
    started = time.perf_counter()
    _fixed_power_only(system, "equal_split")
    if system.bandwidth_total_hz is None:
        return solve_per_device(system)
    share = np.minimum(system.bandwidth_hz, system.bandwidth_total_hz / system.n_devices)
    fixed = cost.at_bandwidth(system, share).replace(
        objective=system.objective, min_devices=system.min_devices
    )
    ranks, calls = _no_pool(fixed)
    return allocation_result(fixed, "equal_split", ranks, share, started, calls)


@register_solver("shared_all", "baseline: one shared rank, every device in", extended=True)
def solve_shared_all(system: System, *, rng: np.random.Generator | None = None) -> SolveResult:
    """Baseline: the paper's choice, one shared rank with every device forced in (the pool,
    if any, split to fit that rank); the objective is then scored as the system asks."""
    started = time.perf_counter()
    _fixed_power_only(system, "shared_all")
    forced = system.replace(objective="shared", min_devices=None)
    if forced.bandwidth_total_hz is None:
        ranks, calls = _no_pool(forced)
        band = np.array(system.bandwidth_hz)
    else:
        ranks, band, calls = _pool_shared(forced)
    res = allocation_result(forced, "shared_all", ranks, band, started, calls)
    if res.status != "optimal" or res.ranks is None:
        return res
    return replace(
        res, objective=system.objective, objective_value=objective_value(system, res.ranks)
    )
