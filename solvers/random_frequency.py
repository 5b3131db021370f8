"""Baseline of the paper's Figs. 4-5: f_i uniform on (0, f_max] each round, then the best rank."""

from __future__ import annotations

import time

import numpy as np

from fsl_opt.errors import ConfigError
from fsl_opt.problem.result import SolveResult
from fsl_opt.problem.system import System
from solvers.max_frequency import solve_fixed_frequency
from solvers.registry import register_solver


@register_solver(
    "random_frequency", "baseline: clocks drawn on (0, f_max], then the best rank", baseline=True
)
def solve_random_frequency(
    system: System, *, rng: np.random.Generator | None = None
) -> SolveResult:
    """Draw f_i ~ Unif(0, f_max] from ``rng``, then the largest rank those clocks allow.

    Parameters
    ----------
    rng : numpy.random.Generator
        Required: the draw is the method.
    """
    if rng is None:
        raise ConfigError("random_frequency needs rng=numpy.random.default_rng(seed)")
    started = time.perf_counter()
    # 1 - U[0, 1) lies in (0, 1]: the clock is never 0.
    f = system.f_max_hz * (1.0 - rng.random(system.n_devices))
    return solve_fixed_frequency(system, f, "random_frequency", started)
