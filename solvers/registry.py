"""The solver registry: every allocation method by name, with what problem it solves.

A new solver is one file whose function is decorated with ``@register_solver("name", ...)``
and one import line in ``solvers/__init__.py``; ``fsl-opt solve --method``, the run setting
``method``, the benchmarks and the docs read the names from :data:`SOLVERS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from fsl_opt.problem.result import SolveResult

Solver = Callable[..., SolveResult]
F = TypeVar("F", bound=Solver)


@dataclass(frozen=True)
class SolverInfo:
    """What the registry knows of a method.

    Attributes
    ----------
    extended : bool
        Solves the extended problem (objective, bandwidth pool, selection); otherwise the
        paper's problem P1 only.
    exact : bool
        Returns P1's optimum (tested against exhaustive search).
    baseline : bool
        A reference policy, not an optimizer (the paper's comparisons).
    """

    extended: bool = False
    exact: bool = False
    baseline: bool = False


#: Every solver by name, in registration order.
SOLVERS: dict[str, Solver] = {}
#: What each registered solver solves.
SOLVER_INFO: dict[str, SolverInfo] = {}


def register_solver(
    name: str, *, extended: bool = False, exact: bool = False, baseline: bool = False
) -> Callable[[F], F]:
    """Function decorator: make a solver callable as ``solve(system, name)``."""

    def add(fn: F) -> F:
        if name in SOLVERS or name == "auto":
            raise ValueError(f"solver {name!r} is registered twice (or is the reserved 'auto')")
        SOLVERS[name] = fn
        SOLVER_INFO[name] = SolverInfo(extended=extended, exact=exact, baseline=baseline)
        return fn

    return add
