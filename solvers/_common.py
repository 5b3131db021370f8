"""Pieces every solver shares: integer bisection, diagnosis, and building the result."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fsl_opt.problem import cost
from fsl_opt.problem.result import SolveResult, Violation
from fsl_opt.problem.system import System

#: At most this many violations are listed in an infeasible result (10^6 devices fit in none).
MAX_VIOLATIONS = 20


def largest_true(
    pred: Callable[[NDArray[np.int64]], NDArray[np.bool_]],
    lo: NDArray[np.int64],
    hi: NDArray[np.int64],
) -> tuple[NDArray[np.int64], int]:
    """Per-element largest integer r in [lo, hi) with ``pred(r)``, for monotone ``pred``.

    ``pred`` must hold at ``lo`` (or ``lo`` is 0, meaning "none") and fail at ``hi``.
    Each element keeps its own bracket; every step is one vectorized call of ``pred``,
    so the loop runs ceil(log2(max(hi - lo))) times.

    Returns
    -------
    lo : array
        The largest r with ``pred`` true (0 where there is none).
    calls : int
        Number of calls of ``pred``.
    """
    lo = lo.astype(np.int64, copy=True)
    hi = hi.astype(np.int64, copy=True)
    calls = 0
    # Invariant: pred holds at lo (or lo = 0) and fails at hi. A closed bracket (hi = lo + 1)
    # re-tests lo, which holds, so it is left as it is: no masks needed.
    while (hi - lo > 1).any():
        mid = (lo + hi) // 2
        np.maximum(mid, 1, out=mid)
        ok = pred(mid)
        calls += 1
        np.copyto(lo, mid, where=ok)
        np.copyto(hi, mid, where=~ok)
    return lo, calls


def rank_violations(
    system: System, f: NDArray[np.float64] | None = None, rank: int = 1
) -> tuple[tuple[Violation, ...], int]:
    """Devices that cannot meet the deadline or the energy budget at ``rank``, and by how much.

    With ``f=None`` the frequency is free: the deadline is judged at f_max (the fastest
    clock) and the energy at the least-energy on-time clock min(f_lo(1), f_max). Returns
    the violations of the first ``MAX_VIOLATIONS`` failing devices and how many fail in all.
    """
    if f is None:
        late, over = cost.violations(system, rank)
        f_t = system.f_max_hz
        f_e = np.minimum(cost.least_energy_frequency(system, rank), system.f_max_hz)
    else:
        late, over = cost.violations_at(system, rank, f)
        f_t = f_e = np.asarray(f, dtype=np.float64)
    out: list[Violation] = []
    failing = np.flatnonzero(late | over)
    for i in failing[:MAX_VIOLATIONS]:
        sub = system.subset([i])
        if late[i]:
            needed = float(cost.latency(sub, rank, f_t[i : i + 1])[0])
            out.append(Violation(int(i), "latency", needed, system.latency_s, rank))
        if over[i]:
            needed = float(cost.energy(sub, rank, f_e[i : i + 1])[0])
            limit = float(system.energy_budget_j[i])
            out.append(Violation(int(i), "energy", needed, limit, rank))
    return tuple(out), len(failing)


def build_result(
    system: System,
    method: str,
    rank: int,
    started: float,
    iterations: int,
    frequencies: NDArray[np.float64] | None = None,
    device_ranks: NDArray[np.int64] | None = None,
    extra: dict[str, Any] | None = None,
    check: bool = True,
    affine: cost.Affine | None = None,
) -> SolveResult:
    """Assemble a :class:`SolveResult` for the shared rank ``rank`` (0 = infeasible).

    ``affine``: the system's :class:`~fsl_opt.problem.cost.Affine` coefficients, when the
    solver already built them; the binding constraints then come from them. The clocks and
    costs reported always come from the cost model itself (what a user re-checks).

    ``frequencies=None`` means the frequencies are free: each device gets the clock
    :func:`~fsl_opt.problem.cost.operating_frequency` reports (the least-energy on-time
    clock, capped at f_max). Given frequencies are kept as they are (the fixed-frequency
    baselines). With ``check`` the answer is judged exactly as the cost model computes it
    (T_i <= T0, E_i <= E0, no tolerance): a rank the solver's screen accepted only through
    rounding is stepped down to the largest one that passes (``extra["rounded_down"]``
    counts the steps; the screen is permissive, so no rank above it passes), and a method
    never reports an allocation its own cost model rejects.
    """
    n = system.n_devices
    fixed = frequencies is not None
    extra = dict(extra or {})
    costs: cost.RoundCost | None = None  # the settled rank's costs, judged and reported
    if check and rank >= 1:
        stepped = 0
        while rank >= 1:
            if fixed:
                f = np.asarray(frequencies, dtype=np.float64)
                ok = cost.feasible_at(system, rank, f)
            else:
                f, costs, ok = cost.settled_cost(system, rank)
            if ok.all():
                break
            rank -= 1
            stepped += 1
        if stepped:
            extra["rounded_down"] = stepped
    if rank < 1:
        f = np.asarray(frequencies, dtype=np.float64) if fixed else np.full(n, np.nan)
        viol, count = rank_violations(system, f if fixed else None)
        shown = str(viol[0]) if viol else "no device fails alone"
        more = f" (and {count - 1} more devices)" if count > 1 else ""
        return SolveResult(
            status="infeasible",
            rank=0,
            frequencies_hz=f,
            cost=None,
            binding=cost.binding(system, 0, f if fixed else None),
            method=method,
            iterations=iterations,
            wall_time_s=time.perf_counter() - started,
            message=f"infeasible even at rank 1: {shown}{more}",
            device_ranks=device_ranks,
            violations=viol,
            extra=extra,
        )
    if fixed:
        f = np.asarray(frequencies, dtype=np.float64)
    elif not check:
        f = cost.operating_frequency(system, rank)
    if costs is None:
        costs = cost.round_cost(system, rank, f)
    if check:
        problem = recheck(system, costs, f)
        if problem:
            return error_result(
                system,
                method,
                started,
                iterations,
                f"rank {rank} failed the re-check with the cost model: {problem}",
            )
    return SolveResult(
        status="optimal",
        rank=int(rank),
        ranks=np.full(n, int(rank), dtype=np.int64),
        bandwidth_hz=np.array(system.bandwidth_hz),
        objective_value=float(rank),
        frequencies_hz=f,
        cost=costs,
        binding=(
            affine.binding(rank)
            if affine is not None and not fixed
            else cost.binding(system, rank, f if fixed else None)
        ),
        method=method,
        iterations=iterations,
        wall_time_s=time.perf_counter() - started,
        message=f"largest feasible rank {rank}",
        device_ranks=device_ranks,
        extra=extra,
    )


def stopped_at_limit(result: SolveResult, bound: float, why: str) -> SolveResult:
    """``result`` (an allocation assembled and re-checked as if optimal) as a ``limit`` answer:
    the method stopped (``why``) before proving it; ``bound`` caps the optimum. A result with
    no allocation is returned as it is."""
    from dataclasses import replace

    if result.status != "optimal":
        return result
    limited = replace(result, status="limit", bound=max(float(bound), result.objective_value))
    return replace(
        limited,
        message=f"{result.message}; stopped by {why} before proving it optimal: bound "
        f"{limited.bound:.10g}, gap {limited.gap:.3g}",
    )


def recheck(
    system: System,
    costs: cost.RoundCost,
    f: NDArray[np.float64],
    where: NDArray[np.bool_] | None = None,
) -> str:
    """Why an allocation fails the cost model ("" when it passes): non-finite costs, a
    clock outside (0, f_max], a device over T0 or over E0, each compared exactly (no
    tolerance: what a user's own ``<=`` check would say). ``where``: only those devices
    (the ones taking part) are judged."""
    t, e = costs.latency_s, costs.energy_j
    judged = np.ones(system.n_devices, dtype=bool) if where is None else where
    bad = ~(np.isfinite(t) & np.isfinite(e) & np.isfinite(f)) & judged
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        return f"device {i} has delay {t[i]:.6g} s and energy {e[i]:.6g} J (not finite)"
    checks = (
        (~(f > 0) | (f > system.f_max_hz), "a clock outside (0, f_max]"),
        (t > system.latency_s, "a delay over T0"),
        (e > system.energy_budget_j, "an energy over E0"),
    )
    for mask, what in checks:
        mask &= judged
        if mask.any():
            return f"device {int(np.flatnonzero(mask)[0])} has {what}"
    return ""


def upper_bracket(affine: cost.Affine) -> NDArray[np.int64]:
    """Exclusive upper end of each device's rank bracket: r_rig + 1 (eq. 23, corrected)."""
    return affine.communication_rank_bound() + 1


def error_result(
    system: System, method: str, started: float, iterations: int, message: str
) -> SolveResult:
    """A result with ``status="error"``: the method failed, nothing is known of feasibility."""
    return SolveResult.without_allocation(
        system.n_devices, "error", method, message, iterations, time.perf_counter() - started
    )


class NotProven(Exception):
    """A MILP solver stopped (its time limit) without proving its allocation optimal."""


@dataclass(frozen=True)
class KnapsackSolution:
    """What HiGHS returned: ``chosen`` (option indices; None: no feasible choice known),
    ``proven`` (optimal), ``stopped`` (a limit ended the search), ``bound`` (an upper bound
    on the gain; the gain itself when proven)."""

    chosen: NDArray[np.int64] | None
    proven: bool
    stopped: bool
    bound: float


def knapsack_solve(
    dev: NDArray[np.int64],
    band: NDArray[np.float64],
    gain: NDArray[np.float64],
    n: int,
    m: int,
    room: float,
    time_limit_s: float,
) -> KnapsackSolution:
    """A multiple-choice knapsack: which options to take (indices), at most one per device
    (``dev[j]`` is option j's device), at least ``m`` devices, their ``band`` summing to at
    most ``room``, the most ``gain``. scipy's MILP (HiGHS) with no relative optimality gap,
    in process, for at most ``time_limit_s``."""
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import csr_array, vstack

    k = dev.size
    one_each = csr_array((np.ones(k), (dev, np.arange(k))), shape=(n, k))
    rows = vstack([one_each, csr_array(band[None, :]), csr_array(np.ones((1, k)))])
    lower = np.concatenate([np.zeros(n), [0.0], [float(m)]])
    upper = np.concatenate([np.ones(n), [room], [float(n)]])
    res = milp(
        -gain,
        integrality=np.ones(k),
        bounds=Bounds(0, 1),
        constraints=LinearConstraint(rows, lower, upper),
        options={"time_limit": time_limit_s, "mip_rel_gap": 0.0},
    )
    chosen = None if res.x is None else np.flatnonzero(res.x > 0.5)
    if res.status == 0 and chosen is not None:
        return KnapsackSolution(chosen, True, False, float(gain[chosen].sum()))
    if res.status == 2:
        return KnapsackSolution(None, False, False, -np.inf)
    dual = getattr(res, "mip_dual_bound", None)
    bound = -float(dual) if dual is not None and np.isfinite(dual) else float(gain.clip(0).sum())
    return KnapsackSolution(chosen, False, True, bound)


def knapsack(
    dev: NDArray[np.int64],
    band: NDArray[np.float64],
    gain: NDArray[np.float64],
    n: int,
    m: int,
    room: float,
    time_limit_s: float,
) -> NDArray[np.int64] | None:
    """:func:`knapsack_solve` where only a proven answer will do: the options taken, None if
    no choice is feasible, :class:`NotProven` if HiGHS stops at ``time_limit_s`` first."""
    sol = knapsack_solve(dev, band, gain, n, m, room, time_limit_s)
    if sol.proven:
        return sol.chosen
    if not sol.stopped:
        return None
    raise NotProven("time limit reached")
