"""The drift-plus-penalty budget policy: each round exact, never overdrawn, bounded by the
offline optimum; queues checkpointed.

Oracles: enumeration of every rank vector (and, with a pool, every choice of one option per
device) judged by the cost model; a grid of clocks for the least-energy clock; the offline
optimum with every round's channels known (:mod:`experiments.budget_policy`).
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

from channels.base import ChannelState
from channels.rayleigh import RayleighBlockFading
from experiments.budget_policy import Replay, against_offline
from fsl_opt.errors import ConfigError
from fsl_opt.federation.drift_plus_penalty import DriftPlusPenalty
from fsl_opt.federation.planner import RoundPlanner
from fsl_opt.problem import cost
from fsl_opt.problem.accuracy import AccuracyModel, Progress
from fsl_opt.problem.budgets import RunBudgets
from fsl_opt.problem.system import System
from solvers.per_device import pool_room, solve_per_device, utility
from solvers.priced import pool_options, solve_priced
from tests.test_per_device import small_instance


def _prices(s: System, seed: int) -> tuple[np.ndarray, float, float]:
    rng = np.random.default_rng(seed + 1000)
    scale = float(np.mean(s.energy_budget_j))
    price = rng.uniform(0, 2, s.n_devices) / scale * (rng.random() < 0.8)
    return price, float(rng.uniform(0, 0.5) / s.latency_s), float(rng.uniform(0.1, 2.0))


def _enumerate(s: System, price: np.ndarray, tp: float, v: float, utility_of: Any = None) -> float:
    """Best priced value over every rank vector (0 = skip the round), fixed bands;
    ``utility_of(s, ranks)``: U written out by the caller (default: the rank objectives')."""
    best = 0.0
    for combo in itertools.product(range(s.max_rank + 1), repeat=s.n_devices):
        ranks = np.array(combo)
        taking = ranks > 0
        if not taking.any() or taking.sum() < s.required_devices:
            continue
        if s.objective == "shared" and len(set(ranks[taking].tolist())) > 1:
            continue
        r = np.maximum(ranks, 1)
        f, ok = cost.settle(s, r)
        if not ok[taking].all():
            continue
        e = cost.energy(s, r, f)
        if utility_of is not None:
            u = utility_of(s, ranks)
        elif s.objective == "shared":
            u = float(ranks[taking].min())
        else:
            u = float(np.sum(s.weights * utility(s.objective, ranks)))
        best = max(best, v * u - float(np.sum(price[taking] * e[taking])) - tp * s.latency_s)
    return best


def test_each_round_equals_enumeration_without_a_pool():
    checked = 0
    for seed in range(300):
        s = small_instance(seed)
        if s.bandwidth_total_hz is not None:
            continue
        price, tp, v = _prices(s, seed)
        res = solve_priced(s, price, tp, v)
        want = _enumerate(s, price, tp, v)
        assert res.status == "optimal"
        assert res.extra["value"] == pytest.approx(want, rel=1e-9, abs=1e-12), seed
        checked += 1
    assert checked > 100


def test_each_round_equals_enumeration_with_a_pool():
    checked = 0
    for seed in range(300):
        s = small_instance(seed)
        if s.bandwidth_total_hz is None:
            continue
        price, tp, v = _prices(s, seed)
        dev, rank, band, energy = pool_options(s, 3)
        room = min(pool_room(s.bandwidth_total_hz, s.n_devices), s.bandwidth_total_hz * (1 - 1e-9))
        want = 0.0
        options = [[None, *np.flatnonzero(dev == i).tolist()] for i in range(s.n_devices)]
        for combo in itertools.product(*options):
            js = [j for j in combo if j is not None]
            if not js or len(js) < s.required_devices or band[js].sum() > room:
                continue
            if s.objective == "shared" and len(set(rank[js].tolist())) > 1:
                continue
            if s.objective == "shared":
                u = float(rank[js].min())
            else:
                u = float(np.sum(s.weights[dev[js]] * utility(s.objective, rank[js])))
            want = max(want, v * u - float(np.sum(price[dev[js]] * energy[js])) - tp * s.latency_s)
        res = solve_priced(s, price, tp, v, bandwidth_levels=3)
        assert res.status == "optimal"
        assert res.extra["value"] == pytest.approx(want, rel=1e-7, abs=1e-9), seed
        if not res.extra["skipped"]:
            taking = res.ranks > 0
            assert res.bandwidth_hz[taking].sum() <= s.bandwidth_total_hz
        checked += 1
        if checked >= 60:
            break
    assert checked >= 60


def test_the_clock_is_the_least_energy_one_on_time():
    """No clock on a fine grid meets T0 at the chosen rank and spends less (oracle: grid)."""
    for seed in range(200):
        s = small_instance(seed)
        if s.bandwidth_total_hz is not None:
            continue
        price, _, v = _prices(s, seed)
        res = solve_priced(s, price, 0.0, v)
        if res.extra["skipped"]:
            continue
        for i in np.flatnonzero(res.ranks > 0):
            one = s.subset([i])
            r = int(res.ranks[i])
            grid = np.linspace(one.f_max_hz[0] * 1e-3, one.f_max_hz[0], 4001)
            many = one.subset(np.zeros(grid.size, dtype=int))
            on_time = cost.latency(many, r, grid) <= s.latency_s
            energies = cost.energy(many, r, grid)[on_time]
            assert res.cost.energy_j[i] <= energies.min() * (1 + 1e-12)


def test_zero_prices_give_the_most_utility():
    """With empty queues the policy is the myopic optimum (per_device's objective)."""
    for seed in range(120):
        s = small_instance(seed)
        best = solve_per_device(s)
        res = solve_priced(s, np.zeros(s.n_devices), 0.0, 1.0, bandwidth_levels=3)
        if best.status != "optimal":
            assert res.extra["skipped"]
            continue
        assert res.objective_value == pytest.approx(best.objective_value, rel=1e-9), seed


def _random_run(seed: int) -> tuple[RoundPlanner, RunBudgets, int]:
    rng = np.random.default_rng(seed)
    s = small_instance(seed)
    if s.bandwidth_total_hz is not None and seed % 10:
        # One run in ten keeps its pool (each pooled round solves MILPs: the time goes there).
        s = s.replace(bandwidth_total_hz=None, noise_psd_w_per_hz=None)
    n = s.n_devices
    rounds = int(rng.integers(1, 6))
    per_round = float(np.max(s.energy_budget_j))
    total = per_round * rng.uniform(0.1, 3.0, n) if rng.random() < 0.5 else per_round * 1.5
    time_total = None
    if rng.random() < 0.3 and s.bandwidth_total_hz is None:
        time_total = s.latency_s * rounds * float(rng.uniform(0.2, 1.2))
    budgets = RunBudgets(total, time_total, n)
    policy = None
    if rng.random() < 0.7:
        v = None if rng.random() < 0.7 else float(rng.uniform(0.01, 100.0))
        policy = DriftPlusPenalty(s.samples, rounds, total, time_total, v, round_lengths=4)
    fading = RayleighBlockFading(large_scale=s.gain_ul)
    progress = None
    if s.objective == "log" and seed % 2 == 0:  # half the log runs buy predicted accuracy
        model = AccuracyModel("exp", "population", 0.9, 2.0, 3.0, participation=0.3)
        progress = Progress(model, s.samples)
        s = s.replace(objective="accuracy", device_value=progress.values(), rank_half=3.0)
    planner = RoundPlanner(s, fading, rng=rng, budgets=budgets, policy=policy, accuracy=progress)
    return planner, budgets, rounds


def test_no_device_spends_more_than_its_battery():
    """1000 random runs: populations, batteries, objectives (the accuracy objective among
    them), selection, pool on and off, time budgets, the policy or the myopic planner; every
    round's energy added up exactly."""
    over = 0
    trained = 0
    accuracy_runs = 0
    for seed in range(1000):
        planner, budgets, rounds = _random_run(seed)
        accuracy_runs += planner.system.objective == "accuracy"
        spent = [[] for _ in range(budgets.n_devices)]
        elapsed = []
        for rnd in range(1, rounds + 1):
            plan = planner.plan_round(rnd)
            if plan.stop:
                break
            if plan.result.cost is not None and plan.selected:
                trained += 1
                for i in plan.selected:
                    spent[i].append(float(plan.result.energy_j[i]))
                elapsed.append(float(np.max(plan.result.latency_s[plan.selected])))
        for i, parts in enumerate(spent):
            over += int(np.sum(parts) > budgets.energy_total_j[i])
        if budgets.time_total_s is not None:
            over += int(sum(elapsed) > budgets.time_total_s)
    assert over == 0
    assert trained > 500  # the runs do train
    assert accuracy_runs > 100


def test_the_policy_never_beats_the_offline_optimum():
    """The offline optimum bounds every online policy; the naive split is the weakest."""
    rows = {r["policy"]: r for r in against_offline(40)}
    for r in rows.values():
        assert r["best_ratio"] <= 1 + 1e-9
        assert r["overdrawn_devices"] == 0
    assert rows["drift_plus_penalty"]["mean_ratio"] > rows["naive split"]["mean_ratio"]


def test_queues_follow_their_recursion_and_resume_exactly():
    s = small_instance(7).replace(objective="sum", min_devices=1)
    s = s.replace(bandwidth_total_hz=None, noise_psd_w_per_hz=None, bandwidth_hz=s.bandwidth_hz)
    n = s.n_devices
    total = np.full(n, float(np.max(s.energy_budget_j)) * 2)
    states = [ChannelState(s.gain_ul * (0.5 + t), s.gain_dl * (0.5 + t % 2)) for t in range(6)]

    def planner() -> tuple[RoundPlanner, DriftPlusPenalty]:
        p = DriftPlusPenalty(s.samples, 6, total)
        return RoundPlanner(
            s, Replay(list(states)), budgets=RunBudgets(total, None, n), policy=p
        ), p

    straight, policy = planner()
    queue = np.zeros(n)
    plans = []
    for rnd in range(1, 7):
        plan = straight.plan_round(rnd)
        plans.append(plan)
        if plan.stop:
            break
        spent = (
            np.zeros(n)
            if plan.result.cost is None
            else np.where(plan.ranks > 0, plan.result.energy_j, 0.0)
        )
        queue = np.maximum(queue + spent - total / 6, 0.0)
        np.testing.assert_allclose(policy.energy_queue_j, queue, rtol=1e-12, atol=1e-12)
        assert (
            plan.policy is not None
            and plan.policy["energy_queue_j"] == policy.energy_queue_j.tolist()
        )
    resumed, _ = planner()
    for rnd in range(1, 4):
        resumed.plan_round(rnd)
    state = resumed.state()
    again, _ = planner()
    again.channel.at = 3  # the replayed channel's own position, as a checkpointed RNG would be
    again.load_state(state)
    for rnd in range(4, 4 + len(plans) - 3):
        p = again.plan_round(rnd)
        np.testing.assert_array_equal(p.ranks, plans[rnd - 1].ranks)


def test_bad_settings_are_refused():
    s = small_instance(1)
    with pytest.raises(ConfigError, match="energy_total_j, time_total_s"):
        DriftPlusPenalty(s.samples, 3)
    with pytest.raises(ConfigError, match="policy_v"):
        DriftPlusPenalty(s.samples, 3, 1.0, v=-1.0)
    with pytest.raises(ConfigError, match="energy_price"):
        solve_priced(s, -1.0)
    with pytest.raises(ConfigError, match="v ="):
        solve_priced(s, 0.0, v=0.0)
