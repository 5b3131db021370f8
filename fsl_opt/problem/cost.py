"""Delay and energy of one round (paper eqs. 1-12), pure and vectorized over devices.

Every function takes the :class:`~fsl_opt.problem.system.System`, the LoRA rank ``r`` (a scalar,
or one rank per device) and, where it matters, the CPU frequencies ``f`` [Hz], and
returns an array of shape ``(I,)``. Nothing is cached and nothing is mutated.

Notes
-----
For device i at rank r and frequency f_i (docs/model.md)::

    C_i      = c (2r - 1) d k A_hat l_i + C0_i                      (2)
    T_cmp    = (C_i |D_i| + R_i) / f_i                              (1)
    E_cmp    = Omega_i (C_i |D_i| + R_i) f_i^2                      (3)
    M_i      = r (d + k) A_hat l_i     [paper: (r + k) d A_hat l_i] (5)
    s_ul     = B_i log2(1 + h_ul P_ul / N0)                         (6)
    s_dl     = B_i log2(1 + h_dl P_dl / N0)                         (10)
    T_ul     = M_i Q / s_ul,  T_dl = M_i Q / s_dl                   (4), (9)
    E_ul     = P_ul T_ul                                            (7), (8)
    T_i      = T_cmp + T_ul + T_dl,  E_i = E_cmp + E_ul + xi_i      (11), (12)

c (``cycles_per_op``) is 1 and C0 (``base_cycles``) and R (``round_base_cycles``, what a
local round costs once, whatever its samples) are 0 in the paper.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fsl_opt.errors import ConfigError
from fsl_opt.problem.system import System

Array = NDArray[np.float64]

#: Relative slack of the frequency-free *screen* (:func:`violations`), and only of it. The
#: screen decides with closed forms (f_lo <= f_max, f_lo <= f_E) whose rounding differs from
#: the cost model's by a few ulps, so it is made permissive by this much: it never rejects a
#: rank that the exact test accepts. Answers are never judged by it: a solver's reported
#: allocation passes :func:`settle` / :func:`feasible_at`, which compare T_i <= T0 and
#: E_i <= E0 exactly as :func:`latency` and :func:`energy` compute them, no tolerance.
SCREEN_RTOL = 1e-9
#: Most clock nudges :func:`operating_frequency` makes against rounding (each doubles the step).
NUDGES = 8


class Binding(IntEnum):
    """Why a device cannot take one rank more (bit flags: latency | energy)."""

    NONE = 0
    LATENCY = 1
    ENERGY = 2
    LATENCY_ENERGY = 3
    MAX_RANK = 4


BINDING_NAMES = ("none", "latency", "energy", "latency+energy", "max_rank")


def cycles_per_sample(system: System, r: ArrayLike) -> Array:
    """C_i, CPU cycles to process one sample at rank r, eq. (2)."""
    r = np.asarray(r, dtype=np.float64)
    lora_ops = (2.0 * r - 1.0) * system.d * system.k * system.matrices_per_layer * system.layers
    return system.cycles_per_op * lora_ops + system.base_cycles


def round_cycles(system: System, r: ArrayLike) -> Array:
    """C_i |D_i| + R_i, CPU cycles of one round of local training (R_i: what the round costs
    once, whatever its samples; 0 in the paper)."""
    return cycles_per_sample(system, r) * system.samples + system.round_base_cycles


def upload_params(system: System, r: ArrayLike) -> Array:
    """M_i, parameters uploaded (and downloaded) per round, eq. (5).

    ``upload_model="lora"`` counts the true r (d + k) per adapted matrix; ``"paper"``
    reproduces the printed (r + k) d.
    """
    r = np.asarray(r, dtype=np.float64)
    per_matrix = (
        r * (system.d + system.k) if system.upload_model == "lora" else (r + system.k) * system.d
    )
    return per_matrix * system.matrices_per_layer * system.layers


def rate_ul(system: System) -> Array:
    """s_i^ul, uplink rate [bit/s], eq. (6)."""
    snr = system.gain_ul * system.tx_power_w / system.noise_w
    return system.bandwidth_hz * np.log2(1.0 + snr)


def rate_dl(system: System) -> Array:
    """s_i^dl, downlink rate [bit/s], eq. (10)."""
    snr = system.gain_dl * system.server_power_w / system.noise_w
    return system.bandwidth_hz * np.log2(1.0 + snr)


def compute_time(system: System, r: ArrayLike, f: ArrayLike) -> Array:
    """T_i^cmp [s], eq. (1): the round's cycles over the clock."""
    return round_cycles(system, r) / np.asarray(f, dtype=np.float64)


