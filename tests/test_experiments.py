"""Every experiment's --quick version: CSV rows, a PNG drawn from the CSV, a summary."""

import csv

import pytest

from experiments import aggregators, bench_aggregation, fig2, fig3, fig4, fig5, solvers


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("FSL_OPT_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def rows(path):
    with path.open() as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize(
    ("module", "n_runs"), [(fig2, 4), (fig3, 3), (fig4, 4), (fig5, 4), (aggregators, 5)]
)
def test_quick_experiment(tmp_path, module, n_runs):
    """One row per run, accuracies in [0, 1], PNG and summary written; a rerun adds nothing."""
    notes = module.main(tmp_path, quick=True)
    table = tmp_path / f"{module.NAME}.csv"
    got = rows(table)
    assert len(got) == n_runs
    assert all(0 <= float(r["final_accuracy"]) <= 1 for r in got)
    assert (tmp_path / f"{module.NAME}.png").stat().st_size > 10_000
    assert (tmp_path / "runs.png").stat().st_size > 10_000  # drawn by fsl-opt plot's code
    summary = (tmp_path / "summary.md").read_text()
    assert '"commit"' in summary and notes[0] in summary
    module.main(tmp_path, quick=True)  # idempotent: finished runs are not run again
    assert len(rows(table)) == n_runs


def test_quick_solver_benchmark(tmp_path):
    """Times for every solver, gaps against exhaustive, the headline ratios."""
    head = solvers.main(tmp_path, quick=True)
    assert head["bisection_over_floor"] > 0
    gaps = rows(tmp_path / "gap.csv")
    assert all(int(r["gap"]) == 0 for r in gaps if r["method"] in ("bisection", "bnb"))
    assert (tmp_path / "solvers.png").exists()


def test_quick_aggregation_benchmark(tmp_path):
    """Every aggregator timed on the default shape, as a fraction of a training round."""
    got = bench_aggregation.main(tmp_path, quick=True)
    assert [r["aggregation"] for r in got] == ["fedavg", "zero_pad", "svd", "stack"]
    assert all(0 < r["seconds"] < r["train_s"] and r["peak_mib"] >= 0 for r in got)
    assert len(rows(tmp_path / "aggregation.csv")) == 4


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
    """Ten policies on the same channels (one seed): a row each, every round's point on the
    curves (each starting at zero cost), and the budget view relative to P1."""
    from experiments import frontier

    notes = frontier.main(tmp_path, quick=True, seeds=[0])
    assert len(rows(tmp_path / "frontier.csv")) == len(frontier.POLICIES)
    curves = rows(tmp_path / "frontier_curves.csv")
    assert {r["policy"] for r in curves} == set(frontier.POLICIES)
    budget = {r["policy"]: r for r in rows(tmp_path / "frontier_budget.csv")}
    assert float(budget["P1"]["best_within_energy"]) == max(
        float(r["accuracy"]) for r in curves if r["policy"] == "P1"
    )
    starts = [r for r in curves if r["round"] == "0"]
    assert len(starts) == len(frontier.POLICIES) and all(float(r["energy_j"]) == 0 for r in starts)
    assert notes[0].startswith("budgets: P1's whole-run energy")
    assert (tmp_path / "frontier.png").stat().st_size > 10_000
