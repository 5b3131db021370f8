"""Fig. 3: test accuracy against the LoRA rank r from 4 to 128 (last 3 layers).

The paper finds accuracy rising up to about r = 32, then falling (over-fitting). Six rounds
(not the other figures' three) so that the low ranks have time to catch up: with three, a
larger rank mostly means faster early progress. Three seeds, so a fall past r = 32 can be
told from the spread.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import numpy as np

from experiments.common import (
    Experiment,
    Run,
    by_group,
    mean_range,
    mean_std,
)

NAME = "fig3"
RANKS = (4, 16, 32, 64, 128)
QUICK_RANKS = (1, 8, 64)
ROUNDS = 6


def runs(seeds: list[int], ranks: tuple[int, ...]) -> list[Run]:
    """One run per rank and seed."""
    return [
        Run(f"r{r}", "fixed rank", r, s, {"rank": r, "max_rank": max(ranks)})
        for s in seeds
        for r in ranks
    ]


def draw(axes: Any, rows: list[dict[str, Any]]) -> None:
    """Mean final accuracy against rank, with the spread over seeds."""
    ax = axes[0]
    for group, pts in by_group(rows).items():
        xs = sorted(pts)
        m, low, high = np.array([mean_range(pts[x]) for x in xs]).T
        ax.plot(xs, m, "o-", label=f"{group} (band: seeds' min-max)")
        ax.fill_between(xs, low, high, alpha=0.2)
    untuned = [r["untuned_accuracy"] for r in rows]
    if untuned:
        ax.axhline(
            float(np.mean(untuned)),
            color="tab:red",
            ls="--",
            label=f"untuned {np.mean(untuned):.3f}",
        )
    ax.set_xscale("log", base=2)
    xs = sorted({float(r["x"]) for r in rows})
    ax.set_xticks(xs, [f"{x:g}" for x in xs])
    ax.legend(loc="lower right")
    ax.set_xlabel("LoRA rank r")
    ax.set_ylabel("test accuracy after training")
    ax.set_title("Fig. 3: accuracy vs rank (last 3 layers)")
    ax.grid(True, alpha=0.3)


def findings(rows: list[dict[str, Any]]) -> list[str]:
    """Where does accuracy peak, and does it rise up to there?"""
    pts = by_group(rows).get("fixed rank", {})
    if not pts:
        return ["no runs"]
    xs = sorted(pts)
    m = [float(np.mean(pts[x])) for x in xs]
    peak = xs[int(np.argmax(m))]
    sd = {x: mean_std(pts[x])[1] for x in xs}
    rising = all(b >= a - 0.005 for a, b in pairwise(m[: xs.index(peak) + 1]))
    return [
        "mean final accuracy by rank: "
        + ", ".join(f"r={x:g}: {v:.3f} +- {sd[x]:.3f}" for x, v in zip(xs, m, strict=True)),
        f"peak at r = {peak:g} (paper: about 32); accuracy "
        + ("rises up to the peak" if rising else "does not rise steadily up to the peak")
        + ("" if peak == xs[-1] else ", then falls" if m[-1] < max(m) else ""),
    ]


EXPERIMENT = Experiment(
    name=NAME,
    title="Fig. 3: accuracy vs LoRA rank",
    runs=lambda seeds, quick: runs(seeds, QUICK_RANKS if quick else RANKS),
    draw=lambda axes, res: draw(axes, res.rows),
    findings=lambda res: findings(res.rows),
    full={"rounds": ROUNDS},
)
main = EXPERIMENT.main
