"""The planner alone (``fsl-opt plan``): a run's decisions and modeled costs, no training.

The same planner as ``fsl-opt train`` (:func:`~fsl_opt.federation.context.make_planner`,
same population, budgets, channels and policy for the same settings and seed) draws each
round's channels and decides ranks, clocks and bandwidths; the records it writes to
``log.jsonl`` / ``log.csv`` are ``fsl-opt train``'s without the measured columns (no
loss, no accuracy, no bytes sent). Nothing is loaded but the model's shape, so policies
can be studied at scale (thousands of devices, hundreds of rounds).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fsl_opt.errors import ConfigError
from fsl_opt.federation import runfolder
from fsl_opt.federation.context import placement_record, plan_rounds
from fsl_opt.federation.runlog import (
    CONFIG_FILE,
    LOG_JSONL,
    PLACEMENT_FILE,
    RunLog,
    check_room,
    note_provenance,
    round_record,
    write_json,
)
from fsl_opt.federation.settings import RunConfig, dump_toml
from fsl_opt.federation.workload import maybe_tqdm, model_shape, shard_sizes


class TargetMissed(ConfigError):
    """No plan within the run's rounds and budgets is predicted to reach the target."""


def _plan_to_target(
    cfg: RunConfig, target: float, log: RunLog, progress: bool
) -> list[dict[str, Any]]:
    from fsl_opt.federation.target import cheapest_plan

    best, most, attempts = cheapest_plan(cfg, model_shape(cfg), shard_sizes(cfg), target, progress)
    chosen = best if best is not None else most
    for rec in chosen.records:
        log.append({**rec, "energy_price": chosen.price})
    if best is None:
        raise TargetMissed(
            f"accuracy {target:g} is not reachable within {cfg.rounds} rounds and the run's "
            f"budgets: the best reachable is {most.predicted:.4f} (every useful device-round "
            f"bought, {most.energy_j:.6g} J; its plan is in {cfg.out})"
        )
    others = sorted(
        (a for a in attempts if a.reached_round is not None and a is not best),
        key=lambda a: a.energy_j,
    )
    runner_up = f"; next cheapest {others[0].energy_j:.6g} J" if others else ""
    print(
        f"target {target:g}: reached at round {best.reached_round} with "
        f"{best.energy_j:.6g} J (all devices; price {best.price:.4g} accuracy per J, "
        f"{len(attempts)} prices tried{runner_up})"
    )
    return chosen.records


def plan_settings(base: RunConfig, given: dict[str, Any]) -> tuple[RunConfig, str]:
    """A plan's settings: ``base`` (defaults, then a config file) with the flags ``given``,
    and the line that says what the plan chose itself ("" if nothing).

    A plan aggregates nothing; it models what each device downloads. With per-device ranks
    and no aggregation chosen anywhere, the default aggregator of one rank (which cannot
    hold different ranks) gives way to ``zero_pad``, and the line says so.
    """
    from fsl_opt.learning.registry import AGGREGATORS
    from fsl_opt.problem.system import OBJECTIVES

    objective = given.get("objective", base.objective)
    default = RunConfig.__dataclass_fields__["aggregation"].default
    if (
        objective in OBJECTIVES
        and OBJECTIVES[objective].has("per_device")
        and "aggregation" not in given
        and base.aggregation == default
        and AGGREGATORS[default].has("one_rank")
    ):
        given = {**given, "aggregation": "zero_pad"}
        return base.replace(**given), (
            "aggregation: zero_pad (per-device ranks; give --aggregation to model another)"
        )
    return base.replace(**given), ""


def plan(cfg: RunConfig, overwrite: bool = False, progress: bool = True) -> list[dict[str, Any]]:
    """Plan every round of ``cfg`` into the run folder ``cfg.out``; returns the records.

    With ``target_accuracy``: the least-energy plan predicted to reach it instead
    (:func:`fsl_opt.federation.target.cheapest_plan`), its rounds up to the one that reaches
    it; where no plan reaches it, the plan that gets closest, and :class:`TargetMissed`
    after its records are written.

    The folder must be new or empty, or hold a plan (``overwrite`` replaces it; a trained
    run's folder is never a plan's).
    """
    out = Path(cfg.out)
    check_room(cfg.rounds, cfg.devices, out)
    cfg.check_input_files()  # a bad trace or preset file is refused before the folder is made
    existing = runfolder.prepare(out, "plan", overwrite=overwrite, reads=cfg.input_files())
    with runfolder.lock(out):
        if existing and (out / LOG_JSONL).exists():
            raise ConfigError(f"{out} already holds a plan: pass --overwrite to plan it again")
        (out / CONFIG_FILE).write_text(dump_toml(cfg))
        placement, refs, system, planner = plan_rounds(cfg, model_shape(cfg), shard_sizes(cfg))
        write_json(
            out / PLACEMENT_FILE,
            {**placement_record(cfg, placement, refs, system), "planned": True},
        )
        log = RunLog(out)
        log.truncate(-1)
        note_provenance(out, 0)
        if cfg.target_accuracy is not None and cfg.policy != "energy_priced":
            return _plan_to_target(cfg, cfg.target_accuracy, log, progress)
        records = []
        for rnd in maybe_tqdm(range(1, cfg.rounds + 1), progress, "rounds"):
            started = time.perf_counter()
            decided = planner.plan_round(rnd)
            records.append(round_record(decided, rnd, {}, time.perf_counter() - started))
            log.append(records[-1])
            if decided.stop:
                break
        return records
