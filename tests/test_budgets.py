"""Whole-run budgets: no device ever spends more than its energy for the run, a device that
cannot pay for rank 1 is left out, and the run stops when its time is spent."""

import numpy as np
import pytest

from channels import RayleighBlockFading, preset_system
from fsl_opt.errors import ConfigError
from fsl_opt.federation.planner import RoundPlanner
from fsl_opt.federation.settings import RunConfig
from fsl_opt.problem.budgets import RunBudgets
from fsl_opt.problem.presets import CALIBRATED, PAPER


def _planner(seed, n, energy_total=None, time_total=None, extended=None, method="auto"):
    rng = np.random.default_rng(seed)
    system = preset_system(CALIBRATED if seed % 2 else PAPER, n, rng)
    if extended:
        extended = dict(extended)
        share = extended.pop("pool", None)
        if share is not None:
            extended["noise_psd_w_per_hz"] = system.noise_w / float(system.bandwidth_hz.mean())
            extended["bandwidth_total_hz"] = float(system.bandwidth_hz.sum() * share)
        system = system.replace(**extended)
    budgets = RunBudgets(
        None if energy_total is None else energy_total * system.energy_budget_j,
        None if time_total is None else time_total * system.latency_s,
        n,
    )
    return RoundPlanner(system, RayleighBlockFading(), method, None, rng, budgets=budgets)


def _draw_case(seed):
    """A random population, budgets and problem (pool or not, each objective)."""
    rng = np.random.default_rng(10_000 + seed)
    n = int(rng.integers(1, 7))
    extended = None
    if rng.random() < 0.5:
        objective = str(rng.choice(["shared", "sum", "log"]))
        extended = {"objective": objective, "min_devices": int(rng.integers(1, n + 1))}
        if objective == "shared" and rng.random() < 0.5:  # a pool (the knapsack's CBC is slow)
            extended["pool"] = float(rng.uniform(0.3, 1.2))
    energy_total = float(rng.uniform(0.3, 6.0))  # in units of the round budget E0
    time_total = float(rng.uniform(0.5, 8.0)) if rng.random() < 0.5 else None
    return n, extended, energy_total, time_total


@pytest.mark.parametrize("block", range(3))
def test_no_device_ever_spends_more_than_its_energy_for_the_run(block):
    """1000 random runs of 12 planned rounds (10 blocks of 100; populations of 1-6 devices
    of both presets, battery shares of 0.3-6 round budgets, half with a time budget, half
    the extended problem with each objective): every round's energy is within that round's
    energy left (exactly) and no device's total passes its battery; the account's energy
    left is never negative."""
    rounds_with_someone_left_out = 0
    for seed in range(block * 100, (block + 1) * 100):
        n, extended, energy_total, time_total = _draw_case(seed)
        p = _planner(seed, n, energy_total, time_total, extended)
        battery = p.budgets.energy_total_j.copy()
        spent = np.zeros(n)
        for rnd in range(1, 9):
            before = p.budgets.energy_left_j()
            plan = p.plan_round(rnd)
            if plan.stop:
                assert not plan.selected
                break
            taking = plan.ranks > 0
            if plan.result.cost is not None and taking.any():
                e = plan.result.energy_j
                assert np.all(e[taking] <= before[taking]), (seed, rnd)
                spent += np.where(taking, e, 0.0)
            if (~taking).any() and "left out" in plan.result.message:
                rounds_with_someone_left_out += 1
            assert min(plan.energy_left_j) >= 0.0
        assert np.all(spent <= battery * (1 + 1e-12)), (seed, spent, battery)
        np.testing.assert_allclose(p.budgets.spent_j, spent, rtol=1e-12)
    assert rounds_with_someone_left_out > 0  # the rule is exercised


def test_a_device_that_cannot_pay_for_rank_1_is_left_out():
    """Device 0's battery is nearly spent: it sits out while the others train on (the
    paper's shared rank among them), and the record's message says so."""
    p = _planner(0, 3, energy_total=5.0)
    p.budgets.spent_j[0] = p.budgets.energy_total_j[0] * (1 - 1e-12)
    plan = p.plan_round(1)
    assert plan.ranks[0] == 0 and plan.selected == [1, 2]
    assert "devices 0 left out" in plan.result.message
    assert plan.result.cost.energy_j[0] == 0.0


