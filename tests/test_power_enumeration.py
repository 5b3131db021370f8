"""Transmit power as a decision against full enumeration, per case (objective x pool x
selection), with a cost model written here by hand and the power found on a fine grid.

The oracle's least energy of a device at a rank on a band is the least over a log grid of
powers in [1e-12 P_i, P_i] refined linearly between the best point's neighbours, each power
at its slowest on-time clock. A grid point is a real operating point, so the grid's least
energy is an upper bound on the true one; the refined grid is within ``TOL`` of it
(E is convex in the upload time). So a device is surely feasible where the grid's energy is
within E0, and surely not where it is above E0 (1 + TOL): the enumeration over the sure
verdicts and over the possible ones brackets the optimum, and the solver's answer must lie
in the bracket (they coincide on almost every instance: counted). Every allocation is
re-checked by the hand-written model of ``tests/test_per_device.py`` at the reported
powers, each within (0, P_i].

``FSL_OPT_POWER_CASES`` instances per case (60 in the suite; 1000 for the record:
``FSL_OPT_POWER_CASES=1000 pytest tests/test_power_enumeration.py``).
"""

import os

import numpy as np
import pytest

from fsl_opt.problem.system import System
from solvers import solve
from tests.test_per_device import check_allocation, enumerate_best, small_instance

CASES = int(os.environ.get("FSL_OPT_POWER_CASES", "60"))
OBJECTIVES = ("shared", "sum", "log")
#: The refined grid's least energy is within this fraction above the true least energy.
TOL = 1e-6
#: Grid points per stage (log grid, then linear between the best point's neighbours).
POINTS = 400
#: Bisection steps on each least band (relative 2^-50 of the device's limit).
BAND_STEPS = 50


def least_energy_grid(s: System, dev, rank, band, noise):
    """(on time at full power, least energy over the grid) per entry, written from the
    model: rates B log2(1 + g p / N), the slowest on-time clock, E = Omega C f^2 + p t_ul
    + xi."""
    dev = np.asarray(dev)
    rank = np.asarray(rank, dtype=np.float64)
    per = rank * (s.d + s.k) if s.upload_model == "lora" else (rank + s.k) * s.d
    bits = per * s.matrices_per_layer * s.layers[dev] * s.bits_per_param
    ops = (2 * rank - 1) * s.d * s.k * s.matrices_per_layer * s.layers[dev]
    cycles = (s.cycles_per_op * ops + s.base_cycles[dev]) * s.samples[dev] + s.round_base_cycles[
        dev
    ]
    t_dl = bits / (band * np.log2(1 + s.gain_dl[dev] * s.server_power_w / noise))
    most = s.tx_power_w[dev]

    def energies(p):
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            u = bits[:, None] / (
                band[:, None] * np.log2(1 + s.gain_ul[dev][:, None] * p / noise[:, None])
            )
            left = s.latency_s - t_dl[:, None] - u
            ok = (left > 0) & (cycles[:, None] <= s.f_max_hz[dev][:, None] * (1 + 1e-9) * left)
            f = cycles[:, None] / left
            e = (
                s.omega[dev][:, None] * cycles[:, None] * f**2
                + p * u
                + s.circuit_energy_j[dev][:, None]
            )
        return ok, np.where(ok, e, np.inf)

    p = most[:, None] * np.logspace(-12, 0, POINTS)[None, :]
    ok, e = energies(p)
    j = np.argmin(e, axis=1)
    rows = np.arange(len(dev))
    lo = p[rows, np.maximum(j - 1, 0)]
    hi = p[rows, np.minimum(j + 1, POINTS - 1)]
    p2 = lo[:, None] + (hi - lo)[:, None] * np.linspace(0.0, 1.0, POINTS)[None, :]
    _, e2 = energies(p2)
    return ok[:, -1], np.minimum(e.min(axis=1), e2.min(axis=1))


def verdicts(s: System, dev, rank, band, noise):
    """(surely feasible, possibly feasible) per entry."""
    on_time, e = least_energy_grid(s, dev, rank, band, noise)
    e0 = s.energy_budget_j[np.asarray(dev)]
    return on_time & (e <= e0), on_time & (e <= e0 * (1 + TOL))


def least_bands(s: System, dev, rank):
    """(surely enough, possibly enough) least pool band per entry, by bisection on each
    verdict (inf where the device's limit is not enough)."""
    dev = np.asarray(dev)
    limit = np.minimum(s.bandwidth_hz[dev], s.bandwidth_total_hz)
    out = []
    for which in (0, 1):
        ok_hi = verdicts(s, dev, rank, limit, s.noise_psd_w_per_hz * limit)[which]
        lo, hi = np.zeros_like(limit), limit.copy()
        for _ in range(BAND_STEPS):
            mid = 0.5 * (lo + hi)
            ok = verdicts(s, dev, rank, mid, s.noise_psd_w_per_hz * mid)[which]
            hi = np.where(ok, mid, hi)
            lo = np.where(ok, lo, mid)
        # The possible band may sit a bisection step below the true root: widen it down.
        band = hi if which == 0 else lo
        out.append(np.where(ok_hi, band, np.inf))
    return out


