"""Random reference instances for solver tests and benchmarks (like scipy's ``_tstutils``).

``random_system`` draws instances whose optimum lands anywhere from infeasible to the rank
cap, by setting T0 and E0 from the costs of a random target rank.
"""

from __future__ import annotations

import numpy as np

from fsl_opt.problem import cost
from fsl_opt.problem.system import System


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
        round_base_cycles=rng.uniform(0, 1e9, n) * (rng.random() < 0.5),
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
