"""Cost model, eqs. (1)-(12), against values computed by hand."""

import numpy as np
import pytest

from fsl_opt.problem import cost
from fsl_opt.problem.system import System

# One device with round numbers (worked by hand in the comments).
HAND = System(
    samples=[10.0],
    omega=[1e-6],
    f_max_hz=[300.0],
    energy_budget_j=[30.0],
    circuit_energy_j=[0.25],
    tx_power_w=[0.5],
    bandwidth_hz=[16.0],
    gain_ul=[3.0],
    gain_dl=[1.0],
    layers=[1.0],
    d=4,
    k=4,
    matrices_per_layer=1,
    bits_per_param=8.0,
    max_rank=4,
    latency_s=10.0,
    noise_w=0.1,
    server_power_w=0.3,
)


def test_hand_computed_round():
    """r = 2, f = 240: every term of eqs. (1)-(12) by hand."""
    r, f = 2, [240.0]
    # C = (2r - 1) d k A l = 3 * 16 = 48 cycles per sample; |D| = 10 -> 480 cycles.
    assert cost.cycles_per_sample(HAND, r)[0] == 48.0
    assert cost.compute_time(HAND, r, f)[0] == pytest.approx(2.0)  # 480 / 240
    assert cost.compute_energy(HAND, r, f)[0] == pytest.approx(27.648)  # 1e-6 * 480 * 240^2
    # M = r (d + k) A l = 2 * 8 = 16 parameters, 128 bits.
    assert cost.upload_params(HAND, r)[0] == 16.0
    # SNR_ul = 3 * 0.5 / 0.1 = 15 -> 16 * log2(16) = 64 bit/s; SNR_dl = 0.3 / 0.1 = 3 -> 32 bit/s.
    assert cost.rate_ul(HAND)[0] == pytest.approx(64.0)
    assert cost.rate_dl(HAND)[0] == pytest.approx(32.0)
    assert cost.upload_time(HAND, r)[0] == pytest.approx(2.0)
    assert cost.download_time(HAND, r)[0] == pytest.approx(4.0)
    assert cost.upload_energy(HAND, r)[0] == pytest.approx(1.0)  # 0.5 W * 2 s
    assert cost.latency(HAND, r, f)[0] == pytest.approx(8.0)
    assert cost.energy(HAND, r, f)[0] == pytest.approx(27.648 + 1.0 + 0.25)
    rc = cost.round_cost(HAND, r, f)
    assert rc.latency_s[0] == pytest.approx(8.0)
    assert rc.energy_j[0] == pytest.approx(28.898)


def test_a_round_cost_paid_once_is_added_to_the_round_not_to_each_sample():
    """R = 120 cycles a round (round_base_cycles): r = 2, f = 240 as above, by hand."""
    s = HAND.replace(round_base_cycles=[120.0])
    assert cost.cycles_per_sample(s, 2)[0] == 48.0  # eq. (2) itself unchanged
    assert cost.round_cycles(s, 2)[0] == 600.0  # 48 * 10 + 120
    assert cost.compute_time(s, 2, [240.0])[0] == pytest.approx(2.5)  # 600 / 240
    assert cost.compute_energy(s, 2, [240.0])[0] == pytest.approx(34.56)  # 1e-6 * 600 * 240^2
    # Affine in r with the same slope: only the intercept moves, by R.
    assert cost.Affine.of(s).c1[0] == cost.Affine.of(HAND).c1[0]
    assert cost.Affine.of(s).c0[0] == cost.Affine.of(HAND).c0[0] + 120.0
    # Twice the samples: the per-sample part doubles, R does not.
    assert cost.round_cycles(s.replace(samples=[20.0]), 2)[0] == 1080.0


def test_paper_upload_model_is_printed_formula():
    """upload_model='paper' counts (r + k) d A l, eq. (5) as printed."""
    assert cost.upload_params(HAND.replace(upload_model="paper"), 2)[0] == 24.0  # (2 + 4) * 4


def test_frequency_bounds_by_hand():
    """f_lo = C|D| / (T0 - T_ul - T_dl) and f_E = sqrt((E0 - xi - E_ul) / (Omega C |D|))."""
    assert cost.least_energy_frequency(HAND, 2)[0] == pytest.approx(120.0)  # 480 / (10 - 6)
    f_e = np.sqrt((30.0 - 0.25 - 1.0) / (1e-6 * 480.0))
    assert cost.energy_frequency_cap(HAND, 2)[0] == pytest.approx(f_e)  # 244.7
    assert cost.feasible(HAND, 2)[0]
    # r = 3: C|D| = 800 cycles, comms 3 + 6 = 9 s, f_lo = 800 / 1 = 800 > f_max = 300 (late),
    # and f_E = sqrt((30 - 0.25 - 1.5) / (1e-6 * 800)) = 187.9 < 800 (over budget).
    assert cost.least_energy_frequency(HAND, 3)[0] == pytest.approx(800.0)
    assert cost.energy_frequency_cap(HAND, 3)[0] == pytest.approx(np.sqrt(28.25 / 8e-4))
    late, over = cost.violations(HAND, 3)
    assert late[0] and over[0]
    assert cost.binding(HAND, 2)[0] == cost.Binding.LATENCY_ENERGY
    # With a generous budget only the deadline binds.
    rich = HAND.replace(energy_budget_j=[1e3])
    assert cost.binding(rich, 2)[0] == cost.Binding.LATENCY


