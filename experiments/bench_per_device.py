"""The extended problem: how fast ``per_device`` solves it, and what each extension buys.

``fsl-opt bench per-device`` prints four tables (``--parts`` picks; each also as CSV):

1. Time against devices, as a ratio to one vectorized evaluation of the feasibility kernel
   (``cost.feasible``) on the same system, timed in the same run: no pool (``sum`` and
   ``shared`` with selection), a pool with ``shared``, and a pool with ``sum`` (the
   knapsack method; an answer not proven in time is ``limit``).
2. On a heterogeneous population (the ``calibrated`` preset, 20 devices, 3 of them weak:
   a quarter of the clock), per policy: the objective, the mean rank of the devices taking
   part, devices served, and the energy spent per unit of rank, for the paper's P1
   (``shared_all``), selection (``shared`` with min_devices = 17), per-device ranks
   (``sum``, ``log``), each without and with a pool, and the pool's equal split.
3. The pooled knapsack (``sum`` with a pool) on its two MILP backends, the same tables:
   CBC through pulp (what ``per_device`` used before) and HiGHS through
   ``scipy.optimize.milp`` (what it uses now): seconds, status and objective of each, and
   CBC's time as a multiple of HiGHS's.
4. The DVFS ``milp`` (16 levels, pooled resource blocks, the paper's population) on the
   same two backends, its own tables: seconds, status and rank of each.
5. ``pool-scale``: the pooled ``sum`` and ``log`` problems on the calibrated population at
   10^4..10^6 devices (a pool of 2 GHz per 10^5 devices, min_devices 1: many devices left
   out), as ``fsl-opt solve`` runs them: status, gap, seconds, and the seconds as a multiple
   of one vectorized evaluation of every device's least-bandwidth curve (the floor of any
   exact method: it reads every option's cost), timed in the same run; and at 100..2000
   devices the same problems against one HiGHS MILP over the whole table (60 s limit):
   equal where HiGHS proves its answer, at least its incumbent where it does not.

Take it alone on the machine (the thread count of numpy's BLAS does not matter here: the
kernel is element-wise).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from channels import preset_system
from experiments.provenance import warn_if_busy
from experiments.tables import write_csv
from fsl_opt.problem import cost
from fsl_opt.problem.presets import CALIBRATED
from fsl_opt.problem.result import SolveResult
from fsl_opt.problem.system import System
from solvers import solve


def population(n: int, seed: int = 0, weak: int = 0) -> System:
    """The calibrated preset with ``weak`` devices at a quarter of their clock."""
    # T0 and E0 chosen so that the devices' own largest ranks spread over about 17..61 and
    # the weak ones cannot train at all: the bucket effect in plain sight.
    s = preset_system(
        CALIBRATED, n, np.random.default_rng(seed), latency_s=35.0, energy_budget_j=20.0
    )
    f = np.array(s.f_max_hz)
    f[:weak] *= 0.25
    return s.replace(f_max_hz=f, max_rank=128)


def pooled(s: System, share: float = 1.0) -> System:
    """The same devices sharing a pool of ``share`` x their sub-bands, each up to 4 of them."""
    return s.replace(
        bandwidth_total_hz=float(s.bandwidth_hz.sum() * share),
        noise_psd_w_per_hz=s.noise_w / float(s.bandwidth_hz.mean()),
        bandwidth_hz=s.bandwidth_hz * 4,
    )


def _time(fn: Any, repeat: int = 3) -> float:
    best = np.inf
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return float(best)


def scaling(quick: bool) -> list[dict[str, Any]]:
    rows = []

    def row(case: str, system: System, n: int) -> None:
        one = _time(lambda: cost.feasible(system, 8))
        started = time.perf_counter()
        status = solve(system, "per_device").status
        t = time.perf_counter() - started
        rows.append(
            {"case": case, "devices": n, "status": status, "seconds": t, "evaluations": t / one}
        )

    for n in (100, 1000) if quick else (1000, 10_000, 100_000):
        # A tenth of the devices are weak and cannot train (and a few far ones neither):
        # every case needs 80% of the devices.
        s = population(n, weak=n // 10).replace(min_devices=int(0.8 * n))
        row("no pool, sum", s.replace(objective="sum"), n)
        row("no pool, shared", s, n)
        row("pool, shared", pooled(s), n)
    for n in (10, 30) if quick else (10, 50, 100, 200):
        weak = max(1, n // 10)
        s = population(n, weak=weak).replace(max_rank=32, min_devices=n - weak)
        row("pool, sum (MILP)", pooled(s).replace(objective="sum"), n)
    return rows


def policies(quick: bool) -> list[dict[str, Any]]:
    s = population(20, seed=1, weak=3)
    plans = {
        "P1: shared rank, every device": (s, "shared_all"),
        "selection: shared, 17 of 20": (s.replace(min_devices=17), "per_device"),
        "per-device ranks, sum": (s.replace(objective="sum", min_devices=17), "per_device"),
        "per-device ranks, log": (s.replace(objective="log", min_devices=17), "per_device"),
        "pool: shared rank, every device": (pooled(s), "shared_all"),
        "pool: shared, 17 of 20": (pooled(s).replace(min_devices=17), "per_device"),
        "pool: sum": (pooled(s).replace(objective="sum", min_devices=17), "per_device"),
        "pool: sum, equal split": (
            pooled(s).replace(objective="sum", min_devices=17),
            "equal_split",
        ),
    }
    rows = []
    for name, (system, method) in plans.items():
        res = solve(system, method)
        ranks = res.ranks if res.ranks is not None else np.zeros(system.n_devices, int)
        taking = ranks > 0
        energy = float(res.cost.energy_j.sum()) if res.cost is not None else 0.0
        rows.append(
            {
                "policy": name,
                "method": method,
                "status": res.status,
                "mean_rank": float(ranks[taking].mean()) if taking.any() else 0.0,
                "served": int(taking.sum()),
                "rank_sum": int(ranks.sum()),
                "energy_per_rank_j": energy / max(int(ranks.sum()), 1),
            }
        )
    return rows


def cbc_solver(time_limit_s: float | None) -> Any:
    """CBC through pulp: the ``cbcbox`` binary (``pulp[cbc]``), else pulp's bundled one."""
    import pulp

    solver = pulp.COIN_CMD(msg=False, timeLimit=time_limit_s)
    if solver.available():
        return solver
    return pulp.PULP_CBC_CMD(msg=False, timeLimit=time_limit_s)


