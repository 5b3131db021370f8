"""The in-process backend: the whole federated run in one process, logged and resumable.

Each round: draw channels, solve for (r, f) (``RankFrequencyStrategy``), resize the global
adapters to r, train every device locally (``client.train``) from its cached split-point
hidden states on one shared frozen model, FedAvg, evaluate, then append one record to
``log.jsonl`` and ``log.csv`` and write a checkpoint (adapters in safetensors, optimizer and
RNG state). ``resume=True`` continues from the last checkpoint and ends where an
uninterrupted run with the same seed ends.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fsl_opt import cost
from fsl_opt.client import DeviceData, LocalConfig, LocalResult, cache_hidden, evaluate, train
from fsl_opt.data import load_dataset, partition, subsample, tokenize_cached
from fsl_opt.errors import ConfigError
from fsl_opt.lora import nbytes, state_rank
from fsl_opt.models import LoraShape, SplitModel, layer_indices, load_encoder, load_tokenizer
from fsl_opt.presets import FLOPS_PER_CYCLE, get_preset
from fsl_opt.run_config import RunConfig, dump_toml
from fsl_opt.strategy import RankFrequencyStrategy, RoundPlan
from fsl_opt.system import System

#: Columns of ``log.csv``; per-device lists are joined with ';'.
CSV_COLUMNS = (
    "round",
    "rank",
    "status",
    "method",
    "round_latency_s",
    "max_energy_j",
    "total_energy_j",
    "compute_time_s",
    "upload_time_s",
    "download_time_s",
    "compute_energy_j",
    "upload_energy_j",
    "latency_s",
    "energy_j",
    "frequencies_hz",
    "binding",
    "uploaded_bytes",
    "modeled_upload_bytes",
    "wall_time_s",
    "train_loss",
    "test_accuracy",
    "test_loss",
)
CONFIG_FILE, LOG_JSONL, LOG_CSV, CHECKPOINT = "config.toml", "log.jsonl", "log.csv", "checkpoint"


# --- set-up -------------------------------------------------------------------------------


def compute_model(shape: LoraShape, seq_len: int) -> dict[str, Any]:
    """``base_cycles`` and ``cycles_per_op`` of the calibrated preset for a loaded model.

    Forward FLOPs of one layer: 2 (4 h^2 + 2 h i + 2 S h) S (projections, feed-forward,
    attention); backward through frozen weights about the same; both run through every
    layer from the split up. LoRA: 6 r S (d + k) FLOPs per matrix, i.e. 3 S (d + k) / (d k)
    FLOPs per op counted by eq. (2).
    """
    h, i = shape.hidden, shape.intermediate
    layer = 2.0 * (4 * h * h + 2 * h * i + 2 * seq_len * h) * seq_len
    return {
        "base_cycles": 2.0 * layer * shape.layers_run / FLOPS_PER_CYCLE,
        "cycles_per_op": 3.0
        * seq_len
        * (shape.d + shape.k)
        / (shape.d * shape.k)
        / FLOPS_PER_CYCLE,
    }


def build_system(
    cfg: RunConfig, shape: LoraShape, shard_sizes: list[int], rng: np.random.Generator
) -> System:
    """The preset's device population with this run's model shape, |D_i|, T0 and E0."""
    preset = get_preset(cfg.preset)
    base = preset.system(cfg.devices, rng)
    changes: dict[str, Any] = {
        "samples": np.asarray(shard_sizes, dtype=float) * cfg.local_epochs,
        "d": shape.d,
        "k": shape.k,
        "matrices_per_layer": shape.matrices_per_layer,
        "layers": float(shape.layers),
        "max_rank": min(cfg.max_rank, shape.d, shape.k),
    }
    if preset.name == "calibrated":
        changes.update(compute_model(shape, cfg.max_length))
    system = base.replace(**changes)
    r_ref = min(cfg.reference_rank, system.max_rank)
    # References at rank r_ref: the slowest device's delay at f_max, then the largest energy a
    # device spends at that rank with its least-energy clock under that delay. Each budget
    # scales its own reference, so sweeping one factor leaves the other budget unchanged.
    t_ref = float(cost.latency(system, r_ref, system.f_max_hz).max())
    at_ref = system.replace(latency_s=t_ref)
    f_ref = np.minimum(cost.least_energy_frequency(at_ref, r_ref), system.f_max_hz)
    e_ref = float(cost.energy(at_ref, r_ref, f_ref).max())
    t0 = cfg.latency_s or cfg.latency_factor * t_ref
    e0 = cfg.energy_budget_j or cfg.energy_factor * e_ref
    system = system.replace(latency_s=t0)
    return system.replace(energy_budget_j=np.full(cfg.devices, e0))


#: Run settings the workload (data split, hidden-state cache, shared model) depends on.
WORKLOAD_KEYS = (
    "model",
    "data",
    "layers",
    "devices",
    "samples_per_device",
    "test_samples",
    "partition",
    "alpha",
    "max_length",
    "lora_scale",
    "lora_dropout",
    "cache_hidden",
    "hidden_dtype",
    "torch_device",
    "data_seed",
)


@dataclass
class Workload:
    """What does not depend on the run's seed: the shared frozen model and each device's
    cached data. Experiments build it once and reuse it for every run that shares it."""

    key: tuple[Any, ...]
    model: SplitModel
    devices: list[DeviceData]
    test: DeviceData
    torch_device: torch.device
    label_names: tuple[str, ...]


@dataclass
class RunContext:
    """A workload plus this run's devices, channels, strategy and initial adapters."""

    config: RunConfig
    workload: Workload
    system: System
    strategy: RankFrequencyStrategy
    initial_state: dict[str, torch.Tensor]

    @property
    def model(self) -> SplitModel:
        """The shared model."""
        return self.workload.model

    @property
    def devices(self) -> list[DeviceData]:
        """Each device's data."""
        return self.workload.devices

    @property
    def test(self) -> DeviceData:
        """The test split."""
        return self.workload.test

    @property
    def torch_device(self) -> torch.device:
        """Where tensors live."""
        return self.workload.torch_device


