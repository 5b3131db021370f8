"""Allocation solvers, one file each, one call: ``solve(system, method=NAME)``.

Every solver takes a :class:`~fsl_opt.system.System` and keyword options and returns a
:class:`~fsl_opt.result.SolveResult`; an infeasible instance is a status, never an
exception. Optional backends (cvxpy for ``bnb``, pulp for ``milp``) are imported inside
their solver.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from fsl_opt.errors import ConfigError
from fsl_opt.result import SolveResult
from fsl_opt.system import System
from solvers.bisection import solve_bisection
from solvers.bnb import solve_bnb
from solvers.exhaustive import solve_exhaustive
from solvers.max_frequency import solve_max_frequency
from solvers.milp import solve_milp
from solvers.random_frequency import solve_random_frequency

Solver = Callable[..., SolveResult]

#: Solvers by name. ``exact`` ones return the optimum of problem P1 (SPEC section 3).
SOLVERS: dict[str, Solver] = {
    "bisection": solve_bisection,
    "bnb": solve_bnb,
    "milp": solve_milp,
    "exhaustive": solve_exhaustive,
    "max_frequency": solve_max_frequency,
    "random_frequency": solve_random_frequency,
}
EXACT = ("bisection", "bnb", "exhaustive")
BASELINES = ("max_frequency", "random_frequency")


def solve(
    system: System,
    method: str = "bisection",
    *,
    rng: np.random.Generator | None = None,
    **options: Any,
) -> SolveResult:
    """Solve one round's rank and frequency allocation with the named method.

    Parameters
    ----------
    system : System
        The round: devices, model shape, T0.
    method : str
        A key of :data:`SOLVERS`.
    rng : numpy.random.Generator, optional
        Randomness for the methods that draw (``random_frequency``).
    **options
        Passed to the solver (e.g. ``levels=`` for ``milp``).

    Raises
    ------
    ConfigError
        For an unknown method name.
    """
    try:
        fn = SOLVERS[method]
    except KeyError:
        raise ConfigError(
            f"unknown method {method!r}: expected one of {', '.join(SOLVERS)}"
        ) from None
    return fn(system, rng=rng, **options)


__all__ = ["BASELINES", "EXACT", "SOLVERS", "solve"]
