"""Figs. 4 and 5: accuracy against the deadline T0 or the energy budget E0, optimized
frequencies against two random baselines, each followed by the best rank for its clocks:

- ``random_frequency``, the paper's: f_i uniform on (0, f_max] each round. In the calibrated
  model most draws miss the deadline even at rank 1, so a round trains only when every
  device drew a fast enough clock;
- ``random_on_time``: f_i uniform on [f_lo,i(1), f_max], the clocks that can meet T0 at
  rank 1, so a round is skipped only when the energy budget rules the draw out.

The sweeps are wide enough that both baselines train in part of the rounds; the CSV's
``skipped_rounds`` and the findings say how many.

T0 and E0 are given as multiples of the workload's reference budgets (``RunConfig``:
the slowest device's delay at rank 16 and f_max, and the largest energy a device needs at
rank 16), so the same factors mean the same tightness for any model, data or preset;
the absolute values are in the CSV. Every method sees the same channel draws for a seed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from experiments.common import (
    Experiment,
    Run,
    by_group,
    mean_range,
    mean_std,
)

METHODS = {
    "bisection": "optimized f (bisection)",
    "random_on_time": "random f on time",
    "random_frequency": "random f (paper)",
}


def runs(
    field: str, factors: tuple[float, ...], seeds: list[int], fixed: dict[str, float]
) -> list[Run]:
    """Every (factor, method, seed), the other budget held at ``fixed``."""
    return [
        Run(f"{m}-{field}{x:g}", METHODS[m], x, s, {"method": m, field: x, **fixed})
        for s in seeds
        for x in factors
        for m in METHODS
    ]


def drawer(xlabel: str, title: str) -> Any:
    """A draw function: accuracy (mean and spread over seeds) and the mean rank chosen."""

    def draw(axes: Any, rows: list[dict[str, Any]]) -> None:
        acc, rank = by_group(rows), by_group(rows, "mean_rank")
        for group in METHODS.values():
            if group not in acc:
                continue
            xs = sorted(acc[group])
            for ax, data in ((axes[0], acc[group]), (axes[1], rank[group])):
                m, low, high = np.array([mean_range(data[x]) for x in xs]).T
                ax.plot(xs, m, "o-", label=group)
                ax.fill_between(xs, low, high, alpha=0.2)
        axes[0].set_ylabel("test accuracy after training")
        axes[1].set_ylabel("mean rank per round")
        for ax in axes:
            ax.set_xlabel(xlabel)
            ax.grid(True, alpha=0.3)
            ax.legend(title="mean over seeds; band: min-max", title_fontsize=8)
        axes[0].set_title(title)
        axes[1].set_title("rank chosen (0 = round skipped)")

    return draw


def findings(rows: list[dict[str, Any]], what: str) -> list[str]:
    """Per method: accuracy and share of rounds trained at each budget; does accuracy rise
    with the budget, and where is optimized above each baseline?"""
    acc = by_group(rows)
    skipped, rounds = by_group(rows, "skipped_rounds"), by_group(rows, "rounds")
    ranks = by_group(rows, "mean_rank")
    opt = acc.get(METHODS["bisection"], {})
    xs = sorted(opt)
    lines = []
    for group in METHODS.values():
        if group not in acc:
            continue
        parts = []
        for x in sorted(acc[group]):
            trained = 1 - np.sum(skipped[group][x]) / max(np.sum(rounds[group][x]), 1)
            m, sd = mean_std(acc[group][x])
            parts.append(
                f"x={x:g}: acc {m:.3f} +- {sd:.3f}, rank {np.mean(ranks[group][x]):.1f}, "
                f"{100 * trained:.0f}% of rounds trained"
            )
        lines.append(f"{group}: " + "; ".join(parts))
    if xs:
        m_opt = [float(np.mean(opt[x])) for x in xs]
        lines.append(
            f"optimized accuracy {'rises' if m_opt[-1] > m_opt[0] else 'does not rise'} with "
            f"{what} (first {m_opt[0]:.3f}, last {m_opt[-1]:.3f})"
        )
        for group in list(METHODS.values())[1:]:
            base = acc.get(group, {})
            common = [x for x in xs if x in base]
            gaps = [float(np.mean(opt[x]) - np.mean(base[x])) for x in common]
            if gaps:
                lines.append(
                    f"optimized - {group}: "
                    + ", ".join(
                        f"x={x:g}: {100 * g:+.1f} points" for x, g in zip(common, gaps, strict=True)
                    )
                )
    return lines


def declare(
    name: str,
    *,
    field: str,
    factors: tuple[float, ...],
    quick_factors: tuple[float, ...],
    fixed: dict[str, float],
    xlabel: str,
    title: str,
    what: str,
) -> Experiment:
    """A budget sweep: ``field`` (a budget factor) over ``factors``, the other budget held
    at ``fixed``, every method of :data:`METHODS` at each point."""
    return Experiment(
        name=name,
        title=title,
        runs=lambda seeds, quick: runs(field, quick_factors if quick else factors, seeds, fixed),
        draw=lambda axes, res: drawer(xlabel, title)(axes, res.rows),
        findings=lambda res: findings(res.rows, what),
        ncols=2,
        details=lambda quick: {
            "swept": field,
            "factors": list(quick_factors if quick else factors),
            "fixed": fixed,
        },
    )
