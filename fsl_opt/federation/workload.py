"""The workload of a run: the shared frozen model, each device's cached data, the system.

What here does not depend on the run's seed (:class:`Workload`: data split by
``data_seed``, hidden states below the split computed once per device) is built once and
reused by every run that shares it; :func:`build_system` puts the run's placement (drawn
once, with its channel model) on the loaded model's shape and sets T0 and E0 from the
references at the placement's mean channel.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from channels import ChannelModel
from fsl_opt.errors import ConfigError
from fsl_opt.federation.settings import WORKLOAD_SETTINGS, RunConfig
from fsl_opt.learning.data import (
    Columns,
    TextDataset,
    data_fingerprint,
    default_cache_dir,
    load_dataset,
    partition,
    subsample,
    tokenize_cached,
)
from fsl_opt.learning.local import DeviceData, cache_hidden
from fsl_opt.learning.split_model import (
    LoraShape,
    SplitModel,
    layer_indices,
    load_encoder,
    load_tokenizer,
    resolve_model,
)
from fsl_opt.problem.placement import Placement, References, references
from fsl_opt.problem.pool import with_pool
from fsl_opt.problem.presets import get_preset
from fsl_opt.problem.system import System


def build_system(
    cfg: RunConfig,
    shape: LoraShape,
    shard_sizes: list[int],
    placement: Placement,
    channel: ChannelModel,
) -> tuple[System, References]:
    """The run's system: ``placement`` with this run's model shape, |D_i|, T0 and E0.

    The references T_ref and E_ref (:func:`~fsl_opt.problem.placement.references` at
    ``reference_rank``) are computed on this placement at its mean channel, the same
    devices whose gains ``channel`` fades each round; T0 = latency_factor x T_ref and
    E0 = energy_factor x E_ref unless given. The returned system carries the mean gains.
    """
    preset = get_preset(cfg.preset)
    mean = channel.mean(placement.n_devices)
    base = preset.system(placement, mean.gain_ul, mean.gain_dl)
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
    refs = references(system, cfg.reference_rank)
    t0 = cfg.latency_s if cfg.latency_s is not None else cfg.latency_factor * refs.latency_s
    e0 = (
        cfg.energy_budget_j
        if cfg.energy_budget_j is not None
        else cfg.energy_factor * refs.energy_j
    )
    system = system.replace(latency_s=t0, energy_budget_j=np.full(cfg.devices, e0))
    return _round_shape(cfg, system), refs


def _round_shape(cfg: RunConfig, system: System) -> System:
    """The run's objective, selection, bandwidth pool and weak devices on the system.

    Weak devices are slowed after the budgets are set (the budgets stay those of the
    preset's population). A pool follows the one pool rule
    (:func:`fsl_opt.problem.pool.with_pool`).
    """
    changes: dict[str, Any] = {
        "objective": cfg.objective,
        # The accuracy objective's device values come from the run's state each round (the
        # planner's accuracy progress); none are known before the first.
        "device_value": np.ones(system.n_devices) if cfg.objective == "accuracy" else None,
        "min_devices": cfg.min_devices,
        "power_control": cfg.power_control,
    }
    if cfg.weak_devices:
        f = np.array(system.f_max_hz)
        f[: cfg.weak_devices] *= cfg.weak_clock
        changes["f_max_hz"] = f
    system = system.replace(**changes)
    if cfg.bandwidth_total_hz is not None:
        system = with_pool(system, cfg.bandwidth_total_hz)
    return system


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
    #: sha256 of every device's training texts and labels and of the test split: what a
    #: resumed run checks it still trains and tests on.
    fingerprint: str = ""
    #: The untuned model's test accuracy and loss by (seed, precision): every run of one
    #: seed starts from the same adapters (B = 0, so neither the rank nor the scale changes
    #: the output) and the same head, so an experiment evaluates round 0 once per seed.
    untuned: dict[tuple[int, str], dict[str, float]] = field(default_factory=dict)


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
    """The settings a :class:`Workload` depends on (and the content of a user's CSV)."""
    return (*(getattr(cfg, k) for k in WORKLOAD_SETTINGS), data_fingerprint(cfg.data))


def base_model_id(cfg: RunConfig) -> str | None:
    """Where an exported adapter's base model loads from (None: random weights, saved with it)."""
    if cfg.model == "tiny" or cfg.model.startswith("random:"):
        return None
    return resolve_model(cfg.model)


def columns(cfg: RunConfig) -> Columns:
    """Where the run's data keeps texts and labels (``csv:`` and ``hf:`` data)."""
    return Columns(cfg.text_column, cfg.label_column, cfg.test_fraction, cfg.data_seed)


@dataclass(frozen=True)
class Split:
    """Which samples a run uses: the training subset, its split over devices, the test set."""

    train_idx: np.ndarray
    labels: np.ndarray
    parts: list[np.ndarray]
    test_idx: np.ndarray


def split_samples(cfg: RunConfig, data: TextDataset) -> Split:
    """The run's samples, drawn from ``data_seed`` alone: every process that calls this with
    the same settings (the server, each Flower node) gets the same split."""
    rng = np.random.default_rng(cfg.data_seed)
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
    train_idx = subsample(have, n_train, rng)
    labels = data.train_labels[train_idx]
    alpha = cfg.alpha if cfg.partition == "dirichlet" else None
    parts = partition(labels, cfg.devices, rng, alpha=alpha)
    test_idx = subsample(have_test, cfg.test_samples, rng)
    return Split(train_idx, labels, parts, test_idx)


def usable_positions(config: Any) -> int | None:
    """How many tokens a sample may hold in an encoder of ``config`` (RoBERTa-like models
    spend two of their position embeddings on the padding offset); None when unknown."""
    total = getattr(config, "max_position_embeddings", None)
    if not isinstance(total, int):
        return None
    offset = (
        2 if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert") else 0
    )
    return total - offset


def load_model(cfg: RunConfig, num_labels: int) -> tuple[SplitModel, torch.device]:
    """The shared frozen split model (random parts seeded by ``data_seed``, as everywhere)."""
    dev = torch_device(cfg.torch_device)
    torch.manual_seed(cfg.data_seed)
    encoder = load_encoder(cfg.model)
    positions = usable_positions(encoder.config)
    if positions is not None and cfg.max_length > positions:
        raise ConfigError(
            f"max_length = {cfg.max_length}: the model {cfg.model} takes at most {positions} "
            "tokens per sample"
        )
    layers = layer_indices(cfg.layers, len(encoder.encoder.layer))
    model = SplitModel(encoder, layers, num_labels, cfg.lora_scale, cfg.lora_dropout)
    model.to(dev)
    return model, dev


def _device_data(
    cfg: RunConfig,
    model: SplitModel,
    dev: torch.device,
    texts: list[str],
    labels: np.ndarray,
    tokenizer: Any,
) -> DeviceData:
    tok = tokenize_cached(texts, tokenizer, cfg.max_length)
    y = torch.as_tensor(labels, dtype=torch.long)
    return cache_hidden(
        model,
        tok["input_ids"],
        tok["attention_mask"],
        y,
        cfg.cache_hidden,
        cfg.hidden_dtype,
        device=dev,
    )


def _partition(
    cfg: RunConfig,
    model: SplitModel,
    dev: torch.device,
    data: TextDataset,
    split: Split,
    device: int,
    tokenizer: Any,
) -> DeviceData:
    """Device ``device``'s share of the training samples, cached at the split point."""
    part = split.parts[device]
    texts = [data.train_texts[split.train_idx[i]] for i in part]
    return _device_data(cfg, model, dev, texts, split.labels[part], tokenizer)


def load_workload(cfg: RunConfig, progress: bool = False) -> Workload:
    """Load data and model, split over devices (``data_seed``), cache hidden states."""
    data = load_dataset(cfg.data, columns(cfg))
    tokenizer = load_tokenizer(cfg.model)
    model, dev = load_model(cfg, data.num_labels)
    split = split_samples(cfg, data)
    devices = [
        _partition(cfg, model, dev, data, split, i, tokenizer)
        for i in maybe_tqdm(range(cfg.devices), progress, "caching hidden states")
    ]
    test_texts = [data.test_texts[i] for i in split.test_idx]
    test_labels = data.test_labels[split.test_idx]
    test = _device_data(cfg, model, dev, test_texts, test_labels, tokenizer)
    digest = hashlib.sha256()
    for part in [*split.parts, None]:
        if part is None:
            texts, labels = test_texts, test_labels
        else:
            texts = [data.train_texts[split.train_idx[i]] for i in part]
            labels = split.labels[part]
        digest.update("\x00".join(texts).encode("utf-8", "replace"))
        digest.update(np.asarray(labels, dtype=np.int64).tobytes())
        digest.update(repr(data.label_names).encode())
    return Workload(
        workload_key(cfg), model, devices, test, dev, data.label_names, digest.hexdigest()
    )


def load_device(cfg: RunConfig, device: int) -> tuple[SplitModel, DeviceData, torch.device]:
    """What one device needs and nothing more: the model and its own partition.

    Its split-point hidden states are kept on disk (``$FSL_OPT_CACHE/devices``), keyed by
    the run settings the workload depends on and the device, so a Flower node that starts
    a new ClientApp process every round computes them once, not once a round, and never
    touches another device's samples or the test set.
    """
    if not 0 <= device < cfg.devices:
        raise ConfigError(
            f"partition-id = {device}: expected 0..{cfg.devices - 1} (devices = {cfg.devices})"
        )
    data = load_dataset(cfg.data, columns(cfg))
    model, dev = load_model(cfg, data.num_labels)
    key = hashlib.sha256(repr((workload_key(cfg), device)).encode()).hexdigest()[:24]
    path = default_cache_dir() / "devices" / f"{key}.pt"
    if path.is_file():
        try:
            return model, DeviceData(**torch.load(path, weights_only=True)), dev
        except Exception:  # a damaged cache file is rebuilt
            path.unlink(missing_ok=True)
    split = split_samples(cfg, data)
    own = _partition(cfg, model, dev, data, split, device, load_tokenizer(cfg.model))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save({k: v for k, v in vars(own).items() if v is not None}, tmp)
    tmp.replace(path)
    return model, own, dev


def maybe_tqdm(items: Any, on: bool, desc: str) -> Any:
    if not on:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, leave=False)


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
    model, _ = load_model(cfg.replace(torch_device="cpu"), num_labels=2)
    return model.lora_shape()
