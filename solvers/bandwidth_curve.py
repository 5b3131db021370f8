"""Every device's least-bandwidth curve B_i*(r), r = 1..R_i, by Newton's method, vectorized.

With a pool the noise on a band of B Hz is N0 B, so device i's uplink carries
s_a(B) = B log2(1 + a_i / B) bit/s, a_i = g_i P_i / N0 (the downlink s_b likewise with
b_i = g_i^dl P_s / N0); both are concave and increasing in B. At rank r the round's
communication takes t(B) = q_ul / s_a(B) + q_dl / s_b(B) (q: the bits sent each way), and the
device needs (docs/model.md):

- the deadline: its slowest on-time clock X / (T0 - t) within f_max (X = C(r) |D|), i.e.
  v(B) = 1 / t(B) >= 1 / tau with tau = T0 - X / f_max. v is a weighted harmonic mean of
  s_a and s_b, so concave and increasing in B;
- the budget: E(B) = Omega X^3 / (T0 - t(B))^2 + P q_ul / s_a(B) <= E0 - xi at that clock,
  E convex and decreasing in B where t < T0 (t = 1 / v is convex).

Newton's method on a concave increasing function from a point left of its root (or a convex
decreasing one, likewise) moves right monotonically and converges quadratically. So: the
deadline's root B_L from a band far below it (where s is nearly linear in B, so the first
step lands close), then, where the budget fails at B_L, the budget's root from B_L. B* is
the larger; past the device's limit it is ``inf``. The curve is then one vectorized pass
over the (device, rank) table, a few dozen elementwise operations an entry a step, against
64 feasibility tests an entry by bisection (:func:`solvers.per_device.least_bandwidth`).

These are floating-point roots: an allocation built on them is judged by the cost model
like any other (:func:`solvers.per_device.allocation_result`), after
:func:`solvers.per_device.verified_bandwidth` raises a band by a few ulps where rounding
puts it a hair short.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fsl_opt.problem import cost
from fsl_opt.problem.system import System

#: Newton's iteration stops an entry when its step is below this fraction of its band (the
#: next step would be below the band's last bits: quadratic convergence).
TOLERANCE = 1e-12
#: At most this many steps per root (far more than the iteration needs from the starting
#: points here; a bound against a non-finite input).
MAX_STEPS = 200
#: Entries per chunk of the table: ~30 temporaries of this length each, 256 KB apiece, so
#: that a chunk's Newton steps work in the core's cache. The 11.1 M entries of `fsl-opt
#: solve --preset calibrated --devices 100000 --objective sum --bandwidth-total-hz 2e9` on 2
#: threads here: 8.2 s in chunks of 2^18 (2 MB arrays), 5.2-5.6 s in 2^15-2^16, 11.4 s in
#: 2^12 (numpy's per-call overhead); equal tables.
CHUNK = 1 << 15
#: Threads computing chunks side by side: the machine's cores, at most 8.
THREADS = min(os.cpu_count() or 1, 8)
LN2 = float(np.log(2.0))


def _rate(coef: NDArray[np.float64], band: NDArray[np.float64]) -> tuple[NDArray[np.float64], ...]:
    """s(B) = B log2(1 + coef / B) and its derivative."""
    snr = coef / band
    lg = np.log1p(snr) / LN2
    return band * lg, lg - snr / ((1.0 + snr) * LN2)


def options(top: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """``(device, rank)`` for every device i and rank 1..top[i], device-major, ranks
    ascending: the entries of a least-bandwidth table."""
    top = np.asarray(top, dtype=np.int64)
    dev = np.repeat(np.arange(top.size, dtype=np.int64), top)
    start = np.repeat(np.cumsum(top) - top, top)
    return dev, np.arange(dev.size, dtype=np.int64) - start + 1


def curve_table(
    system: System, top: NDArray[np.int64], threads: int | None = None
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]]:
    """``(device, rank, bandwidth)`` for every device i and rank 1..top[i] (device-major, ranks
    ascending): the least pool bandwidth at which device i meets T0 and E0 at that rank
    (``inf`` where even its limit is not enough). ``system`` has a pool. ``threads``: chunks
    computed side by side (default :data:`THREADS`); the values do not depend on it."""
    dev, rank = options(top)
    total = dev.size
    band = np.empty(total)
    if total > CHUNK:
        _raise_malloc_thresholds()

    def chunk(lo: int) -> None:
        hi = min(lo + CHUNK, total)
        band[lo:hi] = _least_bandwidth(system, dev[lo:hi], rank[lo:hi])

    starts = range(0, total, CHUNK)
    if threads is None:
        threads = THREADS
    if threads > 1 and len(starts) > 1:
        # numpy's element-wise loops release the GIL: chunks side by side on the cores.
        with ThreadPoolExecutor(min(threads, len(starts))) as pool:
            list(pool.map(chunk, starts))
    else:
        for lo in starts:
            chunk(lo)
    return dev, rank, band


def _raise_malloc_thresholds() -> None:
    """Let glibc's malloc keep the chunks' temporaries instead of handing them back.

    glibc gives a freed block above its mmap threshold back to the kernel, and trims a heap
    with more than twice that threshold free at its top; both start at 128 KB and rise to
    the size of the largest mmapped block freed so far (at most 32 MB). A chunk's Newton
    steps allocate and free dozens of 256 KB temporaries, so at the start every step's
    memory went back and was faulted in again: 707,000 page faults and 2.9 s of system time
    in the 10^5-device table above (7.4 s wall), against 8,000 and 0.4 s (5.1 s wall) once
    a 24 MB block has been freed, which is what this does (never written, so no page of it
    is ever mapped). Under any other allocator it costs one untouched allocation."""
    np.empty(3 << 20)


def _least_bandwidth(
    system: System, dev: NDArray[np.int64], rank: NDArray[np.int64]
) -> NDArray[np.float64]:
    return roots(system, dev, rank)[1]


def roots(
    system: System, dev: NDArray[np.int64], rank: NDArray[np.int64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """For device ``dev[j]`` at rank ``rank[j]`` at its fixed power: the deadline's root B_L
    (the least band on which it is on time at f_max; ``inf`` where even its limit is not)
    and the least band B* on which it meets both T0 and E0 (``inf`` likewise)."""
    sub = system.subset(dev)
    n0 = float(system.noise_psd_w_per_hz or 0.0)
    x = cost.round_cycles(sub, rank)
    tau = sub.latency_s - x / sub.f_max_hz
    p = {
        "a": sub.gain_ul * sub.tx_power_w / n0,
        "b": sub.gain_dl * sub.server_power_w / n0,
        "q_ul": cost.upload_params(sub, rank) * sub.bits_per_param,
        "q_dl": np.asarray(cost.download_params(sub, rank), dtype=np.float64) * sub.bits_per_param,
        "inv_tau": 1.0 / np.where(tau > 0, tau, np.nan),
        "ox3": sub.omega * x**3,
        "power": np.broadcast_to(sub.tx_power_w, x.shape),
        "left": sub.energy_budget_j - sub.circuit_energy_j,
        "t0": np.broadcast_to(np.float64(sub.latency_s), x.shape),
    }
    limit = cost.bandwidth_limit(system)[dev]
    with np.errstate(all="ignore"):
        on_time = _newton(_deadline, p, _deadline_start(p, limit))
        band = _newton(_budget, p, on_time)
        late = ~(np.isfinite(on_time) & (on_time > 0) & (on_time <= limit))
        ok = np.isfinite(band) & (band > 0) & (band <= limit)
    return np.where(late, np.inf, on_time), np.where(ok, band, np.inf)


def _deadline_start(
    p: dict[str, NDArray[np.float64]], limit: NDArray[np.float64]
) -> NDArray[np.float64]:
    """A band left of the deadline's root, close to it: with L(B) = log2(1 + a / B) (slowly
    varying), the root solves B = (q_ul / L_a(B) + q_dl / L_b(B)) / tau; one such step from
    the limit lands right of the root (the map grows with B), and one Newton step on the
    concave v from there lands left of it. Where that step is not a positive number, the
    limit's 1e-12 (far left) instead."""
    la = np.log1p(p["a"] / limit) / LN2
    lb = np.log1p(p["b"] / limit) / LN2
    right = (p["q_ul"] / la + p["q_dl"] / lb) * p["inv_tau"]
    band = right + _deadline(p, right)
    band = np.where(np.isfinite(band) & (band > 0), band, limit * 1e-12)
    return np.where(np.isfinite(p["inv_tau"]), band, np.nan)  # tau <= 0: late at any band