def _cbc_dvfs(t: Any, max_rank: int, limit: float) -> tuple[str, int]:
    """The DVFS MILP (``milp``) on its tables through pulp + CBC (the baseline): status
    and rank."""
    import pulp

    prob = pulp.LpProblem("fsl_rank", pulp.LpMaximize)
    r = prob.add_variable("r", lowBound=1, upBound=max_rank, cat="Integer")
    prob += r
    w = {}
    for key in zip(*np.nonzero(t.table > 0), strict=True):
        w[key] = prob.add_variable("w_" + "_".join(map(str, key)), cat="Binary")
    for i in range(t.table.shape[0]):
        mine = [key for key in w if key[0] == i]
        prob += pulp.lpSum(w[key] for key in mine) == 1
        prob += r <= pulp.lpSum(int(t.table[key]) * w[key] for key in mine)
    if t.pool is not None:
        prob += pulp.lpSum(int(t.choices[i, n]) * v for (i, _, n), v in w.items()) <= t.pool
    prob.solve(cbc_solver(limit))
    status = pulp.LpStatus[prob.status]
    if status != "Optimal" or prob.sol_status != pulp.LpSolutionOptimal:
        return status, 0
    return "optimal", round(r.value())


def milp_backends(quick: bool) -> list[dict[str, Any]]:
    """The DVFS ``milp`` (16 levels, pooled resource blocks) on its own tables, CBC against
    HiGHS, on the paper's population."""
    from fsl_opt.problem.presets import get_preset
    from solvers.milp import dvfs_tables, solve_tables

    rows: list[dict[str, Any]] = []
    for n in (10, 100) if quick else (10, 100, 300):
        s = preset_system(get_preset("paper"), n, np.random.default_rng(0))
        t = dvfs_tables(s)
        if not rows:  # warm both up
            solve_tables(t, s.max_rank, 60.0)
            _cbc_dvfs(t, s.max_rank, 60.0)
        started = time.perf_counter()
        cbc_status, cbc_rank = _cbc_dvfs(t, s.max_rank, 60.0)
        cbc = time.perf_counter() - started
        started = time.perf_counter()
        highs_status, highs_rank, _, _, _ = solve_tables(t, s.max_rank, 60.0)
        highs = time.perf_counter() - started
        rows.append(
            {
                "devices": n,
                "binaries": int((t.table > 0).sum()),
                "cbc_s": cbc,
                "cbc_status": cbc_status,
                "cbc_rank": cbc_rank,
                "highs_s": highs,
                "highs_status": highs_status,
                "highs_rank": highs_rank,
                "cbc_over_highs": cbc / highs,
            }
        )
    return rows


