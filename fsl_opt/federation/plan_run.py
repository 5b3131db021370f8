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
    round_record,
    write_json,
)
from fsl_opt.federation.settings import RunConfig, dump_toml
from fsl_opt.federation.workload import columns, maybe_tqdm, split_samples


def shard_sizes(cfg: RunConfig) -> list[int]:
    """Each device's number of training samples, as ``fsl-opt train`` splits them (the
    data is read only when the split depends on it: a Dirichlet split, or no
    ``samples_per_device``)."""
    if cfg.partition == "iid" and cfg.samples_per_device is not None:
        return [cfg.samples_per_device] * cfg.devices
    from fsl_opt.learning.data import load_dataset

    split = split_samples(cfg, load_dataset(cfg.data, columns(cfg)))
    return [len(p) for p in split.parts]


def model_shape(cfg: RunConfig) -> Any:
    """The adapted matrices' shape of ``cfg.model`` (the encoder is loaded once, on CPU)."""
    from fsl_opt.federation.workload import load_model

    model, _ = load_model(cfg.replace(torch_device="cpu"), num_labels=2)
    return model.lora_shape()


def plan(cfg: RunConfig, overwrite: bool = False, progress: bool = True) -> list[dict[str, Any]]:
    """Plan every round of ``cfg`` into the run folder ``cfg.out``; returns the records.

    The folder must be new or empty, or hold a plan (``overwrite`` replaces it; only a
    folder this tool made as a run is deleted).
    """
    out = Path(cfg.out)
    existing = runfolder.prepare(out, "run", overwrite=overwrite)
    with runfolder.lock(out):
        if existing and (out / LOG_JSONL).exists():
            raise ConfigError(f"{out} already holds a run: pass --overwrite to plan it again")
        (out / CONFIG_FILE).write_text(dump_toml(cfg))
        placement, refs, system, planner = plan_rounds(cfg, model_shape(cfg), shard_sizes(cfg))
        write_json(
            out / PLACEMENT_FILE,
            {**placement_record(cfg, placement, refs, system), "planned": True},
        )
        log = RunLog(out)
        log.truncate(-1)
        records = []
        for rnd in maybe_tqdm(range(1, cfg.rounds + 1), progress, "rounds"):
            started = time.perf_counter()
            decided = planner.plan_round(rnd)
            records.append(round_record(decided, rnd, {}, time.perf_counter() - started))
            log.append(records[-1])
            if decided.stop:
                break
        return records