def compute_energy(system: System, r: ArrayLike, f: ArrayLike) -> Array:
    """E_i^cmp = Omega_i (C_i |D_i| + R_i) f_i^2 [J], eq. (3)."""
    f = np.asarray(f, dtype=np.float64)
    return system.omega * round_cycles(system, r) * f**2


def upload_time(system: System, r: ArrayLike) -> Array:
    """T_i^ul = M_i Q / s_i^ul [s], eq. (4)."""
    return upload_params(system, r) * system.bits_per_param / rate_ul(system)


def download_params(system: System, r: ArrayLike) -> Array:
    """Parameters downloaded per round: M_i(r), or ``system.download_params`` where an
    aggregator sends back something else (then independent of r)."""
    if system.download_params is None:
        return upload_params(system, r)
    return np.broadcast_to(
        system.download_params, np.broadcast(np.asarray(r), system.download_params).shape
    )


def download_time(system: System, r: ArrayLike) -> Array:
    """T_i^dl = M_i^dl Q / s_i^dl [s], eq. (9) (M_i^dl = M_i unless the aggregator says)."""
    return download_params(system, r) * system.bits_per_param / rate_dl(system)


def upload_energy(system: System, r: ArrayLike) -> Array:
    """E_i^ul = P_i^ul T_i^ul [J], eqs. (7)-(8)."""
    return system.tx_power_w * upload_time(system, r)


def latency(system: System, r: ArrayLike, f: ArrayLike) -> Array:
    """T_i, the round delay of each device [s], eq. (11)."""
    return compute_time(system, r, f) + upload_time(system, r) + download_time(system, r)


def energy(system: System, r: ArrayLike, f: ArrayLike) -> Array:
    """E_i, the round energy of each device [J], eq. (12)."""
    return compute_energy(system, r, f) + upload_energy(system, r) + system.circuit_energy_j


@dataclass(frozen=True)
class RoundCost:
    """Per-device delay and energy of one round, split by phase (all arrays ``(I,)``)."""

    compute_time_s: Array
    upload_time_s: Array
    download_time_s: Array
    compute_energy_j: Array
    upload_energy_j: Array
    circuit_energy_j: Array

    @property
    def latency_s(self) -> Array:
        """T_i, eq. (11)."""
        return self.compute_time_s + self.upload_time_s + self.download_time_s

    @property
    def energy_j(self) -> Array:
        """E_i, eq. (12)."""
        return self.compute_energy_j + self.upload_energy_j + self.circuit_energy_j

    def map(self, fn: Callable[[Array], Array]) -> RoundCost:
        """The same phases with ``fn`` applied to each (per-device) array."""
        return RoundCost(
            *(
                fn(np.broadcast_to(a, self.compute_time_s.shape))
                for a in (
                    self.compute_time_s,
                    self.upload_time_s,
                    self.download_time_s,
                    self.compute_energy_j,
                    self.upload_energy_j,
                    self.circuit_energy_j,
                )
            )
        )

    def as_dict(self) -> dict[str, Array]:
        """Every per-device array by name: the phases, then ``latency_s`` and ``energy_j``."""
        return {
            "compute_time_s": self.compute_time_s,
            "upload_time_s": self.upload_time_s,
            "download_time_s": self.download_time_s,
            "compute_energy_j": self.compute_energy_j,
            "upload_energy_j": self.upload_energy_j,
            "latency_s": self.latency_s,
            "energy_j": self.energy_j,
        }


def round_cost(system: System, r: ArrayLike, f: ArrayLike) -> RoundCost:
    """All phases of eqs. (1)-(12) at rank ``r`` and frequencies ``f``."""
    f = np.asarray(f, dtype=np.float64)
    return _phases(
        system, round_cycles(system, r), upload_time(system, r), download_time(system, r), f
    )