def _cbc_knapsack(
    dev: np.ndarray, need: np.ndarray, gain: np.ndarray, n: int, m: int, room: float, limit: float
) -> tuple[str, float]:
    """The knapsack through pulp + CBC (the baseline): status and objective."""
    import pulp

    prob = pulp.LpProblem("knapsack", pulp.LpMaximize)
    x = [prob.add_variable(f"x_{j}", cat="Binary") for j in range(dev.size)]
    prob += pulp.lpSum(float(gain[j]) * x[j] for j in range(dev.size))
    for i in range(n):
        js = np.flatnonzero(dev == i)
        if js.size:
            prob += pulp.lpSum(x[j] for j in js) <= 1
    prob += pulp.lpSum(float(need[j]) * x[j] for j in range(dev.size)) <= room
    prob += pulp.lpSum(x) >= m
    prob.solve(cbc_solver(limit))
    status = pulp.LpStatus[prob.status]
    if status == "Optimal" and prob.sol_status != pulp.LpSolutionOptimal:
        return "not proven (time limit)", float("nan")
    if status != "Optimal":
        return status, float("nan")
    return "optimal", float(sum(gain[j] for j in range(dev.size) if (x[j].value() or 0) > 0.5))


def knapsack_backends(quick: bool) -> list[dict[str, Any]]:
    """CBC against HiGHS on the pooled knapsack's own tables (see the module)."""
    from solvers._common import NotProven, knapsack
    from solvers.per_device import knapsack_room, knapsack_tables

    rows = []
    # Warm both up (imports, the CBC binary's first start) before anything is timed.
    one = np.zeros(1, dtype=np.int64)
    knapsack(one, np.ones(1), np.ones(1), 1, 1, 2.0, 60.0)
    _cbc_knapsack(one, np.ones(1), np.ones(1), 1, 1, 2.0, 60.0)
    for n in (10, 30) if quick else (10, 50, 100, 200):
        weak = max(1, n // 10)
        s = pooled(population(n, weak=weak).replace(max_rank=32, min_devices=n - weak))
        s = s.replace(objective="sum")
        dev, _, need, gain = knapsack_tables(s)
        room = knapsack_room(s)
        m = s.required_devices
        started = time.perf_counter()
        cbc_status, cbc_value = _cbc_knapsack(dev, need, gain, n, m, room, 60.0)
        cbc = time.perf_counter() - started
        started = time.perf_counter()
        try:
            chosen = knapsack(dev, need, gain, n, m, room, 60.0)
            highs_status = "optimal" if chosen is not None else "infeasible"
            highs_value = float(gain[chosen].sum()) if chosen is not None else float("nan")
        except NotProven:
            highs_status, highs_value = "time limit", float("nan")
        highs = time.perf_counter() - started
        rows.append(
            {
                "devices": n,
                "binaries": int(dev.size),
                "cbc_s": cbc,
                "cbc_status": cbc_status,
                "cbc_objective": cbc_value,
                "highs_s": highs,
                "highs_status": highs_status,
                "highs_objective": highs_value,
                "cbc_over_highs": cbc / highs,
            }
        )
    return rows


def pool_scale(quick: bool) -> list[dict[str, Any]]:
    """Part 5 (see the module)."""
    from solvers._common import knapsack_solve
    from solvers.bandwidth_curve import curve_table
    from solvers.per_device import knapsack_room, knapsack_tables, reachable_ranks

    def calibrated(n: int, objective: str) -> System:
        s = preset_system(CALIBRATED, n, np.random.default_rng(0))
        return s.replace(
            bandwidth_total_hz=2e9 * n / 1e5,
            noise_psd_w_per_hz=s.noise_w / float(s.bandwidth_hz.mean()),
            objective=objective,
            min_devices=1,
        )

    rows: list[dict[str, Any]] = []

    def row(case: str, n: int, options: int, res: SolveResult, seconds: float, **more: Any) -> None:
        rows.append(
            {
                "case": case,
                "devices": n,
                "options": options,
                "status": res.status,
                "objective": res.objective_value,
                "bound": res.bound,
                "gap": res.gap,
                "core_options": res.extra.get("core_options"),
                "seconds": seconds,
                "curve_s": None,
                "over_curve": None,
                "milp_status": "",
                "milp_objective": None,
                "milp_s": None,
                **more,
            }
        )

    for n in (1000, 10_000) if quick else (10_000, 100_000, 1_000_000):
        for objective in ("sum", "log"):
            s = calibrated(n, objective)
            started = time.perf_counter()
            top = reachable_ranks(s)
            options = curve_table(s, top)[0].size
            floor = time.perf_counter() - started
            started = time.perf_counter()
            res = solve(s, "per_device")
            seconds = time.perf_counter() - started
            row(
                f"calibrated, pool, {objective}",
                n,
                options,
                res,
                seconds,
                curve_s=floor,
                over_curve=seconds / floor,
            )
            print(
                f"pool-scale {objective}, {n:>9,} devices ({options:,} options): {res.status}, "
                f"gap {res.gap:.2g}, {seconds:.2f} s = {seconds / floor:.2f}x the curve "
                f"({floor:.2f} s), core {res.extra.get('core_options')}",
                flush=True,
            )
    for n in (100, 300) if quick else (100, 500, 2000):
        for objective in ("sum", "log"):
            s = calibrated(n, objective)
            started = time.perf_counter()
            res = solve(s, "per_device")
            seconds = time.perf_counter() - started
            started = time.perf_counter()
            dev, _, need, gain = knapsack_tables(s)
            sol = knapsack_solve(dev, need, gain / s.weights.max(), n, 1, knapsack_room(s), 60.0)
            milp_s = time.perf_counter() - started
            milp_value = float(gain[sol.chosen].sum()) if sol.chosen is not None else None
            row(
                f"calibrated, pool, {objective}, against one MILP",
                n,
                dev.size,
                res,
                seconds,
                milp_status="optimal" if sol.proven else "limit",
                milp_objective=milp_value,
                milp_s=milp_s,
            )
            diff = res.objective_value - milp_value if milp_value is not None else float("nan")
            print(
                f"against one MILP, {objective}, {n:>5} devices: {res.status} "
                f"{res.objective_value:.12g} in {seconds:.2f} s; HiGHS "
                f"{'optimal' if sol.proven else 'limit'} {milp_value} in {milp_s:.2f} s; "
                f"ours minus HiGHS's {diff:.3g}",
                flush=True,
            )
    return rows


def power(quick: bool) -> list[dict[str, Any]]:
    """Part 6: transmit power as a decision (:mod:`fsl_opt.problem.power`) on the
    calibrated population (1000 devices, a seed each, its preset T0 and E0): at each device's
    own largest fixed-power rank, the energy with the least-energy (clock, power) against
    the fixed power at the least-energy clock (the saving per device: median and worst); the
    same at the paper's one shared rank (where all but the slowest device have time to
    spare); and each device's largest rank with power control against without."""
    from fsl_opt.problem.power import least_energy
    from solvers.per_device import max_ranks, power_controlled_ranks

    rows = []
    for seed in range(3 if quick else 10):
        s = preset_system(CALIBRATED, 200 if quick else 1000, np.random.default_rng(seed))
        fixed_rank = max_ranks(s)
        on = fixed_rank > 0
        r = np.maximum(fixed_rank, 1)
        f = cost.operating_frequency(s, r)
        fixed_e = cost.energy(s, r, f)
        free_e = least_energy(s, r).energy_j
        saving = 1.0 - free_e[on] / fixed_e[on]
        # At the paper's one shared rank every device but the slowest has time to spare.
        shared = solve(s, "bisection").rank
        f_shared = cost.operating_frequency(s, shared)
        shared_saving = 1.0 - least_energy(s, shared).energy_j / cost.energy(s, shared, f_shared)
        free_rank = power_controlled_ranks(s)
        rows.append(
            {
                "seed": seed,
                "devices": s.n_devices,
                "training": int(on.sum()),
                "saving_median": float(np.median(saving)),
                "saving_min": float(saving.min()),
                "saving_max": float(saving.max()),
                "shared_rank": shared,
                "shared_saving_median": float(np.median(shared_saving)),
                "shared_saving_min": float(shared_saving.min()),
                "shared_saving_max": float(shared_saving.max()),
                "rank_fixed_mean": float(fixed_rank.mean()),
                "rank_free_mean": float(free_rank.mean()),
                "rank_gain_mean": float((free_rank - fixed_rank).mean()),
                "rank_gain_max": int((free_rank - fixed_rank).max()),
                "never_lower": bool(np.all(free_rank >= fixed_rank)),
            }
        )
        print(
            f"power, seed {seed}: at the fixed-power ranks energy saved median "
            f"{rows[-1]['saving_median']:.1%} (worst device {rows[-1]['saving_min']:.1%}, best "
            f"{rows[-1]['saving_max']:.1%}); at the shared rank {shared} median "
            f"{rows[-1]['shared_saving_median']:.1%} (worst {rows[-1]['shared_saving_min']:.1%}, "
            f"best {rows[-1]['shared_saving_max']:.1%}); mean rank "
            f"{rows[-1]['rank_fixed_mean']:.2f} -> "
            f"{rows[-1]['rank_free_mean']:.2f} under the same E0",
            flush=True,
        )
    return rows


#: The parts of ``fsl-opt bench per-device --parts``.
PARTS = ("scaling", "policies", "knapsack", "milp", "pool-scale", "power")


def check_options(parts: tuple[str, ...] = PARTS, **_: Any) -> None:
    """Refuse an unknown part before any folder is made."""
    from experiments.registry import check_parts

    check_parts(parts, PARTS)


def main(out: str | Path, quick: bool = False, parts: tuple[str, ...] = PARTS) -> None:
    """The tables ``parts`` names, printed and written to ``OUT/scaling.csv``,
    ``OUT/policies.csv`` and ``OUT/knapsack.csv``."""
    out = Path(out)
    warn_if_busy()
    wanted = set(parts)
    if "pool-scale" in wanted:
        write_csv(out / "pool_scale.csv", pool_scale(quick))
    if "power" in wanted:
        write_csv(out / "power.csv", power(quick))
    if "knapsack" in wanted:
        knap = knapsack_backends(quick)
        for r in knap:
            print(
                f"knapsack, {r['devices']:>4} devices ({r['binaries']} binaries): CBC "
                f"{r['cbc_s']:7.3f} s ({r['cbc_status']}, {r['cbc_objective']:.6g}), HiGHS "
                f"{r['highs_s']:7.3f} s ({r['highs_status']}, {r['highs_objective']:.6g}): "
                f"CBC {r['cbc_over_highs']:.1f}x HiGHS"
            )
        write_csv(out / "knapsack.csv", knap)
    if "milp" in wanted:
        dvfs = milp_backends(quick)
        for r in dvfs:
            print(
                f"milp (16 levels, pooled blocks), {r['devices']:>4} devices ({r['binaries']} "
                f"binaries): CBC {r['cbc_s']:7.3f} s ({r['cbc_status']}, rank {r['cbc_rank']}), "
                f"HiGHS {r['highs_s']:7.3f} s ({r['highs_status']}, rank {r['highs_rank']}): "
                f"CBC {r['cbc_over_highs']:.1f}x HiGHS"
            )
        write_csv(out / "milp.csv", dvfs)
    if "scaling" not in wanted and "policies" not in wanted:
        return
    scale = scaling(quick) if "scaling" in wanted else []
    for r in scale:
        print(
            f"{r['case']:>18} {r['devices']:>7} devices ({r['status']}): {r['seconds']:8.3f} s = "
            f"{r['evaluations']:9.1f} kernel evaluations"
        )
    if scale:
        write_csv(out / "scaling.csv", scale)
    if "policies" not in wanted:
        return
    pol = policies(quick)
    for r in pol:
        print(
            f"{r['policy']:>34}: {r['status']:>10}, mean rank {r['mean_rank']:5.1f}, "
            f"served {r['served']:>2}, total rank {r['rank_sum']:>4}, "
            f"{r['energy_per_rank_j']:.3f} J per rank"
        )
    write_csv(out / "policies.csv", pol)
