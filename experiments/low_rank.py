"""A device at a low rank: does it add to a round, or take away?

The frontier's population (six ``calibrated`` devices, the first two at half their clock,
T0 = 1.5 T_ref, 128 samples each), 4 rounds, seeds 0-2, each device at a rank given per
device (``rank``), whatever the budgets say:

- ``weak devices out``: ranks 0, 0, 64, 64, 64, 64 (what selection does);
- ``weak at rank 4, zero_pad``: 4, 4, 64, 64, 64, 64, HetLoRA's zero padding (what the
  per-device policies do when the half-clock devices can afford only a low rank);
- ``weak at rank 4, rank_normalized``: the same ranks, each rank component averaged over
  the devices that hold it;
- ``every device at 64``: the two weak devices too (past their deadline: the question is
  what their samples buy, not what they cost).

The accuracy model values a device-round by its samples times its rank factor, so it
predicts that adding the weak devices at rank 4 helps a little. Zero padding counts them as
zeros in components 5 to 64, which multiplies those components by two thirds every round
(what the other devices learned there included). ``low-rank_detail.csv`` holds each run's
accuracy after every round beside the model's prediction for its ranks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from experiments.common import Experiment, Run, mean_range
from experiments.frontier import ACCURACY_MODEL, POPULATION

NAME = "low-rank"
WEAK = int(POPULATION["weak_devices"])
STRONG = int(POPULATION["devices"]) - WEAK
TOP = int(POPULATION["max_rank"])
#: name -> (rank of each weak device, aggregation)
CASES: dict[str, tuple[int, str]] = {
    "weak devices out": (0, "zero_pad"),
    "weak at rank 4, zero_pad": (4, "zero_pad"),
    "weak at rank 4, rank_normalized": (4, "rank_normalized"),
    "every device at 64": (TOP, "zero_pad"),
}


def label(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-")


#: The top rank of ``--quick`` (a pipeline check, also on the tiny test model).
QUICK_TOP = 16


def runs(seeds: list[int], quick: bool = False) -> list[Run]:
    """One run per case and seed (``quick``: the top rank :data:`QUICK_TOP`)."""
    top = QUICK_TOP if quick else TOP
    return [
        Run(
            label(name),
            name,
            i,
            s,
            {
                "rank": (min(weak, top),) * WEAK + (top,) * STRONG,
                "aggregation": aggregation,
            },
        )
        for s in seeds
        for i, (name, (weak, aggregation)) in enumerate(CASES.items())
    ]


def details(out: Path, specs: list[Run]) -> list[dict[str, Any]]:
    """Per run and round: the measured accuracy and the accuracy model's prediction for the
    ranks it trained (empty where the model's scope is not the run's: ``--quick``)."""
    from fsl_opt.errors import ConfigError
    from fsl_opt.federation.pilot import read_run
    from fsl_opt.problem.accuracy import AccuracyModel

    model = AccuracyModel.load(ACCURACY_MODEL)
    rows = []
    for spec in specs:
        folder = out / "runs" / f"{spec.label}-s{spec.seed}"
        log = folder / "log.jsonl"
        if not log.exists():
            continue
        recs = [json.loads(x) for x in log.read_text().splitlines() if x.strip()]
        predicted: list[float | str] = [""] * len(recs)
        try:
            history = read_run(folder, NAME)
            model.check_scope(history.scope, str(folder))
            predicted = [history.untuned, *model.predict(history.rounds, history.untuned)]
        except ConfigError:
            pass  # another scope (--quick) or no trained round: no prediction
        for r, p in zip(recs, predicted, strict=False):
            rows.append(
                {
                    "case": spec.group,
                    "seed": spec.seed,
                    "round": r["round"],
                    "ranks": " ".join(str(k) for k in r.get("ranks") or []),
                    "accuracy": r["test_accuracy"],
                    "predicted_accuracy": p,
                }
            )
    return rows


def _curve(detail: list[dict[str, Any]], case: str, key: str) -> tuple[list[int], list[Any]]:
    rounds = sorted({int(d["round"]) for d in detail if d["case"] == case})
    values = [
        [d[key] for d in detail if d["case"] == case and int(d["round"]) == r and d[key] != ""]
        for r in rounds
    ]
    return rounds, values


def draw(axes: Any, detail: list[dict[str, Any]]) -> None:
    """Measured accuracy per round (mean over seeds, band: min-max) and the model's
    prediction (dashed) for each case."""
    ax = axes[0]
    for case in CASES:
        rounds, values = _curve(detail, case, "accuracy")
        if not rounds:
            continue
        m, low, high = np.array([mean_range([float(v) for v in vs]) for vs in values]).T
        (line,) = ax.plot(rounds, m, "o-", ms=3, label=case)
        ax.fill_between(rounds, low, high, color=line.get_color(), alpha=0.12)
        p_rounds, predicted = _curve(detail, case, "predicted_accuracy")
        pairs = [
            (r, np.mean([float(v) for v in vs]))
            for r, vs in zip(p_rounds, predicted, strict=True)
            if vs
        ]
        if pairs:
            ax.plot(*zip(*pairs, strict=True), "--", color=line.get_color(), lw=1)
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy (band: seeds' range)")
    ax.set_title("dashed: the accuracy model's prediction", fontsize=9)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize=7)
    ax.grid(True, alpha=0.3)


def findings(detail: list[dict[str, Any]]) -> list[str]:
    """Per case: the final accuracy over seeds and the model's prediction; then what the
    weak devices at rank 4 cost against leaving them out, measured and predicted."""
    if not detail:
        return ["no runs"]
    last = max(int(d["round"]) for d in detail)
    final: dict[str, dict[int, float]] = {}
    guess: dict[str, list[float]] = {}
    for d in detail:
        if int(d["round"]) == last:
            final.setdefault(d["case"], {})[int(d["seed"])] = float(d["accuracy"])
            if d["predicted_accuracy"] != "":
                guess.setdefault(d["case"], []).append(float(d["predicted_accuracy"]))
    out = []
    for case in (c for c in CASES if c in final):
        seeds = final[case]
        m, low, high = mean_range(list(seeds.values()))
        shown = " / ".join(f"{seeds[s]:.3f}" for s in sorted(seeds))
        model = f"; the model predicts {np.mean(guess[case]):.3f}" if case in guess else ""
        out.append(
            f"{case}: final accuracy after round {last} {m:.3f} ({low:.3f}-{high:.3f}; seeds "
            f"{shown}){model}"
        )
    base, low_rank = "weak devices out", "weak at rank 4, zero_pad"
    if base in final and low_rank in final:
        common = sorted(set(final[base]) & set(final[low_rank]))
        gap = [final[low_rank][s] - final[base][s] for s in common]
        line = (
            f"adding the weak devices at rank 4 under zero_pad: {100 * np.mean(gap):+.1f} "
            f"points (per seed {', '.join(f'{100 * g:+.1f}' for g in gap)})"
        )
        if base in guess and low_rank in guess:
            told = np.mean(guess[low_rank]) - np.mean(guess[base])
            line += f"; the model predicts {100 * told:+.1f}"
        out.append(line)
    return out


EXPERIMENT = Experiment(
    name=NAME,
    title="A device at a low rank: zero padding against averaging each rank over its holders",
    runs=runs,
    draw=lambda axes, res: draw(axes, res.tables.get("detail", [])),
    findings=lambda res: findings(res.tables.get("detail", [])),
    settings=POPULATION,
    full=dict(rounds=4),
    seeds=(0, 1, 2),
    tables=lambda out, specs, rows: {"detail": details(out, specs)},
)
main = EXPERIMENT.main
