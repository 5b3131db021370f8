"""What each allocation policy buys for the latency, energy and bytes it spends.

A heterogeneous population (six ``calibrated`` devices, two of them at half their clock,
T0 = 1.5 T_ref), the same seeds and therefore the same channel draws for every policy:

- ``P1``: the paper's problem, one shared rank for every device (bisection), FedAvg;
- ``sum`` / ``log``: a rank per device (maximize sum_i w_i r_i or sum_i w_i log(1 + r_i)),
  aggregated with ``zero_pad`` (the best of the per-device aggregators in the
  ``aggregators`` experiment), ``sum`` without and with a shared bandwidth pool (the
  devices' six sub-bands pooled), ``log`` with the pool. Without a pool nothing couples the
  devices: each one's rank is bounded by its own deadline and energy alone, so every
  increasing objective gives each device its largest feasible rank and ``log`` would repeat
  ``sum`` (seed 0 of the first frontier run showed the same curve);
- ``selection``: one shared rank, at least 4 of the 6 devices;
- baselines: a fixed rank 8 or 32 with least-energy clocks, every device at f_max, random
  clocks among those that meet T0 (``random_on_time``) and the paper's (0, f_max] draw;
- the budget policy (``drift_plus_penalty`` on the ``sum`` setting) with a battery of 2, 4
  and 6 rounds of E0 per device, and with 3 and 6 rounds of T0 for the whole run: each
  spends at most its budget, so its curve ends at the budget it was given;
- the ``accuracy`` objective (each round's predicted accuracy gain, by the accuracy model
  ``examples/accuracy-minilm-news4.json``), each round alone and under the same budgets.

Each run's log gives a curve: accuracy against cumulative modeled latency, cumulative
modeled energy and megabytes moved. ``frontier_curves.csv`` holds every point;
``frontier_budget.csv`` the best accuracy each policy reaches within the energy and the time
that the paper's P1 spends over the whole run (mean over seeds); the PNG draws the mean
curve of each policy over the seeds.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from experiments.common import Experiment, Run, mean_range, mean_std

NAME = "frontier"
POPULATION = dict(devices=6, weak_devices=2, weak_clock=0.5, latency_factor=1.5, max_rank=64)
#: Each device's sub-band; a pool is every device's pooled.
SUB_BAND_HZ = 180e3


#: The accuracy model the accuracy policies value device-rounds by (fitted on the MiniLM /
#: news4 runs, relative to the repository root where experiments run; its scope is the full
#: runs' settings, so ``--quick`` leaves those policies out).
ACCURACY_MODEL = "examples/accuracy-minilm-news4.json"


def budget_policies(min_devices: int, objective: str = "sum") -> dict[str, dict[str, Any]]:
    """The budget policy (drift-plus-penalty on the ``sum`` setting, or on the ``accuracy``
    objective) at batteries and time budgets in rounds of E0 and T0 (the full run has 8
    rounds), spanning the energy and time axes: each run spends at most its budget, so its
    curve ends within it."""
    base: dict[str, Any] = dict(
        objective=objective,
        min_devices=min_devices,
        aggregation="zero_pad",
        policy="drift_plus_penalty",
    )
    name = "budget policy"
    if objective == "accuracy":
        base["accuracy_model"] = ACCURACY_MODEL
        name = "accuracy budget policy"
    return {
        **{f"{name}, battery {b} rounds": dict(base, energy_total_rounds=b) for b in (2, 4, 6)},
        **{f"{name}, time {t} rounds": dict(base, time_total_rounds=t) for t in (3, 6)},
    }


def policies(devices: int, min_devices: int) -> dict[str, dict[str, Any]]:
    """Every policy for a population of ``devices`` (selection: at least ``min_devices``)."""
    pool = devices * SUB_BAND_HZ
    per_device = dict(objective="sum", min_devices=min_devices, aggregation="zero_pad")
    return {
        "P1": {},
        "sum": per_device,
        "sum + pool": dict(per_device, bandwidth_total_hz=pool),
        "log + pool": dict(per_device, objective="log", bandwidth_total_hz=pool),
        "selection": dict(min_devices=min_devices),
        "rank 8": dict(rank=8),
        "rank 32": dict(rank=32),
        "f_max": dict(method="max_frequency"),
        "random on time": dict(method="random_on_time"),
        "random (paper)": dict(method="random_frequency"),
        **budget_policies(min_devices),
        "accuracy": dict(per_device, objective="accuracy", accuracy_model=ACCURACY_MODEL),
        **budget_policies(min_devices, "accuracy"),
    }


BUDGET_POLICIES = budget_policies(4)
POLICIES = policies(6, 4)


def one_per_policy(
    seeds: list[int], table: dict[str, dict[str, Any]] | None = None, quick: bool = False
) -> list[Run]:
    """One run per policy and seed (``quick``: not the accuracy policies, whose model holds
    for the full runs' settings only)."""
    return [
        Run(label(name), name, i, s, changes)
        for s in seeds
        for i, (name, changes) in enumerate((table or POLICIES).items())
        if not (quick and changes.get("objective") == "accuracy")
    ]


def label(name: str) -> str:
    """A policy's run-folder label: its name with every other character a dash."""
    return "".join(c if c.isalnum() else "-" for c in name).strip("-")


def curves(out: Path, specs: list[Run]) -> list[dict[str, Any]]:
    """Every round of every run: cumulative latency, energy and MB moved, accuracy."""
    rows = []
    for spec in specs:
        log = out / "runs" / f"{spec.label}-s{spec.seed}" / "log.jsonl"
        if not log.exists():
            continue
        lat = eng = moved = 0.0
        for line in log.read_text().splitlines():
            if not line.strip():
                continue
            r = json.loads(line)
            lat += r.get("round_latency_s") or 0.0
            eng += r.get("total_energy_j") or 0.0
            moved += sum(r.get("uploaded_bytes") or []) + sum(r.get("downloaded_bytes") or [])
            rows.append(
                {
                    "policy": spec.group,
                    "seed": spec.seed,
                    "round": r["round"],
                    "latency_s": lat,
                    "energy_j": eng,
                    "mb_moved": moved / 1e6,
                    "accuracy": r["test_accuracy"],
                }
            )
    return rows


def _names(points: list[dict[str, Any]]) -> list[str]:
    """The policies in ``points``, in the order their runs were made."""
    return list(dict.fromkeys(p["policy"] for p in points))


def mean_curve(
    points: list[dict[str, Any]], key: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(mean x, mean accuracy, least and largest accuracy) per round over the seeds of one
    policy."""
    rounds = sorted({p["round"] for p in points})
    at = [[p for p in points if p["round"] == r] for r in rounds]
    xs = [np.mean([p[key] for p in ps]) for ps in at]
    m, low, high = np.array([mean_range([p["accuracy"] for p in ps]) for ps in at]).T
    return np.asarray(xs), m, low, high


def budget_view(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The best accuracy each policy reaches (mean over seeds) within P1's whole-run energy
    and within P1's whole-run time."""
    p1 = [p for p in points if p["policy"] == "P1"]
    if not p1:
        return []
    last = max(p["round"] for p in p1)
    e_star = float(np.mean([p["energy_j"] for p in p1 if p["round"] == last]))
    t_star = float(np.mean([p["latency_s"] for p in p1 if p["round"] == last]))
    out = []
    for name in _names(points):
        pts = [p for p in points if p["policy"] == name]
        seeds = sorted({p["seed"] for p in pts})

        def best(
            key: str, limit: float, pts: list[dict[str, Any]] = pts, seeds: list[int] = seeds
        ) -> tuple[float, float]:
            per_seed = [
                max(p["accuracy"] for p in pts if p["seed"] == s and p[key] <= limit * 1.0001)
                for s in seeds
            ]
            return mean_std(per_seed)

        (e_mean, e_sd), (t_mean, t_sd) = best("energy_j", e_star), best("latency_s", t_star)
        last_round = max(p["round"] for p in pts)
        final = mean_std([p["accuracy"] for p in pts if p["round"] == last_round])
        out.append(
            {
                "policy": name,
                "energy_budget_j": e_star,
                "best_within_energy": e_mean,
                "sd_within_energy": e_sd,
                "time_budget_s": t_star,
                "best_within_time": t_mean,
                "sd_within_time": t_sd,
                "final_accuracy": final[0],
                "sd_final": final[1],
                "energy_spent_j": float(
                    np.mean([p["energy_j"] for p in pts if p["round"] == last_round])
                ),
                "seeds": len(seeds),
            }
        )
    return out


def _style(name: str, i: int) -> dict[str, Any]:
    """A policy's line: one of twenty colors; dashed for the budget policy, dotted for the
    accuracy objective's budget policy (twenty policies outrun one color cycle)."""
    import matplotlib

    dash = ":" if name.startswith("accuracy budget") else "--" if name.startswith("budget") else "-"
    return {"color": matplotlib.colormaps["tab20"](i % 20), "linestyle": dash}


def draw(axes: Any, points: list[dict[str, Any]]) -> None:
    """Mean accuracy against cumulative latency, energy and MB moved, one line per policy;
    the fourth axes hold the legend."""
    for ax, key, label in zip(
        axes[:3],
        ("latency_s", "energy_j", "mb_moved"),
        ("cumulative modeled latency [s]", "cumulative modeled energy [J]", "MB moved"),
        strict=True,
    ):
        for i, name in enumerate(_names(points)):
            pts = [p for p in points if p["policy"] == name]
            if pts:
                x, y, low, high = mean_curve(pts, key)
                style = _style(name, i)
                ax.plot(x, y, marker="o", ms=3, label=name, **style)
                ax.fill_between(x, low, high, color=style["color"], alpha=0.08)
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy (mean over seeds, band: min-max)")
        ax.grid(True, alpha=0.3)
    # The legend has a panel of its own: twenty policies cover any corner of the curves.
    handles, labels = axes[0].get_legend_handles_labels()
    axes[3].axis("off")
    axes[3].legend(handles, labels, fontsize=7, loc="center left", frameon=False)


def findings(budget: list[dict[str, Any]]) -> list[str]:
    """One line per policy: the quality-under-budget view."""
    if not budget:
        return ["no runs"]
    e, t = budget[0]["energy_budget_j"], budget[0]["time_budget_s"]
    lines = [f"budgets: P1's whole-run energy {e:.0f} J and time {t:.0f} s (mean over seeds)"]
    for b in sorted(budget, key=lambda b: -b["best_within_energy"]):
        lines.append(
            f"{b['policy']}: best accuracy {b['best_within_energy']:.3f} +- "
            f"{b['sd_within_energy']:.3f} within the energy, {b['best_within_time']:.3f} +- "
            f"{b['sd_within_time']:.3f} within the time; final {b['final_accuracy']:.3f} +- "
            f"{b['sd_final']:.3f} for {b['energy_spent_j']:.0f} J ({b['seeds']} seeds)"
        )
    return lines


#: The budget policy's goal: at its budget, at most this far below the best other policy.
GOAL_MARGIN = 0.005
#: The accuracy objective's budget policy's goal (the best of a dozen policies' means sits
#: about half a point above an equal policy by chance alone at 400 test samples).
ACCURACY_GOAL_MARGIN = 0.01


def goal_view(out: Path, specs: list[Run], points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per budget-policy run group: its budget (the devices' batteries added up, or the
    run's time, from each run's ``placement.json``), its best accuracy, and the best other
    policy within that budget: each other policy's best accuracy within the budget of the
    same seed, its mean over the seeds, and the policy whose mean is highest (one policy
    over the same seeds, not each seed's luckiest). The goal is met when the budget policy's
    mean is at most :data:`GOAL_MARGIN` below it (:data:`ACCURACY_GOAL_MARGIN` for the
    accuracy objective's)."""
    budgeted = {
        s.group: s.changes for s in specs if s.changes.get("policy") == "drift_plus_penalty"
    }
    out_rows = []
    for name, changes in budgeted.items():
        # Its rivals: every policy but the budget policies of its own objective (the
        # accuracy objective's are held against the rank objective's too).
        objective = changes.get("objective")
        others = [
            n
            for n in _names(points)
            if not (n in budgeted and budgeted[n].get("objective") == objective)
        ]
        margin = ACCURACY_GOAL_MARGIN if objective == "accuracy" else GOAL_MARGIN
        key = "energy_j" if "energy_total_rounds" in changes else "latency_s"
        budgets, mine_best = [], []
        rivals: dict[str, list[float]] = {o: [] for o in others}
        for spec in (s for s in specs if s.group == name):
            folder = out / "runs" / f"{spec.label}-s{spec.seed}"
            mine = [p for p in points if p["policy"] == name and p["seed"] == spec.seed]
            if not mine or not (folder / "placement.json").exists():
                continue
            placed = json.loads((folder / "placement.json").read_text())
            budget = (
                float(np.sum(placed["energy_total_j"]))
                if key == "energy_j"
                else float(placed["time_total_s"])
            )
            budgets.append(budget)
            mine_best.append(max(p["accuracy"] for p in mine))
            for o in others:
                rivals[o].append(
                    max(
                        (
                            p["accuracy"]
                            for p in points
                            if p["policy"] == o
                            and p["seed"] == spec.seed
                            and p[key] <= budget * 1.0001
                        ),
                        default=float("nan"),
                    )
                )
        if not budgets:
            continue
        means = {o: float(np.mean(v)) for o, v in rivals.items() if v and not np.isnan(v).any()}
        best_other = max(means, key=lambda o: means[o]) if means else ""
        policy = float(np.mean(mine_best))
        rival = means.get(best_other, float("nan"))
        out_rows.append(
            {
                "policy": name,
                "budget": "energy" if key == "energy_j" else "time",
                "budget_value": float(np.mean(budgets)),
                "policy_accuracy": policy,
                "best_other_accuracy": rival,
                "best_other": best_other,
                # Each seed's, in the order of the specs: how much of a gap is one seed.
                "policy_per_seed": " / ".join(f"{a:.4f}" for a in mine_best),
                "best_other_per_seed": " / ".join(f"{a:.4f}" for a in rivals.get(best_other, [])),
                "margin": margin,
                "goal_met": bool(policy >= rival - margin - 1e-9),  # "at most margin below"
                "seeds": len(budgets),
            }
        )
    return out_rows


def _tables(out: Path, specs: list[Run], rows: list[dict[str, Any]]) -> dict[str, Any]:
    points = curves(out, specs)
    return {"curves": points, "budget": budget_view(points), "goal": goal_view(out, specs, points)}


def goal_findings(goal: list[dict[str, Any]]) -> list[str]:
    """One line per budget-policy group: met or not, by how much."""
    unit = {"energy": "J", "time": "s"}
    return [
        f"{g['policy']}: {g['policy_accuracy']:.3f} within {g['budget_value']:.0f} "
        f"{unit[g['budget']]}; the best other policy within it ({g['best_other']}) "
        f"{g['best_other_accuracy']:.3f}: goal {'met' if g['goal_met'] else 'NOT met'} "
        f"({g['seeds']} seeds"
        + (
            f": {g['policy_per_seed']} against {g['best_other_per_seed']})"
            if g.get("policy_per_seed")
            else ")"
        )
        for g in goal
    ]


def make_experiment(
    name: str,
    title: str,
    population: dict[str, Any],
    table: dict[str, dict[str, Any]],
    runs: Callable[[list[int], bool], list[Run]] | None = None,
    full: dict[str, Any] | None = None,
) -> Experiment:
    """A frontier: every policy of ``table`` on ``population``, 8 rounds, seeds 0-2
    (``runs``: the runs, where they are not :func:`one_per_policy`'s; ``full``: settings of
    the full size besides the 8 rounds)."""
    every = runs or (lambda seeds, quick: one_per_policy(seeds, table, quick))
    return Experiment(
        name=name,
        title=title,
        runs=every,
        draw=lambda axes, res: draw(axes, res.tables["curves"]),
        findings=lambda res: findings(res.tables["budget"]) + goal_findings(res.tables["goal"]),
        settings=population,
        full=dict(rounds=8, **(full or {})),
        seeds=(0, 1, 2),
        quick_seeds=(0, 1, 2),
        ncols=4,
        tables=_tables,
    )


EXPERIMENT = make_experiment(
    NAME, "Accuracy for the latency, energy and bytes each policy spends", POPULATION, POLICIES
)
main = EXPERIMENT.main
