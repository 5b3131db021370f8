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
E', found here by bisection. The device can take rank r iff U_min <= U_max and
E(u*) <= E0. At full power this is exactly the fixed-power model; power control never
spends more.

This module answers for given ranks and bands (:func:`least_energy`); ``per_device`` uses it
where a system has ``power_control`` (no pool yet), and
:func:`solvers.per_device.power_controlled_ranks` bisects each device's largest rank on it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fsl_opt.problem import cost
from fsl_opt.problem.system import System

Array = NDArray[np.float64]

#: Bisection steps on E'(u) = 0 (the bracket [U_min, U_max] shrinks by 2^-80).
STEPS = 80
LN2 = float(np.log(2.0))


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

    def slope(u: Array) -> Array:
        y = c * LN2 / u
        return 2.0 * omega * x**3 / (room - u) ** 3 + (noise / g) * (np.exp(y) * (1.0 - y) - 1.0)

    with np.errstate(all="ignore"):
        ok = (u_min <= u_max) & (u_max > 0) & np.isfinite(u_min)
        lo = np.where(ok, u_min, np.nan)
        hi = np.where(ok, u_max, np.nan)
        at_lo = slope(lo) >= 0
        at_hi = slope(hi) <= 0
        a, b = lo.copy(), hi.copy()
        for _ in range(STEPS):
            mid = 0.5 * (a + b)
            up = slope(mid) >= 0
            b = np.where(up, mid, b)
            a = np.where(up, a, mid)
        u = np.where(at_lo, lo, np.where(at_hi, hi, 0.5 * (a + b)))
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
