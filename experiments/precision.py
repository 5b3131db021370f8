"""bf16 against fp32: does the faster arithmetic cost accuracy?

Two settings, 3 seeds each, every run once in fp32 and once in bf16 (autocast of the
adapted layers' forward and backward and of the evaluation; adapters, optimizer and
aggregation in fp32):

- ``default``: the README's default run (3 devices x 256 samples, 1000 test samples,
  3 rounds, the solver choosing the rank);
- ``fig3-r16``: Fig. 3's setting at rank 16 (128 samples per device, 400 test samples,
  3 rounds, fixed rank 16).

The finding compares the mean final accuracy of bf16 and fp32 per setting (the bar: within
1 point) and the mean wall time of a run.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from experiments.common import (
    FULL,
    Experiment,
    Run,
    by_group,
    mean_std,
)
from fsl_opt.federation.settings import RunConfig

NAME = "precision"
SETTINGS: dict[str, dict[str, Any]] = {
    "default": {},
    "fig3-r16": {**FULL, "rank": 16},
}


def runs(seeds: list[int], quick: bool) -> list[Run]:
    """Each setting x precision x seed."""
    out = []
    for i, (name, changes) in enumerate(SETTINGS.items()):
        for precision in ("fp32", "bf16"):
            extra = {} if quick else changes
            out += [
                Run(f"{name}-{precision}", precision, i, s, {**extra, "precision": precision})
                for s in seeds
            ]
    return out


def draw(axes: Any, rows: list[dict[str, Any]]) -> None:
    """Mean final accuracy per setting, fp32 beside bf16, with the spread over seeds."""
    ax = axes[0]
    names = list(SETTINGS)
    for j, (group, pts) in enumerate(sorted(by_group(rows).items())):
        stats = [mean_std(pts.get(float(i), [np.nan])) for i in range(len(names))]
        xs = np.arange(len(names)) + (j - 0.5) * 0.35
        ax.bar(xs, [m for m, _ in stats], 0.35, yerr=[s for _, s in stats], label=group)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylim(0.5, 1.0)
    ax.set_ylabel("final test accuracy (mean over seeds)")
    ax.legend()
    ax.grid(True, axis="y", alpha=0.3)


def findings(rows: list[dict[str, Any]]) -> list[str]:
    """Per setting: bf16 minus fp32 in mean accuracy, and the time per run."""
    out = []
    for i, name in enumerate(SETTINGS):
        acc: dict[str, list[float]] = {}
        wall: dict[str, list[float]] = {}
        for r in rows:
            if int(r["x"]) == i:
                acc.setdefault(r["group"], []).append(float(r["final_accuracy"]))
                wall.setdefault(r["group"], []).append(float(r["wall_s"]))
        if "fp32" not in acc or "bf16" not in acc:
            continue
        (m32, s32), (m16, s16) = mean_std(acc["fp32"]), mean_std(acc["bf16"])
        gap = 100 * (m16 - m32)
        out.append(
            f"{name}: fp32 {m32:.4f} +- {s32:.4f}, bf16 {m16:.4f} +- {s16:.4f} "
            f"({len(acc['bf16'])} seeds): bf16 {gap:+.2f} points "
            f"({'within' if abs(gap) <= 1 else 'outside'} 1 point); a run took "
            f"{np.mean(wall['fp32']):.0f} s in fp32, {np.mean(wall['bf16']):.0f} s in bf16 "
            f"({np.mean(wall['fp32']) / np.mean(wall['bf16']):.2f}x)"
        )
    return out


def _full_base(changes: dict[str, Any]) -> RunConfig:
    """At full size the settings are the default run's (``SETTINGS`` adds the rest)."""
    return RunConfig(**changes)


EXPERIMENT = Experiment(
    name=NAME,
    title="bf16 against fp32",
    runs=runs,
    draw=lambda axes, res: draw(axes, res.rows),
    findings=lambda res: findings(res.rows),
    quick_seeds=(0, 1, 2),
    full_base=_full_base,
)
main = EXPERIMENT.main
