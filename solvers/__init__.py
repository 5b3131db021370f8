"""Allocation solvers, one file each, one call: ``solve(system, method=NAME)``.

Every solver takes a :class:`~fsl_opt.problem.system.System` and keyword options and returns a
:class:`~fsl_opt.problem.result.SolveResult`; an infeasible instance is a status, never an
exception. Optional backends (cvxpy for ``bnb``; scipy's HiGHS for the MILPs) are imported inside
their solver.
"""

from __future__ import annotations

import inspect
import types
import typing
from typing import Any

import numpy as np

from fsl_opt.errors import ConfigError
from fsl_opt.problem import cost
from fsl_opt.problem.result import SolveResult
from fsl_opt.problem.system import System
from solvers import (  # noqa: F401  (each module registers its solvers on import)
    bisection,
    bnb,
    exhaustive,
    max_frequency,
    milp,
    per_device,
    random_frequency,
    random_on_time,
)
from solvers.fixed_rank import evaluate_rank
from solvers.registry import SOLVERS, Solver, register_solver

#: The method that picks for the system: the paper's exact solver for P1, per_device otherwise.
AUTO = "auto"


def extended_methods() -> tuple[str, ...]:
    """The methods registered now that solve the extended problem (objective, pool,
    selection); the others solve the paper's problem only. Asked at each call, never kept:
    a solver registered after import is counted."""
    return SOLVERS.with_capability("extended")


def methods() -> tuple[str, ...]:
    """Every name ``solve`` takes: ``auto`` and the methods registered now."""
    return (AUTO, *SOLVERS)


def resolve_method(method: str, system: System) -> str:
    """The solver ``method`` names for ``system`` (``auto``: bisection for the paper's
    problem, per_device for the extended one)."""
    if method != AUTO:
        return method
    return "bisection" if system.is_p1 else "per_device"


def solve(
    system: System,
    method: str = AUTO,
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
        ``auto`` (:func:`resolve_method`) or a key of :data:`SOLVERS`.
    rng : numpy.random.Generator, optional
        Randomness for the methods that draw (``random_frequency``).
    **options
        Passed to the solver (e.g. ``levels=`` for ``milp``); checked against the
        solver's own options (:func:`options_of`) before it runs.

    Raises
    ------
    ConfigError
        For an unknown method name, an option the method does not take, an option
        value of the wrong type or range, or inputs whose costs overflow
        (:func:`~fsl_opt.problem.cost.check_in_range`).
    """
    method = resolve_method(method, system)
    if method not in SOLVERS:
        raise ConfigError(f"unknown method {method!r}: expected one of {', '.join(methods())}")
    fn = SOLVERS.load(method)
    check_options(method, options)
    if system.power_control and not SOLVERS[method].has("power_control"):
        raise ConfigError(
            f"method {method!r} plans with each device's fixed power; this system has "
            f"power_control = true, which {' and '.join(SOLVERS.with_capability('power_control'))} "
            "solves (and the budget policy plans)"
        )
    extended = extended_methods()
    if not system.is_p1 and method not in extended:
        raise ConfigError(
            f"method {method!r} solves the paper's problem (one shared rank, every device, "
            f"fixed sub-bands); this system asks for objective = {system.objective!r}, "
            f"a pool = {system.bandwidth_total_hz}, min_devices = {system.min_devices}: use "
            f"one of {', '.join(extended)}"
        )
    cost.check_in_range(system)
    return fn(system, rng=rng, **options)


def options_of(method: str) -> dict[str, inspect.Parameter]:
    """The options a method takes (its keyword-only parameters but ``rng``), by name."""
    if method == AUTO:
        return {}
    sig = inspect.signature(SOLVERS.load(method))
    return {
        name: p
        for name, p in sig.parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and name != "rng"
    }


def check_options(method: str, options: dict[str, Any]) -> None:
    """Reject options ``method`` does not take, and values of the wrong type or range.

    Like scipy's ``_check_unknown_options``, but an error: a mistyped option would
    otherwise be ignored or fail deep inside the solver. Numeric options are positive
    quantities (levels, nodes, blocks, hertz, seconds) and must be > 0.
    """
    valid = options_of(method)
    hints = typing.get_type_hints(SOLVERS.load(method))
    for name, value in options.items():
        if name not in valid:
            takes = ", ".join(valid) if valid else "no options"
            raise ConfigError(f"method {method!r} has no option {name!r}; it takes: {takes}")
        hint = hints.get(name, Any)
        kinds = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        simple = {int, float, str, bool, type(None)}
        if not set(kinds) <= simple:
            continue  # e.g. milp's levels (an int or an array): the solver checks it
        if value is None and type(None) in kinds:
            continue
        ok = (
            (bool in kinds and isinstance(value, bool))
            or (str in kinds and isinstance(value, str))
            or (int in kinds and isinstance(value, int) and not isinstance(value, bool))
            or (float in kinds and isinstance(value, (int, float)) and not isinstance(value, bool))
        )
        if not ok:
            want = " or ".join(k.__name__ for k in kinds if k is not type(None))
            raise ConfigError(f"option {name} = {value!r}: expected {want}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not (value > 0 and value == value and value != float("inf")):
                raise ConfigError(f"option {name} = {value!r}: expected a finite number > 0")


__all__ = [
    "AUTO",
    "SOLVERS",
    "Solver",
    "check_options",
    "evaluate_rank",
    "extended_methods",
    "methods",
    "options_of",
    "register_solver",
    "resolve_method",
    "solve",
]
