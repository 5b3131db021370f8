"""The in-process backend: the whole federated run in one process, logged and resumable.

Each round: draw channels, solve for (r, f) (``RankFrequencyStrategy``), resize the global
adapters to r, train every device locally (``client.train``) from its cached split-point
hidden states on one shared frozen model, FedAvg, evaluate, then append one record to
``log.jsonl`` and ``log.csv`` and write a checkpoint (adapters in safetensors, optimizer and
RNG state). ``resume=True`` continues from the last checkpoint and ends where an
uninterrupted run with the same seed ends.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fsl_opt.client import DeviceData, LocalConfig, LocalResult, evaluate, train
from fsl_opt.errors import ConfigError
from fsl_opt.lora import nbytes, state_rank
from fsl_opt.models import SplitModel
from fsl_opt.presets import get_preset
from fsl_opt.run_config import RunConfig, dump_toml
from fsl_opt.runlog import (
    CHECKPOINT,
    CONFIG_FILE,
    LOG_JSONL,
    RunLog,
    load_checkpoint,
    round_record,
    save_checkpoint,
)
from fsl_opt.strategy import RankFrequencyStrategy, RoundPlan
from fsl_opt.system import System
from fsl_opt.workload import Workload, build_system, load_workload, maybe_tqdm, workload_key


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
    bar = maybe_tqdm(rounds, progress, "rounds")
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
