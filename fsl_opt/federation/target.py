"""The cheapest plan to a target accuracy (``fsl-opt plan --target-accuracy A``).

With an accuracy model a plan's predicted accuracy rises with the work its rounds train
(:mod:`fsl_opt.problem.accuracy`), and every device-round costs energy. The least energy
to reach accuracy A is a problem over the whole run; its Lagrangian prices energy at
``price`` accuracy per joule, and each round then maximizes

    sum_i v_i g(r_i) - price * sum_i E_i(r_i)

over each device's rank (0: left out) and clock: the round's predicted accuracy gain less
its priced energy, exactly as the budget policy's round (:func:`solvers.priced.
solve_priced` with every device at one price, no queues). A low price buys every device-round
that helps (fewest rounds, most energy); a high one only the cheapest samples (more rounds,
less energy). :func:`cheapest_plan` plans the run at prices on a geometric grid, refined
around the best, stops each plan at the round whose predicted accuracy reaches A, and keeps
the plan that reaches it with the least energy within the run's rounds and whole-run
budgets. The per-round step is exact; the price is searched, so the plan is the cheapest
among the prices tried (reported with its neighbours' energies).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fsl_opt.errors import ConfigError
from fsl_opt.federation.context import plan_rounds
from fsl_opt.federation.runlog import round_record
from fsl_opt.federation.settings import RunConfig
from fsl_opt.federation.workload import maybe_tqdm, model_shape, shard_sizes

#: Prices tried first: this many on a geometric grid of 2 decades either side of the
#: reference price, then as many again around the best.
GRID = 13
REFINE = 8


@dataclass
class Attempt:
    """One price's plan: the records up to the round that reaches the target (or all)."""

    price: float
    records: list[dict[str, Any]] = field(default_factory=list)
    reached_round: int | None = None

    @property
    def energy_j(self) -> float:
        return math.fsum(r.get("total_energy_j") or 0.0 for r in self.records)

    @property
    def predicted(self) -> float:
        values = [r["predicted_accuracy"] for r in self.records if "predicted_accuracy" in r]
        return max(values, default=-math.inf)


def plan_at_price(
    cfg: RunConfig, shape: Any, sizes: list[int], price: float, target: float
) -> Attempt:
    """Plan ``cfg`` with every round priced at ``price``, stopping at the round whose
    predicted accuracy reaches ``target`` (or a whole-run budget's end, or the last round)."""
    priced = cfg.replace(policy="energy_priced", energy_price=float(price))
    planner = plan_rounds(priced, shape, sizes)[3]
    attempt = Attempt(price)
    for rnd in range(1, cfg.rounds + 1):
        decided = planner.plan_round(rnd)
        attempt.records.append(round_record(decided, rnd, {}, 0.0))
        if decided.stop:
            break
        if (decided.predicted_accuracy or -math.inf) >= target:
            attempt.reached_round = rnd
            break
    return attempt


def reference_price(cfg: RunConfig, shape: Any, sizes: list[int]) -> float:
    """Accuracy per joule of the first round at every device's largest rank: the scale the
    price grid is centred on."""
    priced = cfg.replace(rounds=1, policy="energy_priced", energy_price=0.0)
    planner = plan_rounds(priced, shape, sizes)[3]
    decided = planner.plan_round(1)
    assert planner.accuracy is not None
    gain = (decided.predicted_accuracy or 0.0) - planner.accuracy.untuned
    energy = float(np.nansum(decided.result.energy_j)) if decided.result.cost is not None else 0.0
    if energy <= 0 or gain <= 0:
        raise ConfigError(
            "no device can train in the first round at any price: the target is not reachable"
        )
    return gain / energy


def cheapest_plan(
    cfg: RunConfig, shape: Any, sizes: list[int], target: float, progress: bool = True
) -> tuple[Attempt | None, Attempt, list[Attempt]]:
    """The least-energy plan reaching ``target`` (None if no price reaches it), the plan
    that reaches the highest predicted accuracy (price 0: every useful device-round
    bought), and every attempt."""
    if cfg.objective != "accuracy" or not cfg.accuracy_model:
        raise ConfigError(
            "--target-accuracy plans with objective = 'accuracy' and an accuracy_model"
        )
    if cfg.policy != "myopic":
        raise ConfigError(
            f"--target-accuracy prices energy itself; policy = {cfg.policy!r} would decide the "
            "rounds instead: leave policy out (whole-run budgets still hold)"
        )
    if not 0.0 < target < 1.0:
        raise ConfigError(f"--target-accuracy {target!r}: expected an accuracy in (0, 1)")
    most = plan_at_price(cfg, shape, sizes, 0.0, target)
    attempts = [most]
    if most.reached_round is None:
        return None, most, attempts
    centre = reference_price(cfg, shape, sizes)
    grid = centre * np.logspace(-2, 2, GRID)
    for price in maybe_tqdm(list(grid), progress, "prices"):
        attempts.append(plan_at_price(cfg, shape, sizes, float(price), target))
    reached = [a for a in attempts if a.reached_round is not None]
    best = min(reached, key=lambda a: a.energy_j)
    # Refine between the best price's neighbours on the grid.
    prices = sorted(a.price for a in attempts if a.price > 0)
    if best.price > 0:
        j = prices.index(best.price)
        low = prices[j - 1] if j > 0 else best.price / 3
        high = prices[j + 1] if j + 1 < len(prices) else best.price * 3
        for price in maybe_tqdm(
            list(np.geomspace(low, high, REFINE + 2)[1:-1]), progress, "refine"
        ):
            attempts.append(plan_at_price(cfg, shape, sizes, float(price), target))
    reached = [a for a in attempts if a.reached_round is not None]
    return min(reached, key=lambda a: a.energy_j), most, attempts


def resolve_target(cfg: RunConfig, progress: bool = True) -> RunConfig:
    """``cfg`` set to train the cheapest plan to its ``target_accuracy``: the price found
    (``policy = "energy_priced"``, ``energy_price``) and the rounds up to the one predicted to
    reach it; ``cfg`` itself when it has no target or is resolved already. Deterministic for
    the same settings and seed, so a resumed run resolves the same. Raises
    :class:`ConfigError` with the best reachable accuracy where no price reaches it."""
    target = cfg.target_accuracy
    if target is None or cfg.policy == "energy_priced":
        return cfg
    best, most, _ = cheapest_plan(cfg, model_shape(cfg), shard_sizes(cfg), target, progress)
    if best is None or best.reached_round is None:
        raise ConfigError(
            f"accuracy {target:g} is not reachable within {cfg.rounds} rounds and the run's "
            f"budgets: the best reachable is {most.predicted:.4f} (predicted)"
        )
    print(
        f"target {target:g}: predicted at round {best.reached_round} with {best.energy_j:.6g} J "
        f"(price {best.price:.4g} accuracy per J); training that plan"
    )
    return cfg.replace(policy="energy_priced", energy_price=best.price, rounds=best.reached_round)