def _phases(system: System, cycles: Array, t_ul: Array, t_dl: Array, f: Array) -> RoundCost:
    """The round's phases from its cycles and communication times (as :func:`compute_time`
    and :func:`compute_energy` compute them from the same pieces)."""
    return RoundCost(
        compute_time_s=cycles / f,
        upload_time_s=t_ul,
        download_time_s=t_dl,
        compute_energy_j=system.omega * cycles * f**2,
        upload_energy_j=system.tx_power_w * t_ul,
        circuit_energy_j=np.array(system.circuit_energy_j),
    )


def _slowest_on_time(cycles: Array, slack: Array) -> Array:
    """f_lo = cycles / slack: the slowest clock that finishes within ``slack`` (inf if none)."""
    with np.errstate(divide="ignore"):
        return np.where(slack > 0, cycles / np.where(slack > 0, slack, 1.0), np.inf)


def _frequency_free_test(
    system: System, cycles: Array, slack: Array, left: Array
) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """The one feasibility kernel with f free in (0, f_max]: (late, over) per device.

    ``cycles`` = C_i |D_i|, ``slack`` = T0 - T_ul - T_dl, ``left`` = E0 - xi - E_ul.
    Device i meets both constraints iff f_lo <= min(f_max, f_E) with f_lo = cycles / slack
    and f_E = sqrt(left / (Omega cycles)). The deadline fails when f_lo > f_max; the budget
    fails when f_lo > f_E (no on-time clock spends less than E0) or nothing is left.
    """
    f_lo = _slowest_on_time(cycles, slack)
    f_e = np.sqrt(np.maximum(left, 0.0) / (system.omega * cycles))
    late = f_lo > system.f_max_hz * (1.0 + SCREEN_RTOL)
    over = (f_lo > f_e * (1.0 + SCREEN_RTOL)) | (left <= 0)
    return late, over


def _fixed_frequency_test(
    system: System, latency_s: Array, energy_j: Array
) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """The kernel with f fixed: (late, over) from each device's delay and energy, exactly
    (T_i <= T0 and E_i <= E0 as computed, no tolerance; a nan cost fails both)."""
    late = ~(latency_s <= system.latency_s)
    over = ~(energy_j <= system.energy_budget_j)
    return late, over


def least_energy_frequency(system: System, r: ArrayLike) -> Array:
    """f_lo(r) = C_i |D_i| / (T0 - T_ul - T_dl): the slowest clock that meets the deadline.

    Energy grows with f (eq. 3), so this is the least-energy frequency for rank r.
    ``inf`` where communication alone already takes T0 or longer.
    """
    slack = system.latency_s - upload_time(system, r) - download_time(system, r)
    return _slowest_on_time(round_cycles(system, r), slack)


def operating_frequency(system: System, r: ArrayLike) -> Array:
    """The clock a solver reports at rank r with f free: f_lo(r) capped at f_max, made on time.

    f_lo = C|D| / (T0 - T_ul - T_dl) meets the deadline exactly in real numbers; in floating
    point ``latency(system, r, f_lo)`` can exceed T0 by an ulp. Where it does, the clock is
    raised by a few ulps (at most :data:`NUDGES` times, each step twice the last, never above
    f_max) until :func:`latency` says T_i <= T0. A device that is late even then is late at
    every clock the cost model can be asked about; :func:`settle` reports it so.
    """
    r = np.broadcast_to(np.asarray(r, dtype=np.float64), (system.n_devices,))
    cycles = round_cycles(system, r)
    return _on_time_clock(system, cycles, upload_time(system, r), download_time(system, r))


def _on_time_clock(system: System, cycles: Array, t_ul: Array, t_dl: Array) -> Array:
    """:func:`operating_frequency` from the round's cycles and communication times, each
    computed once by the caller: the same operations in the same order as
    :func:`least_energy_frequency` and :func:`latency`, so the same bits."""
    f = np.minimum(_slowest_on_time(cycles, system.latency_s - t_ul - t_dl), system.f_max_hz)
    step = np.finfo(np.float64).eps
    for _ in range(NUDGES):
        late = (cycles / f + t_ul + t_dl > system.latency_s) & (f < system.f_max_hz)
        if not late.any():
            break
        f = np.where(late, np.minimum(f * (1.0 + step), system.f_max_hz), f)
        step *= 2.0
    return np.asarray(f, dtype=np.float64)


