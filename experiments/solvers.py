"""Solver benchmark: wall time against the number of devices, and optimality gaps.

``fsl-opt bench solvers`` (or ``fsl-opt experiment solvers``) writes, under ``--out``:

- ``time.csv``: seconds per call of every solver at I = 3 .. 10^6 devices (the paper
  preset), plus the time of one vectorized feasibility evaluation of the cost model;
- ``gap.csv``: each solver's rank against exhaustive search on random instances;
- ``solvers.png`` drawn from the two CSVs, and ``summary.md`` with the headline ratios.

Every time is the median of repeated calls in this run; speed claims are ratios of times
taken in the same run (bisection / one evaluation, bisection / exhaustive).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from channels import preset_system
from experiments.provenance import stamp, warn_if_busy
from experiments.tables import read_csv, write_csv
from fsl_opt.problem import cost
from fsl_opt.problem.presets import PAPER
from fsl_opt.problem.result import SolveResult
from fsl_opt.problem.system import System
from solvers import SOLVERS, solve
from solvers.instances import random_system


def p1_methods() -> tuple[str, ...]:
    """The methods registered now that solve only the paper's problem P1 (the extended
    problem has its own benchmark, bench_per_device)."""
    return tuple(m for m in SOLVERS if not SOLVERS[m].has("extended"))


#: Largest I each solver is timed at (cvxpy and the MILP build a model per device).
MAX_DEVICES = {
    "bisection": 10**6,
    "exhaustive": 10**6,
    "max_frequency": 10**6,
    "random_frequency": 10**6,
    "random_on_time": 10**6,
    "bnb": 10**4,
    "milp": 300,
}
#: A solver's sweep stops once one call takes longer than this.
BUDGET_S = 30.0


def timeit(fn: Callable[[], Any], min_total_s: float = 0.3, max_reps: int = 50) -> float:
    """Median seconds per call over at least 3 calls and ``min_total_s`` (fewer if slow)."""
    times: list[float] = []
    while len(times) < 3 or (sum(times) < min_total_s and len(times) < max_reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
        if sum(times) > BUDGET_S:  # slow calls: fewer repeats, noise is small beside them
            break
    return float(np.median(times))


def _solve_seeded(system: System, method: str, seed: int) -> SolveResult:
    return solve(system, method, rng=np.random.default_rng(seed))


def time_sweep(sizes: list[int], seed: int) -> list[dict[str, Any]]:
    """Seconds per call of each solver and of one cost evaluation, for each I."""
    rows: list[dict[str, Any]] = []
    stopped: set[str] = set()
    bar = tqdm(total=len(sizes) * (len(p1_methods()) + 1), desc="time", unit="call", leave=False)
    for n in sizes:
        system = preset_system(PAPER, n, np.random.default_rng(seed))
        rank = solve(system).rank or 1
        t_eval = timeit(partial(cost.feasible, system, rank))
        rows.append(
            {
                "method": "one_evaluation",
                "n_devices": n,
                "seconds": t_eval,
                "rank": rank,
                "iterations": 1,
            }
        )
        bar.update()
        for method in p1_methods():
            bar.set_postfix(n=n, method=method)
            bar.update()
            if method in stopped or n > MAX_DEVICES[method]:
                continue
            res = solve(system, method, rng=np.random.default_rng(seed))
            seconds = timeit(partial(_solve_seeded, system, method, seed))
            rows.append(
                {
                    "method": method,
                    "n_devices": n,
                    "seconds": seconds,
                    "rank": res.rank,
                    "iterations": res.iterations,
                }
            )
            if seconds > BUDGET_S:
                stopped.add(method)
    bar.close()
    return rows


def gap_sweep(n_instances: int, seed: int) -> list[dict[str, Any]]:
    """Each solver's rank next to the exhaustive rank on random instances."""
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    for i in tqdm(range(n_instances), desc="gap", unit="instance", leave=False):
        system = random_system(rng)
        oracle = solve(system, "exhaustive").rank
        for method in p1_methods():
            if method == "exhaustive":
                continue
            r = solve(system, method, rng=np.random.default_rng(seed + i)).rank
            rows.append(
                {
                    "instance": i,
                    "method": method,
                    "rank": r,
                    "exhaustive": oracle,
                    "gap": oracle - r,
                }
            )
    return rows


