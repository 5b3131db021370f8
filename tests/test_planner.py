"""Round planner: channels shared across methods, fixed ranks, FedAvg and resizing."""

import numpy as np
import torch

from channels import RayleighBlockFading, preset_system
from fsl_opt.federation.planner import RoundPlanner
from fsl_opt.learning.local import LocalResult
from fsl_opt.problem.presets import PAPER
from solvers import evaluate_rank
from solvers.fixed_rank import evaluate_ranks


def planner(method, seed=0, rank=None):
    system = preset_system(PAPER, 3, np.random.default_rng(0))
    return RoundPlanner(system, RayleighBlockFading(), method, rank, np.random.default_rng(seed))


def test_methods_see_the_same_channels():
    """The random baseline draws its clocks from its own stream: channels stay identical."""
    a, b = planner("bisection"), planner("random_frequency")
    for rnd in range(1, 6):
        pa, pb = a.plan_round(rnd), b.plan_round(rnd)
        np.testing.assert_array_equal(pa.system.gain_ul, pb.system.gain_ul)
        np.testing.assert_array_equal(pa.system.gain_dl, pb.system.gain_dl)
        assert pa.rank >= pb.rank


def test_state_round_trip_continues_the_same_draws():
    """Restoring state() replays the same channels and random clocks."""
    a = planner("random_frequency")
    a.plan_round(1)
    saved = a.state()
    first = a.plan_round(2)
    b = planner("random_frequency", seed=99)
    b.load_state(saved)
    second = b.plan_round(2)
    np.testing.assert_array_equal(first.system.gain_ul, second.system.gain_ul)
    np.testing.assert_array_equal(first.result.frequencies_hz, second.result.frequencies_hz)


def test_fixed_rank_reports_feasibility():
    """A fixed rank trains whatever happens; its status says whether it meets T0 and E0."""
    s = preset_system(PAPER, 3, np.random.default_rng(0))
    fits = evaluate_rank(s, 4)
    assert fits.status == "fixed" and fits.meets_constraints and not fits.violations
    late = evaluate_rank(s.replace(latency_s=100.0), 40)
    assert late.status == "over_budget" and late.rank == 40 and not late.meets_constraints
    assert "latency" in {v.constraint for v in late.violations}
    assert all(v.rank == 40 and v.needed > v.limit for v in late.violations)
    assert planner("bisection", rank=7).plan_round(1).rank == 7


def test_ranks_given_per_device_cost_what_each_device_costs_alone():
    """evaluate_ranks against evaluate_rank on each device alone (the same cost model at
    one shared rank): the same clock, latency and energy per device; a device at 0 is left
    out (no clock, no cost) and the others are costed as without it; the status is
    over_budget exactly when some device misses at its own rank."""
    s = preset_system(PAPER, 4, np.random.default_rng(1)).replace(latency_s=30.0)
    ranks = [2, 0, 40, 9]
    got = evaluate_ranks(s, ranks)
    assert got.ranks.tolist() == ranks and got.rank == 40
    missing = []
    for i, r in enumerate(ranks):
        if r == 0:
            assert np.isnan(got.frequencies_hz[i])
            assert got.cost.latency_s[i] == 0 and got.cost.energy_j[i] == 0
            continue
        alone = evaluate_rank(s.subset([i]), r)
        assert got.frequencies_hz[i] == alone.frequencies_hz[0]
        assert got.cost.latency_s[i] == alone.cost.latency_s[0]
        assert got.cost.energy_j[i] == alone.cost.energy_j[0]
        missing += [i] if alone.status == "over_budget" else []
    assert got.status == ("over_budget" if missing else "fixed")
    assert sorted({v.device for v in got.violations}) == missing
    assert planner("bisection", rank=(3, 0, 5)).plan_round(1).ranks.tolist() == [3, 0, 5]


def test_payloads_at_the_round_rank_and_weighted_aggregate():
    """Every device gets the global payload grown to the planned rank (same product); the
    aggregate weights the replies by their examples."""
    st = planner("bisection")
    plan = st.plan_round(1)
    state = {"m.lora_A.weight": torch.randn(2, 5), "m.lora_B.weight": torch.randn(4, 2)}
    sent = st.payloads(state, plan, seed=0)
    assert sorted(sent) == [0, 1, 2]
    out = sent[0]
    assert out["m.lora_A.weight"].shape == (plan.rank, 5)
    torch.testing.assert_close(
        out["m.lora_B.weight"] @ out["m.lora_A.weight"],
        state["m.lora_B.weight"] @ state["m.lora_A.weight"],
    )
    replies = {
        0: LocalResult(out, 1, {}),
        2: LocalResult({k: 3 * v for k, v in out.items()}, 3, {}),
    }
    agg = st.aggregate(state, replies, plan)
    torch.testing.assert_close(agg["m.lora_A.weight"], 2.5 * out["m.lora_A.weight"])