def settle(system: System, r: ArrayLike) -> tuple[Array, NDArray[np.bool_]]:
    """The clocks at rank r (:func:`operating_frequency`) and which devices meet both budgets
    there exactly as :func:`latency` and :func:`energy` compute them (no tolerance).

    This is what an answer is judged by: a user who re-computes the reported allocation's
    T_i and E_i with this cost model and checks ``<=`` gets the same verdict.
    """
    f, _, ok = settled_cost(system, r)
    return f, ok


def settled_cost(system: System, r: ArrayLike) -> tuple[Array, RoundCost, NDArray[np.bool_]]:
    """:func:`settle` with the round's costs at those clocks: the verdict is read from the
    same T_i and E_i that are reported (:class:`RoundCost` sums its phases as :func:`latency`
    and :func:`energy` do, so it is the same verdict), one evaluation of the cost model
    instead of two; the round's cycles and communication times are computed once for the
    clock, its on-time nudges and the costs (the rates' logarithms dominate a pooled
    search, which settles every device at every bandwidth step)."""
    r = np.broadcast_to(np.asarray(r, dtype=np.float64), (system.n_devices,))
    cycles = round_cycles(system, r)
    t_ul, t_dl = upload_time(system, r), download_time(system, r)
    f = _on_time_clock(system, cycles, t_ul, t_dl)
    costs = _phases(system, cycles, t_ul, t_dl, f)
    late, over = _fixed_frequency_test(system, costs.latency_s, costs.energy_j)
    return f, costs, ~(late | over)


def energy_frequency_cap(system: System, r: ArrayLike) -> Array:
    """f_E(r) = sqrt((E0 - xi - E_ul) / (Omega C |D|)): the fastest clock within the energy budget.

    ``nan``-free: 0 where upload and circuit energy alone exhaust the budget.
    """
    left = system.energy_budget_j - system.circuit_energy_j - upload_energy(system, r)
    return np.sqrt(np.maximum(left, 0.0) / (system.omega * round_cycles(system, r)))


def violations(system: System, r: ArrayLike) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """Which devices miss the deadline, and which the energy budget, at rank r (f free).

    This is the solvers' inner loop (a screen, permissive by :data:`SCREEN_RTOL`), so each
    term is computed once here; :func:`settle` is the exact verdict on an answer.
    """
    cycles = round_cycles(system, r)
    t_ul = upload_time(system, r)
    slack = system.latency_s - t_ul - download_time(system, r)
    left = system.energy_budget_j - system.circuit_energy_j - system.tx_power_w * t_ul
    return _frequency_free_test(system, cycles, slack, left)


def feasible(system: System, r: ArrayLike) -> NDArray[np.bool_]:
    """Whether each device can run rank r within T0 and E0 at some f in (0, f_max]."""
    late, over = violations(system, r)
    return ~(late | over)


def violations_at(
    system: System, r: ArrayLike, f: ArrayLike
) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """Deadline and energy violations at rank r with the frequencies fixed at f."""
    return _fixed_frequency_test(system, latency(system, r, f), energy(system, r, f))


def feasible_at(system: System, r: ArrayLike, f: ArrayLike) -> NDArray[np.bool_]:
    """Whether each device meets T0 and E0 at rank r with the frequencies fixed at f."""
    late, over = violations_at(system, r, f)
    return ~(late | over)


def binding(system: System, r: ArrayLike, f: ArrayLike | None = None) -> NDArray[np.int8]:
    """Which constraint stops each device from taking rank r + 1 (:class:`Binding` codes).

    ``r`` is one rank or one per device; ``f=None`` lets the frequency move (the optimized
    problem), otherwise f is fixed.
    """
    r = np.broadcast_to(np.asarray(r), (system.n_devices,))
    if (r >= system.max_rank).all():
        return np.full(system.n_devices, Binding.MAX_RANK, dtype=np.int8)
    late, over = violations(system, r + 1) if f is None else violations_at(system, r + 1, f)
    codes = late.astype(np.int8) * Binding.LATENCY + over.astype(np.int8) * Binding.ENERGY
    return np.where(r >= system.max_rank, Binding.MAX_RANK, codes).astype(np.int8)