def bracket(s: System) -> tuple[float | None, float | None]:
    """(the optimum over the sure verdicts, the optimum over the possible ones)."""
    n, rmax = s.n_devices, s.max_rank
    dev = np.repeat(np.arange(n), rmax)
    rank = np.tile(np.arange(1, rmax + 1), n)
    if s.bandwidth_total_hz is None:
        sure, maybe = verdicts(s, dev, rank, s.bandwidth_hz[dev], np.full(dev.size, s.noise_w))
    else:
        sure, maybe = least_bands(s, dev, rank)
    sure, maybe = sure.reshape(n, rmax), maybe.reshape(n, rmax)
    return (
        enumerate_best(s, lambda i, r: sure[i, r - 1]),
        enumerate_best(s, lambda i, r: maybe[i, r - 1]),
    )


def instance(seed: int, objective: str, pool: bool, some: bool) -> System:
    """A small instance (3 devices or fewer, ranks up to 5) of one case, power free."""
    rng = np.random.default_rng([seed, OBJECTIVES.index(objective), pool, some])
    s = small_instance(int(rng.integers(1 << 31)))
    n = s.n_devices
    if pool and s.bandwidth_total_hz is None:
        s = s.replace(
            noise_psd_w_per_hz=s.noise_w / float(s.bandwidth_hz.mean()),
            bandwidth_total_hz=float(s.bandwidth_hz.sum() * rng.uniform(0.2, 1.5)),
            bandwidth_hz=s.bandwidth_hz * rng.uniform(1.0, 3.0, n),
        )
    if not pool:
        s = s.replace(bandwidth_total_hz=None, noise_psd_w_per_hz=None)
    return s.replace(
        objective=objective,
        min_devices=int(rng.integers(1, n + 1)) if some else None,
        power_control=True,
        # Most power well above what the deadline needs: sending at full power wastes energy.
        tx_power_w=s.tx_power_w * np.exp(rng.uniform(0.0, np.log(100.0), n)),
    )


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("pool", [False, True], ids=["own-band", "pool"])
@pytest.mark.parametrize("some", [False, True], ids=["all", "selection"])
def test_power_control_equals_enumeration_per_case(objective, pool, some):
    """Per case: the solver's objective lies in the oracle's bracket (equal to it where the
    bracket is one value, nearly always), infeasible exactly where nothing is possible,
    every allocation re-checks by hand at its powers, each within (0, P_i]; and power
    control beats the fixed power somewhere (the test exercises it)."""
    decided = gained = infeasible = 0
    for seed in range(CASES):
        s = instance(seed, objective, pool, some)
        low, high = bracket(s)
        res = solve(s, "per_device")
        if high is None:
            assert res.status == "infeasible", (seed, res.message)
            infeasible += 1
            continue
        if low is not None:
            assert res.status == "optimal", (seed, res.message)
        if res.status != "optimal":
            assert res.status == "infeasible" and low is None, (seed, res.message)
            continue
        value = res.objective_value
        assert (low is None or value >= low * (1 - 1e-9) - 1e-12) and value <= high * (
            1 + 1e-9
        ) + 1e-12, (seed, low, value, high)
        decided += low == high
        taking = res.ranks > 0
        p = res.extra["tx_power_w"]
        assert np.all((p[taking] > 0) & (p[taking] <= s.tx_power_w[taking])), seed
        assert np.all(np.isnan(p[~taking])), seed
        check_allocation(s.replace(tx_power_w=np.where(taking, p, s.tx_power_w)), res)
        fixed = solve(s.replace(power_control=False), "per_device")
        if fixed.status == "optimal":
            assert value >= fixed.objective_value * (1 - 1e-12) - 1e-12, seed
            gained += value > fixed.objective_value * (1 + 1e-9)
        else:
            gained += 1
    assert decided >= 0.9 * (CASES - infeasible), (decided, CASES, infeasible)
    assert CASES - infeasible >= CASES // 4  # most instances have an answer to compare
    assert gained > 0, "power control never helped: the instances do not exercise it"
    print(
        f"{objective}, pool {pool}, selection {some}: {CASES} instances, {infeasible} "
        f"infeasible, {decided} decided by the bracket, power control ahead in {gained}"
    )
