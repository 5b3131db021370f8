"""Channels: tested statistically, as sionna does."""

import numpy as np
import pytest
from scipy import stats

from channels import RayleighBlockFading, apply, log_distance_gain, preset_system
from fsl_opt.errors import ConfigError
from fsl_opt.problem.presets import PAPER

N = 200_000


def test_small_scale_power_is_exp1():
    """|g|^2 has mean 1 and is Exp(1) (Kolmogorov-Smirnov)."""
    state = RayleighBlockFading(large_scale=1.0).draw(np.random.default_rng(1), N)
    for g in (state.gain_ul, state.gain_dl):
        assert abs(g.mean() - 1.0) < 5 / np.sqrt(N)  # std of the mean of Exp(1) is 1/sqrt(N)
        assert stats.kstest(g, "expon").pvalue > 1e-3


def test_large_scale_scales_mean():
    """h = beta |g|^2: mean beta."""
    state = RayleighBlockFading(large_scale=1e-3).draw(np.random.default_rng(2), N)
    assert abs(state.gain_ul.mean() / 1e-3 - 1.0) < 5 / np.sqrt(N)


def test_rounds_and_links_are_independent():
    """Consecutive rounds, and uplink vs downlink, are uncorrelated."""
    ch = RayleighBlockFading(large_scale=1.0)
    rng = np.random.default_rng(3)
    a, b = ch.draw(rng, N), ch.draw(rng, N)
    bound = 5 / np.sqrt(N)
    assert abs(np.corrcoef(a.gain_ul, b.gain_ul)[0, 1]) < bound
    assert abs(np.corrcoef(a.gain_ul, a.gain_dl)[0, 1]) < bound
    assert not np.array_equal(a.gain_ul, b.gain_ul)


def test_same_seed_same_draw():
    """The generator is the only source of randomness."""
    ch = RayleighBlockFading()
    x = ch.draw(np.random.default_rng(7), 5)
    y = ch.draw(np.random.default_rng(7), 5)
    np.testing.assert_array_equal(x.gain_ul, y.gain_ul)


def test_path_loss_by_hand():
    """3GPP: 128.1 dB at 1 km, 37.6 dB more per decade."""
    np.testing.assert_allclose(
        log_distance_gain([1000.0, 100.0]), [10**-12.81, 10 ** -(12.81 - 3.76)]
    )
    ch = RayleighBlockFading.from_distances([100.0, 1000.0])
    g = np.mean([ch.draw(np.random.default_rng(s), 2).gain_ul for s in range(4000)], axis=0)
    assert g[0] / g[1] == pytest.approx(10**3.76, rel=0.1)


def test_apply_replaces_gains():
    """apply() puts a round's gains into the system."""
    s = preset_system(PAPER, 4, np.random.default_rng(0))
    state = RayleighBlockFading().draw(np.random.default_rng(9), 4)
    np.testing.assert_array_equal(apply(s, state).gain_dl, state.gain_dl)


def test_bad_large_scale():
    """A non-positive large-scale gain is refused."""
    with pytest.raises(ConfigError, match="large_scale"):
        RayleighBlockFading(large_scale=0.0)
    with pytest.raises(ConfigError, match="large_scale has 2 devices, the system 3"):
        RayleighBlockFading(large_scale=[1e-3, 1e-3]).draw(np.random.default_rng(0), 3)
