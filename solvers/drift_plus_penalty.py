"""Drift-plus-penalty: a policy that spends whole-run budgets where they buy the most.

A run with whole-run budgets (each device's battery share ``energy_total_j``, the run's
time ``time_total_s``) is a stochastic program over its rounds: the channels of later
rounds are unknown, so a round that spends its device's whole battery on a bad channel
leaves nothing for a good one. Lyapunov optimization turns it into one problem per round
(Neely, *Stochastic Network Optimization*, 2010). Each budget gets a virtual queue that
grows by what a round spends beyond its per-round share and drains by what it spends less:

    Q_i(t+1) = max(Q_i(t) + E_i(t) - e_i, 0),    e_i = energy_total_i / rounds
    Z(t+1)   = max(Z(t)   + T(t)   - tau, 0),    tau = time_total / rounds

and each round maximizes the utility minus the queue-weighted cost
(:func:`solve_priced`), every queue weighed by its own share, so joules and seconds are
on one scale (the Lyapunov function is 1/2 sum (Q_i / e_i)^2 + 1/2 (Z / tau)^2):

    max  V U(r) - sum_i (Q_i / e_i^2) E_i(r_i, f_i) - (Z / tau^2) T

under the round's deadline T <= T0 and each device's budget min(E0, energy left).
U is the run's objective (``shared``: the rank; ``sum``: sum w_i r_i; ``log``:
sum w_i log(1 + r_i); ``accuracy``: the round's predicted accuracy gain, whose device values
fall as the run's predicted accuracy nears its ceiling, so that with V fixed on the first
round a late device-round must be cheap to be bought). A device left out (r_i = 0) spends
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

With ``time_total_s`` the round's length T is a decision too: a shorter round saves the
run's time and a longer one lets every device run a slower clock, and compute energy
falls with the square of the clock. :meth:`DriftPlusPenalty.decide` tries
``round_lengths`` lengths from T0 down to T0 / 16 on a geometric grid and keeps the best.

V weighs utility against the queues. Its automatic value (``v=None``) is fixed on the
first round that can train: the one at which, with every queue holding one round's share,
that round at every device's largest rank is worth nothing. Larger V follows the utility
more and the per-round shares less.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Any

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
    solve_per_device,
)

METHOD = "drift_plus_penalty"
#: Round lengths tried when the run has a time budget, from T0 down to T0 / 16.
ROUND_LENGTHS = 16
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


def _skip(system: System, started: float, why: str, nobody_can: bool = False) -> SolveResult:
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
        return _skip(system, started, why, nobody_can=True)
    if not value > 0.0:
        return _skip(
            system, started, f"the best allocation is worth {value:.6g} <= 0 at these prices"
        )
    result = allocation_result(system, METHOD, ranks, band, started, 1)
    if result.status != "optimal":
        return result
    return replace(
        result, extra={**result.extra, "value": value, "skipped": False, "nobody_can": False}
    )


class DriftPlusPenalty:
    """The drift-plus-penalty policy of a run: its queues, V, and each round's decision.

    Parameters
    ----------
    samples : (I,) array
        Each device's samples |D_i| in the run: U's weights are the run's, also in a round
        that some devices sit out.
    rounds : int
        The run's rounds: each budget's per-round share is its total over this.
    energy_total_j : (I,) array, optional
        Each device's energy for the whole run [J].
    time_total_s : float, optional
        The run's total modeled time [s]; with it the round's length is a decision.
    v : float, optional
        Utility weight V (None: the automatic value, see the module).
    round_lengths : int
        Round lengths tried with a time budget (T0 down to T0 / 16, geometric).
    bandwidth_levels, time_limit_s
        Passed to :func:`solve_priced`.
    """

    def __init__(
        self,
        samples: ArrayLike,
        rounds: int,
        energy_total_j: ArrayLike | None = None,
        time_total_s: float | None = None,
        v: float | None = None,
        round_lengths: int = ROUND_LENGTHS,
        bandwidth_levels: int = BANDWIDTH_LEVELS,
        time_limit_s: float = 60.0,
    ) -> None:
        if energy_total_j is None and time_total_s is None:
            raise ConfigError(
                "policy drift_plus_penalty spends whole-run budgets: set energy_total_j, "
                "time_total_s or both"
            )
        if v is not None and not (math.isfinite(v) and v > 0):
            raise ConfigError(f"policy_v = {v!r}: expected a finite value > 0 (or none: automatic)")
        self.samples = np.asarray(samples, dtype=np.float64)
        n_devices = self.n_devices = int(self.samples.size)
        self.share_j = (
            None
            if energy_total_j is None
            else np.broadcast_to(np.asarray(energy_total_j, dtype=np.float64), (n_devices,))
            / rounds
        )
        self.share_s = None if time_total_s is None else float(time_total_s) / rounds
        self.v = v
        self.round_lengths = round_lengths if time_total_s is not None else 1
        self.bandwidth_levels = bandwidth_levels
        self.time_limit_s = time_limit_s
        self.energy_queue_j = np.zeros(n_devices)
        self.time_queue_s = 0.0

    def prices(self, index: NDArray[np.int64]) -> tuple[NDArray[np.float64], float]:
        """The round's energy prices Q_i / e_i^2 of the devices ``index`` and the time
        price Z / tau^2."""
        if self.share_j is None:
            energy = np.zeros(index.size)
        else:
            energy = self.energy_queue_j[index] / self.share_j[index] ** 2
        time_price = 0.0 if self.share_s is None else self.time_queue_s / self.share_s**2
        return energy, time_price

    def weight_scale(self, system: System, index: NDArray[np.int64]) -> float:
        """U over the devices ``index`` with the run's weights, per U with their own
        (``system.weights`` sum to 1 over them): sum of their |D_i| over the run's. 1 for
        ``shared`` and ``accuracy`` (whose device values are not normalized)."""
        if system.objective in ("shared", "accuracy"):
            return 1.0
        return float(self.samples[index].sum() / self.samples.sum())

    def auto_v(self, system: System, index: NDArray[np.int64]) -> float | None:
        """V at which, with every queue at one round's share, this round at every device's
        largest rank (``per_device``'s answer) is worth nothing; None if nobody can train."""
        best = solve_per_device(system)
        if best.status != "optimal" or best.ranks is None or best.objective_value <= 0:
            return None
        taking = best.ranks > 0
        penalty = 0.0
        if self.share_j is not None:
            penalty += math.fsum(best.energy_j[taking] / self.share_j[index][taking])
        if self.share_s is not None:
            penalty += float(np.max(best.latency_s[taking])) / self.share_s
        return penalty / (best.objective_value * self.weight_scale(system, index))

    def lengths(self, deadline_s: float) -> list[float]:
        """The round lengths tried under ``deadline_s``: itself, then down to 1/16 of it."""
        k = self.round_lengths
        return [deadline_s * 16.0 ** (-j / (k - 1)) if k > 1 else deadline_s for j in range(k)]

    def decide(self, system: System, index: NDArray[np.int64]) -> SolveResult:
        """This round's allocation for the devices ``index`` of the run (``system`` holds
        them, with this round's deadline and budgets cut to what is left)."""
        started = time.perf_counter()
        if self.v is None:
            self.v = self.auto_v(system, index)
            if self.v is None:
                why = "no device can take part (V is set on the first round that can train)"
                return _skip(system, started, why, nobody_can=True)
        energy_price, time_price = self.prices(index)
        best: SolveResult | None = None
        for length in self.lengths(system.latency_s):
            res = solve_priced(
                system.replace(latency_s=length),
                energy_price,
                time_price,
                self.v * self.weight_scale(system, index),
                bandwidth_levels=self.bandwidth_levels,
                time_limit_s=self.time_limit_s,
            )
            if res.status == "error":
                return res
            if best is None or res.extra["value"] > best.extra["value"]:
                best = replace(res, extra={**res.extra, "round_length_s": length})
        assert best is not None
        return replace(best, wall_time_s=time.perf_counter() - started)

    def update(self, result: SolveResult, ranks: NDArray[np.int64]) -> None:
        """Book a round into the queues (``ranks`` over every device of the run; a device
        that did not take part spent nothing, so its queue drains by its share)."""
        taking = ranks > 0
        if self.share_j is not None:
            spent = np.zeros(self.n_devices)
            if result.cost is not None and taking.any():
                spent = np.where(taking, np.nan_to_num(result.energy_j, nan=0.0), 0.0)
            self.energy_queue_j = np.maximum(self.energy_queue_j + spent - self.share_j, 0.0)
        if self.share_s is not None:
            length = 0.0
            if result.cost is not None and taking.any():
                length = float(np.max(np.where(taking, result.latency_s, 0.0)))
            self.time_queue_s = max(self.time_queue_s + length - self.share_s, 0.0)

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps."""
        return {
            "energy_queue_j": self.energy_queue_j.tolist(),
            "time_queue_s": self.time_queue_s,
            "v": self.v,
        }

    def load_state(self, state: dict[str, Any] | None) -> None:
        """Restore :meth:`state`."""
        if not state:
            return
        self.energy_queue_j = np.asarray(state["energy_queue_j"], dtype=np.float64)
        self.time_queue_s = float(state["time_queue_s"])
        self.v = state["v"]
