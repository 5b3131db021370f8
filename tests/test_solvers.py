"""Every solver against exhaustive search, feasibility re-checks and monotonicity properties."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from channels import preset_system
from fsl_opt.errors import ConfigError
from fsl_opt.problem import cost
from fsl_opt.problem.presets import PAPER
from solvers import SOLVERS, solve
from solvers.instances import random_system
from tests.helpers import assert_allocation_feasible, brute_force_rank

seeds = st.integers(min_value=0, max_value=2**32 - 1)


@settings(max_examples=1000)
@given(seeds)
def test_exact_solvers_match_exhaustive(seed):
    """bisection and bnb return the exhaustive rank; every allocation re-checks feasible."""
    system = random_system(np.random.default_rng(seed))
    oracle = solve(system, "exhaustive")
    assert_allocation_feasible(system, oracle)
    for method in ("bisection", "bnb"):
        res = solve(system, method)
        assert res.status == oracle.status, (method, res.message)
        assert res.rank == oracle.rank, method
        assert_allocation_feasible(system, res)


@settings(max_examples=150)
@given(seeds)
def test_exhaustive_matches_independent_brute_force(seed):
    """The closed-form feasibility test agrees with root-finding on the raw cost model."""
    system = random_system(np.random.default_rng(seed))
    system = system.replace(max_rank=min(system.max_rank, 40))
    assert solve(system, "exhaustive").rank == brute_force_rank(system)


@settings(max_examples=200)
@given(
    seeds,
    st.sampled_from(["latency_s", "energy_budget_j", "f_max_hz", "bandwidth_hz"]),
    st.floats(1.0, 4.0),
)
def test_rank_never_falls_when_a_resource_grows(seed, field, factor):
    """More time, energy, clock or bandwidth never lowers the optimal rank."""
    system = random_system(np.random.default_rng(seed))
    grown = system.replace(**{field: getattr(system, field) * factor})
    assert solve(grown).rank >= solve(system).rank


@settings(max_examples=200)
@given(seeds)
def test_baselines_are_feasible_and_never_beat_the_optimum(seed):
    """max_frequency, random_frequency and random_on_time: feasible, at most the optimum,
    exact for their f."""
    rng = np.random.default_rng(seed)
    system = random_system(rng)
    best = solve(system).rank
    for method in ("max_frequency", "random_frequency", "random_on_time"):
        res = solve(system, method, rng=rng)
        assert res.rank <= best
        assert_allocation_feasible(system, res)
        assert res.rank == brute_force_rank(
            system.replace(max_rank=system.max_rank), f=res.frequencies_hz
        )


def test_max_frequency_is_optimal_when_only_the_deadline_binds():
    """With unlimited energy, running flat out is optimal."""
    s = preset_system(PAPER, 5, np.random.default_rng(0), energy_budget_j=1e12)
    assert solve(s, "max_frequency").rank == solve(s).rank


def test_random_frequency_needs_rng():
    """The random baselines refuse to run without an explicit generator."""
    for method in ("random_frequency", "random_on_time"):
        with pytest.raises(ValueError, match="needs rng"):
            solve(preset_system(PAPER), method)


def test_random_on_time_draws_clocks_that_meet_the_deadline():
    """Every clock lies in [f_lo(1), f_max]; on the calibrated preset it trains where the
    paper's (0, f_max] draw almost never does (300 draws each, same system)."""
    from fsl_opt.problem import cost
    from fsl_opt.problem.presets import CALIBRATED

    system = preset_system(CALIBRATED, 5, np.random.default_rng(0))
    low = cost.least_energy_frequency(system, 1)
    rng = np.random.default_rng(1)
    on_time = [solve(system, "random_on_time", rng=rng) for _ in range(300)]
    for res in on_time:
        f = res.frequencies_hz
        assert np.all(f >= low * (1 - 1e-12)) and np.all(f <= system.f_max_hz)
    paper = [solve(system, "random_frequency", rng=rng) for _ in range(300)]
    trained = sum(r.rank > 0 for r in on_time)
    assert trained > 100 > sum(r.rank > 0 for r in paper), trained


def test_unknown_method():
    """An unknown name lists the known ones."""
    with pytest.raises(
        ConfigError, match="unknown method 'newton': expected one of auto, bisection"
    ):
        solve(preset_system(PAPER), "newton")


@pytest.mark.parametrize("method", list(SOLVERS))
def test_infeasible_is_a_status_with_reasons(method):
    """An impossible deadline gives status infeasible, naming device and constraint."""
    s = preset_system(PAPER, 3, np.random.default_rng(0), latency_s=10.0)
    res = solve(s, method, rng=np.random.default_rng(0))
    assert res.status == "infeasible" and res.rank == 0 and not res.success
    assert {v.device for v in res.violations} == {0, 1, 2}
    v = res.violations[0]
    assert v.constraint == "latency" and v.limit == 10.0 and v.excess > 60.0
    assert "device 0 cannot meet the deadline T0 at rank 1" in res.message