def test_energy_binds_by_hand():
    """With E0 = 5 J, rank 2 needs 1e-6 * 480 * 120^2 + 1 + 0.25 = 8.16 J: energy fails."""
    s = HAND.replace(energy_budget_j=[5.0])
    late, over = cost.violations(s, 2)
    assert over[0] and not late[0]
    assert cost.energy(s, 2, [120.0])[0] == pytest.approx(8.162)


def test_communication_bound_by_hand():
    """Each rank costs 1 s up and 2 s down here, so T0 = 10 s allows r_rig = 3."""
    assert cost.communication_rank_bound(HAND)[0] == 3


def test_vectorized_over_devices():
    """One call over many devices equals per-device calls."""
    rng = np.random.default_rng(0)
    n = 50
    s = HAND.subset(np.zeros(n, dtype=int)).replace(samples=rng.uniform(1, 100, n))
    f = rng.uniform(10, 300, n)
    whole = cost.energy(s, 3, f)
    each = [cost.energy(s.subset([i]), 3, f[i : i + 1])[0] for i in range(n)]
    np.testing.assert_allclose(whole, each)


def test_per_device_rank_array():
    """A rank per device broadcasts like a scalar rank."""
    s = HAND.subset([0, 0])
    np.testing.assert_allclose(cost.upload_params(s, np.array([1, 2])), [8.0, 16.0])


def test_affine_form_matches_the_cost_model():
    """Affine.of(system) answers every feasibility question as the direct formulas do."""
    from solvers.instances import random_system

    for seed in range(200):
        s = random_system(np.random.default_rng(seed))
        aff = cost.Affine.of(s)
        f = s.f_max_hz * np.random.default_rng(seed).uniform(0.1, 1.0, s.n_devices)
        for r in (1, 2, s.max_rank // 2 + 1, s.max_rank):
            np.testing.assert_array_equal(aff.feasible(r), cost.feasible(s, r))
            np.testing.assert_array_equal(aff.feasible_at(r, f), cost.feasible_at(s, r, f))
        np.testing.assert_array_equal(
            aff.communication_rank_bound(), cost.communication_rank_bound(s)
        )
    assert cost.Affine.of(HAND).c1[0] == 2 * 16 * 10  # 2 d k A l |D| cycles per unit rank


@pytest.mark.parametrize("preset", ["paper", "calibrated"])
@pytest.mark.parametrize("seed", range(4))
def test_settled_cost_is_the_cost_model_bit_for_bit(preset, seed):
    """settled_cost computes each piece once; its clock, costs and verdict equal those of
    operating_frequency, round_cost, latency and energy called one by one, to the bit,
    at every rank (on-time nudges included) and on a pool share's bands."""
    from channels import preset_system
    from fsl_opt.problem.presets import get_preset

    rng = np.random.default_rng(seed)
    system = preset_system(get_preset(preset), 50, rng)
    from fsl_opt.problem.pool import with_pool

    pool = with_pool(system, float(system.bandwidth_hz.sum()))
    shares = [system, cost.at_bandwidth(pool, system.bandwidth_hz * rng.uniform(0.2, 3, 50))]
    for s in shares:
        for r in (1, 3, 8, 17, 64, np.arange(1, 51)):
            f, costs, ok = cost.settled_cost(s, r)
            f_ref = cost.operating_frequency(s, r)
            t, e = cost.latency(s, r, f_ref), cost.energy(s, r, f_ref)
            ref = cost.round_cost(s, r, f_ref)
            assert np.array_equal(f, f_ref, equal_nan=True)
            assert np.array_equal(costs.latency_s, t, equal_nan=True)
            assert np.array_equal(costs.energy_j, e, equal_nan=True)
            for name in ("compute_time_s", "upload_time_s", "download_time_s", "compute_energy_j"):
                assert np.array_equal(getattr(costs, name), getattr(ref, name), equal_nan=True)
            assert np.array_equal(ok, (t <= s.latency_s) & (e <= s.energy_budget_j))