def torch_device(name: str) -> torch.device:
    """``cpu``, ``cuda``, or ``auto`` (CUDA when available)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"torch_device = {name!r}: no CUDA device here")
    return torch.device(name)


def workload_key(cfg: RunConfig) -> tuple[Any, ...]:
    """The settings a :class:`Workload` depends on."""
    return tuple(getattr(cfg, k) for k in WORKLOAD_KEYS)


def load_workload(cfg: RunConfig, progress: bool = False) -> Workload:
    """Load data and model, split over devices (``data_seed``), cache hidden states."""
    dev = torch_device(cfg.torch_device)
    rng = np.random.default_rng(cfg.data_seed)
    data = load_dataset(cfg.data)
    tokenizer = load_tokenizer(cfg.model)
    torch.manual_seed(cfg.data_seed)
    encoder = load_encoder(cfg.model)
    layers = layer_indices(cfg.layers, len(encoder.encoder.layer))
    model = SplitModel(encoder, layers, data.num_labels, cfg.lora_scale, cfg.lora_dropout)
    model.to(dev)
    n_train = None if cfg.samples_per_device is None else cfg.samples_per_device * cfg.devices
    train_idx = subsample(len(data.train_labels), n_train, rng)
    labels = data.train_labels[train_idx]
    alpha = cfg.alpha if cfg.partition == "dirichlet" else None
    parts = partition(labels, cfg.devices, rng, alpha=alpha)
    test_idx = subsample(len(data.test_labels), cfg.test_samples, rng)
    tok = tokenize_cached([data.train_texts[i] for i in train_idx], tokenizer, cfg.max_length)
    tok_test = tokenize_cached([data.test_texts[i] for i in test_idx], tokenizer, cfg.max_length)

    def cached(ids: torch.Tensor, mask: torch.Tensor, y: np.ndarray) -> DeviceData:
        y_t = torch.as_tensor(y, dtype=torch.long)
        return cache_hidden(model, ids, mask, y_t, cfg.cache_hidden, cfg.hidden_dtype, device=dev)

    devices = []
    for part in _maybe_tqdm(parts, progress, "caching hidden states"):
        p_t = torch.as_tensor(part)
        devices.append(cached(tok["input_ids"][p_t], tok["attention_mask"][p_t], labels[part]))
    test = cached(tok_test["input_ids"], tok_test["attention_mask"], data.test_labels[test_idx])
    return Workload(workload_key(cfg), model, devices, test, dev, data.label_names)


def prepare(cfg: RunConfig, progress: bool = False, workload: Workload | None = None) -> RunContext:
    """A run's context: the workload (loaded unless given), then, from ``seed``, the device
    population, channels, strategy and freshly initialized adapters."""
    if workload is None or workload.key != workload_key(cfg):
        workload = load_workload(cfg, progress)
    rng = np.random.default_rng(cfg.seed)
    model = workload.model
    system = build_system(cfg, model.lora_shape(), [len(d) for d in workload.devices], rng)
    channel = get_preset(cfg.preset).channel(system.n_devices, rng)
    strategy = RankFrequencyStrategy(system, channel, cfg.method, cfg.rank, rng)
    model.reset_adapters(cfg.seed)  # rank 1 with B = 0: the untuned model
    return RunContext(cfg, workload, system, strategy, model.adapter_state())


def _maybe_tqdm(items: Any, on: bool, desc: str) -> Any:
    if not on:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, leave=False)


# --- records ------------------------------------------------------------------------------


def round_record(
    plan: RoundPlan | None,
    rnd: int,
    payload_bytes: int | None,
    metrics: dict[str, float],
    wall: float,
) -> dict[str, Any]:
    """One log record: decisions, modeled costs per device, measured loss and accuracy."""
    rec: dict[str, Any] = {"round": rnd}
    if plan is not None:
        res, sysm = plan.result, plan.system
        rec.update(
            rank=plan.rank,
            status=res.status,
            method=res.method,
            frequencies_hz=res.frequencies_hz.tolist(),
            binding=res.binding_names(),
            latency_budget_s=sysm.latency_s,
            energy_budget_j=sysm.energy_budget_j.tolist(),
        )
        c = res.cost
        if c is not None:
            rec.update({k: v.tolist() for k, v in c.as_dict().items()})
            rec["round_latency_s"] = float(c.latency_s.max())
            rec["max_energy_j"] = float(c.energy_j.max())
            rec["total_energy_j"] = float(c.energy_j.sum())
        if plan.rank > 0:
            m = cost.upload_params(sysm, plan.rank)
            rec["modeled_upload_bytes"] = (m * sysm.bits_per_param / 8).tolist()
    rec["uploaded_bytes"] = payload_bytes
    rec["wall_time_s"] = wall
    rec.update(metrics)
    return rec


class RunLog:
    """Appends records to ``log.jsonl`` and ``log.csv`` as soon as each round ends."""

    def __init__(self, folder: Path) -> None:
        self.jsonl = folder / LOG_JSONL
        self.csv = folder / LOG_CSV

    def append(self, rec: dict[str, Any]) -> None:
        """Write one record to both files and flush."""
        with self.jsonl.open("a") as fh:
            fh.write(json.dumps(rec) + "\n")
        new = not self.csv.exists()
        with self.csv.open("a", newline="") as fh:
            w = csv.writer(fh)
            if new:
                w.writerow(CSV_COLUMNS)
            w.writerow([_cell(rec.get(c)) for c in CSV_COLUMNS])

    def records(self) -> list[dict[str, Any]]:
        """Every record written so far."""
        if not self.jsonl.exists():
            return []
        return [json.loads(line) for line in self.jsonl.read_text().splitlines() if line]

    def truncate(self, last_round: int) -> None:
        """Drop records after ``last_round`` (written after the last checkpoint)."""
        keep = [r for r in self.records() if r["round"] <= last_round]
        for path in (self.jsonl, self.csv):
            path.unlink(missing_ok=True)
        for r in keep:
            self.append(r)


def _cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, list):
        return ";".join(f"{x:.6g}" if isinstance(x, float) else str(x) for x in v)
    return v


# --- checkpoints --------------------------------------------------------------------------


def save_checkpoint(
    folder: Path,
    rnd: int,
    state: dict[str, torch.Tensor],
    opt_states: list[Any],
    strategy: RankFrequencyStrategy,
) -> None:
    """Adapters (safetensors), optimizer and RNG state after round ``rnd``, atomically."""
    from safetensors.torch import save_file

    tmp = folder / (CHECKPOINT + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / "adapters.safetensors"))
    torch.save(
        {
            "round": rnd,
            "optimizers": opt_states,
            "strategy": strategy.state(),
            "torch_rng": torch.get_rng_state(),
        },
        tmp / "state.pt",
    )
    final = folder / CHECKPOINT
    old = folder / (CHECKPOINT + ".old")
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(folder: Path) -> tuple[int, dict[str, torch.Tensor], list[Any], dict[str, Any]]:
    """(round, adapters, optimizer states, strategy state) of the last checkpoint."""
    from safetensors.torch import load_file

    path = folder / CHECKPOINT
    state = load_file(str(path / "adapters.safetensors"))
    extra = torch.load(path / "state.pt", weights_only=False)
    torch.set_rng_state(extra["torch_rng"])
    return extra["round"], state, extra["optimizers"], extra["strategy"]


# --- the loop -----------------------------------------------------------------------------


def run(
    cfg: RunConfig,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
    workload: Workload | None = None,
    trainer: Trainer | None = None,
) -> list[dict[str, Any]]:
    """Run (or continue) a federated LoRA run; returns every record of its log.

    Parameters
    ----------
    resume : bool
        Continue from ``cfg.out``'s checkpoint (the configuration must match).
    overwrite : bool
        Delete an existing run folder first.
    stop_after : int, optional
        Stop after this round as if interrupted (tests of resume).
    workload : Workload, optional
        Reuse an already loaded workload (experiments run many seeds on one).
    trainer : Trainer, optional
        How devices train (default :func:`train_in_process`; the Flower backend sends
        messages instead).
    """
    trainer = trainer or train_in_process
    out = Path(cfg.out)
    _claim_folder(out, cfg, resume, overwrite)
    ctx = prepare(cfg, progress, workload)
    log = RunLog(out)
    opt_states: list[dict[str, Any] | None] = [None] * cfg.devices
    state, start = ctx.initial_state, 1
    if resume and (out / CHECKPOINT).exists():
        last, state, opt_states, strat = load_checkpoint(out)
        ctx.strategy.load_state(strat)
        ctx.model.set_rank(state_rank(state))
        ctx.model.load_adapter_state(state)
        log.truncate(last)
        start = last + 1
    else:
        log.truncate(-1)
        ctx.model.load_adapter_state(state)
        t = time.perf_counter()
        m = evaluate(ctx.model, ctx.test, device=ctx.torch_device)
        log.append(
            round_record(
                None,
                0,
                None,
                {"test_accuracy": m["accuracy"], "test_loss": m["loss"]},
                time.perf_counter() - t,
            )
        )
        save_checkpoint(out, 0, state, opt_states, ctx.strategy)
    rounds = range(start, cfg.rounds + 1)
    bar = _maybe_tqdm(rounds, progress, "rounds")
    for rnd in bar:
        t = time.perf_counter()
        plan = ctx.strategy.configure_round(rnd)
        metrics: dict[str, float] = {}
        payload = None
        if plan.rank > 0:
            state = ctx.strategy.prepare(state, plan, cfg.seed)
            replies = trainer(ctx, state, plan, opt_states)
            payload = nbytes(replies[0].adapter_state)
            state = ctx.strategy.aggregate([(r.adapter_state, r.n_examples) for r in replies])
            n = sum(r.n_examples for r in replies)
            metrics["train_loss"] = sum(r.metrics["train_loss"] * r.n_examples for r in replies) / n
            ctx.model.set_rank(plan.rank)
            ctx.model.load_adapter_state(state)
        m = evaluate(ctx.model, ctx.test, device=ctx.torch_device)
        metrics.update(test_accuracy=m["accuracy"], test_loss=m["loss"])
        save_checkpoint(out, rnd, state, opt_states, ctx.strategy)
        log.append(round_record(plan, rnd, payload, metrics, time.perf_counter() - t))
        if progress and hasattr(bar, "set_postfix"):
            bar.set_postfix(rank=plan.rank, acc=f"{m['accuracy']:.3f}")
        if stop_after is not None and rnd >= stop_after:
            break
    return log.records()


def local_config(cfg: RunConfig, rank: int, rnd: int, device: int) -> LocalConfig:
    """What device ``device`` is told for round ``rnd`` (its seed depends on both)."""
    return LocalConfig(
        rank=rank,
        lr=cfg.lr,
        epochs=cfg.local_epochs,
        batch_size=cfg.batch_size,
        seed=_seed(cfg.seed, rnd, device),
    )


def train_in_process(
    ctx: RunContext,
    state: dict[str, torch.Tensor],
    plan: RoundPlan,
    opt_states: list[dict[str, Any] | None],
) -> list[LocalResult]:
    """The in-process backend: every device trains in turn on the one shared model; each
    device's AdamW state is kept in ``opt_states`` (as the device itself would)."""
    out = []
    for i, data in enumerate(ctx.devices):
        local = local_config(ctx.config, plan.rank, plan.round, i)
        res = train(ctx.model, state, data, local, opt_states[i], ctx.torch_device)
        opt_states[i] = res.optimizer_state
        out.append(res)
    return out