def test_energy_infeasibility_names_the_device():
    """Only device 1 is short of energy: it alone is named, with its shortfall."""
    s = preset_system(PAPER, 3, np.random.default_rng(0))
    budget = s.energy_budget_j.copy()
    budget[1] = 1.5  # below circuit energy + anything
    res = solve(s.replace(energy_budget_j=budget))
    assert res.status == "infeasible"
    assert [(v.device, v.constraint) for v in res.violations] == [(1, "energy")]
    assert res.violations[0].needed > 1.5


@pytest.mark.parametrize("method", SOLVERS.with_capability("exact"))
def test_bisection_result_fields(method):
    """The result carries costs split by phase and a binding constraint per device."""
    s = preset_system(PAPER, 4, np.random.default_rng(3))
    res = solve(s, method)
    assert res.success and res.method == method
    np.testing.assert_allclose(
        res.latency_s, res.cost.compute_time_s + res.cost.upload_time_s + res.cost.download_time_s
    )
    # f_lo(r) makes the deadline tight: the least-energy frequency uses all of T0.
    np.testing.assert_allclose(res.latency_s, s.latency_s, rtol=1e-9)
    limiting = res.device_ranks == res.rank
    assert (res.binding[limiting] != cost.Binding.NONE).all()


def test_bisection_evaluation_count_is_log2():
    """Bisection uses ceil(log2(r_rig + 1)) vectorized evaluations."""
    s = preset_system(PAPER, 1000, np.random.default_rng(0))
    res = solve(s)
    width = int(cost.communication_rank_bound(s).max()) + 1
    assert res.iterations == int(np.ceil(np.log2(width)))


# --- milp: discrete levels and resource blocks ---------------------------------------------


@settings(max_examples=60)
@given(seeds)
def test_milp_without_reallocation_never_beats_and_fine_levels_match(seed):
    """Discrete clocks give at most the continuous optimum; with 1024 levels, the same where
    each device's feasible clock interval at r* is wider than a level step."""
    system = random_system(np.random.default_rng(seed))
    best = solve(system)
    res = solve(system, "milp", levels=1024, reallocate=False)
    assert_allocation_feasible(system, res)
    assert res.rank <= best.rank
    if best.success:
        lo = cost.least_energy_frequency(system, best.rank)
        hi = np.minimum(system.f_max_hz, cost.energy_frequency_cap(system, best.rank))
        if ((hi - lo) > 2 * system.f_max_hz / 1024).all():
            assert res.rank == best.rank


def _milp_brute_force(system, frac, rb, pool, top):
    """Every combination of (level, blocks) per device, by enumeration."""
    import itertools

    n = system.n_devices
    options = list(itertools.product(range(len(frac)), range(1, top + 1)))
    best = 0
    for combo in itertools.product(options, repeat=n):
        blocks = np.array([c[1] for c in combo])
        if blocks.sum() > pool:
            continue
        f = system.f_max_hz * frac[[c[0] for c in combo]]
        best = max(best, brute_force_rank(system.replace(bandwidth_hz=blocks * rb), f=f))
    return best


@settings(max_examples=15)
@given(seeds)
def test_milp_matches_enumeration(seed):
    """With bandwidth pooled, CBC's rank equals enumeration of all choices (2 devices)."""
    rng = np.random.default_rng(seed)
    system = random_system(rng, n_devices=2)
    system = system.replace(max_rank=min(system.max_rank, 24))
    rb = float(system.bandwidth_hz.min()) / 2
    frac = np.array([1 / 3, 2 / 3, 1.0])
    res = solve(system, "milp", levels=frac, resource_block_hz=rb, pool_blocks=4, max_blocks=3)
    assert res.rank == _milp_brute_force(system, frac, rb, pool=4, top=3)
    if res.success:
        assert res.extra["blocks"].sum() <= 4
        alloc = system.replace(bandwidth_hz=res.extra["bandwidth_hz"])
        assert_allocation_feasible(alloc, res)


def test_milp_reallocation_helps_the_weak_device():
    """Pooling the bandwidth gives the weakest uplink more blocks and a higher rank."""
    s = preset_system(PAPER, 3, np.random.default_rng(0), latency_s=50.0, energy_budget_j=1e12)
    # Make communication matter: a tiny sub-band and one deep fade.
    s = s.replace(
        samples=np.full(3, 10.0), bandwidth_hz=np.full(3, 2e4), gain_ul=np.array([1e-3, 1e-3, 1e-6])
    )
    fixed = solve(s, "milp", levels=64, reallocate=False)
    pooled = solve(s, "milp", levels=64)
    assert pooled.rank > fixed.rank
    assert pooled.extra["blocks"][2] == pooled.extra["blocks"].max()


def test_milp_bad_levels():
    """Levels outside (0, 1] are refused by name."""
    with pytest.raises(ConfigError, match="levels"):
        solve(preset_system(PAPER), "milp", levels=[0.5, 1.5])


def test_infeasible_message_counts_every_failing_device():
    """With more failing devices than are listed, the message still counts them all."""
    s = preset_system(PAPER, 30, np.random.default_rng(0), latency_s=10.0)
    res = solve(s)
    assert len({v.device for v in res.violations}) == 20  # MAX_VIOLATIONS listed
    assert res.message.endswith("(and 29 more devices)")
