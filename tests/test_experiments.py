"""Every experiment's --quick version: CSV rows, a PNG drawn from the CSV, a summary."""

import csv

import pytest

from experiments import aggregators, bench_aggregation, fig2, fig3, fig4, fig5, low_rank, solvers


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("FSL_OPT_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def rows(path):
    with path.open() as fh:
        return list(csv.DictReader(fh))


#: The quick experiments run on the random 4-layer model, a few seconds each, except one on
#: MiniLM (the model `fsl-opt experiment NAME --quick` loads), so the real path is covered.
TINY = {"model": "tiny"}


@pytest.mark.parametrize(
    ("module", "n_runs", "overrides"),
    [
        (fig2, 4, TINY),
        (fig3, 3, None),
        (fig4, 6, TINY),
        (fig5, 6, TINY),
        (aggregators, 5, TINY),
        (low_rank, 4, TINY),
    ],
)
def test_quick_experiment(tmp_path, module, n_runs, overrides):
    """One row per run, accuracies in [0, 1], PNG and summary written; a rerun adds nothing."""
    notes = module.main(tmp_path, quick=True, overrides=overrides)
    table = tmp_path / f"{module.NAME}.csv"
    got = rows(table)
    assert len(got) == n_runs
    assert all(0 <= float(r["final_accuracy"]) <= 1 for r in got)
    assert (tmp_path / f"{module.NAME}.png").stat().st_size > 10_000
    assert (tmp_path / "runs.png").stat().st_size > 10_000  # drawn by fsl-opt plot's code
    summary = (tmp_path / "summary.md").read_text()
    assert '"commit"' in summary and notes[0] in summary
    made = next(x for x in summary.splitlines() if x.startswith("- runs made at commit"))
    assert f": {n_runs} runs); tables" in made, made  # every run recorded its commit
    assert "not recorded" not in made
    module.main(tmp_path, quick=True, overrides=overrides)  # finished runs are not run again
    assert len(rows(table)) == n_runs


def test_budget_sweep_findings_name_every_method():
    """Figs. 4/5 findings: one line per method with its share of rounds trained, and the gap
    of the optimizer over each baseline, computed by hand from three rows."""
    from experiments.budget_sweep import METHODS, findings

    def row(group, x, acc, skipped):
        return {
            "group": group,
            "x": x,
            "final_accuracy": acc,
            "skipped_rounds": skipped,
            "rounds": 3,
            "mean_rank": 10.0,
        }

    got = findings(
        [
            row(METHODS["bisection"], 1.0, 0.80, 0),
            row(METHODS["random_on_time"], 1.0, 0.70, 1),
            row(METHODS["random_frequency"], 1.0, 0.25, 3),
        ],
        "T0",
    )
    assert got[0].startswith(METHODS["bisection"]) and "100% of rounds trained" in got[0]
    assert "67% of rounds trained" in got[1] and "0% of rounds trained" in got[2]
    assert got[-2].endswith("x=1: +10.0 points") and got[-1].endswith("x=1: +55.0 points")


def test_settings_written_with_a_named_solver_match_auto(tmp_path):
    """Results made when the default method was 'bisection' are the same settings as 'auto'
    for the paper's problem, but not for an extended one (auto runs per_device there)."""
    import json

    from experiments.common import _check_settings
    from fsl_opt.errors import ConfigError
    from fsl_opt.federation.settings import RunConfig

    old = {"experiment": "fig2", **RunConfig(method="bisection").to_dict()}
    old.pop("out")
    (tmp_path / "settings.json").write_text(json.dumps(old))
    _check_settings(tmp_path, "fig2", RunConfig())  # auto == bisection here: accepted
    extended = RunConfig(objective="sum", aggregation="zero_pad")
    theirs = {**old, **extended.to_dict(), "method": "bisection"}
    theirs.pop("out")
    (tmp_path / "settings.json").write_text(json.dumps(theirs))
    with pytest.raises(ConfigError, match="method"):
        _check_settings(tmp_path, "fig2", extended)


def test_quick_solver_benchmark(tmp_path):
    """Times for every solver, gaps against exhaustive, the headline ratios."""
    head = solvers.main(tmp_path, quick=True)
    assert head["bisection_over_floor"] > 0
    gaps = rows(tmp_path / "gap.csv")
    assert all(int(r["gap"]) == 0 for r in gaps if r["method"] in ("bisection", "bnb"))
    assert (tmp_path / "solvers.png").exists()


def test_quick_aggregation_benchmark(tmp_path):
    """Every registered aggregator timed on the default shape, as a fraction of a training
    round."""
    from fsl_opt.learning.registry import AGGREGATORS

    got = bench_aggregation.main(tmp_path, quick=True)
    names = list(AGGREGATORS)
    assert {"fedavg", "zero_pad", "rank_normalized", "svd", "stack"} <= set(names)
    assert [r["aggregation"] for r in got] == names
    assert all(0 < r["seconds"] < r["train_s"] and r["peak_mib"] >= 0 for r in got)
    assert len(rows(tmp_path / "aggregation.csv")) == len(names)


def test_quick_precision_experiment(tmp_path):
    """bf16 beside fp32 for both settings (one seed): a row each and a finding per setting."""
    import torch

    from experiments import precision
    from fsl_opt.learning.local import bf16_support

    if bf16_support(torch.device("cpu")):
        pytest.skip("this CPU has no native bf16")
    notes = precision.main(tmp_path, quick=True, seeds=[0])
    assert len(rows(tmp_path / "precision.csv")) == 4
    assert len(notes) == 2 and all("bf16" in n for n in notes)


def test_quick_frontier(tmp_path):
    """Every policy on the same channels (one seed): a row each, every round's point on the
    curves (each starting at zero cost), the budget view relative to P1, and the budget
    policy's runs within their budgets against the best other policy there."""
    from experiments import frontier

    notes = frontier.main(tmp_path, quick=True, seeds=[0], overrides=TINY)
    # --quick leaves out the accuracy policies (their model holds for the full settings)
    quick = {n for n, c in frontier.POLICIES.items() if c.get("objective") != "accuracy"}
    assert len(quick) == len(frontier.POLICIES) - 6
    assert len(rows(tmp_path / "frontier.csv")) == len(quick)
    curves = rows(tmp_path / "frontier_curves.csv")
    assert {r["policy"] for r in curves} == quick
    budget = {r["policy"]: r for r in rows(tmp_path / "frontier_budget.csv")}
    assert float(budget["P1"]["best_within_energy"]) == max(
        float(r["accuracy"]) for r in curves if r["policy"] == "P1"
    )
    starts = [r for r in curves if r["round"] == "0"]
    assert len(starts) == len(quick) and all(float(r["energy_j"]) == 0 for r in starts)
    assert notes[0].startswith("budgets: P1's whole-run energy")
    goal = rows(tmp_path / "frontier_goal.csv")
    assert [g["policy"] for g in goal] == list(frontier.BUDGET_POLICIES)
    for g in goal:  # each budget run spent at most its budget
        mine = [r for r in curves if r["policy"] == g["policy"]]
        key = "energy_j" if g["budget"] == "energy" else "latency_s"
        assert max(float(r[key]) for r in mine) <= float(g["budget_value"]) * (1 + 1e-9)
    assert any("goal" in n for n in notes)
    assert (tmp_path / "frontier.png").stat().st_size > 10_000


def test_the_operator_profile_finds_every_kind_it_names():
    """`bench training --parts ops` sorts a profile's operators by torch's names: a kind
    whose names a torch release renamed would read 0 s and make the products look like
    the whole pass. On the tiny model (plain attention: no fused attention kernel) every
    other kind takes time in some pass, the products in every one."""
    from experiments import bench_training

    rows = bench_training.op_profile(quick=True, model_name="tiny")
    assert {r["pass"] for r in rows} == {"train, dropout on", "train, dropout off", "evaluation"}
    for kind in set(bench_training.OP_KINDS) - {"fused attention"}:
        assert any(r[bench_training.op_column(kind)] > 0 for r in rows), kind
    for r in rows:
        assert r[bench_training.op_column("matrix products")] > 0, r
        assert r["other_ops_s"] >= 0 and r["wall_s"] > 0, r
        assert r["floor_if_products_only"] < r["over_floor"], r


def test_the_frontier_goal_holds_a_budget_policy_against_the_best_other_policy_by_mean(
    tmp_path,
):
    """Hand-made curves over two seeds: the best other policy is the one whose mean within
    the budget is highest (B: 0.85; each seed's luckiest would average 0.87), only
    points within each seed's own budget count, and the margin is the objective's."""
    import json

    from experiments.common import Run
    from experiments.frontier import ACCURACY_GOAL_MARGIN, goal_findings, goal_view

    dpp = {"policy": "drift_plus_penalty", "objective": "accuracy", "energy_total_rounds": 2}
    specs = [Run("dpp", "dpp", 0, s, dpp) for s in (0, 1)]
    specs += [Run(n, n, 0, s, {}) for n in ("A", "B") for s in (0, 1)]
    for s, battery in ((0, [50.0, 50.0]), (1, [60.0, 60.0])):  # budgets 100 J and 120 J
        folder = tmp_path / "runs" / f"dpp-s{s}"
        folder.mkdir(parents=True)
        (folder / "placement.json").write_text(json.dumps({"energy_total_j": battery}))

    def point(policy, seed, energy, accuracy):
        return {
            "policy": policy,
            "seed": seed,
            "energy_j": energy,
            "latency_s": 0.0,
            "accuracy": accuracy,
            "round": 1,
        }

    points = [
        point("dpp", 0, 90, 0.85), point("dpp", 1, 110, 0.835),
        point("A", 0, 100, 0.90), point("A", 1, 120, 0.70),  # mean 0.80, seed 0 lucky
        point("A", 1, 121, 0.99),  # beyond seed 1's budget: never counted
        point("B", 0, 80, 0.86), point("B", 1, 100, 0.84),  # mean 0.85
    ]  # fmt: skip
    (row,) = goal_view(tmp_path, specs, points)
    assert row["best_other"] == "B" and row["best_other_accuracy"] == pytest.approx(0.85)
    assert row["policy_accuracy"] == pytest.approx(0.8425)
    assert row["budget_value"] == pytest.approx(110.0) and row["margin"] == ACCURACY_GOAL_MARGIN
    assert row["goal_met"]  # 0.8425 >= 0.85 - 0.01; against each seed's luckiest (0.87) not
    assert row["policy_per_seed"] == "0.8500 / 0.8350"
    assert row["best_other_per_seed"] == "0.8600 / 0.8400"
    (line,) = goal_findings([row])
    assert line.endswith("goal met (2 seeds: 0.8500 / 0.8350 against 0.8600 / 0.8400)")
    points[0]["accuracy"], points[1]["accuracy"] = 0.84, 0.84  # exactly the margin below
    assert goal_view(tmp_path, specs, points)[0]["goal_met"]  # at most the margin: met
    points[4]["energy_j"] = 119.0  # now within seed 1's budget: A's mean 0.945
    (row,) = goal_view(tmp_path, specs, points)
    assert row["best_other"] == "A" and not row["goal_met"]


def test_low_rank_findings_by_hand():
    """The gap line: seed by seed, rank 4 under zero_pad less the weak devices left out
    (0.80 - 0.85 and 0.84 - 0.86: -5.0 and -2.0, mean -3.5), and the model's (+1.0)."""
    from experiments.low_rank import findings

    def row(case, seed, accuracy, predicted):
        return {
            "case": case,
            "seed": seed,
            "round": 4,
            "accuracy": accuracy,
            "predicted_accuracy": predicted,
        }

    got = findings(
        [
            row("weak devices out", 0, 0.85, 0.80),
            row("weak devices out", 1, 0.86, 0.80),
            row("weak at rank 4, zero_pad", 0, 0.80, 0.81),
            row("weak at rank 4, zero_pad", 1, 0.84, 0.81),
        ]
    )
    assert got[0].startswith("weak devices out: final accuracy after round 4 0.855 (0.850-0.860")
    assert got[-1] == (
        "adding the weak devices at rank 4 under zero_pad: -3.5 points (per seed -5.0, -2.0); "
        "the model predicts +1.0"
    )
