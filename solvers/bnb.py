"""Branch and bound over the convex relaxation in (r, tau).

The paper calls problem P1 a mixed-integer *linear* program; it is a mixed-integer
*convex* program. With the compute time tau_i = C_i |D_i| / f_i as the variable in place
of f_i, every constraint is convex in (r, tau)::

    tau_i + (Q / s_ul + Q / s_dl) M_i(r)                  <= T0        (latency, 11)
    C_i(r) |D_i|                                           <= f_max tau_i
    Omega_i (C_i(r) |D_i|)^3 / tau_i^2 + P Q M_i(r) / s_ul + xi_i <= E0  (energy, 12)

because x^3 / y^2 is convex for x, y > 0 (a power cone: s^(1/3) tau^(2/3) >= x).
Relaxing r to a real number gives a conic program; branching on floor/ceil of its r
makes r integer. Each constraint is scaled by its right-hand side so the conic solver
sees numbers near 1, and every integer candidate (and its neighbour above) is confirmed
with the exact cost model rather than the solver's tolerance. A node whose smallest rank
fails the exact check is pruned without a solve (feasibility is monotone in r).
"""

from __future__ import annotations

import math
import time
import warnings

import numpy as np

from fsl_opt.errors import ConfigError
from fsl_opt.problem import cost
from fsl_opt.problem.result import SolveResult
from fsl_opt.problem.system import System
from solvers._common import build_result, error_result, stopped_at_limit, upper_bracket
from solvers.registry import register_solver

#: Distance to an integer under which a relaxed rank counts as that integer.
INTEGER_TOL = 1e-6


def _relaxation(aff: cost.Affine):
    """The scaled relaxation with the rank bounds as parameters (compiled once)."""
    import cvxpy as cp

    system = aff.system
    t0 = system.latency_s
    room = system.energy_budget_j - system.circuit_energy_j  # > 0, checked by the caller
    # Reference clock: f_max, or the clock that spends the whole budget computing for all of
    # T0 if that is slower. Compute load in units of f_ref T0 and energy in units of the
    # budget are then O(1) whatever f_max is (an f_max of 1e12 Hz no longer leaves the conic
    # solver numbers of 1e-3 against 1e9).
    f_ref = np.minimum(system.f_max_hz, np.cbrt(room / (system.omega * t0)))
    kappa = system.omega * f_ref**3 * t0 / room  # <= 1: energy of f_ref for all of T0

    r = cp.Variable(name="r")
    tau = cp.Variable(system.n_devices, name="tau")  # compute time / T0
    s = cp.Variable(system.n_devices, name="s")  # (compute load / f_max T0)^3 / tau^2
    lo = cp.Parameter(name="lo")
    hi = cp.Parameter(name="hi")
    # C(r)|D| = c1 r + c0, transfer time t1 r + t0, upload energy e1 r + e0: all affine in r.
    x = (aff.c1 * r + aff.c0) / (f_ref * t0)  # compute time at f_ref, / T0
    constraints = [
        r >= lo,
        r <= hi,
        tau + (aff.t1 * r + aff.t0) / t0 <= 1,
        cp.multiply(f_ref / system.f_max_hz, x) <= tau,  # f <= f_max
        cp.PowCone3D(s, tau, x, 1.0 / 3.0),
        cp.multiply(kappa, s) + (aff.e1 * r + aff.e0) / room <= 1,
    ]
    return cp.Problem(cp.Maximize(r), constraints), r, lo, hi


