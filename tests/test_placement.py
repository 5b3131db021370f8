"""One placement per run: the budgets and every round's channels see the same devices."""

import json
from pathlib import Path

import numpy as np
import pytest

from channels import build_channel, log_distance_gain, preset_round
from fsl_opt.federation.context import build_context
from fsl_opt.federation.loop import run
from fsl_opt.problem.placement import ChannelSpec
from fsl_opt.problem.presets import CALIBRATED, PAPER
from fsl_opt.problem.system_file import system_from_dict


def test_rounds_fade_around_the_placement_the_budgets_were_set_on(tiny_cfg):
    """The gains the references were computed at are the placement's path-loss gains, and
    the rounds' fading averages to them (the old code drew a second set of distances)."""
    ctx = build_context(tiny_cfg)
    spec = ctx.placement.channel
    assert spec.distance_m is not None  # the calibrated preset places devices at distances
    beta = log_distance_gain(spec.distance_m)
    np.testing.assert_allclose(ctx.references.gain_ul, beta, rtol=1e-12)
    np.testing.assert_allclose(ctx.references.gain_dl, beta, rtol=1e-12)
    draws = np.array([ctx.planner.plan_round(t).system.gain_ul for t in range(1, 2001)])
    # |g|^2 ~ Exp(1): the mean of 2000 draws is within 4 standard errors (4 / sqrt(2000)).
    ratio = draws.mean(axis=0) / beta
    assert np.all(np.abs(ratio - 1.0) < 4.0 / np.sqrt(len(draws))), ratio


def test_budgets_are_factors_of_the_references_at_the_mean_channel(tiny_cfg):
    """T_ref: the slowest device's delay at r_ref and f_max on the mean gains, written out
    from eqs. (1), (4), (6), (9), (10); T0 and E0 are the configured factors of the refs."""
    from fsl_opt.problem import cost

    cfg = tiny_cfg.replace(latency_factor=1.3, energy_factor=0.9)
    ctx = build_context(cfg)
    s, refs = ctx.system, ctx.references
    r = refs.rank
    assert r == cfg.reference_rank
    rate_ul = s.bandwidth_hz * np.log2(1 + refs.gain_ul * s.tx_power_w / s.noise_w)
    rate_dl = s.bandwidth_hz * np.log2(1 + refs.gain_dl * s.server_power_w / s.noise_w)
    bits = r * (s.d + s.k) * s.matrices_per_layer * s.layers * s.bits_per_param
    t_compute = cost.round_cycles(s, r) / s.f_max_hz
    t_by_hand = t_compute + bits / rate_ul + bits / rate_dl
    assert refs.latency_s == pytest.approx(float(t_by_hand.max()), rel=1e-9)
    assert s.latency_s == pytest.approx(1.3 * refs.latency_s, rel=1e-12)
    np.testing.assert_allclose(s.energy_budget_j, 0.9 * refs.energy_j, rtol=1e-12)
    # The run's system carries the mean gains: the references' own point.
    np.testing.assert_allclose(s.gain_ul, refs.gain_ul)


def test_a_run_records_its_placement_and_references(tiny_cfg):
    """placement.json holds T_ref, E_ref, the mean gains and the distances the run used."""
    run(tiny_cfg.replace(rounds=1), progress=False)
    rec = json.loads((Path(tiny_cfg.out) / "placement.json").read_text())
    ctx = build_context(tiny_cfg.replace(rounds=1))
    assert rec["t_ref_s"] == pytest.approx(ctx.references.latency_s)
    assert rec["e_ref_j"] == pytest.approx(ctx.references.energy_j)
    assert rec["latency_s"] == pytest.approx(ctx.system.latency_s)
    np.testing.assert_allclose(rec["mean_gain_ul"], ctx.references.gain_ul)
    np.testing.assert_allclose(rec["distance_m"], ctx.placement.channel.distance_m)


def test_preset_round_draws_once():
    """`fsl-opt solve --preset`'s instance: the faded round and the references share one
    placement (its fading is Exp(1) around the placement's own path loss)."""
    ratios = []
    for seed in range(300):
        system, refs = preset_round(CALIBRATED, 4, np.random.default_rng(seed))
        ratios.append(system.gain_ul / refs.gain_ul)
    ratios = np.array(ratios)
    assert abs(ratios.mean() - 1.0) < 4 / np.sqrt(ratios.size)
    system, refs = preset_round(PAPER, 3, np.random.default_rng(0))
    np.testing.assert_allclose(refs.gain_ul, 1e-3)


def test_static_channel_is_the_mean():
    """``static`` repeats the large-scale gains every round and never touches the rng."""
    model = build_channel("static", ChannelSpec(distance_m=np.array([60.0, 200.0])))
    rng = np.random.default_rng(0)
    before = rng.bit_generator.state
    state = model.draw(rng, 2)
    assert rng.bit_generator.state == before
    np.testing.assert_allclose(state.gain_ul, log_distance_gain([60.0, 200.0]))


def test_pool_file_needs_neither_noise_w_nor_bandwidth():
    """With a pool, a device's bandwidth_hz defaults to the pool and noise_w is not needed."""
    doc = {
        "model": dict(
            d=64,
            k=64,
            matrices_per_layer=2,
            layers=2,
            bits_per_param=32,
            upload_model="lora",
            max_rank=16,
        ),
        "round": dict(
            latency_s=5.0,
            server_power_w=1.0,
            objective="sum",
            bandwidth_total_hz=1e6,
            noise_psd_w_per_hz=4e-21,
        ),
        "devices": dict(
            samples=[10, 20],
            omega=1e-28,
            f_max_hz=2e9,
            energy_budget_j=5.0,
            circuit_energy_j=0.1,
            tx_power_w=0.2,
            gain_ul=[1e-10, 2e-10],
            gain_dl=[1e-10, 2e-10],
        ),
    }
    s = system_from_dict(doc)
    np.testing.assert_allclose(s.bandwidth_hz, 1e6)
    limited = system_from_dict({**doc, "devices": {**doc["devices"], "bandwidth_hz": 3e5}})
    np.testing.assert_allclose(limited.bandwidth_hz, 3e5)
