"""The pilot: a few short runs spread to fit an accuracy model for a new model or data set.

``fsl-opt experiment pilot`` (with ``--model`` / ``--data`` for yours), then
``fsl-opt fit-accuracy runs/experiments/pilot --leave-out run --out accuracy.json``. Six
runs of four rounds at fixed ranks, each moving one thing the model's form has a parameter
for: the rank (2, 8, 32: the rank factor's half-point), the samples a device trains per
round (32 to 256 with two local epochs: the rate), the population (2, 3, 6 devices: the
participation exponent), and four rounds each to see the curve bend (the ceiling). On the
default model and data it is a few minutes on 2 cores.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from experiments.common import Experiment, Run

NAME = "pilot"
#: label: (devices, samples per device, rank, local epochs)
RUNS: dict[str, tuple[int, int, int, int]] = {
    "reference": (3, 128, 32, 1),
    "few-samples": (3, 32, 32, 1),
    "low-rank": (3, 128, 2, 1),
    "six-devices": (6, 64, 8, 1),
    "two-devices": (2, 128, 8, 1),
    "two-epochs": (3, 64, 8, 2),
}
QUICK_RUNS = ("reference", "low-rank")


def runs(seeds: list[int], quick: bool) -> list[Run]:
    chosen = QUICK_RUNS if quick else tuple(RUNS)
    out = []
    for s in seeds:
        for i, label in enumerate(chosen):
            devices, samples, rank, epochs = RUNS[label]
            changes = {
                "devices": devices,
                "rank": rank,
                "max_rank": 32,
                "local_epochs": epochs,
            }
            if not quick:
                changes["samples_per_device"] = samples
            out.append(Run(label, label, i, s, changes))
    return out


def draw(axes: Any, rows: list[dict[str, Any]]) -> None:
    ax = axes[0]
    labels = [r["label"] for r in rows]
    ax.bar(range(len(rows)), [r["final_accuracy"] for r in rows], color="tab:blue")
    if rows:
        ax.axhline(
            float(np.mean([r["untuned_accuracy"] for r in rows])),
            color="tab:red",
            ls="--",
            label="untuned",
        )
        ax.legend(loc="lower right")
    ax.set_xticks(range(len(rows)), labels, rotation=30, ha="right")
    ax.set_ylabel("test accuracy after the last round")
    ax.set_title("pilot runs (fit them with fsl-opt fit-accuracy)")
    ax.set_ylim(0, 1)


def findings(rows: list[dict[str, Any]]) -> list[str]:
    return [
        ", ".join(f"{r['label']} {r['final_accuracy']:.3f}" for r in rows),
        "fit: fsl-opt fit-accuracy THIS_FOLDER --leave-out run --out accuracy.json",
    ]


EXPERIMENT = Experiment(
    name=NAME,
    title="Pilot runs for an accuracy model",
    runs=runs,
    draw=lambda axes, res: draw(axes, res.rows),
    findings=lambda res: findings(res.rows),
    settings={"rounds": 4},
    full={"test_samples": 200},
    seeds=(0,),
)
main = EXPERIMENT.main
