"""Transmit power as a decision: the least-energy (clock, power) against a fine grid over the
power written out by hand, never above the fixed-power energy, and the ranks it buys."""

import math

import numpy as np

from fsl_opt.problem import cost
from fsl_opt.problem.power import largest_rank, least_energy
from solvers import solve
from solvers.instances import random_system


def grid_energy(s, i, r, points=200_001):
    """Least energy of device i at rank r over a log grid of powers in [1e-20 P_i, P_i], each
    at its slowest on-time clock (none where no clock is on time), from the model by hand."""
    per = r * (s.d + s.k) if s.upload_model == "lora" else (r + s.k) * s.d
    bits = per * s.matrices_per_layer * s.layers[i] * s.bits_per_param
    ops = (2 * r - 1) * s.d * s.k * s.matrices_per_layer * s.layers[i]
    x = (s.cycles_per_op * ops + s.base_cycles[i]) * s.samples[i]
    b = s.bandwidth_hz[i]
    t_dl = bits / (b * math.log2(1 + s.gain_dl[i] * s.server_power_w / s.noise_w))
    p = s.tx_power_w[i] * np.logspace(-20, 0, points)
    with np.errstate(divide="ignore"):  # powers too small to carry a bit: u = inf
        u = bits / (b * np.log2(1 + s.gain_ul[i] * p / s.noise_w))
    left = s.latency_s - t_dl - u
    ok = (left > 0) & (x / np.where(left > 0, left, 1.0) <= s.f_max_hz[i])
    if not ok.any():
        return math.inf
    f = x / left[ok]
    return float(np.min(s.omega[i] * x * f**2 + p[ok] * u[ok] + s.circuit_energy_j[i]))


def test_least_energy_matches_a_fine_grid_and_never_exceeds_fixed_power():
    """60 random systems x 3 devices at a random rank (half with computing so cheap that the
    clock's limit binds): the energy is never above the grid's least (1e-6) nor below it by
    more than the grid's resolution (1e-3), at most the fixed-power energy, the power within
    (0, P_i] and the clock within f_max."""
    compared, at_clock = 0, 0
    for seed in range(60):
        rng = np.random.default_rng(seed)
        s = random_system(rng, 3)
        if seed % 2:  # cheap computing: the least energy sits at the clock's limit
            s = s.replace(omega=s.omega * 1e-6)
        r = int(rng.integers(1, s.max_rank + 1))
        got = least_energy(s, r)
        fixed_f = np.minimum(cost.least_energy_frequency(s, r), s.f_max_hz)
        fixed_e = cost.energy(s, r, fixed_f)
        for i in range(3):
            ref = grid_energy(s, i, r)
            if not math.isfinite(ref):
                assert not np.isfinite(got.energy_j[i]) or got.upload_time_s[i] > 0
                continue
            e = float(got.energy_j[i])
            assert e <= ref * (1 + 1e-6), (seed, i, e, ref)
            # Below the grid by at most its resolution (adjacent powers 2.3e-4 apart).
            assert e >= ref * (1 - 1e-3), (seed, i, e, ref)
            assert 0 < got.tx_power_w[i] <= s.tx_power_w[i]
            assert got.frequency_hz[i] <= s.f_max_hz[i] * (1 + 1e-12)
            at_clock += bool(got.frequency_hz[i] >= s.f_max_hz[i] * (1 - 1e-9))
            if fixed_f[i] <= s.f_max_hz[i] and math.isfinite(fixed_e[i]):
                assert e <= fixed_e[i] * (1 + 1e-12)
            compared += 1
    assert compared > 60 and at_clock >= 3


def test_power_control_keeps_every_fixed_power_rank():
    """With the power free each device reaches at least its fixed-power rank (the paper's
    choice is one of the options), on 200 random systems; and more somewhere."""
    gained = 0
    for seed in range(200):
        s = random_system(np.random.default_rng(seed), 3)
        fixed = solve(s, "bisection").device_ranks
        free = largest_rank(s)
        assert fixed is not None and np.all(free >= fixed), seed
        gained += int((free > fixed).any())
    assert gained > 0
