"""The workload of a run: the shared frozen model, each device's cached data, the system.

What here does not depend on the run's seed (:class:`Workload`: data split by
``data_seed``, hidden states below the split computed once per device) is built once and
reused by every run that shares it; :func:`build_system` draws the run's device
population and sets T0 and E0 from the loaded model's shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fsl_opt.errors import ConfigError
from fsl_opt.federation.settings import RunConfig
from fsl_opt.learning.data import load_dataset, partition, subsample, tokenize_cached
from fsl_opt.learning.local import DeviceData, cache_hidden
from fsl_opt.learning.split_model import (
    LoraShape,
    SplitModel,
    layer_indices,
    load_encoder,
    load_tokenizer,
)
from fsl_opt.problem import cost
from fsl_opt.problem.presets import get_preset
from fsl_opt.problem.system import System


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
    changes.update(
        preset.compute_for(
            hidden=shape.hidden,
            intermediate=shape.intermediate,
            layers_run=shape.layers_run,
            seq_len=cfg.max_length,
            d=shape.d,
            k=shape.k,
        )
    )
    system = base.replace(**changes)
    r_ref = min(cfg.reference_rank, system.max_rank)
    # References at rank r_ref: the slowest device's delay at f_max, then the largest energy a
    # device spends at that rank with its least-energy clock under that delay. Each budget
    # scales its own reference, so sweeping one factor leaves the other budget unchanged.
    t_ref = float(cost.latency(system, r_ref, system.f_max_hz).max())
    at_ref = system.replace(latency_s=t_ref)
    f_ref = np.minimum(cost.least_energy_frequency(at_ref, r_ref), system.f_max_hz)
    e_ref = float(cost.energy(at_ref, r_ref, f_ref).max())
    t0 = cfg.latency_s if cfg.latency_s is not None else cfg.latency_factor * t_ref
    e0 = cfg.energy_budget_j if cfg.energy_budget_j is not None else cfg.energy_factor * e_ref
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


def torch_device(name: str) -> torch.device:
    """``cpu``, ``cuda``, or ``auto`` (CUDA when available)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"torch_device = {name!r}: no CUDA device here")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"torch_device = {name!r}: no Apple GPU (MPS) here")
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
    have, have_test = len(data.train_labels), len(data.test_labels)
    if n_train is not None and n_train > have:
        raise ConfigError(
            f"samples_per_device = {cfg.samples_per_device}: {cfg.devices} devices need "
            f"{n_train} training samples and {cfg.data} has {have} "
            f"(at most {have // cfg.devices} per device)"
        )
    if cfg.test_samples is not None and cfg.test_samples > have_test:
        raise ConfigError(
            f"test_samples = {cfg.test_samples}: {cfg.data} has {have_test} test samples"
        )
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
    for part in maybe_tqdm(parts, progress, "caching hidden states"):
        p_t = torch.as_tensor(part)
        devices.append(cached(tok["input_ids"][p_t], tok["attention_mask"][p_t], labels[part]))
    test = cached(tok_test["input_ids"], tok_test["attention_mask"], data.test_labels[test_idx])
    return Workload(workload_key(cfg), model, devices, test, dev, data.label_names)


def maybe_tqdm(items: Any, on: bool, desc: str) -> Any:
    if not on:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, leave=False)
