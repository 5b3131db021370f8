"""Whole-run budget policies against the offline optimum, and the planner at scale.

``fsl-opt bench budget-policy`` prints two tables (and writes them as CSV):

1. **Against the offline optimum.** Small runs (2-3 devices, 3-5 rounds, ranks up to 6,
   objective ``sum`` or ``log``, at least one device a round, no pool), each with a known
   channel sequence (Rayleigh draws, replayed) and a battery share per device well below
   what spending E0 every round would take. The offline optimum knows every round's
   channels in advance: with these objectives the devices decouple, and each device's best
   ranks over the rounds within its battery are enumerated ((R + 1)^rounds choices). It
   bounds every online policy from above. Reported as a ratio of it, mean and worst:
   ``drift_plus_penalty`` (automatic V), ``myopic`` (each round its most until the battery
   is spent) and the naive split (E0 = the battery over the rounds, every round).
2. **The frontier's population, planned.** ``fsl-opt plan`` on the frontier experiment's
   population (six calibrated devices, two at half clock, ``sum`` with at least 4 a round,
   8 rounds) with batteries of 2, 4 and 6 rounds of E0, myopic against drift-plus-penalty,
   seeds 0-2: rounds trained, device-rounds, the sum of ranks and the energy spent.
3. **``fsl-opt plan`` at scale.** 10^4 devices x 100 rounds of the drift-plus-penalty
   policy (no pool) through :func:`~fsl_opt.federation.plan_run.plan`, records written:
   its seconds, the planner's share of them (the records' ``wall_time_s``), and one round
   of the myopic planner on the same system as the unit.
4. **``fsl-opt plan --target-accuracy`` at scale.** 10^4 devices (16 samples each) and
   the committed news4 accuracy model, a target of 0.88 within 12 rounds: the search over
   the energy price (each price a whole plan) against one round of the accuracy objective's
   myopic plan on the same system as the unit; the round it reaches the target, the prices
   tried, the energy.

``--parts`` picks among ``offline``, ``frontier``, ``scale`` and ``target``. Take it alone
on the machine; numpy's element-wise kernels use one thread.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from channels import preset_system
from channels.base import ChannelState
from experiments.provenance import warn_if_busy
from experiments.tables import write_csv
from fsl_opt.federation.drift_plus_penalty import DriftPlusPenalty
from fsl_opt.federation.planner import RoundPlanner
from fsl_opt.problem import cost
from fsl_opt.problem.budgets import RunBudgets
from fsl_opt.problem.presets import CALIBRATED
from fsl_opt.problem.system import System
from solvers.per_device import objective_value, utility
from solvers.priced import option_energy

if TYPE_CHECKING:
    from fsl_opt.federation.settings import RunConfig


@dataclass
class Replay:
    """A channel model that replays known rounds, in order (the offline oracle's)."""

    states: list[ChannelState]
    at: int = 0

    def draw(self, rng: np.random.Generator, n_devices: int) -> ChannelState:
        state = self.states[self.at]
        self.at += 1
        return state

    def mean(self, n_devices: int) -> ChannelState:
        return ChannelState(
            np.mean([s.gain_ul for s in self.states], axis=0),
            np.mean([s.gain_dl for s in self.states], axis=0),
        )


@dataclass(frozen=True)
class Instance:
    """A small run: its system (mean gains), each round's gains and the batteries."""

    system: System
    states: list[ChannelState]
    energy_total_j: NDArray[np.float64]

    @property
    def rounds(self) -> int:
        return len(self.states)

    def round_system(self, t: int) -> System:
        s = self.states[t]
        return self.system.replace(gain_ul=s.gain_ul, gain_dl=s.gain_dl)


def instance(seed: int) -> Instance:
    """A random small run (see the module)."""
    rng = np.random.default_rng(seed)
    n, rounds, top = int(rng.integers(2, 4)), int(rng.integers(3, 6)), int(rng.integers(3, 7))
    base = preset_system(CALIBRATED, n, rng).replace(max_rank=top)
    mid = max(1, top // 2)
    t0 = float(cost.latency(base, mid, base.f_max_hz).max() * rng.uniform(1.0, 1.6))
    timed = base.replace(latency_s=t0)
    f = np.minimum(cost.least_energy_frequency(timed, top), base.f_max_hz)
    e0 = float(cost.energy(timed, top, f).max() * rng.uniform(0.6, 1.2))
    system = timed.replace(
        energy_budget_j=np.full(n, e0),
        objective=str(rng.choice(["sum", "log"])),
        min_devices=1,
        samples=base.samples * rng.uniform(0.5, 1.5, n),
    )
    states = [
        ChannelState(base.gain_ul * rng.exponential(1.0, n), base.gain_dl * rng.exponential(1.0, n))
        for _ in range(rounds)
    ]
    battery = e0 * rounds * rng.uniform(0.2, 0.6, n)
    return Instance(system, states, battery)


def offline_optimum(inst: Instance) -> float:
    """The most utility any policy that knew every round's channels could get (see the
    module): per device, every choice of a rank per round within its battery."""
    total = 0.0
    tables = [option_energy(inst.round_system(t)) for t in range(inst.rounds)]
    w = inst.system.weights
    for i in range(inst.system.n_devices):
        choices = []
        for top, energy in tables:
            opts = [(0.0, 0.0)]
            opts += [
                (float(w[i] * utility(inst.system.objective, r)), float(energy[i, r - 1]))
                for r in range(1, int(top[i]) + 1)
                if np.isfinite(energy[i, r - 1])
            ]
            choices.append(opts)
        best = 0.0
        for combo in itertools.product(*choices):
            if math.fsum(e for _, e in combo) <= inst.energy_total_j[i]:
                best = max(best, math.fsum(u for u, _ in combo))
        total += best
    return total


def run_policy(inst: Instance, policy: str) -> tuple[float, NDArray[np.float64]]:
    """A policy's utility over the run (the objective summed over rounds, the run's
    weights) and each device's energy spent."""
    system, n = inst.system, inst.system.n_devices
    budgets, dpp = None, None
    if policy == "naive split":
        share = inst.energy_total_j / inst.rounds
        system = system.replace(energy_budget_j=np.minimum(system.energy_budget_j, share))
    else:
        budgets = RunBudgets(inst.energy_total_j, None, n)
    if policy == "drift_plus_penalty":
        dpp = DriftPlusPenalty(system.samples, inst.rounds, inst.energy_total_j)
    planner = RoundPlanner(system, Replay(inst.states), budgets=budgets, policy=dpp)
    value, spent = 0.0, np.zeros(n)
    for t in range(inst.rounds):
        plan = planner.plan_round(t + 1)
        if plan.stop:
            break
        ranks = plan.ranks
        value += objective_value(inst.system, ranks)
        if plan.result.cost is not None:
            spent += np.where(ranks > 0, plan.result.energy_j, 0.0)
    return value, spent


POLICIES = ("drift_plus_penalty", "myopic", "naive split")


def against_offline(count: int) -> list[dict[str, Any]]:
    """Each policy's utility as a share of the offline optimum over ``count`` runs."""
    ratios: dict[str, list[float]] = {p: [] for p in POLICIES}
    overdrawn = 0
    for seed in range(count):
        inst = instance(seed)
        best = offline_optimum(inst)
        if best <= 0:
            continue
        for p in POLICIES:
            value, spent = run_policy(inst, p)
            overdrawn += int(np.sum(spent > inst.energy_total_j))
            ratios[p].append(value / best)
    rows = []
    for p in POLICIES:
        r = np.array(ratios[p])
        rows.append(
            {
                "policy": p,
                "runs": r.size,
                "mean_ratio": float(r.mean()),
                "worst_ratio": float(r.min()),
                "best_ratio": float(r.max()),
                "overdrawn_devices": overdrawn,
            }
        )
    return rows


def _timed_plan(cfg: RunConfig) -> tuple[list[dict[str, Any]], float]:
    """``fsl-opt plan`` of ``cfg`` (its folder replaced): the records and the seconds."""
    from fsl_opt.federation.plan_run import plan

    started = time.perf_counter()
    records = plan(cfg, overwrite=True, progress=False)
    return records, time.perf_counter() - started


def at_scale(out: Path, devices: int, rounds: int) -> dict[str, Any]:
    """``fsl-opt plan``'s seconds for ``devices`` x ``rounds`` (drift-plus-penalty, a
    battery share per device), with one myopic round on the same system as the unit."""
    from fsl_opt.federation.settings import RunConfig

    cfg = RunConfig(
        model="tiny",
        devices=devices,
        rounds=rounds,
        objective="sum",
        aggregation="zero_pad",
        min_devices=1,
        energy_total_j=300.0,
        policy="drift_plus_penalty",
        out=str(out / "plan_at_scale"),
    )
    records, seconds = _timed_plan(cfg)
    _, unit = _timed_plan(cfg.replace(rounds=1, policy="myopic", out=str(out / "plan_one_round")))
    return {
        "devices": devices,
        "rounds": len(records),
        "seconds": seconds,
        "planning_s": float(sum(r["wall_time_s"] for r in records)),
        "one_myopic_round_s": unit,
        "ratio": seconds / unit,
    }


#: The accuracy model the target search plans with (committed, fitted on news4 runs).
TARGET_MODEL = Path(__file__).resolve().parents[1] / "examples" / "accuracy-minilm-news4.json"


def target_at_scale(out: Path, devices: int, target: float = 0.88) -> dict[str, Any]:
    """``fsl-opt plan --target-accuracy``'s seconds for ``devices`` (16 samples each, 12
    rounds at most), with one myopic round of the accuracy objective as the unit."""
    from fsl_opt.federation.settings import RunConfig

    cfg = RunConfig(
        devices=devices,
        rounds=12,
        samples_per_device=16,
        objective="accuracy",
        accuracy_model=str(TARGET_MODEL),
        aggregation="zero_pad",
        target_accuracy=target,
        out=str(out / "target_at_scale"),
    )
    records, seconds = _timed_plan(cfg)
    _, unit = _timed_plan(
        cfg.replace(rounds=1, target_accuracy=None, out=str(out / "target_one_round"))
    )
    reached = next(
        (r["round"] for r in records if (r.get("predicted_accuracy") or 0) >= target), None
    )
    return {
        "devices": devices,
        "target": target,
        "reached_round": reached,
        "energy_j": float(sum(r.get("total_energy_j") or 0.0 for r in records)),
        "seconds": seconds,
        "one_myopic_round_s": unit,
        "ratio": seconds / unit,
    }


def frontier_plans(out: Path, seeds: tuple[int, ...] = (0, 1, 2)) -> list[dict[str, Any]]:
    """The frontier population planned at three batteries by both policies (see the module)."""
    from experiments.frontier import POPULATION
    from fsl_opt.federation.plan_run import plan
    from fsl_opt.federation.settings import RunConfig

    population: dict[str, Any] = dict(POPULATION)
    base = RunConfig(
        **population,
        samples_per_device=128,
        rounds=8,
        objective="sum",
        min_devices=4,
        aggregation="zero_pad",
    )
    rows = []
    for seed in seeds:
        for battery in (2.0, 4.0, 6.0):
            for policy in ("myopic", "drift_plus_penalty"):
                folder = out / "frontier_plans" / f"s{seed}-b{battery:g}-{policy}"
                cfg = base.replace(
                    seed=seed, energy_total_rounds=battery, policy=policy, out=str(folder)
                )
                live = [r for r in plan(cfg, overwrite=True, progress=False) if not r.get("stop")]
                ranks = np.array([r["ranks"] for r in live]).reshape(-1, cfg.devices)
                rows.append(
                    {
                        "seed": seed,
                        "battery_rounds": battery,
                        "policy": policy,
                        "rounds_trained": sum(1 for r in live if r["selected_devices"]),
                        "device_rounds": int((ranks > 0).sum()),
                        "rank_sum": int(ranks.sum()),
                        "energy_j": float(sum(r.get("total_energy_j") or 0.0 for r in live)),
                    }
                )
    return rows


PARTS = ("offline", "frontier", "scale", "target")


def check_options(parts: tuple[str, ...] = PARTS, **_: Any) -> None:
    """Refuse an unknown part before any folder is made."""
    from experiments.registry import check_parts

    check_parts(parts, PARTS)


def main(out: str | Path, quick: bool = False, parts: tuple[str, ...] = PARTS) -> None:
    """The tables of ``parts``, printed and written to ``OUT/offline.csv``,
    ``OUT/frontier_plans.csv``, ``OUT/scale.csv`` and ``OUT/target.csv``."""
    from experiments.registry import check_parts

    check_parts(parts, PARTS)
    out = Path(out)
    warn_if_busy()
    if "offline" in parts:
        rows = against_offline(20 if quick else 200)
        for r in rows:
            print(
                f"{r['policy']:>20}: {r['runs']} runs, utility / offline optimum mean "
                f"{r['mean_ratio']:.3f}, worst {r['worst_ratio']:.3f}, best {r['best_ratio']:.3f}"
            )
        print(f"devices that spent more than their battery: {rows[0]['overdrawn_devices']}")
        write_csv(out / "offline.csv", rows)
    if "frontier" in parts:
        plans = frontier_plans(out, (0,) if quick else (0, 1, 2))
        for r in plans:
            print(
                f"frontier population, seed {r['seed']}, battery {r['battery_rounds']:g} "
                f"rounds, {r['policy']:>18}: {r['rounds_trained']} rounds trained, "
                f"{r['device_rounds']} device-rounds, rank sum {r['rank_sum']}, "
                f"{r['energy_j']:.0f} J"
            )
        write_csv(out / "frontier_plans.csv", plans)
    if "scale" in parts:
        scale = at_scale(out, 1000 if quick else 10_000, 10 if quick else 100)
        print(
            f"fsl-opt plan, {scale['devices']} devices x {scale['rounds']} rounds: "
            f"{scale['seconds']:.1f} s, of which planning {scale['planning_s']:.1f} s and the "
            f"rest records written and the model's shape ({scale['ratio']:.1f}x one myopic "
            f"round's plan, {scale['one_myopic_round_s']:.2f} s)"
        )
        write_csv(out / "scale.csv", [scale])
    if "target" in parts:
        t = target_at_scale(out, 1000 if quick else 10_000)
        print(
            f"fsl-opt plan --target-accuracy {t['target']}, {t['devices']} devices: "
            f"{t['seconds']:.1f} s ({t['ratio']:.1f}x one myopic round of the accuracy "
            f"objective, {t['one_myopic_round_s']:.2f} s); reached at round "
            f"{t['reached_round']} with {t['energy_j']:.0f} J"
        )
        write_csv(out / "target.csv", [t])