@register_solver("bnb", "largest shared rank by branch and bound (cvxpy)", exact=True)
def solve_bnb(
    system: System,
    *,
    rng: np.random.Generator | None = None,
    solver: str = "CLARABEL",
    max_nodes: int = 200,
) -> SolveResult:
    """Largest shared rank by branch and bound on the conic relaxation (cvxpy).

    Parameters
    ----------
    solver : str
        Any cvxpy solver that takes power cones (``CLARABEL``, ``SCS``).
    max_nodes : int
        Node budget; exhausting it returns the best rank found as ``status="limit"``
        with ``bound`` the largest rank still open (``error`` if none was found).

    Returns
    -------
    SolveResult
        ``iterations`` counts relaxations solved; ``extra["root_rank"]`` is the root's
        relaxed rank and ``extra["inaccurate_nodes"]`` how many solves cvxpy flagged
        inaccurate (their candidates were confirmed exactly all the same).
    """
    import cvxpy as cp

    if solver.upper() not in cp.installed_solvers():
        raise ConfigError(
            f"option solver = {solver!r}: not an installed cvxpy solver; installed: "
            f"{', '.join(cp.installed_solvers())} (bnb needs one that takes power cones: "
            "CLARABEL or SCS)"
        )
    started = time.perf_counter()
    method = "bnb"
    aff = cost.Affine.of(system)
    room = system.energy_budget_j - system.circuit_energy_j - (aff.e1 + aff.e0)
    r_top = int(upper_bracket(aff).min()) - 1
    if r_top < 1 or (room <= 0).any():
        return build_result(system, method, 0, started, 0)
    problem, r, lo, hi = _relaxation(aff)
    incumbent, nodes, inaccurate, root = 0, 0, 0, math.nan
    open_bound: int | None = None  # set where the node budget ends the search
    stack = [(1, r_top)]
    while stack:
        n_lo, n_hi = stack.pop()
        if n_hi <= incumbent or n_lo > n_hi:
            continue
        # Node presolve: feasibility is monotone in r, so if the node's smallest integer rank
        # fails the exact check, no point of the node is feasible; conic solvers are least
        # reliable at proving infeasibility, and this proof is exact and costs one evaluation.
        if not cost.feasible(system, n_lo).all():
            continue
        if nodes >= max_nodes:
            if incumbent < 1:
                return error_result(
                    system,
                    method,
                    started,
                    nodes,
                    f"node budget {max_nodes} exhausted before any feasible rank was found",
                )
            # Every rank not yet ruled out lies in an open node: the largest end caps them.
            open_bound = max([n_hi] + [h for _, h in stack])
            break
        lo.value, hi.value = float(n_lo), float(n_hi)
        try:
            with warnings.catch_warnings():
                # "Solution may be inaccurate": every candidate is re-checked exactly below.
                warnings.simplefilter("ignore", UserWarning)
                problem.solve(solver=solver)
        except cp.error.SolverError as exc:
            return error_result(system, method, started, nodes, f"{solver} failed: {exc}")
        nodes += 1
        if problem.status in (cp.INFEASIBLE, cp.INFEASIBLE_INACCURATE):
            continue
        inaccurate += problem.status == cp.OPTIMAL_INACCURATE
        if problem.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE):
            return error_result(
                system, method, started, nodes, f"{solver} returned status {problem.status}"
            )
        r_c = float(r.value)
        if nodes == 1:
            root = r_c
        nearest = round(r_c)
        if abs(r_c - nearest) <= INTEGER_TOL * max(1.0, abs(r_c)):
            # An integer leaf: confirm it, and its neighbour above, with the exact model.
            cand = min(max(nearest, n_lo), n_hi)
            if cost.feasible(system, cand).all():
                if cand + 1 <= n_hi and cost.feasible(system, cand + 1).all():
                    cand += 1
                incumbent = max(incumbent, cand)
            else:
                stack.append((n_lo, cand - 1))
            continue
        # Depth-first, larger ranks first: the first incumbent prunes most of the tree.
        stack.append((n_lo, math.floor(r_c)))
        stack.append((math.ceil(r_c), n_hi))
    found = build_result(
        system,
        method,
        incumbent,
        started,
        nodes,
        extra={"root_rank": root, "inaccurate_nodes": inaccurate},
    )
    if open_bound is not None:
        return stopped_at_limit(found, open_bound, f"the node budget max_nodes = {max_nodes}")
    return found