@dataclass(frozen=True)
class Affine:
    """The costs of a system as affine functions of r, for evaluating many ranks fast.

    Every term of eqs. (1)-(12) is affine in r once f is fixed or eliminated: round cycles
    C_i(r)|D_i| = c1 r + c0, upload plus download time t1 r + t0, upload energy e1 r + e0.
    Building this costs about two evaluations of :func:`violations`; each later test of a
    rank costs a handful of array operations instead of recomputing rates (log2) and
    parameter counts. Its tests are screens (permissive by :data:`SCREEN_RTOL`); an answer is
    judged by :func:`settle` / :func:`feasible_at` on the cost model itself.
    """

    c1: Array
    c0: Array
    t1: Array
    t0: Array
    e1: Array
    e0: Array
    system: System

    @classmethod
    def of(cls, system: System) -> Affine:
        """Coefficients of ``system`` (differences at r = 1 and r = 0 are exact: affine)."""
        cyc0, cyc1 = round_cycles(system, 0.0), round_cycles(system, 1.0)
        q_ul = system.bits_per_param / rate_ul(system)
        q_dl = system.bits_per_param / rate_dl(system)
        m0, m1 = upload_params(system, 0.0), upload_params(system, 1.0)
        d0, d1 = download_params(system, 0.0), download_params(system, 1.0)
        u1, u0 = (m1 - m0) * q_ul, m0 * q_ul
        return cls(
            c1=cyc1 - cyc0,
            c0=cyc0,
            t1=u1 + (d1 - d0) * q_dl,
            t0=u0 + d0 * q_dl,
            e1=system.tx_power_w * u1,
            e0=system.tx_power_w * u0,
            system=system,
        )

    def binding(self, r: int) -> NDArray[np.int8]:
        """:func:`binding` with the frequency free, from the coefficients."""
        s = self.system
        if r >= s.max_rank:
            return np.full(s.n_devices, Binding.MAX_RANK, dtype=np.int8)
        late, over = self.violations(r + 1)
        return (
            late.astype(np.int8) * Binding.LATENCY + over.astype(np.int8) * Binding.ENERGY
        ).astype(np.int8)

    def violations(self, r: ArrayLike) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
        """:func:`violations` (frequency free) from the coefficients."""
        s = self.system
        r = np.asarray(r, dtype=np.float64)
        cycles = self.c1 * r + self.c0
        slack = s.latency_s - (self.t1 * r + self.t0)
        left = s.energy_budget_j - s.circuit_energy_j - (self.e1 * r + self.e0)
        return _frequency_free_test(s, cycles, slack, left)

    def feasible(self, r: ArrayLike) -> NDArray[np.bool_]:
        """:func:`feasible` from the coefficients."""
        late, over = self.violations(r)
        return ~(late | over)

    def communication_rank_bound(self) -> NDArray[np.int64]:
        """:func:`communication_rank_bound` from the coefficients."""
        bound = np.floor((self.system.latency_s - self.t0) / self.t1)
        return np.clip(bound, 0, self.system.max_rank).astype(np.int64)

    def feasible_at(self, r: ArrayLike, f: ArrayLike) -> NDArray[np.bool_]:
        """:func:`feasible_at` (frequencies fixed) from the coefficients."""
        s = self.system
        r = np.asarray(r, dtype=np.float64)
        f = np.asarray(f, dtype=np.float64)
        cycles = self.c1 * r + self.c0
        t = cycles / f + (self.t1 * r + self.t0)
        e = s.omega * cycles * f**2 + (self.e1 * r + self.e0) + s.circuit_energy_j
        # A screen like :meth:`violations`: the coefficients round differently from the cost
        # model, so the same SCREEN_RTOL keeps it from rejecting what the exact test accepts.
        late = t > s.latency_s * (1.0 + SCREEN_RTOL)
        over = e > s.energy_budget_j * (1.0 + SCREEN_RTOL)
        return ~(late | over)


