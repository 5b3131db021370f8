"""Baseline: random clocks that can meet the deadline, f_i uniform on [f_lo,i(1), f_max,i].

The paper's random baseline draws f_i from (0, f_max], and in the calibrated model almost
every such draw misses T0 even at rank 1, so that baseline never trains. This one draws
each device's clock among those that finish rank 1 in time (f_lo(1) = C_i(1) |D_i| /
(T0 - T_ul(1) - T_dl(1))), the fair random policy: it spends whatever energy that clock
costs and takes the largest rank those clocks allow. A device that cannot meet T0 at
rank 1 even at f_max is given f_max (and fails, as it would under any policy).
"""

from __future__ import annotations

import time

import numpy as np

from fsl_opt.errors import ConfigError
from fsl_opt.problem import cost
from fsl_opt.problem.result import SolveResult
from fsl_opt.problem.system import System
from solvers.max_frequency import solve_fixed_frequency
from solvers.registry import register_solver


@register_solver(
    "random_on_time",
    "baseline: clocks drawn among those on time, best rank",
    baseline=True,
)
def solve_random_on_time(system: System, *, rng: np.random.Generator | None = None) -> SolveResult:
    """Draw f_i ~ Unif[f_lo,i(1), f_max,i] from ``rng``, then the largest rank they allow.

    Parameters
    ----------
    rng : numpy.random.Generator
        Required: the draw is the method.
    """
    if rng is None:
        raise ConfigError("random_on_time needs rng=numpy.random.default_rng(seed)")
    started = time.perf_counter()
    low = np.minimum(cost.least_energy_frequency(system, 1), system.f_max_hz)
    f = low + (system.f_max_hz - low) * rng.random(system.n_devices)
    return solve_fixed_frequency(system, f, "random_on_time", started)
