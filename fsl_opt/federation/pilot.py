"""Finished run folders as the accuracy model's fit reads them, and the pilot recipe.

A run folder (``config.toml`` and ``log.jsonl``, as ``fsl-opt train`` and every experiment
write them) becomes a :class:`~fsl_opt.problem.accuracy.History`: per round, each device's
samples times local epochs and the rank it trained at (0 when it was left out, unavailable
or lost), and the accuracy measured after the round. Only what the records say is used, so
runs of any policy, solver or backend fit the same model.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tomllib

from fsl_opt.errors import ConfigError
from fsl_opt.federation.settings import RunConfig, config_from_dict
from fsl_opt.problem.accuracy import SCOPE_KEYS, History, Round

#: Defaults of scope settings that runs made before the setting existed did not write.
_SCOPE_DEFAULTS = {"aggregation": "fedavg", "lora_scale": 2.0}


def read_run(folder: str | Path, group: str | None = None) -> History:
    """One finished (or interrupted) run folder as a history; ``group`` defaults to the
    experiment folder the run sits in (``RESULTS/NAME/runs/RUN``), else the run's name.

    Raises :class:`ConfigError` for a folder that is not a run, a non-IID partition (the
    model's form has no term for it) or a run with no trained round."""
    folder = Path(folder)
    config, log = folder / "config.toml", folder / "log.jsonl"
    for path in (config, log):
        if not path.is_file():
            raise ConfigError(f"{folder}: not a run folder (no {path.name})")
    try:
        settings = tomllib.loads(config.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{config}: cannot read it ({exc})") from None
    if settings.get("partition", "iid") != "iid":
        raise ConfigError(
            f"{folder}: partition = {settings['partition']!r}; the accuracy model is for IID "
            "partitions only (its form has no term for skewed labels)"
        )
    records = []
    for n, line in enumerate(log.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            raise ConfigError(f"{log}:{n}: not a JSON record") from None
    if not records or records[0].get("round") != 0 or "test_accuracy" not in records[0]:
        raise ConfigError(f"{log}: no round-0 record with the untuned accuracy")
    cfg = config_from_dict(settings, str(config))  # defaults for what it leaves out
    if cfg.samples_per_device is None:
        raise ConfigError(
            f"{config}: samples_per_device = none (the whole split): the accuracy model needs "
            "the samples each device trained; fit runs that name them"
        )
    devices = cfg.devices
    per_device = float(cfg.samples_per_device) * float(cfg.local_epochs)
    rounds, accuracy = [], []
    for rec in records[1:]:
        rounds.append(Round.of(np.full(devices, per_device), trained_ranks(rec, devices)))
        accuracy.append(float(rec["test_accuracy"]))
    if not rounds:
        raise ConfigError(f"{log}: no trained round yet")
    if group is None:
        group = folder.parent.parent.name if folder.parent.name == "runs" else folder.name
    return History(
        label=str(folder),
        group=group,
        untuned=float(records[0]["test_accuracy"]),
        rounds=rounds,
        accuracy=np.asarray(accuracy),
        scope=run_scope(settings),
    )


def trained_ranks(record: dict[str, Any], devices: int) -> np.ndarray:
    """Each device's rank in a round record, 0 for a device that did not train in it."""
    ranks = record.get("ranks")
    if ranks is None:  # one shared rank, every device
        ranks = [record.get("rank", 0) or 0] * devices
    r = np.array([int(x or 0) for x in ranks], dtype=np.int64)
    if r.shape != (devices,):
        raise ConfigError(f"round {record.get('round')}: {len(r)} ranks for {devices} devices")
    selected = record.get("selected_devices")
    if selected is not None:
        keep = np.zeros(devices, dtype=bool)
        keep[[int(i) for i in selected]] = True
        r[~keep] = 0
    for i in record.get("lost_devices") or []:
        r[int(i)] = 0
    return r


def extrapolation(cfg: RunConfig, records: list[dict[str, Any]]) -> list[str]:
    """Where a run's or plan's records go beyond the runs ``cfg.accuracy_model`` was fitted
    on (its cumulative work, samples per device, largest rank, devices): one phrase each;
    empty without an accuracy model or records."""
    if not cfg.accuracy_model or not records:
        return []
    from fsl_opt.problem.accuracy import AccuracyModel

    model = AccuracyModel.load(cfg.accuracy_model)
    x = np.full(cfg.devices, float(cfg.samples_per_device or 0) * cfg.local_epochs)
    ranks = [trained_ranks(r, cfg.devices) for r in records if "ranks" in r]
    work = sum(model.work(Round.of(x, r)) for r in ranks)
    top = max((int(r.max(initial=0)) for r in ranks), default=0)
    return model.extrapolation(work, float(x.max(initial=0.0)), top, cfg.devices)


def run_scope(settings: dict[str, Any]) -> dict[str, Any]:
    """A run's values of the settings an accuracy model is fitted for."""
    return {k: settings.get(k, _SCOPE_DEFAULTS.get(k)) for k in SCOPE_KEYS}


def read_runs(folders: Sequence[str | Path]) -> tuple[list[History], dict[str, Any]]:
    """Every folder as a history, and their common scope (:func:`same_scope`)."""
    histories = [read_run(f) for f in folders]
    return histories, same_scope(histories)


def same_scope(histories: Sequence[History]) -> dict[str, Any]:
    """The scope every history shares; a run made with other settings than the first is
    refused, naming the run and each setting that differs."""
    if not histories:
        raise ConfigError("give at least one run folder")
    first = histories[0]
    for h in histories[1:]:
        differ = [
            f"{k} = {h.scope[k]!r} (there {first.scope[k]!r})"
            for k in SCOPE_KEYS
            if h.scope[k] != first.scope[k]
        ]
        if differ:
            raise ConfigError(
                f"{h.label} was made with other settings than {first.label}: "
                f"{', '.join(differ)}; fit one model per setting (--exclude leaves runs out)"
            )
    return dict(first.scope)