#: How a backend trains the devices of one round: (context, global payload at the round's
#: rank, plan, per-device optimizer states) -> one LocalResult per device, in device order.
Trainer = Callable[
    [RunContext, dict[str, torch.Tensor], RoundPlan, list[dict[str, Any] | None]],
    list[LocalResult],
]


def _seed(seed: int, rnd: int, device: int) -> int:
    """A per-(round, device) torch seed, so a resumed run draws what a straight one does."""
    return (seed * 1_000_003 + rnd * 1_009 + device) % (2**63)


def _claim_folder(out: Path, cfg: RunConfig, resume: bool, overwrite: bool) -> None:
    cfg_path = out / CONFIG_FILE
    if overwrite and out.exists():
        shutil.rmtree(out)
    if out.exists() and (out / LOG_JSONL).exists():
        if not resume:
            raise ConfigError(
                f"{out} already holds a run: pass --resume to continue it or "
                "--overwrite to start again"
            )
        from fsl_opt.run_config import load_config

        saved = load_config(cfg_path)
        differ = [
            k for k, v in cfg.to_dict().items() if k != "rounds" and saved.to_dict().get(k) != v
        ]
        if differ:
            raise ConfigError(
                f"--resume: the configuration differs from {cfg_path} in {', '.join(differ)}"
            )
    out.mkdir(parents=True, exist_ok=True)
    cfg_path.write_text(dump_toml(cfg))


def summary_table(records: list[dict[str, Any]]) -> str:
    """Round, rank, delay, energy, loss and accuracy, one line per round."""
    lines = [
        f"{'round':>5} {'rank':>5} {'status':>10} {'T_round [s]':>12} {'E_max [J]':>10} "
        f"{'train loss':>10} {'test acc':>9}"
    ]
    for r in records:

        def fmt(key: str, spec: str, r: dict[str, Any] = r) -> str:
            v = r.get(key)
            return (
                format(v, spec)
                if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v))
                else "-"
            )

        lines.append(
            f"{r['round']:>5} {fmt('rank', 'd'):>5} {r.get('status', '-'):>10} "
            f"{fmt('round_latency_s', '.4g'):>12} {fmt('max_energy_j', '.4g'):>10} "
            f"{fmt('train_loss', '.4f'):>10} {fmt('test_accuracy', '.4f'):>9}"
        )
    return "\n".join(lines)
