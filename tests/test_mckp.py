"""The pooled sum / log problems at scale: the least-bandwidth curve against bisection, the
knapsack's price-bound-core method against brute force, per case against full enumeration
with the hand-written model of tests/test_per_device.py, and the ``limit`` status."""

import itertools
import json
import math

import numpy as np
import pytest

from solvers import solve
from solvers.bandwidth_curve import curve_table
from solvers.instances import random_system
from solvers.mckp import solve_mckp
from solvers.per_device import (
    knapsack_tables,
    least_bandwidth,
    pool_room,
    reachable_ranks,
    solve_per_device,
)
from tests.test_per_device import check_allocation, oracle, small_instance


def pooled(s, rng, objective, some):
    """``s`` with a pool, the objective, and all devices or some of them required."""
    n = s.n_devices
    return s.replace(
        noise_psd_w_per_hz=s.noise_w / float(s.bandwidth_hz.mean()),
        bandwidth_total_hz=float(s.bandwidth_hz.sum() * rng.uniform(0.2, 1.5)),
        bandwidth_hz=s.bandwidth_hz * rng.uniform(1.0, 3.0, n),
        objective=objective,
        min_devices=int(rng.integers(1, n + 1)) if some else None,
    )


@pytest.mark.parametrize("objective", ["sum", "log"])
@pytest.mark.parametrize("some", [False, True], ids=["all", "selection"])
def test_pooled_problem_equals_enumeration_per_case(objective, some):
    """1000 small instances per case: the objective equals full enumeration (its own cost
    model and bisection), every allocation re-checks by hand and against the pool."""
    infeasible = 0
    for seed in range(1000):
        rng = np.random.default_rng([seed, some, objective == "log"])
        s = pooled(small_instance(int(rng.integers(1 << 31))), rng, objective, some)
        best = oracle(s)
        res = solve_per_device(s)
        if best is None:
            assert res.status == "infeasible", (seed, res.message)
            infeasible += 1
            continue
        assert res.status == "optimal", (seed, res.message)
        assert res.objective_value == pytest.approx(best, rel=1e-9, abs=1e-12), seed
        assert res.bound == pytest.approx(best, rel=1e-9, abs=1e-12)
        check_allocation(s, res)
    assert 0 < infeasible < 500  # both kinds of instance occur


def brute(dev, c, g, n, m, room):
    options = [[None] + [j for j in range(dev.size) if dev[j] == i] for i in range(n)]
    best = None
    for combo in itertools.product(*options):
        take = [j for j in combo if j is not None]
        if len(take) >= m and c[take].sum() <= room:
            best = max(best or 0.0, float(g[take].sum()))
    return best


def random_knapsack(rng):
    n = int(rng.integers(1, 5))
    dev, c, g = [], [], []
    for i in range(n):
        k = int(rng.integers(1, 4))
        costs = np.sort(rng.uniform(0, 10, k))
        if rng.random() < 0.3:
            costs = np.round(costs)  # ties
        w = rng.uniform(0.1, 1)
        steps = np.arange(1, k + 1)
        g += list(w * (np.log1p(steps) if rng.random() < 0.5 else steps))
        dev += [i] * k
        c += list(costs)
    return np.array(dev), np.array(c), np.array(g), n, int(rng.integers(0, n + 1))


def test_knapsack_equals_brute_force_and_limits_keep_a_true_bound():
    """1000 random multiple-choice knapsacks (ties, log and linear gains, a count): the
    method's answer equals brute force; with no room for an exact core (core_limit 0) the
    answer is feasible and its bound is at least the optimum."""
    limited = 0
    for seed in range(1000):
        rng = np.random.default_rng(seed)
        dev, c, g, n, m = random_knapsack(rng)
        room = float(rng.uniform(0, 20))
        best = brute(dev, c, g, n, m, room)
        a = solve_mckp(dev, c, g, n, m, room, 10.0)
        if best is None:
            assert not a.feasible and a.proven, seed
            continue
        assert a.feasible and a.proven, seed
        assert a.value == pytest.approx(best, abs=1e-12), seed
        chosen = a.chosen
        assert len(set(dev[chosen].tolist())) == chosen.size >= m
        assert c[chosen].sum() <= room
        b = solve_mckp(dev, c, g, n, m, room, 10.0, core_limit=0)
        if not b.feasible:
            assert not b.proven, seed  # a feasible instance is never called infeasible
            continue
        assert c[b.chosen].sum() <= room and b.value <= best + 1e-12
        assert b.bound >= best - 1e-12, seed
        limited += not b.proven
    assert limited > 50  # the limit path is taken, not only the proven one


def test_the_greedy_counterexample_is_solved():
    """The docs' knapsack where the greedy by gain per hertz takes 6: the method takes 9.8."""
    dev = np.array([0, 1, 1])
    c = np.array([6.0, 5.0, 10.0])  # options are cumulative: device 1 at 2 steps costs 10
    g = np.array([6.0, 4.9, 9.8])
    a = solve_mckp(dev, c, g, 2, 0, 10.0, 10.0)
    assert a.proven and a.value == pytest.approx(9.8) and a.chosen.tolist() == [2]


