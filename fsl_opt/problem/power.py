"""Transmit power as a decision: the least-energy clock and uplink power at a rank (one round).

The paper fixes each device's uplink power P_i. Letting it choose p in (0, P_i] (P_i now
the most it may send) together with its clock f: at rank r on its band B (noise N on it),
write u for the upload time. Then

    p(u) = (N / g) (2^(c / u) - 1),    c = M(r) Q / B           (the power that takes u)
    f(u) = X / (T0 - t_dl - u),        X = C(r) |D|             (the slowest on-time clock)
    E(u) = Omega X^3 / (T0 - t_dl - u)^2 + u (N / g) (2^(c / u) - 1) + xi

over U_min <= u <= U_max, with U_min the upload time at full power P_i and U_max =
T0 - t_dl - X / f_max (the clock's limit). The first term of E is convex and increasing in u;
the second, h(u) = u (2^(c/u) - 1), has h' = e^x (1 - x) - 1 <= 0 and h'' = 2^(c/u)
(c ln 2)^2 / u^3 > 0 (x = c ln 2 / u): convex and decreasing. So E is convex on the
interval and E' is increasing: the least energy is at U_min where E'(U_min) >= 0 (full
power, the paper's choice), at U_max where E'(U_max) <= 0 (full clock), else at the root of
E', found here by Newton's method kept inside the bracket. The device can take rank r iff
U_min <= U_max and E(u*) <= E0. At full power this is exactly the fixed-power model;
power control never spends more.

This module answers for given ranks and bands (:func:`least_energy`), and
:func:`operating_point` is what every method that plans energy asks: the least-energy clock
(and, with ``power_control``, power) at a rank, judged exactly by the cost model at that
power. With a pool, a device's least bandwidth for a rank is the least band on which the
operating point is feasible: E(u) above falls pointwise as the band grows (c shrinks and
u (2^(c/u) - 1) grows with c) and U_min falls with it, so feasibility is monotone in the
band (:func:`solvers.per_device.least_bandwidth` finds its root by regula falsi).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fsl_opt.problem import cost
from fsl_opt.problem.system import System

Array = NDArray[np.float64]

#: Most safeguarded Newton steps on E'(u) = 0 (each a Newton step where it stays inside the
#: bracket, else a bisection; the bracket shrinks every step). Newton converges in a handful
#: from the bracket's middle; 100 bisections alone would shrink it by 2^-100.
STEPS = 100
LN2 = float(np.log(2.0))
EPS = float(np.finfo(np.float64).eps)
#: Most raises of a chosen power by :func:`operating_point` (from 4 ulps, doubling: up to
#: 3e-11 of it) where rounding leaves a device an ulp late at the clock's limit.
POWER_NUDGES = 16


@dataclass(frozen=True)
class PowerChoice:
    """Per device: the clock, the uplink power, the upload time, the round's energy (E_i,
    circuit energy included) and whether the device meets T0 and E0 at the rank (nan
    where the interval is empty)."""

    frequency_hz: Array
    tx_power_w: Array
    upload_time_s: Array
    energy_j: Array
    feasible: NDArray[np.bool_]


def _root_of_increasing(
    fn: Callable[[Array], Array],
    dfn: Callable[[Array], Array],
    lo: Array,
    hi: Array,
    active: NDArray[np.bool_],
) -> Array:
    """The root of increasing ``fn`` in [lo, hi] (fn(lo) < 0 < fn(hi)) where ``active``, by
    Newton's method kept inside the bracket (the bracket shrinks to the side of each point's
    sign; a step that would leave it is a bisection); nan where not active."""
    a, b = lo.copy(), hi.copy()
    u = 0.5 * (a + b)
    live = active.copy()
    for _ in range(STEPS):
        if not live.any():
            break
        v = fn(u)
        up = v >= 0
        b = np.where(live & up, u, b)
        a = np.where(live & ~up, u, a)
        step = v / dfn(u)
        nxt = u - step
        inside = np.isfinite(nxt) & (nxt > a) & (nxt < b)
        nxt = np.where(inside, nxt, 0.5 * (a + b))
        done = (np.abs(nxt - u) <= 4.0 * EPS * np.abs(u)) | (b - a <= 4.0 * EPS * np.abs(b))
        u = np.where(live, nxt, u)
        live &= ~done
    return np.where(active, u, np.nan)


def least_energy(system: System, r: ArrayLike) -> PowerChoice:
    """The least-energy (clock, power) of every device at rank ``r`` on its band, with
    ``tx_power_w`` read as each device's most power (a fixed-band system: use
    :func:`fsl_opt.problem.cost.at_bandwidth` for a pool share)."""
    r = np.broadcast_to(np.asarray(r, dtype=np.float64), (system.n_devices,))
    x = cost.round_cycles(system, r)
    bits = cost.upload_params(system, r) * system.bits_per_param
    band = np.asarray(system.bandwidth_hz, dtype=np.float64)
    noise = system.noise_w
    g = np.asarray(system.gain_ul, dtype=np.float64)
    c = bits / band
    t_dl = cost.download_time(system, r)
    room = system.latency_s - t_dl  # compute plus upload
    u_min = cost.upload_time(system, r)  # at full power
    u_max = room - x / system.f_max_hz
    omega = system.omega

    def energy(u: Array) -> Array:
        return (
            omega * x**3 / (room - u) ** 2
            + u * (noise / g) * np.expm1(c * LN2 / u)
            + system.circuit_energy_j
        )

    k3 = omega * x**3
    ng = noise / g

    def slope(u: Array) -> Array:
        y = c * LN2 / u
        return 2.0 * k3 / (room - u) ** 3 + ng * (np.exp(y) * (1.0 - y) - 1.0)

    def curvature(u: Array) -> Array:
        y = c * LN2 / u
        return 6.0 * k3 / (room - u) ** 4 + ng * y * y * np.exp(y) / u

    with np.errstate(all="ignore"):
        ok = (u_min <= u_max) & (u_max > 0) & np.isfinite(u_min)
        lo = np.where(ok, u_min, np.nan)
        hi = np.where(ok, u_max, np.nan)
        at_lo = slope(lo) >= 0
        at_hi = slope(hi) <= 0
        u = _root_of_increasing(slope, curvature, lo, hi, ok & ~at_lo & ~at_hi)
        u = np.where(at_lo, lo, np.where(at_hi, hi, u))
        f = np.where(at_hi, system.f_max_hz, x / (room - u))
        p = (noise / g) * np.expm1(c * LN2 / u)
        p = np.where(at_lo, system.tx_power_w, np.minimum(p, system.tx_power_w))
        e = energy(u)
        feasible = ok & (e <= system.energy_budget_j)
    return PowerChoice(
        frequency_hz=np.where(ok, f, np.nan),
        tx_power_w=np.where(ok, p, np.nan),
        upload_time_s=np.where(ok, u, np.nan),
        energy_j=np.where(ok, e, np.nan),
        feasible=feasible,
    )


@dataclass(frozen=True)
class OperatingPoint:
    """Per device at a rank: the clock, the uplink power and whether the device meets T0
    and E0 there, judged by :func:`~fsl_opt.problem.cost.settle` at that power (no
    tolerance); the round's energy at them is computed when asked (a feasibility test, the
    bisections' inner step, does not need it)."""

    frequency_hz: Array
    tx_power_w: Array
    feasible: NDArray[np.bool_]
    at: System = field(repr=False)
    rank: Array = field(repr=False)

    @functools.cached_property
    def energy_j(self) -> Array:
        """E_i at the clock and power."""
        return cost.energy(self.at, self.rank, self.frequency_hz)


