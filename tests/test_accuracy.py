"""The accuracy model and the ``accuracy`` objective.

Oracles: a curve generated from known parameters (the fit must find them again), the
run-by-run prediction written out by hand, enumeration of every rank vector for the
per-round objective (with and without a pool, with selection) and for the budget policy's
priced round, and the committed runs for the leave-one-experiment-out errors.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from fsl_opt.errors import ConfigError
from fsl_opt.federation.pilot import read_run, same_scope
from fsl_opt.problem.accuracy import (
    AccuracyModel,
    History,
    Progress,
    Round,
    _Design,
    fit,
    fit_form,
    held_out,
)
from fsl_opt.problem.system import System
from solvers import solve
from solvers.priced import solve_priced
from tests.test_drift_plus_penalty import _enumerate, _prices
from tests.test_per_device import check_allocation, device_ok, oracle_bandwidth, small_instance

RESULTS = Path(__file__).resolve().parents[1] / "experiments" / "results"
TRUE = AccuracyModel(
    "exp", "population", ceiling=0.9, rate=4.0, rank_half=5.0, participation=0.2, untuned=0.25
)


def synthetic(model: AccuracyModel, runs: int, seed: int, noise: float = 0.0) -> list[History]:
    """Runs of random populations, participation and ranks, their accuracy from ``model``."""
    rng = np.random.default_rng(seed)
    out = []
    for j in range(runs):
        n = int(rng.integers(2, 8))
        rounds = []
        for _ in range(int(rng.integers(2, 9))):
            ranks = rng.integers(1, 65, n) * (rng.random(n) < 0.7)
            rounds.append(Round.of(rng.choice([64, 128, 256], n), ranks))
        a0 = 0.25 + rng.normal(0, 0.01)
        acc = model.predict(rounds, a0) + rng.normal(0, noise, len(rounds))
        out.append(History(f"run{j}", f"g{j % 4}", a0, rounds, acc))
    return out


def by_hand(model: AccuracyModel, h: History) -> list[float]:
    """The curve written out from the module's formula, one round at a time."""
    total, out = 0.0, []
    for rnd in h.rounds:
        on = [i for i in range(rnd.ranks.size) if rnd.ranks[i] > 0]
        s = sum(rnd.samples[i] * rnd.ranks[i] / (rnd.ranks[i] + model.rank_half) for i in on)
        count = {"sum": 1, "population": rnd.ranks.size, "average": max(len(on), 1)}
        k = 1.0 if model.pooling == "sum" else count[model.pooling] ** (model.participation - 1)
        total += k * s / 1000.0
        out.append(model.ceiling - (model.ceiling - h.untuned) * math.exp(-model.rate * total))
    return out


@pytest.mark.parametrize("pooling", ["sum", "population", "average"])
def test_prediction_matches_the_formula_by_hand(pooling):
    model = AccuracyModel(
        "exp", pooling, ceiling=0.88, rate=2.5, rank_half=7.0, participation=0.4, untuned=0.2
    )
    for h in synthetic(TRUE, 20, 1):
        assert model.predict(h.rounds, h.untuned) == pytest.approx(by_hand(model, h), abs=1e-12)
    # the fit's flattened form gives the same numbers
    hs = synthetic(TRUE, 20, 2)
    flat = np.concatenate([model.predict(h.rounds, h.untuned) for h in hs])
    assert _Design(hs).predict(model) == pytest.approx(flat, abs=1e-12)


def test_the_fit_finds_known_parameters_again():
    hs = synthetic(TRUE, 40, 3, noise=0.002)
    got = fit_form(hs, "exp", "population")
    assert got.ceiling == pytest.approx(TRUE.ceiling, abs=0.01)
    assert got.rate == pytest.approx(TRUE.rate, rel=0.1)
    assert got.rank_half == pytest.approx(TRUE.rank_half, rel=0.25)
    assert got.participation == pytest.approx(TRUE.participation, abs=0.05)
    assert got.fit["rmse"] < 0.003