def plot(out: Path) -> Path:
    """Draw ``solvers.png`` from ``time.csv`` and ``gap.csv``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times = read_csv(out / "time.csv")
    gaps = read_csv(out / "gap.csv")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for method in dict.fromkeys(r["method"] for r in times):
        pts = [(int(r["n_devices"]), float(r["seconds"])) for r in times if r["method"] == method]
        style = "k--" if method == "one_evaluation" else "o-"
        ax1.loglog(*zip(*pts, strict=True), style, label=method, ms=4)
    ax1.set_xlabel("devices I")
    ax1.set_ylabel("seconds per call")
    ax1.set_title("Wall time (paper preset)")
    ax1.grid(True, which="both", alpha=0.3)
    ax1.legend(fontsize=8, loc="lower right")
    methods = list(dict.fromkeys(r["method"] for r in gaps))
    mean_gap = [np.mean([int(r["gap"]) for r in gaps if r["method"] == m]) for m in methods]
    exact = [np.mean([r["gap"] == "0" for r in gaps if r["method"] == m]) for m in methods]
    ax2.bar(methods, mean_gap, color="tab:blue")
    for x, (g, e) in enumerate(zip(mean_gap, exact, strict=True)):
        ax2.annotate(f"{100 * e:.0f}% exact", (x, g), ha="center", va="bottom", fontsize=8)
    ax2.set_ylabel("mean rank gap to exhaustive")
    ax2.set_title(
        f"Rank gap to exhaustive ({len(gaps) // max(len(methods), 1)} random "
        "instances)\nmilp: 16 DVFS levels, pooled blocks (a discrete variant)"
    )
    ax2.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    path = out / "solvers.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def headline(times: list[dict[str, Any]]) -> dict[str, float]:
    """Bisection at the largest I against one evaluation, the log2 floor, and exhaustive."""
    n = max(int(r["n_devices"]) for r in times if r["method"] == "bisection")
    at = {r["method"]: r for r in times if int(r["n_devices"]) == n}
    t_eval = float(at["one_evaluation"]["seconds"])
    t_bis = float(at["bisection"]["seconds"])
    width = cost.communication_rank_bound(preset_system(PAPER, 3)).max() + 1
    floor_evals = math.ceil(math.log2(width))
    out = {
        "n_devices": n,
        "bisection_s": t_bis,
        "one_evaluation_s": t_eval,
        "bisection_over_one_evaluation": t_bis / t_eval,
        "floor_evaluations": floor_evals,
        "bisection_over_floor": t_bis / (floor_evals * t_eval),
    }
    if "exhaustive" in at:
        out["exhaustive_s"] = float(at["exhaustive"]["seconds"])
        out["exhaustive_over_bisection"] = out["exhaustive_s"] / t_bis
    return out


def main(out: str | Path, quick: bool = False, seed: int = 0) -> dict[str, float]:
    """Run both sweeps, write CSVs, then the PNG and summary from them."""
    out = Path(out)
    warn_if_busy()
    out.mkdir(parents=True, exist_ok=True)
    sizes = [3, 100, 10**4] if quick else [3, 10, 100, 300, 1000, 10**4, 10**5, 10**6]
    times = time_sweep(sizes, seed)
    write_csv(out / "time.csv", times)
    gaps = gap_sweep(20 if quick else 500, seed)
    write_csv(out / "gap.csv", gaps)
    plot(out)
    head = headline(times)
    meta = stamp(seed, quick=quick, sizes=sizes)
    lines = [
        "# Solver benchmark",
        "",
        f"Paper preset, seed {seed}, {meta['machine']}, commit {meta['commit']}.",
        "",
        f"- bisection at I = {head['n_devices']:,}: {head['bisection_s']:.3f} s = "
        f"{head['bisection_over_one_evaluation']:.1f} vectorized cost evaluations "
        f"(floor ceil(log2 R) = {head['floor_evaluations']}; ratio to floor "
        f"{head['bisection_over_floor']:.2f}x)",
    ]
    if "exhaustive_over_bisection" in head:
        lines.append(
            f"- exhaustive / bisection at the same I: {head['exhaustive_over_bisection']:.1f}x"
        )
    for m in dict.fromkeys(r["method"] for r in gaps):
        g = np.array([r["gap"] for r in gaps if r["method"] == m])
        lines.append(
            f"- {m}: exact on {100 * np.mean(g == 0):.1f}% of {len(g)} instances, "
            f"mean gap {g.mean():.2f}, worst {g.max()}"
        )
    lines += ["", "```json", json.dumps(meta, indent=1), "```", ""]
    (out / "summary.md").write_text("\n".join(lines))
    print("\n".join(lines[:-4]))
    return head