def operating_point(system: System, r: ArrayLike) -> OperatingPoint:
    """Each device's least-energy operating point at rank ``r`` on its fixed band: the
    least-energy on-time clock at its power ``tx_power_w``, or, where the system has
    ``power_control``, the least-energy (clock, power) of :func:`least_energy` (a device
    that cannot take the rank keeps its most power). ``system`` has fixed bands (a pool
    share: :func:`fsl_opt.problem.cost.at_bandwidth`)."""
    if system.bandwidth_total_hz is not None:
        raise ValueError("operating_point needs fixed bands: use cost.at_bandwidth first")
    r = np.broadcast_to(np.asarray(r, dtype=np.float64), (system.n_devices,))
    most = np.broadcast_to(np.asarray(system.tx_power_w, dtype=np.float64), r.shape)
    p = most
    if not system.power_control:
        f, ok = cost.settle(system, r)
        return OperatingPoint(f, np.array(p), ok, system, r)
    choice = least_energy(system, r)
    p = np.where(np.isfinite(choice.tx_power_w) & (choice.tx_power_w > 0), choice.tx_power_w, most)
    at = system.derived(tx_power_w=p)  # in (0, P_i]
    f, ok = cost.settle(at, r)
    # At the clock's limit (u = U_max) the round ends at T0 exactly in real numbers and can be
    # an ulp late as computed: a hair more power (a shorter upload) settles it.
    step = 4.0 * EPS
    for _ in range(POWER_NUDGES):
        short = choice.feasible & ~ok & (p < most)
        if not short.any():
            break
        p = np.where(short, np.minimum(p * (1.0 + step), most), p)
        at = system.derived(tx_power_w=p)
        f, ok = cost.settle(at, r)
        step *= 2.0
    return OperatingPoint(frequency_hz=f, tx_power_w=np.array(p), feasible=ok, at=at, rank=r)
