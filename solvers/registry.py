"""The solver registry: every allocation method by name, with what problem it solves.

A new solver is one file whose function is decorated with ``@register_solver("name", ...)``
and one import line in ``solvers/__init__.py``; ``fsl-opt solve --method``, the run setting
``method``, the benchmarks and the docs read the names from :data:`SOLVERS` (a
:class:`~fsl_opt.registry.Registry`, the shape every plug-in kind shares).

Capabilities
------------
extended
    Solves the extended problem (objective, bandwidth pool, selection); otherwise the
    paper's problem P1 only.
exact
    Returns P1's optimum (tested against exhaustive search).
baseline
    A reference policy, not an optimizer (the paper's comparisons).
power_control
    Chooses each device's transmit power too (``power_control = true``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from fsl_opt.problem.result import SolveResult
from fsl_opt.registry import Registry

Solver = Callable[..., SolveResult]
F = TypeVar("F", bound=Solver)

#: Every solver by name, in registration order.
SOLVERS: Registry[Solver] = Registry(
    "solver",
    setting="method",
    capabilities=("extended", "exact", "baseline", "power_control"),
    reserved=("auto",),
)


def register_solver(
    name: str, summary: str | None = None, **capabilities: bool
) -> Callable[[F], F]:
    """Function decorator: make a solver callable as ``solve(system, name)``.

    ``summary`` defaults to the first line of the function's docstring.
    """

    def add(fn: F) -> F:
        doc = (fn.__doc__ or "").strip().splitlines()
        SOLVERS.register(name, fn, summary or (doc[0] if doc else name), **capabilities)
        return fn

    return add