def _comm(p: dict[str, NDArray[np.float64]], band: NDArray[np.float64]) -> tuple[Any, ...]:
    """t(B), t'(B), and the upload's share of each."""
    sa, da = _rate(p["a"], band)
    sb, db = _rate(p["b"], band)
    t_ul, dt_ul = p["q_ul"] / sa, -p["q_ul"] * da / (sa * sa)
    return t_ul + p["q_dl"] / sb, dt_ul - p["q_dl"] * db / (sb * sb), t_ul, dt_ul


def _deadline(p: dict[str, NDArray[np.float64]], band: NDArray[np.float64]) -> Any:
    """Newton's step on v(B) = 1 / t(B) up to 1 / tau."""
    t, dt, _, _ = _comm(p, band)
    return (p["inv_tau"] - 1.0 / t) / (-dt / (t * t))


def _budget(p: dict[str, NDArray[np.float64]], band: NDArray[np.float64]) -> Any:
    """Newton's step on E(B) down to E0 - xi (none where the budget holds already)."""
    t, dt, t_ul, dt_ul = _comm(p, band)
    slack = p["t0"] - t
    value = p["ox3"] / slack**2 + p["power"] * t_ul - p["left"]
    slope = 2.0 * p["ox3"] * dt / slack**3 + p["power"] * dt_ul
    return -value / slope


def _newton(
    step_of: Callable[[dict[str, NDArray[np.float64]], NDArray[np.float64]], Any],
    p: dict[str, NDArray[np.float64]],
    band: NDArray[np.float64],
) -> NDArray[np.float64]:
    """Newton's iteration rightwards (monotone, see the module) on the entries still moving:
    an entry stops when its step is not positive and finite, or below ``TOLERANCE`` of B."""
    band = band.copy()
    active = np.flatnonzero(np.isfinite(band))
    part = {k: v[active] for k, v in p.items()}
    for _ in range(MAX_STEPS):
        if active.size == 0:
            break
        b = band[active]
        step = step_of(part, b)
        moving = np.isfinite(step) & (step > 0)
        band[active[moving]] = b[moving] + step[moving]
        keep = moving & (step > TOLERANCE * b)
        if not keep.all():
            active = active[keep]
            part = {k: v[keep] for k, v in part.items()}
    return band
