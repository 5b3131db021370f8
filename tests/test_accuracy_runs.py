"""The accuracy model in runs and plans: predictions recorded and resumed, the accuracy
objective in `plan` and `train`, the cheapest plan to a target, `fsl-opt fit-accuracy`.

Oracles: the model's own prediction recomputed from the records' ranks, the planner's
decisions in `train`, every price the target search tried, the committed runs."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fsl_opt.errors import ConfigError
from fsl_opt.federation.loop import run
from fsl_opt.federation.pilot import read_run, run_scope, trained_ranks
from fsl_opt.federation.plan_run import TargetMissed, plan
from fsl_opt.federation.target import cheapest_plan, resolve_target
from fsl_opt.federation.workload import model_shape, shard_sizes
from fsl_opt.problem.accuracy import AccuracyModel, Round

RESULTS = Path(__file__).resolve().parents[1] / "experiments" / "results"


def model_for(cfg, path: Path, **changes) -> Path:
    m = AccuracyModel(
        "exp",
        "population",
        ceiling=0.9,
        rate=40.0,
        rank_half=2.0,
        participation=0.3,
        untuned=0.3,
        scope={**run_scope(cfg.to_dict()), **changes},
    )
    m.save(path)
    return path


def recomputed(model: AccuracyModel, cfg, records) -> list[float]:
    """The predictions from the records' ranks alone (the run's samples x epochs)."""
    x = np.full(cfg.devices, cfg.samples_per_device * cfg.local_epochs, dtype=float)
    rounds = [Round.of(x, trained_ranks(r, cfg.devices)) for r in records]
    return list(model.predict(rounds))


@pytest.fixture
def accuracy_cfg(tiny_cfg, tmp_path):
    path = model_for(tiny_cfg, tmp_path / "acc.json")
    return tiny_cfg.replace(
        objective="accuracy",
        accuracy_model=str(path),
        aggregation="zero_pad",
        min_devices=1,
        rounds=3,
        local_epochs=2,
    )


def test_plan_and_train_record_the_same_predictions(accuracy_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("FSL_OPT_CACHE", str(tmp_path / "cache"))
    cfg = accuracy_cfg
    planned = plan(cfg.replace(out=str(tmp_path / "plan")), progress=False)
    model = AccuracyModel.load(cfg.accuracy_model)
    got = [r["predicted_accuracy"] for r in planned]
    assert got == pytest.approx(recomputed(model, cfg, planned), abs=1e-12)
    assert all(b > a for a, b in itertools.pairwise(got))
    straight = run(cfg.replace(out=str(tmp_path / "a")), progress=False)
    for p, t in zip(planned, straight[1:], strict=True):
        assert p["ranks"] == t["ranks"] and p["predicted_accuracy"] == t["predicted_accuracy"]
    # resumed from a checkpoint after round 1: the same predictions (the progress is saved)
    run(cfg.replace(out=str(tmp_path / "b")), progress=False, stop_after=1)
    resumed = run(cfg.replace(out=str(tmp_path / "b")), resume=True, progress=False)
    assert [r.get("predicted_accuracy") for r in resumed] == [
        r.get("predicted_accuracy") for r in straight
    ]
    assert (tmp_path / "plan" / "plan.png").exists() is False  # plan() itself draws nothing


def test_a_model_for_other_settings_is_refused(tiny_cfg, tmp_path):
    path = model_for(tiny_cfg, tmp_path / "other.json", lr=0.5)
    cfg = tiny_cfg.replace(accuracy_model=str(path), out=str(tmp_path / "p"))
    with pytest.raises(ConfigError, match=rf"lr = {tiny_cfg.lr} \(fitted for 0\.5\)"):
        plan(cfg, progress=False)
    with pytest.raises(ConfigError, match="needs accuracy_model"):
        tiny_cfg.replace(objective="accuracy", aggregation="zero_pad")


def test_the_target_plan_is_the_cheapest_that_reaches_it(accuracy_cfg):
    cfg = accuracy_cfg.replace(rounds=8)
    shape, sizes = model_shape(cfg), shard_sizes(cfg)
    best, most, attempts = cheapest_plan(cfg, shape, sizes, 0.8, progress=False)
    assert best is not None and best.reached_round is not None
    acc = [r["predicted_accuracy"] for r in best.records]
    assert acc[-1] >= 0.8 and all(a < 0.8 for a in acc[:-1])
    assert len(best.records) == best.reached_round
    reaching = [a for a in attempts if a.reached_round is not None]
    assert len(reaching) > 3
    assert all(best.energy_j <= a.energy_j for a in reaching)
    # buying every useful device-round reaches it too, at no less energy
    assert most.reached_round is not None and most.energy_j >= best.energy_j
    # a price high enough to leave every device out reaches nothing
    assert any(a.reached_round is None for a in attempts)


def test_an_unreachable_target_says_the_best_reachable(accuracy_cfg, tmp_path):
    cfg = accuracy_cfg.replace(out=str(tmp_path / "t"))
    with pytest.raises(TargetMissed, match=r"not reachable within 3 rounds.*best reachable is 0\."):
        plan(cfg.replace(target_accuracy=0.95), progress=False)
    recs = [json.loads(x) for x in (tmp_path / "t" / "log.jsonl").read_text().splitlines()]
    assert len(recs) == 3 and recs[-1]["predicted_accuracy"] < 0.95
    with pytest.raises(ConfigError, match="objective = 'accuracy'"):
        accuracy_cfg.replace(objective="sum", target_accuracy=0.5)


def test_fit_accuracy_command(tmp_path):
    out = tmp_path / "acc.json"
    groups = [str(RESULTS / "fig4"), str(RESULTS / "fig5")]  # re-made, finished
    args = [sys.executable, "-m", "fsl_opt.cli", "fit-accuracy", *groups, "--out", str(out)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "held out one experiment at a time" in proc.stdout
    assert "<- kept" in proc.stdout and "fig5:" in proc.stdout
    model = AccuracyModel.load(out)
    assert model.separable and model.scope["model"] == "minilm"
    assert set(model.fit["groups"]) == {"fig4", "fig5"}
    again = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    # runs of other settings (the Flower benchmark's batch size) are refused, named
    mixed = [*args[:4], str(RESULTS / "fig4"), str(RESULTS / "flower")]
    mixed += ["--out", str(tmp_path / "m.json")]
    bad = subprocess.run(mixed, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "batch_size" in bad.stderr
    assert not (tmp_path / "m.json").exists()


def test_train_to_a_target_trains_the_cheapest_plan(accuracy_cfg, tmp_path, monkeypatch):
    """`train --target-accuracy`: the price and rounds the search found, trained; the same
    decisions as the plan the search kept, and energy_priced settings checked."""
    monkeypatch.setenv("FSL_OPT_CACHE", str(tmp_path / "cache"))
    cfg = accuracy_cfg.replace(rounds=8)
    best, _, _ = cheapest_plan(cfg, model_shape(cfg), shard_sizes(cfg), 0.8, progress=False)
    resolved = resolve_target(cfg.replace(target_accuracy=0.8, out=str(tmp_path / "t")), False)
    assert resolved.policy == "energy_priced" and resolved.energy_price == best.price
    assert resolved.rounds == best.reached_round
    trained = run(resolved, progress=False)[1:]
    assert [r["ranks"] for r in trained] == [r["ranks"] for r in best.records]
    # run() resolves a target itself: the same run from the unresolved settings
    again = run(cfg.replace(target_accuracy=0.8, out=str(tmp_path / "u")), progress=False)
    assert [r["ranks"] for r in again[1:]] == [r["ranks"] for r in trained]
    assert trained[-1]["predicted_accuracy"] >= 0.8
    with pytest.raises(ConfigError, match="energy_price"):
        cfg.replace(policy="energy_priced")
    with pytest.raises(ConfigError, match="objective = 'accuracy'"):
        cfg.replace(objective="sum", policy="energy_priced", energy_price=0.1)


def test_fit_accuracy_check_reports_a_models_errors_on_other_runs(tmp_path, capsys):
    """--check MODEL: the errors of a fitted model on runs it was not fitted to (a pilot's
    model on reuters8 against Fig. 3's rank sweep there), per experiment; a model of other
    data is refused by its scope."""
    from fsl_opt.cli import main

    model = tmp_path / "r8.json"
    pilot, sweep = str(RESULTS / "pilot-reuters8"), str(RESULTS / "fig3-reuters8")
    assert main(["fit-accuracy", pilot, "--leave-out", "run", "--out", str(model)]) == 0
    capsys.readouterr()
    assert main(["fit-accuracy", "--check", str(model), sweep]) == 0
    lines = capsys.readouterr().out.splitlines()
    row = next(x.split() for x in lines if x.strip().startswith("fig3-reuters8"))
    fitted = AccuracyModel.load(model)
    histories = [read_run(p) for p in sorted((RESULTS / "fig3-reuters8" / "runs").iterdir())]
    errors = [abs(fitted.predict(h.rounds, h.untuned)[-1] - h.accuracy[-1]) for h in histories]
    assert int(row[1]) == len(histories)
    assert float(row[2]) == pytest.approx(100 * np.mean(errors), abs=0.006)
    news4 = str(RESULTS.parents[1] / "examples" / "accuracy-minilm-news4.json")
    assert main(["fit-accuracy", "--check", news4, sweep]) == 2
    assert "data = 'reuters8' (fitted for 'news4')" in capsys.readouterr().err
    assert main(["fit-accuracy", "--check", str(model), sweep, "--out", "x.json"]) == 2


def test_a_plan_beyond_the_fitted_runs_says_so(tmp_path, capsys):
    """20 devices against a model fitted on runs of at most 6: one warning line naming it;
    within the fitted runs, none."""
    from fsl_opt.cli import main

    model = str(RESULTS.parents[1] / "examples" / "accuracy-minilm-news4.json")
    base = ["plan", "--accuracy-model", model, "--objective", "accuracy"]
    base += ["--aggregation", "zero_pad", "--rounds", "2", "--quiet", "--no-plot"]
    assert main([*base, "--devices", "20", "--out", str(tmp_path / "wide")]) == 0
    err = capsys.readouterr().err
    assert "extrapolates the accuracy model beyond its runs: 20 devices" in err
    assert (
        main(
            [*base, "--devices", "3", "--samples-per-device", "128", "--out", str(tmp_path / "in")]
        )
        == 0
    )
    assert "extrapolates" not in capsys.readouterr().err


def test_fit_accuracy_leaves_out_an_experiments_runs_in_progress(tmp_path, capsys):
    """An experiment's results folder: the runs its table lists are read; a run still in
    progress (a folder, no row yet) is left out with one line; an experiment with no
    finished run is refused by name. A run folder named alone is read as it is."""
    from fsl_opt.cli.fit_accuracy import collect

    exp = tmp_path / "frontier"
    for name in ("a-s0", "a-s1", "b-s0"):
        (exp / "runs" / name).mkdir(parents=True)
        (exp / "runs" / name / "log.jsonl").write_text("{}\n")
    (exp / "frontier.csv").write_text("label,seed,wall_s\na,0,1.0\nb,0.0,2.0\n")
    found = collect([str(exp)], [])
    assert [p.name for p, _ in found] == ["a-s0", "b-s0"]
    assert (
        "left out 1 run(s) in progress (no row in its table yet): a-s1" in capsys.readouterr().out
    )
    assert [p.name for p, _ in collect([str(exp / "runs" / "a-s1")], [])] == ["a-s1"]
    (exp / "frontier.csv").write_text("label,seed,wall_s\n")
    with pytest.raises(ConfigError, match="frontier: no finished run yet"):
        collect([str(exp)], [])
    (exp / "frontier.csv").unlink()  # no table: every run folder, as before
    assert len(collect([str(exp)], [])) == 3
