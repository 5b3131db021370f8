"""Baseline: every device clocks at f_max, then the largest rank that fits."""

from __future__ import annotations

import time

import numpy as np

from fsl_opt.problem import cost
from fsl_opt.problem.result import SolveResult
from fsl_opt.problem.system import System
from solvers._common import build_result, largest_true, upper_bracket
from solvers.registry import register_solver


def solve_fixed_frequency(
    system: System, frequencies: np.ndarray, method: str, started: float
) -> SolveResult:
    """Largest shared rank with each device's frequency held at ``frequencies``."""
    f = np.asarray(frequencies, dtype=np.float64)
    affine = cost.Affine.of(system)
    hi = upper_bracket(affine)
    device_ranks, calls = largest_true(lambda r: affine.feasible_at(r, f), np.zeros_like(hi), hi)
    return build_result(
        system,
        method,
        int(device_ranks.min()),
        started,
        calls,
        frequencies=f,
        device_ranks=device_ranks,
    )


@register_solver("max_frequency", "baseline: every clock at f_max, best rank", baseline=True)
def solve_max_frequency(system: System, *, rng: np.random.Generator | None = None) -> SolveResult:
    """f_i = f_max for every device, then the best rank (a baseline)."""
    return solve_fixed_frequency(system, system.f_max_hz, "max_frequency", time.perf_counter())