def test_the_run_stops_when_its_time_is_spent():
    """A time budget of 2.5 round deadlines: two full rounds, then a round within the 0.5
    deadline left (or a stop when none fits), then a stop; the time left never goes below
    0 and the elapsed time is the sum of the rounds' delays."""
    p = _planner(0, 3, time_total=2.5)
    t0 = p.system.latency_s
    delays = []
    for rnd in range(1, 10):
        plan = p.plan_round(rnd)
        if plan.stop:
            break
        assert plan.system.latency_s <= t0
        if plan.result.cost is not None and plan.selected:
            delays.append(float(plan.result.latency_s.max()))
        assert plan.time_left_s >= 0.0
    assert plan.stop and "time_total_s" in plan.stop
    assert sum(delays) <= 2.5 * t0
    assert p.budgets.elapsed_s == pytest.approx(sum(delays))
    assert rnd <= 4


def test_budgets_round_trip_through_the_planner_state():
    """A resumed planner spends what a straight one does."""
    a = _planner(3, 4, energy_total=2.0, time_total=5.0)
    a.plan_round(1)
    saved = a.state()
    straight = [a.plan_round(r) for r in (2, 3)]
    b = _planner(3, 4, energy_total=2.0, time_total=5.0)
    b.load_state(saved)
    resumed = [b.plan_round(r) for r in (2, 3)]
    for x, y in zip(straight, resumed, strict=True):
        assert x.energy_left_j == y.energy_left_j and x.time_left_s == y.time_left_s
        assert x.ranks.tolist() == y.ranks.tolist()


def test_settings_are_checked():
    assert RunConfig(energy_total_j=300, time_total_s=600).energy_total_j == 300.0
    with pytest.raises(ConfigError, match=r"energy_total_j = -1\.0"):
        RunConfig(energy_total_j=-1)
    with pytest.raises(ConfigError, match=r"time_total_s = 0\.0"):
        RunConfig(time_total_s=0)
    with pytest.raises(ConfigError, match="overdraw a battery"):
        RunConfig(rank=4, energy_total_j=10)


def test_a_training_run_stops_with_a_record_and_a_last_line(tmp_path, capsys):
    """`fsl-opt train --time-total-s` of about two rounds: the run ends early with a
    `budget_spent` record naming the budget, and the command's last lines say so; a resume
    of the stopped run changes nothing."""
    import json

    from fsl_opt.cli import main
    from tests.conftest import TINY_RUN

    config = tmp_path / "run.toml"
    config.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in TINY_RUN.items()))
    out = tmp_path / "run"
    argv = ["train", "--config", str(config), "--out", str(out), "--quiet", "--no-plot"]
    assert main([*argv, "--rounds", "1"]) == 0
    first = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    t0 = first[1]["latency_budget_s"]
    capsys.readouterr()
    out2 = tmp_path / "run2"
    argv2 = ["train", "--config", str(config), "--out", str(out2), "--quiet", "--no-plot"]
    assert main([*argv2, "--rounds", "6", "--time-total-s", str(2.2 * t0)]) == 0
    printed = capsys.readouterr().out
    recs = [json.loads(line) for line in (out2 / "log.jsonl").read_text().splitlines()]
    assert recs[-1]["status"] == "budget_spent" and "time_total_s" in recs[-1]["stop"]
    assert recs[-1]["round"] < 6
    assert f"stopped at round {recs[-1]['round']}" in printed
    assert all(r["time_left_s"] >= 0 for r in recs[1:])
    assert sum(r.get("round_latency_s", 0.0) for r in recs[1:-1]) <= 2.2 * t0
    before = (out2 / "log.jsonl").read_text()
    assert main([*argv2, "--rounds", "6", "--time-total-s", str(2.2 * t0), "--resume"]) == 0
    assert (out2 / "log.jsonl").read_text() == before


def test_a_fixed_rank_is_refused_by_one_rule_in_the_settings_and_the_planner():
    """The settings and the planner state the fixed-rank conflicts through one function: the
    same words for the same conflict."""
    from fsl_opt.federation.settings import RunConfig
    from fsl_opt.problem.budgets import check_fixed_rank

    cases = [
        ({"energy_total_j": 10.0}, {"battery": "energy_total_j"}),
        ({"energy_total_rounds": 2.0}, {"battery": "energy_total_rounds"}),
        ({"objective": "sum", "aggregation": "zero_pad"}, {"extended": True}),
    ]
    for settings, rule in cases:
        with pytest.raises(ConfigError) as from_settings:
            RunConfig(rank=8, **settings)
        with pytest.raises(ConfigError) as from_rule:
            check_fixed_rank(8, **rule)
        assert str(from_settings.value) == str(from_rule.value)
    check_fixed_rank(None, battery="energy_total_j", policy=True, extended=True)  # no rank