def test_held_out_prefers_the_true_form():
    """Data made by the population form: its held-out error beats the sum form's."""
    hs = synthetic(TRUE, 32, 4, noise=0.003)
    right = held_out(hs, "exp", "population")
    wrong = held_out(hs, "exp", "sum")
    assert right.final_mean < 0.01 < wrong.final_mean
    model, scores = fit(hs, forms=[("exp", "sum"), ("exp", "population"), ("exp", "average")])
    assert model.form == "exp-population" and len(scores) == 3
    assert set(model.fit["held_out"]) == {"exp-sum", "exp-population", "exp-average"}


def test_work_to_reach_inverts_the_curve():
    for curve in ("exp", "power"):
        m = AccuracyModel(curve, "sum", ceiling=0.9, rate=3.0, rank_half=2.0, shape=1.5)
        for target in (0.3, 0.6, 0.85, 0.8999):
            w = m.work_to_reach(target)
            assert float(m.accuracy(w)) == pytest.approx(target, abs=1e-12)
        assert m.work_to_reach(0.9) == math.inf and m.work_to_reach(0.1) == 0.0


def test_device_values_are_the_first_order_gain():
    """v_i g(r) is the derivative of the curve times the device's work (finite differences)."""
    m = TRUE
    x = np.array([128.0, 256.0, 64.0])
    p = Progress(m, x)
    p.book([8, 0, 16])
    v = p.values()
    for i, r in ((0, 4), (1, 32), (2, 1)):
        ranks = np.zeros(3, dtype=np.int64)
        ranks[i] = r
        dw = m.work(Round.of(x, ranks))
        eps = 1e-6
        gain = (float(m.accuracy(p.work + eps * dw)) - p.predicted) / eps
        assert v[i] * r / (r + m.rank_half) == pytest.approx(gain, rel=1e-4)
    with pytest.raises(ConfigError, match="not a sum"):
        AccuracyModel("exp", "average", 0.9, 1.0, 1.0).device_values(0.0, x)


def test_a_model_file_round_trips_and_refuses_other_settings(tmp_path):
    m = AccuracyModel.from_dict({**TRUE.to_dict(), "scope": {"model": "minilm", "lr": 0.001}})
    path = tmp_path / "a.json"
    m.save(path)
    again = AccuracyModel.load(path)
    assert again == m
    again.check_scope({"model": "minilm", "lr": 0.001, "layers": "all"})
    with pytest.raises(ConfigError, match=r"lr = 0\.01 \(fitted for 0\.001\)"):
        again.check_scope({"model": "minilm", "lr": 0.01})
    path.write_text(json.dumps({**m.to_dict(), "ceiling": 2.0}))
    with pytest.raises(ConfigError, match="ceiling"):
        AccuracyModel.load(path)
    path.write_text("{}")
    with pytest.raises(ConfigError, match="not an accuracy model"):
        AccuracyModel.load(path)


# -- the accuracy objective against enumeration ------------------------------------------


def accuracy_instance(seed: int) -> System:
    """A small instance of every kind (pool or not, selection or not) with the accuracy
    objective: device values and a rank half-point drawn apart."""
    s = small_instance(seed)
    rng = np.random.default_rng(seed + 7919)
    return s.replace(
        objective="accuracy",
        device_value=rng.uniform(0.0, 1.0, s.n_devices) * rng.choice([1.0, 1e-6], s.n_devices)
        + 1e-9,
        rank_half=float(rng.choice([0.0, 0.5, 3.0, 20.0])),
    )


def value_by_hand(s: System, ranks) -> float:
    return float(
        sum(
            s.device_value[i] * r / (r + s.rank_half) if r > 0 else 0.0 for i, r in enumerate(ranks)
        )
    )


def enumerate_accuracy(s: System) -> float | None:
    n, m = s.n_devices, s.required_devices
    need = None
    if s.bandwidth_total_hz is not None:
        need = [[oracle_bandwidth(s, i, r) for r in range(s.max_rank + 1)] for i in range(n)]
    best = None
    for ranks in itertools.product(range(s.max_rank + 1), repeat=n):
        taking = [i for i, r in enumerate(ranks) if r > 0]
        if len(taking) < m or not taking:
            continue
        if need is None:
            if not all(device_ok(s, i, ranks[i], None) for i in taking):
                continue
        elif sum(need[i][ranks[i]] for i in taking) > s.bandwidth_total_hz:
            continue
        v = value_by_hand(s, ranks)
        best = v if best is None else max(best, v)
    return best