def test_curve_equals_bisection():
    """Newton's least bandwidth equals the 64-step bisection to 1e-9 on 200 random pooled
    systems (every device, every rank it can reach), and both find the same ranks out of
    reach."""
    worst, compared = 0.0, 0
    for seed in range(200):
        rng = np.random.default_rng(seed)
        s = pooled(random_system(rng, 5), rng, "sum", True)
        top = reachable_ranks(s)
        if top.sum() == 0:
            continue
        dev, rank, band = curve_table(s, top)
        ref = least_bandwidth(s.subset(dev), rank)
        assert np.array_equal(np.isfinite(band), np.isfinite(ref)), seed
        ok = np.isfinite(ref)
        worst = max(worst, float(np.max(np.abs(band[ok] / ref[ok] - 1), initial=0.0)))
        compared += int(ok.sum())
    assert compared > 10_000 and worst < 1e-9, worst


def test_curve_table_does_not_depend_on_its_chunks_or_threads(monkeypatch):
    """The table computed in small chunks on two threads (with the allocator's thresholds
    raised first) equals the one computed in one piece on one thread, bit for bit."""
    from solvers import bandwidth_curve

    s = calibrated(400, "sum")
    top = reachable_ranks(s)
    whole = curve_table(s, top, threads=1)
    monkeypatch.setattr(bandwidth_curve, "CHUNK", 997)
    assert top.sum() > 20 * 997
    chunked = curve_table(s, top, threads=2)
    for a, b in zip(whole, chunked, strict=True):
        np.testing.assert_array_equal(a, b)
    assert np.all(whole[2] > 0) and np.all(np.isfinite(whole[2]))  # reachable ranks only


def calibrated(n, objective, seed=1):
    from channels import preset_round
    from fsl_opt.problem.presets import get_preset

    s, _ = preset_round(get_preset("calibrated"), n, np.random.default_rng(seed))
    return s.replace(
        bandwidth_total_hz=2e9 * n / 1e5,
        noise_psd_w_per_hz=s.noise_w / float(s.bandwidth_hz.mean()),
        objective=objective,
        min_devices=1,
    )


def test_medium_instance_equals_the_milp():
    """100 calibrated devices sharing a pool that leaves some out: the same objective as one
    MILP over the whole table (HiGHS, proven), whose size the method does not need."""
    from solvers._common import knapsack_solve

    s = calibrated(100, "sum")
    res = solve(s, "per_device")
    dev, _rank, need, gain = knapsack_tables(s)
    room = min(pool_room(s.bandwidth_total_hz, 100), s.bandwidth_total_hz * (1 - 1e-9))
    sol = knapsack_solve(dev, need, gain / s.weights.max(), 100, 1, room, 60.0)
    assert sol.proven and res.status == "optimal"
    assert res.objective_value == pytest.approx(float(gain[sol.chosen].sum()), rel=1e-12)
    assert 0 < (res.ranks > 0).sum() < 100  # the pool leaves devices out
    check_allocation(s, res)


def test_solve_extends_a_preset_from_the_command_line(capsys):
    """`fsl-opt solve --preset calibrated --objective log --bandwidth-total-hz --min-devices`
    answers with the pool held, a bound and a gap; bad flags are one line each."""
    from fsl_opt.cli import main

    argv = ["solve", "--preset", "calibrated", "--devices", "100", "--objective", "log"]
    code = main([*argv, "--bandwidth-total-hz", "2e6", "--min-devices", "1", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code in (0, 4) and doc["status"] in ("optimal", "limit")
    assert doc["objective"] == "log" and doc["bound"] >= doc["objective_value"] > 0
    assert math.fsum(doc["bandwidth_hz"]) <= 2e6
    assert doc["gap"] <= 1e-6
    for extra, message in [
        (["--min-devices", "0"], "min_devices = 0: expected a value > 0"),
        (["--min-devices", "101"], "min_devices = 101: expected 1..100"),
        (["--noise-psd-w-per-hz", "1e-20"], "needs a pool"),
        (["--bandwidth-total-hz", "-1"], "bandwidth_total_hz = -1.0: expected a value >= 1"),
    ]:
        assert main(argv + extra) == 2
        assert message in capsys.readouterr().err


def test_a_search_stopped_early_says_so():
    """bnb out of nodes before any rank: error, saying so (never a limit without an
    allocation); an allocation stopped early: limit, feasible, its bound and gap kept."""
    from solvers._common import stopped_at_limit

    statuses = set()
    for seed in range(40):
        s = random_system(np.random.default_rng(seed), 3)
        res = solve(s, "bnb", max_nodes=1)
        statuses.add(res.status)
        if res.status == "error":
            assert "before any feasible rank was found" in res.message
            assert res.cost is None
    assert "error" in statuses
    s = random_system(np.random.default_rng(1), 3)
    exact = solve(s, "bisection")
    assert exact.status == "optimal"
    late = stopped_at_limit(exact, exact.rank + 3, "a test")
    assert late.status == "limit" and late.meets_constraints and not late.success
    assert late.bound == exact.rank + 3
    assert late.gap == pytest.approx(3 / (exact.rank + 3))
    assert "stopped by a test" in late.message
    assert late.to_dict()["gap"] == late.gap
