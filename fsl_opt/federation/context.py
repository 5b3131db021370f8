"""A run's context: the workload plus this run's devices, channels, planner and adapters.

Shared by the round loop and every backend; what a device is told for a round
(:func:`local_config`) is derived here, once, so every backend trains a device the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from channels import ChannelModel, build_channel
from fsl_opt.errors import ConfigError
from fsl_opt.federation.planner import Policy, RoundPlanner
from fsl_opt.federation.registry import POLICIES
from fsl_opt.federation.settings import RunConfig
from fsl_opt.federation.workload import (
    Workload,
    build_system,
    load_workload,
    workload_key,
)
from fsl_opt.learning.local import DeviceData, LocalConfig
from fsl_opt.learning.split_model import LoraShape, SplitModel
from fsl_opt.problem.accuracy import AccuracyModel, Progress
from fsl_opt.problem.budgets import RunBudgets
from fsl_opt.problem.placement import Placement, References
from fsl_opt.problem.presets import get_preset
from fsl_opt.problem.system import System
from fsl_opt.problem.trace import DeviceTrace


@dataclass
class RunContext:
    """A workload plus this run's devices, channels, planner and initial adapters."""

    config: RunConfig
    workload: Workload
    placement: Placement
    references: References
    system: System
    planner: RoundPlanner
    initial_state: dict[str, torch.Tensor]

    def placement_record(self) -> dict[str, Any]:
        """What the run's budgets were computed from: its placement and references."""
        return placement_record(self.config, self.placement, self.references, self.system)

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


def build_context(
    cfg: RunConfig, progress: bool = False, workload: Workload | None = None
) -> RunContext:
    """A run's context: the workload (loaded unless given), then, from ``seed``, the
    placement (drawn once: the budgets and every round's channels share it), the channel
    model, planner and freshly initialized adapters. Whether this machine runs the
    precision is the run's to check first (:func:`~fsl_opt.federation.loop.check_runnable`)."""
    if workload is None or workload.key != workload_key(cfg):
        workload = load_workload(cfg, progress)
    model = workload.model
    placement, refs, system, planner = plan_rounds(
        cfg, model.lora_shape(), [len(d) for d in workload.devices]
    )
    model.reset_adapters(cfg.seed)  # rank 1 with B = 0: the untuned model
    return RunContext(cfg, workload, placement, refs, system, planner, model.adapter_state())


def plan_rounds(
    cfg: RunConfig, shape: LoraShape, shard_sizes: list[int]
) -> tuple[Placement, References, System, RoundPlanner]:
    """From ``seed``: the placement (drawn once: the budgets and every round's channels
    share it), the run's system and references, and its planner; what ``fsl-opt train``
    and ``fsl-opt plan`` both start from, so they decide the same rounds."""
    if cfg.rank is not None and max(cfg.fixed_ranks()) > min(shape.d, shape.k):
        raise ConfigError(
            f"rank = {cfg.rank}: the adapted matrices of {cfg.model} are {shape.d} x {shape.k}, "
            f"so a LoRA rank is at most {min(shape.d, shape.k)}"
        )
    rng = np.random.default_rng(cfg.seed)
    placement = get_preset(cfg.preset).place(cfg.devices, rng)
    channel = build_channel(cfg.channel, placement.channel)
    system, refs = build_system(cfg, shape, shard_sizes, placement, channel)
    return placement, refs, system, make_planner(cfg, system, channel, rng)


def placement_record(
    cfg: RunConfig, placement: Placement, refs: References, system: System
) -> dict[str, Any]:
    """``placement.json``: the whole-run budgets, the placement and the references the
    run's budgets were computed from."""
    return {
        **budgets_record(cfg, system),
        "preset": cfg.preset,
        "channel": cfg.channel,
        **placement.channel.to_dict(),
        **refs.to_dict(),
        "latency_s": system.latency_s,
        "energy_budget_j": [float(x) for x in system.energy_budget_j],
        "f_max_hz": [float(x) for x in system.f_max_hz],
        "omega": [float(x) for x in system.omega],
    }


def whole_run_budgets(cfg: RunConfig, system: System) -> tuple[Any, float | None]:
    """Each device's energy for the run and the run's time: the settings in joules and
    seconds, or in rounds of the run's E0 and T0 (``energy_total_rounds``,
    ``time_total_rounds``); None where unset."""
    energy: Any = cfg.energy_total_j
    if energy is None and cfg.energy_total_rounds is not None:
        energy = cfg.energy_total_rounds * np.asarray(system.energy_budget_j)
    time_total = cfg.time_total_s
    if time_total is None and cfg.time_total_rounds is not None:
        time_total = cfg.time_total_rounds * system.latency_s
    return energy, time_total


def budgets_record(cfg: RunConfig, system: System) -> dict[str, Any]:
    """The run's whole-run budgets as ``placement.json`` states them (per device, joules)."""
    energy_total, time_total = whole_run_budgets(cfg, system)
    energy = None
    if energy_total is not None:
        energy = np.broadcast_to(np.asarray(energy_total, float), (system.n_devices,)).tolist()
    return {"energy_total_j": energy, "time_total_s": time_total}


def make_planner(
    cfg: RunConfig, system: System, channel: ChannelModel, rng: np.random.Generator
) -> RoundPlanner:
    """The run's planner: its solver or policy, aggregator and whole-run budgets."""
    energy_total, time_total = whole_run_budgets(cfg, system)
    entry = POLICIES.check(cfg.policy)  # myopic: no policy object, the solver alone
    policy: Policy | None = None
    if entry.target is not None:
        policy = entry.load().from_run(cfg, system, energy_total, time_total)
    progress = None
    if cfg.accuracy_model:
        model = AccuracyModel.load(cfg.accuracy_model)
        model.check_scope(cfg.to_dict(), "this run")
        # A device's samples in the system are already its samples x local epochs.
        progress = Progress(model, np.asarray(system.samples))
    return RoundPlanner(
        system,
        channel,
        cfg.method,
        cfg.rank,
        rng,
        aggregation=cfg.aggregation,
        lora_scale=cfg.lora_scale,
        budgets=RunBudgets(energy_total, time_total, cfg.devices),
        policy=policy,
        trace=DeviceTrace.read_csv(cfg.trace) if cfg.trace else None,
        accuracy=progress,
    )


def local_config(cfg: RunConfig, rank: int, rnd: int, device: int) -> LocalConfig:
    """What device ``device`` is told for round ``rnd`` (its seed depends on both)."""
    return LocalConfig(
        rank=rank,
        lr=cfg.lr,
        epochs=cfg.local_epochs,
        batch_size=cfg.batch_size,
        seed=device_seed(cfg.seed, rnd, device),
        precision=cfg.precision,
        frozen_dropout=cfg.frozen_dropout,
        stream=(cfg.seed, rnd, device),
    )


def device_seed(seed: int, rnd: int, device: int) -> int:
    """A per-(round, device) torch seed, so a resumed run draws what a straight one does."""
    return (seed * 1_000_003 + rnd * 1_009 + device) % (2**63)
