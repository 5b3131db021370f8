"""Random reference instances for solver tests and benchmarks (cf. cvxpy solver_test_helpers).

``random_system`` draws instances whose optimum lands anywhere from infeasible to the rank
cap, by setting T0 and E0 from the costs of a random target rank.
"""

from __future__ import annotations

import numpy as np

from fsl_opt import cost
from fsl_opt.result import SolveResult
from fsl_opt.system import System


def random_system(rng: np.random.Generator, n_devices: int | None = None) -> System:
    """A random instance with a random target rank near the optimum."""
    n = int(n_devices or rng.integers(1, 6))
    d, k = (int(x) for x in rng.integers(8, 257, size=2))
    base = System(
        samples=np.exp(rng.uniform(np.log(10), np.log(1e4), n)).round(),
        omega=np.exp(rng.uniform(np.log(1e-28), np.log(1e-25), n)),
        f_max_hz=rng.uniform(0.5e9, 3e9, n),
        energy_budget_j=np.ones(n),
        circuit_energy_j=rng.uniform(0, 0.5, n) * (rng.random() < 0.7),
        tx_power_w=rng.uniform(0.01, 0.2, n),
        bandwidth_hz=rng.uniform(1e5, 2e6, n),
        gain_ul=1e-3 * rng.exponential(1.0, n) + 1e-9,
        gain_dl=1e-3 * rng.exponential(1.0, n) + 1e-9,
        layers=rng.integers(1, 5, n).astype(float),
        base_cycles=rng.uniform(0, 1e7, n) * (rng.random() < 0.5),
        d=d,
        k=k,
        matrices_per_layer=int(rng.integers(1, 4)),
        bits_per_param=float(rng.choice([16, 32, 256])),
        upload_model="lora" if rng.random() < 0.5 else "paper",
        max_rank=int(rng.integers(1, min(d, k, 128) + 1)),
        latency_s=1.0,
        noise_w=10 ** rng.uniform(-13, -9),
        server_power_w=rng.uniform(0.5, 2.0),
    )
    target = int(rng.integers(1, base.max_rank + 1))
    f = base.f_max_hz * rng.uniform(0.2, 1.0, n)
    t0 = float(cost.latency(base, target, f).max() * rng.uniform(0.7, 1.3))
    e0 = cost.energy(base.replace(latency_s=t0), target, f) * rng.uniform(0.5, 1.5, n)
    return base.replace(latency_s=t0, energy_budget_j=e0)


def brute_force_rank(system: System, f: np.ndarray | None = None) -> int:
    """Largest r in 1..max_rank feasible for every device, trying every r (0 if none).

    Independent of the closed-form f_lo / f_E test the solvers use: with ``f`` free, the
    slowest on-time clock is found by root-finding on ``cost.latency`` alone, and the energy
    is then read from ``cost.energy``.
    """
    from scipy.optimize import brentq

    def device_ok(i: int, r: int) -> bool:
        sub = system.subset([i])
        if f is not None:
            return bool(cost.feasible_at(sub, r, f[i : i + 1])[0])

        def late(x: float) -> float:
            return float(cost.latency(sub, r, [x])[0]) - sub.latency_s

        fmax = float(sub.f_max_hz[0])
        if late(fmax) > 1e-9 * sub.latency_s:
            return False
        if late(fmax) >= 0:
            f_on_time = fmax
        else:
            f_on_time = brentq(late, fmax * 1e-12, fmax, xtol=1e-12 * fmax, rtol=1e-13)
            f_on_time = min(f_on_time * (1 + 1e-10), fmax)
        return bool(cost.energy(sub, r, [f_on_time])[0] <= sub.energy_budget_j[0] * (1 + 1e-7))

    best = 0
    for r in range(1, system.max_rank + 1):
        if all(device_ok(i, r) for i in range(system.n_devices)):
            best = r
    return best


def assert_allocation_feasible(system: System, result: SolveResult) -> None:
    """Every returned allocation meets every constraint when re-checked with the cost model."""
    if result.status != "optimal":
        return
    f = result.frequencies_hz
    assert 1 <= result.rank <= system.max_rank
    assert np.all(f > 0)
    assert np.all(f <= system.f_max_hz * (1 + 1e-12))
    t = cost.latency(system, result.rank, f)
    e = cost.energy(system, result.rank, f)
    assert np.all(t <= system.latency_s * (1 + 1e-9)), (t, system.latency_s)
    assert np.all(e <= system.energy_budget_j * (1 + 1e-9)), (e, system.energy_budget_j)
    np.testing.assert_allclose(result.latency_s, t)
    np.testing.assert_allclose(result.energy_j, e)