def test_the_accuracy_objective_equals_enumeration():
    kinds, checked = set(), 0
    for seed in range(400):
        s = accuracy_instance(seed)
        want = enumerate_accuracy(s)
        res = solve(s, "per_device")
        if want is None:
            assert res.status == "infeasible", (seed, res.message)
            continue
        assert res.status == "optimal", (seed, res.message)
        assert res.objective_value == pytest.approx(want, rel=1e-9, abs=1e-12), seed
        assert res.objective_value == pytest.approx(value_by_hand(s, res.ranks), abs=1e-12)
        check_allocation(s, res)
        kinds.add((s.bandwidth_total_hz is not None, s.min_devices is not None))
        checked += 1
    assert kinds == {(False, False), (False, True), (True, False), (True, True)}
    assert checked > 150


def test_the_budget_policy_round_equals_enumeration_with_the_accuracy_objective():
    """solve_priced on fixed bands: best of V u - sum p_i E_i - price T over every rank
    vector (tests/test_drift_plus_penalty.py's oracle, with the accuracy value by hand)."""
    checked = 0
    for seed in range(300):
        s = accuracy_instance(seed)
        if s.bandwidth_total_hz is not None:
            continue
        price, tp, v = _prices(s, seed)
        want = _enumerate(s, price, tp, v, value_by_hand)
        res = solve_priced(s, price, tp, v)
        assert res.status == "optimal"
        assert res.extra["value"] == pytest.approx(want, rel=1e-9, abs=1e-12), seed
        checked += 1
    assert checked > 80


def test_the_accuracy_objective_needs_device_values():
    s = small_instance(0)
    with pytest.raises(ConfigError, match="needs device_value"):
        s.replace(objective="accuracy")
    with pytest.raises(ConfigError, match=r"device_value\[device 0\]"):
        s.replace(objective="accuracy", device_value=np.full(s.n_devices, 0.0))


# -- committed runs -------------------------------------------------------------------------


#: Committed experiments of one scope (MiniLM, news4, the full runs' settings), re-made at
#: one commit (frontier-trace: the runs finished so far); a trace's runs among them.
COMMITTED = ("aggregators", "fig4", "fig5", "frontier-trace")


def committed_histories() -> list[History]:
    """Every finished run of :data:`COMMITTED` (one with a row in its experiment's CSV: a
    run still in progress in a working tree is not read)."""
    import csv

    runs = []
    for name in COMMITTED:
        table = RESULTS / name / f"{name}.csv"
        done = {f"{r['label']}-s{int(float(r['seed']))}" for r in csv.DictReader(table.open())}
        runs += [read_run(p) for p in sorted((RESULTS / name / "runs").iterdir()) if p.name in done]
    return runs


def test_committed_runs_read_as_histories():
    hs = committed_histories()
    assert len(hs) >= 40 and {h.group for h in hs} == set(COMMITTED)
    same_scope(hs)
    # a trace's unavailable devices and a selection's left-out devices trained nothing
    trace = next(h for h in hs if h.group == "frontier-trace")
    assert any((r.ranks == 0).any() for r in trace.rounds)
    assert all(0.0 < h.untuned < 0.5 and 0.0 <= h.accuracy.min() for h in hs)


def test_the_fitted_model_predicts_held_out_committed_runs():
    """Leave one experiment out over the committed frontier runs: the population form
    predicts the other experiment's final accuracy within a few points on average, and no
    worse than the form that adds every device's samples."""
    hs = committed_histories()
    pop = held_out(hs, "exp", "population")
    total = held_out(hs, "exp", "sum")
    assert pop.final_mean < 0.04
    assert pop.final_mean <= total.final_mean + 0.005


def test_extrapolation_is_named():
    m = AccuracyModel.from_dict(
        {**TRUE.to_dict(), "span": {"work": 2.0, "samples": 128.0, "rank": 64.0, "devices": 6.0}}
    )
    assert m.extrapolation(2.5, 128.0, 64, 6) == []
    said = m.extrapolation(4.0, 512.0, 128, 100)
    assert len(said) == 4 and "100 devices (the fitted runs' most: 6)" in said
