"""Fig. 2: test accuracy with LoRA on the first 3, a middle 3, the last 3 and all layers.

The paper (RoBERTa-base, AG News) finds all 12 > last 3 > middle 3 > first 3, and 24.8% for
the untuned model. Here each layer set trains at the same fixed rank so only the position
of the adapters differs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from experiments.common import Experiment, Run, mean_std

NAME = "fig2"
LAYER_SETS = ("first3", "middle3", "last3", "all")
RANK = 16


def runs(seeds: list[int]) -> list[Run]:
    """One run per layer set and seed, at rank 16."""
    return [
        Run(f"{ls}", ls, i, s, {"layers": ls, "rank": RANK})
        for s in seeds
        for i, ls in enumerate(LAYER_SETS)
    ]


def draw(axes: Any, rows: list[dict[str, Any]]) -> None:
    """Bars: mean final accuracy per layer set (dots: seeds); line: untuned model."""
    ax = axes[0]
    for i, ls in enumerate(LAYER_SETS):
        acc = [r["final_accuracy"] for r in rows if r["group"] == ls]
        if acc:
            ax.bar(i, np.mean(acc), color="tab:blue", alpha=0.8)
            ax.plot([i] * len(acc), acc, "k.", ms=5)
            ax.annotate(f"{np.mean(acc):.3f}", (i, np.mean(acc)), ha="center", va="bottom")
    untuned = [r["untuned_accuracy"] for r in rows]
    if untuned:
        ax.axhline(
            np.mean(untuned), color="tab:red", ls="--", label=f"untuned {np.mean(untuned):.3f}"
        )
        ax.legend(loc="lower right")
    ax.set_xticks(range(len(LAYER_SETS)), LAYER_SETS)
    ax.set_xlabel("layers with LoRA")
    ax.set_ylabel("test accuracy after training")
    ax.set_title(f"Fig. 2: adapter position (rank {RANK})")
    ax.set_ylim(0, 1)


def findings(rows: list[dict[str, Any]]) -> list[str]:
    """Does all > last3 > middle3 > first3 hold?"""
    acc = {
        ls: [r["final_accuracy"] for r in rows if r["group"] == ls]
        for ls in LAYER_SETS
        if any(r["group"] == ls for r in rows)
    }
    mean = {ls: mean_std(v)[0] for ls, v in acc.items()}
    order = sorted(mean, key=mean.get, reverse=True)  # type: ignore[arg-type]
    paper = ["all", "last3", "middle3", "first3"]
    untuned = float(np.mean([r["untuned_accuracy"] for r in rows])) if rows else float("nan")
    return [
        "mean final accuracy: "
        + ", ".join(f"{k} {mean_std(v)[0]:.3f} +- {mean_std(v)[1]:.3f}" for k, v in acc.items())
        + f"; untuned {untuned:.3f}",
        f"order observed: {' > '.join(order)}; the paper's order {' > '.join(paper)} "
        + ("holds" if order == paper else "does not hold"),
    ]


EXPERIMENT = Experiment(
    name=NAME,
    title="Fig. 2: accuracy vs position of the LoRA layers",
    runs=lambda seeds, quick: runs(seeds),
    draw=lambda axes, res: draw(axes, res.rows),
    findings=lambda res: findings(res.rows),
    # fp32: seeds 0 and 1 were made in fp32, before the experiments moved to bf16.
    full={"precision": "fp32"},
    details=lambda quick: {"rank": RANK},
)
main = EXPERIMENT.main