def communication_rank_bound(system: System) -> NDArray[np.int64]:
    """Largest rank whose upload plus download alone fits in T0, per device.

    The corrected initial upper bound r_rig of eq. (23): a rank, not a time (docs/model.md),
    capped by ``max_rank``. 0 where even rank 1 cannot be communicated in time.
    """
    return Affine.of(system).communication_rank_bound()


def check_in_range(system: System) -> None:
    """Refuse a system whose costs overflow, naming the quantity and the fields it comes from.

    Every cost grows with r and compute energy with f, so the costs at ``max_rank`` and
    f_max bound all others: if they are finite, every cost a solver evaluates is (a zero
    rate, whose transfer times are infinite, is left to the feasibility kernel). Raises
    :class:`~fsl_opt.errors.ConfigError` otherwise.
    """
    r, f = system.max_rank, system.f_max_hz
    every = np.ones(system.n_devices, dtype=bool)
    with np.errstate(all="ignore"):
        s_ul, s_dl = rate_ul(system), rate_dl(system)
        # A rate of 0 (a channel too weak to carry a bit) is legitimate: that device is
        # simply infeasible, and its infinite transfer times are left to the kernel.
        link = (s_ul > 0) & (s_dl > 0)
        t_ul = upload_params(system, r) * system.bits_per_param / s_ul
        t_dl = download_params(system, r) * system.bits_per_param / s_dl
        # (what, its value, the devices where it must be finite)
        terms = (
            (
                "round cycles C_i |D_i| + R_i (samples, cycles_per_op, d, k, "
                "matrices_per_layer, layers, base_cycles, round_base_cycles)",
                round_cycles(system, r),
                every,
            ),
            (
                "compute energy at f_max (omega, f_max_hz and the cycles)",
                compute_energy(system, r, f),
                every,
            ),
            ("uplink rate (bandwidth_hz, gain_ul, tx_power_w, noise_w)", s_ul, every),
            ("downlink rate (bandwidth_hz, gain_dl, server_power_w, noise_w)", s_dl, every),
            ("upload time (bits_per_param and the uplink rate)", t_ul, link),
            ("download time (bits_per_param and the downlink rate)", t_dl, link),
            ("upload energy (tx_power_w and the upload time)", system.tx_power_w * t_ul, link),
        )
    for what, value, where in terms:
        bad = ~np.isfinite(value) & where
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ConfigError(
                f"{what} of device {i} is {float(value[i]):.6g} at rank {r}: the inputs are out "
                "of the range the cost model can compute (check those fields)"
            )


def at_bandwidth(system: System, bandwidth_hz: ArrayLike) -> System:
    """The system with device i on ``bandwidth_hz[i]`` Hz of the pool, as a fixed-band system.

    With a pool the noise on a band of B_i Hz is N0 B_i (N0 = ``noise_psd_w_per_hz``), so
    s_i = B_i log2(1 + g_i P_i / (N0 B_i)). That equals eqs. (6) and (10) with the sub-band
    B_i, the noise ``noise_w`` and the gains scaled by ``noise_w / (N0 B_i)``: the returned
    system is written that way, so every cost function and the feasibility kernel apply
    unchanged. It drops the pool and the selection rule (it is one allocation).
    """
    if system.noise_psd_w_per_hz is None:
        raise ValueError("at_bandwidth needs a system with a pool (noise_psd_w_per_hz)")
    b = np.asarray(bandwidth_hz, dtype=np.float64)
    if not np.all(b > 0):
        raise ValueError(f"at_bandwidth: bandwidths must be > 0, got {b}")
    scale = system.noise_w / (system.noise_psd_w_per_hz * b)
    return system.derived(  # positive bands scale valid gains: nothing to re-check
        bandwidth_hz=b,
        gain_ul=system.gain_ul * scale,
        gain_dl=system.gain_dl * scale,
        bandwidth_total_hz=None,
        noise_psd_w_per_hz=None,
        min_devices=None,
        objective="shared",
    )


def bandwidth_limit(system: System) -> Array:
    """The most bandwidth each device may take from the pool: min(its limit, the pool)."""
    pool = system.bandwidth_total_hz if system.bandwidth_total_hz is not None else np.inf
    return np.minimum(system.bandwidth_hz, pool)
