"""Every setting of a federated run, declared once: :class:`RunConfig`.

Each field carries its help text and, where it has them, its choices
(``metadata={"help": ..., "choices": ...}``, as peft's ``LoraConfig`` does). From that one
declaration come the command-line flags (:func:`fsl_opt.cli.flags.add_arguments`), the run
TOML schema (:func:`config_from_dict`), the Flower app's ``[tool.flwr.app.config]`` table
(:func:`flower_app_config`, checked against ``pyproject.toml`` by the tests) and its
override path (:func:`config_from_flower`). Every value is type- and range-checked when the
config is built, so a typo fails before any model or data loads.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import re
import sys
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fsl_opt.errors import ConfigError
from fsl_opt.federation.fields import SECTIONS, PluginOptions, Range, plugin_of, setting
from fsl_opt.federation.registry import (
    DriftPlusPenaltyOptions,
    EnergyPricedOptions,
    FlowerOptions,
)
from fsl_opt.problem.budgets import check_fixed_rank
from fsl_opt.problem.trace import MAX_DEVICES, MAX_ROUNDS
from fsl_opt.registry import Registry

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

#: How an unset optional setting is written where there is no null (TOML, Flower's run config).
UNSET = "none"


def _method_names() -> tuple[str, ...]:
    from solvers import methods

    return methods()


def _preset_names() -> tuple[str, ...]:
    from fsl_opt.problem.presets import PRESETS

    return tuple(PRESETS)


def _registry(target: str) -> Callable[[], Registry[Any]]:
    """The registry at ``"package.module:NAME"``, imported when a setting's choices or help
    are first read (so that checking settings never imports what a registry names)."""

    def read() -> Registry[Any]:
        module, _, name = target.partition(":")
        table: Registry[Any] = getattr(importlib.import_module(module), name)
        return table

    return read


_channels = _registry("channels:CHANNEL_MODELS")
_backends = _registry("fsl_opt.federation.registry:BACKENDS")
_policies = _registry("fsl_opt.federation.registry:POLICIES")
_aggregators = _registry("fsl_opt.learning.registry:AGGREGATORS")
_objectives = _registry("fsl_opt.problem.system:OBJECTIVES")
_datasets = _registry("fsl_opt.learning.registry:DATASETS")
_precisions = _registry("fsl_opt.problem.compute:PRECISIONS")


#: Where tensors may live (``torch_device``, and the benchmarks' ``--torch-device``).
TORCH_DEVICES = r"cpu|auto|mps|cuda(:\d+)?"


def check_torch_device(name: str, what: str) -> None:
    """Refuse a device ``name`` that is not one of :data:`TORCH_DEVICES` (``what``: how the
    message names the setting, e.g. ``"torch_device ="``)."""
    if not re.fullmatch(TORCH_DEVICES, name):
        raise ConfigError(f"{what} {name!r}: expected cpu, cuda, cuda:N, mps or auto")


@dataclass(frozen=True)
class RunSettings:
    """The settings every run has, whatever its plug-ins: the data, the model, the
    training, the population, each round's problem, the whole run's budgets and policy,
    the backend and the output. A plug-in's own options are declared with it
    (:mod:`fsl_opt.federation.registry`); :class:`RunConfig` composes the two.
    """

    model: str = setting(
        "minilm",
        "encoder: minilm (offline default), roberta-base (the paper; needs the hub), "
        "a hub id or a local folder; tiny is a random 4-layer model for tests",
        plans=True,
        workload=True,
        section="model",
    )
    data: str = setting(
        "news4",
        "dataset, NAME or NAME:ARG",
        described_by=_datasets,
        plans=True,
        workload=True,
        section="data",
    )
    text_column: str = setting(
        "text",
        "csv: / hf: data: the column holding the texts",
        plans=True,
        workload=True,
        section="data",
    )
    label_column: str = setting(
        "label",
        "csv: / hf: data: the column holding the labels (strings or integers)",
        plans=True,
        workload=True,
        section="data",
    )
    test_fraction: float = setting(
        0.2,
        "csv: / hf: data without a test split: the share held out for testing",
        plans=True,
        workload=True,
        section="data",
    )
    layers: str = setting(
        "last3",
        "adapted layers: last3 (the paper), first3, middle3, all, lastN or 0,5,...",
        plans=True,
        workload=True,
        section="model",
    )
    devices: int = setting(
        3,
        "number of edge devices I",
        within=Range(0, MAX_DEVICES),
        plans=True,
        solves=True,
        workload=True,
        section="population",
    )
    rounds: int = setting(
        3,
        "federated rounds",
        within=Range(0, MAX_ROUNDS),
        plans=True,
        resumes_with_another=True,
        section="training",
    )
    samples_per_device: int | None = setting(
        256,
        "training samples per device (none: the whole training split divided evenly)",
        within=Range(0, 10**7),
        plans=True,
        workload=True,
        section="data",
    )
    test_samples: int | None = setting(
        1000,
        "test samples evaluated after each round (none: the whole test split)",
        within=Range(0, 10**7),
        plans=True,
        workload=True,
        section="data",
    )
    partition: str = setting(
        "iid",
        "split over devices: iid (the paper) or dirichlet",
        choices=("iid", "dirichlet"),
        plans=True,
        workload=True,
        section="data",
    )
    alpha: float = setting(
        0.5,
        "Dirichlet concentration of the non-IID split",
        within=Range(0, 1e6),
        plans=True,
        workload=True,
        section="data",
    )
    max_length: int = setting(
        128,
        "tokens per sample",
        within=Range(0, 8192),
        plans=True,
        workload=True,
        section="data",
    )
    batch_size: int = setting(
        16, "local mini-batch size", within=Range(0, 10**5), section="training"
    )
    lr: float = setting(
        1e-3, "AdamW learning rate of local training", within=Range(0, 10.0), section="training"
    )
    local_epochs: int = setting(
        1, "local epochs per round", within=Range(0, 1000), plans=True, section="training"
    )
    lora_scale: float = setting(
        2.0,
        "LoRA alpha / r",
        within=Range(0, 1e4),
        plans=True,
        workload=True,
        section="model",
    )
    lora_dropout: float = setting(0.0, "LoRA dropout probability", workload=True, section="model")
    method: str = setting(
        "auto",
        "solver run by the server each round: auto (bisection for the paper's problem, "
        "per_device with objective, min_devices or bandwidth_total_hz) or one of fsl-opt "
        "solve's methods",
        choices=_method_names,
        plans=True,
        solves=True,
        section="round",
    )
    rank: int | tuple[int, ...] | None = setting(
        None,
        "train at this rank every round instead of solving: one rank for every device, or "
        "one per device (4,4,64; a TOML array; 0 leaves a device out; different ranks need "
        "an aggregation that takes them) (none: solve each round)",
        within=Range(0, 8192, low_open=False),
        plans=True,
        section="round",
    )
    max_rank: int = setting(
        64,
        "largest rank the solver may choose (capped at min(d, k))",
        within=Range(0, 8192),
        plans=True,
        section="round",
    )
    preset: str = setting(
        "calibrated",
        "device population (CPUs, radios, channels), or a preset file (*.toml) written by "
        "fsl-opt calibrate: its base preset with the compute measured on a machine",
        choices=_preset_names,
        or_file=".toml",
        plans=True,
        solves=True,
        reads_file=True,
        section="population",
    )
    channel: str = setting(
        "rayleigh",
        "fading model around the population's large-scale gains",
        choices=_channels,
        plans=True,
        solves=True,
        section="population",
    )
    latency_s: float | None = setting(
        None,
        "per-round deadline T0 [s] (none: latency_factor x the reference delay; fsl-opt solve: "
        "the system file's or the preset's own)",
        deprecated=("--T0",),
        within=Range(0, 1e9),
        plans=True,
        solves=True,
        section="round",
    )
    energy_budget_j: float | None = setting(
        None,
        "per-device energy budget E0 [J] (none: energy_factor x the reference energy; fsl-opt "
        "solve: the system file's or the preset's own)",
        deprecated=("--E0",),
        within=Range(0, 1e12),
        plans=True,
        solves=True,
        section="round",
    )
    energy_total_j: float | tuple[float, ...] | None = setting(
        None,
        "each device's energy for the whole run [J], its battery share: one value for every "
        "device or one per device (40,60,80; a TOML array) (none: no whole-run budget); each "
        "round spends at most what is left, and a device whose energy left cannot pay for "
        "rank 1 is left out of the round",
        within=Range(0, 1e15),
        plans=True,
        section="whole_run",
    )
    time_total_s: float | None = setting(
        None,
        "the run's total modeled time [s], the sum of its rounds' delays (none: no whole-run "
        "budget); each round's deadline is at most what is left, and the run stops when "
        "it is spent",
        within=Range(0, 1e12),
        plans=True,
        section="whole_run",
    )
    energy_total_rounds: float | None = setting(
        None,
        "each device's energy for the whole run in rounds of E0: energy_total_j = this x E0 "
        "(none: energy_total_j, or no such budget); a battery the same number of rounds "
        "long whatever the model and data",
        within=Range(0, 1e6),
        plans=True,
        section="whole_run",
    )
    time_total_rounds: float | None = setting(
        None,
        "the run's total modeled time in rounds of T0: time_total_s = this x T0 (none: "
        "time_total_s, or no such budget)",
        within=Range(0, 1e6),
        plans=True,
        section="whole_run",
    )
    policy: str = setting(
        "myopic",
        "how whole-run budgets are spent",
        choices=_policies,
        plans=True,
        section="whole_run",
    )
    target_accuracy: float | None = setting(
        None,
        "the least energy predicted to reach this test accuracy (objective accuracy and an "
        "accuracy_model): the energy price and the rounds are searched on the plan, then "
        "trained or planned with policy energy_priced (none: no target)",
        plans=True,
        section="whole_run",
    )
    reference_rank: int = setting(
        16,
        "rank that just fits the reference budgets: T_ref is the slowest device's delay "
        "at this rank and f_max, E_ref the largest energy a device spends there with its "
        "least-energy on-time clock",
        within=Range(0, 8192),
        plans=True,
        solves=True,
        section="round",
    )
    latency_factor: float = setting(
        1.0,
        "T0 = latency_factor x T_ref when T0 is not given",
        within=Range(0, 1e6),
        plans=True,
        section="round",
    )
    energy_factor: float = setting(
        1.0,
        "E0 = energy_factor x E_ref when E0 is not given",
        within=Range(0, 1e6),
        plans=True,
        section="round",
    )
    objective: str = setting(
        "shared",
        "what each round maximizes",
        choices=_objectives,
        plans=True,
        solves=True,
        section="round",
    )
    min_devices: int | None = setting(
        None,
        "at least this many devices take part each round; the others may be left out "
        "(none: every device, the paper)",
        within=Range(0, MAX_DEVICES),
        plans=True,
        solves=True,
        section="round",
    )
    bandwidth_total_hz: float | None = setting(
        None,
        "a bandwidth pool [Hz] the solver splits among the devices each round (none: each "
        "device keeps its own sub-band, the paper); the noise is then the preset's noise "
        "per Hz times each device's share",
        within=Range(1.0, 1e12, low_open=False),
        plans=True,
        solves=True,
        section="round",
    )
    power_control: bool = setting(
        False,
        "each device's uplink power is chosen with its clock each round, in (0, its "
        "preset power], for the least energy at its rank (planned by per_device; no "
        "bandwidth pool, fixed rank or budget policy with it yet); the records log "
        "tx_power_w",
        plans=True,
        solves=True,
        section="round",
    )
    trace: str = setting(
        "",
        "a device trace to replay (CSV: device, round and any of available, clock_cap_hz, "
        "distance_m or gain; see docs/traces.md): an unavailable device is left out of "
        "that round before the solver runs, a clock cap lowers its f_max, a distance or "
        "gain replaces its placement's large-scale channel (empty: no trace)",
        plans=True,
        reads_file=True,
        section="population",
    )
    accuracy_model: str = setting(
        "",
        "an accuracy model (JSON written by fsl-opt fit-accuracy): each round's predicted "
        "accuracy is logged, and objective = accuracy values device-rounds by it; refused "
        "when it was fitted for other model, data or learning settings (empty: none)",
        plans=True,
        solves=True,
        reads_file=True,
        section="round",
    )
    weak_devices: int = setting(
        0,
        "the first N devices run at weak_clock x their maximum clock (a heterogeneous "
        "population; 0: the preset's devices as drawn)",
        within=Range(0, MAX_DEVICES, low_open=False),
        plans=True,
        section="population",
    )
    weak_clock: float = setting(
        0.25,
        "clock factor of the weak devices",
        within=Range(0, 1e3),
        plans=True,
        section="population",
    )
    aggregation: str = setting(
        "fedavg",
        "server aggregation of the adapters",
        choices=_aggregators,
        plans=True,
        section="training",
    )
    seed: int = setting(
        0,
        "device population, channel draws, adapter init and data order",
        within=Range(0, 2**63 - 1, low_open=False),
        plans=True,
        solves=True,
        section="training",
    )
    data_seed: int = setting(
        0,
        "training subset, split over devices and test subset",
        within=Range(0, 2**63 - 1, low_open=False),
        plans=True,
        workload=True,
        section="data",
    )
    cache_hidden: bool = setting(
        True,
        "train from cached split-point hidden states (--no-cache-hidden: run every layer)",
        flags=("--no-cache",),
        workload=True,
        section="model",
    )
    hidden_dtype: str = setting(
        "float16",
        "storage type of the cached hidden states",
        choices=("float16", "bfloat16", "float32"),
        workload=True,
        section="model",
    )
    backend: str = setting(
        "inprocess",
        "how the devices train",
        choices=_backends,
        resumes_with_another=True,
        section="backend",
    )
    torch_device: str = setting(
        "cpu",
        "where tensors live: cpu, cuda, cuda:N, mps or auto",
        workload=True,
        section="model",
    )
    precision: str = setting(
        "fp32",
        "arithmetic of the adapted layers' forward and backward and of the evaluation "
        "(adapters, optimizer and aggregation stay fp32)",
        choices=_precisions,
        section="model",
    )
    frozen_dropout: bool = setting(
        True,
        "dropout inside the frozen layers above the split during local training (the "
        "encoder's own hidden and attention dropout); --no-frozen-dropout runs them as at "
        "inference, like the cached layers below the split (about 1.4x faster a step on CPU)",
        section="model",
    )
    tensorboard: bool = setting(
        False,
        "also write each round's scalars (the log's numbers, per device as name/i) for "
        "TensorBoard into OUT/tensorboard (pip install 'fsl-opt[tensorboard]')",
        section="output",
    )
    export_adapter: str = setting(
        "end",
        "write the adapters in peft's format (adapter/, loadable with PeftModel.from_pretrained, "
        "plus the head): at the end of the run, every round too (adapters/round_N/), or no",
        choices=("end", "every_round", "no"),
        section="output",
    )
    out: str = setting(
        "runs/default",
        "run folder (config, log.jsonl, log.csv, checkpoint)",
        plans=True,
        resumes_with_another=True,
        section="output",
    )


# The plug-ins' options follow the run's own settings in the TOML, the flags and the
# Flower table: a dataclass takes its bases' fields from the last base to the first, so
# the options classes are listed here in the reverse of PLUGIN_OPTIONS (a test checks).
@dataclass(frozen=True)
class RunConfig(EnergyPricedOptions, DriftPlusPenaltyOptions, FlowerOptions, RunSettings):
    """One federated LoRA run: :class:`RunSettings` and every plug-in's options
    (:data:`~fsl_opt.federation.registry.PLUGIN_OPTIONS`), one flat table; the defaults
    are the README's short offline run.

    Every field's help text is in its metadata (``fsl-opt train --help`` prints it).
    Build variants with :meth:`replace`, which validates again. Checks run in order: each
    field alone (type, choices, range), then each section's ``_check_<section>``, then
    the chosen plug-ins' own :meth:`~fsl_opt.federation.fields.PluginOptions.check_options`.
    """

    def __post_init__(self) -> None:
        self._check_fields()
        for section in SECTIONS:  # then each part of the run, in order, owns its checks
            check = getattr(self, f"_check_{section}", None)
            if check is not None:
                check()
        for options in plugin_options(type(self)):  # then each chosen plug-in's own checks
            kind, name = declared_plugin(options)
            if getattr(self, kind) == name:
                options.check_options(self)

    def _check_fields(self) -> None:
        """Every field alone, from its metadata: its type, its choices, its range."""
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _check_type(f.name, getattr(self, f.name), hints))
        for f in dataclasses.fields(self):
            _check_choice_and_range(f, getattr(self, f.name))

    def _check_data(self) -> None:
        from fsl_opt.learning.registry import check_data

        check_data(self.data)
        if not 0 < self.test_fraction < 1:
            raise ConfigError(f"test_fraction = {self.test_fraction!r}: expected 0 < f < 1")

    def _check_model(self) -> None:
        if not re.fullmatch(r"all|(last|first|middle)\d+|\d+(\s*,\s*\d+)*", self.layers):
            raise ConfigError(
                f"layers = {self.layers!r}: expected last3, first3, middle3, all, lastN "
                "or a list like 0,5"
            )
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"lora_dropout = {self.lora_dropout!r}: expected 0 <= p < 1")
        check_torch_device(self.torch_device, "torch_device =")

    def _check_round(self) -> None:
        self._check_round_shape()
        if self.objective == "accuracy" and not self.accuracy_model:
            raise ConfigError(
                "objective = 'accuracy' needs accuracy_model = FILE (fit one with "
                "fsl-opt fit-accuracy RUN... --out FILE)"
            )
        if self.power_control:
            clash = [
                f"{name} = {getattr(self, name)!r}"
                for name, ok in (
                    ("rank", self.rank is None),
                    ("method", self.method in ("auto", "per_device")),
                )
                if not ok
            ]
            if clash:
                raise ConfigError(
                    f"power_control = true with {', '.join(clash)}: power control is "
                    "planned by per_device and the budget policy (a fixed rank trains at "
                    "its devices' fixed power); leave those out or power_control off"
                )
        if self.rank is not None and max(self.fixed_ranks()) > self.max_rank:
            raise ConfigError(
                f"rank = {self.rank}: above max_rank = {self.max_rank} (raise max_rank too)"
            )
        if isinstance(self.rank, tuple):
            if len(self.rank) != self.devices:
                raise ConfigError(
                    f"rank has {len(self.rank)} values for devices = {self.devices}: give one "
                    "rank, or one per device"
                )
            if max(self.rank) == 0:
                raise ConfigError(f"rank = {self.rank}: every device left out; give one a rank")
        elif self.rank == 0:
            raise ConfigError("rank = 0: every device left out; give a rank of at least 1")
        if len(set(self.fixed_ranks()) - {0}) > 1:
            self._check_aggregation_takes_ranks(f"rank = {self.rank}")

    def _check_whole_run(self) -> None:
        if isinstance(self.energy_total_j, tuple) and len(self.energy_total_j) != self.devices:
            raise ConfigError(
                f"energy_total_j has {len(self.energy_total_j)} values for "
                f"devices = {self.devices}: give one value, or one per device"
            )
        if self.energy_total_j is not None:
            check_fixed_rank(self.rank, battery="energy_total_j")
        for absolute, relative in (
            ("energy_total_j", "energy_total_rounds"),
            ("time_total_s", "time_total_rounds"),
        ):
            if getattr(self, absolute) is not None and getattr(self, relative) is not None:
                raise ConfigError(
                    f"{absolute} = {getattr(self, absolute)} and {relative} = "
                    f"{getattr(self, relative)} set the same budget twice: give one of them"
                )
        if self.energy_total_rounds is not None:
            check_fixed_rank(self.rank, battery="energy_total_rounds")
        self._check_policy()
        self._check_owned_options()
        if self.rank is not None and self.method != "auto":  # (a policy refused both)
            raise ConfigError(
                f"rank = {self.rank} with method = {self.method!r}: a fixed rank trains "
                "without solving, so the method would be ignored; leave one of them out"
            )
        if self.target_accuracy is not None:
            t = self.target_accuracy
            if not (math.isfinite(t) and 0.0 < t < 1.0):
                raise ConfigError(f"target_accuracy = {t}: expected an accuracy in (0, 1)")
            if self.objective != "accuracy" or self.policy == "drift_plus_penalty":
                raise ConfigError(
                    f"target_accuracy = {t} prices energy to buy predicted accuracy: set "
                    f"objective = 'accuracy' (now {self.objective!r}) and leave policy out "
                    f"(now {self.policy!r}); whole-run budgets still hold"
                )

    def _check_output(self) -> None:
        if not self.out.strip():
            raise ConfigError("out = '': expected a folder path")

    def input_files(self) -> dict[str, Path]:
        """The files and folders of the user's that the run reads, by setting: a local data
        set or model, a preset file, a device trace, an accuracy model."""
        from fsl_opt.learning.registry import DATASETS

        found: dict[str, Path] = {}
        name, _, arg = self.data.partition(":")
        if DATASETS[name].has("path_argument") and arg.strip():
            found["data"] = Path(arg)
        if Path(self.model).exists():
            found["model"] = Path(self.model)
        for f in dataclasses.fields(self):
            value, suffix = getattr(self, f.name), f.metadata["or_file"]
            if f.metadata["reads_file"] and value and (not suffix or value.endswith(suffix)):
                found[f.name] = Path(value)
        return found

    def check_input_files(self) -> None:
        """Read the input files a run or plan needs before anything is made (a trace that
        does not fit the devices, a preset file that does not parse: each a
        :class:`ConfigError`)."""
        from fsl_opt.problem.presets import load_preset_file
        from fsl_opt.problem.trace import DeviceTrace

        if self.trace:
            DeviceTrace.read_csv(self.trace).check_devices(self.devices)
        if self.preset.endswith(".toml"):
            load_preset_file(self.preset)

    def replace(self, **changes: Any) -> RunConfig:
        """A validated copy with ``changes`` applied (None sets an optional field to None)."""
        return dataclasses.replace(self, **changes)

    @property
    def extended(self) -> bool:
        """Whether the run solves more than the paper's problem (ranks per device, a
        selection or a bandwidth pool)."""
        return (
            self.objective != "shared"
            or self.min_devices is not None
            or self.bandwidth_total_hz is not None
        )

    def _check_policy(self) -> None:
        """What the chosen whole-run policy needs, read from its registry entry."""
        from fsl_opt.federation.registry import POLICIES
        from fsl_opt.problem.system import OBJECTIVES

        entry = POLICIES.check(self.policy)
        budgets = ("energy_total_j", "time_total_s", "energy_total_rounds", "time_total_rounds")
        if entry.has("needs_budgets") and all(getattr(self, k) is None for k in budgets):
            raise ConfigError(
                f"policy = {self.policy!r} spends whole-run budgets: set energy_total_j, "
                "time_total_s or both (or their _rounds forms)"
            )
        if entry.target is not None and (self.rank is not None or self.method != "auto"):
            raise ConfigError(
                f"policy = {self.policy!r} decides each round's ranks itself: leave out rank "
                f"(now {self.rank}) and method (now {self.method!r})"
            )
        if entry.has("needs_accuracy") and not OBJECTIVES[self.objective].has(
            "needs_accuracy_model"
        ):
            raise ConfigError(
                f"policy = {self.policy!r} buys predicted accuracy: set objective = 'accuracy' "
                f"(now {self.objective!r})"
            )

    def _check_owned_options(self) -> None:
        """A plug-in's own option given while another plug-in is chosen is refused (it would
        be ignored), and one the chosen plug-in needs is asked for; a setting that may
        change on resume (``backend``) only groups its options."""
        for options in plugin_options(type(self)):
            kind, name = declared_plugin(options)
            if kind in MAY_CHANGE_ON_RESUME:
                continue
            chosen = getattr(self, kind)
            for f in dataclasses.fields(options):
                value = getattr(self, f.name)
                if chosen != name and value != f.default:
                    raise ConfigError(
                        f"{f.name} = {value!r}: an option of {kind} = {name!r}, used by it "
                        f"only ({kind} is {chosen!r}: set {kind} = {name!r} or leave "
                        f"{f.name} out)"
                    )
                if chosen == name and f.metadata["needed"] and value is None:
                    raise ConfigError(
                        f"{kind} = {name!r} needs {f.name} (--{f.name.replace('_', '-')}; "
                        "fsl-opt train --help describes it)"
                    )

    def _check_round_shape(self) -> None:
        """Settings that contradict each other: which ones, and what to change."""
        if self.min_devices is not None and self.min_devices > self.devices:
            raise ConfigError(f"min_devices = {self.min_devices}: above devices = {self.devices}")
        if not 0 <= self.weak_devices <= self.devices:
            raise ConfigError(
                f"weak_devices = {self.weak_devices}: expected 0..devices ({self.devices})"
            )
        check_fixed_rank(self.rank, extended=self.extended)
        from fsl_opt.problem.system import OBJECTIVES

        if OBJECTIVES[self.objective].has("per_device"):
            self._check_aggregation_takes_ranks(f"objective = {self.objective!r}")
        from solvers import extended_methods

        extended = extended_methods()
        if self.method not in ("auto", *extended) and self.extended:
            raise ConfigError(
                f"method = {self.method!r} solves the paper's problem only; with objective, "
                f"min_devices or bandwidth_total_hz use auto or one of {', '.join(extended)}"
            )

    def _check_aggregation_takes_ranks(self, why: str) -> None:
        """Refuse an aggregation of one rank only where ``why`` (a setting) gives devices
        different ranks, naming the aggregations that take them."""
        from fsl_opt.learning.registry import AGGREGATORS

        if AGGREGATORS[self.aggregation].has("one_rank"):
            others = [name for name, e in AGGREGATORS.items() if not e.has("one_rank")]
            raise ConfigError(
                f"{why} gives devices different ranks, which aggregation = "
                f"{self.aggregation!r} cannot aggregate (one rank only): choose "
                f"{', '.join(others)}"
            )

    def fixed_ranks(self) -> tuple[int, ...]:
        """The given ``rank`` as one per device (empty when the ranks are solved for)."""
        if self.rank is None:
            return ()
        if isinstance(self.rank, tuple):
            return self.rank
        return (self.rank,) * self.devices

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every field."""
        return dataclasses.asdict(self)


#: The settings ``fsl-opt plan`` takes (declared with ``plans=True``): those the planner
#: reads (spelled as ``fsl-opt train`` spells them); the model and data settings only give
#: the model's shape and each device's number of samples.
PLANNER_SETTINGS = tuple(f.name for f in dataclasses.fields(RunConfig) if f.metadata["plans"])
#: The settings ``fsl-opt solve`` takes (declared with ``solves=True``): those that shape
#: one round's problem, spelled as ``fsl-opt train`` spells them.
SOLVE_SETTINGS = tuple(f.name for f in dataclasses.fields(RunConfig) if f.metadata["solves"])
#: The settings a resumed run may give another value (declared with
#: ``resumes_with_another=True``: where it lives, how many rounds it runs, how its devices
#: train and on which Ray cluster; each backend's ``restart_note`` says what of the devices'
#: state survives); any other difference is refused.
#: Run settings the workload (data split, hidden-state cache, shared model) depends on.
WORKLOAD_SETTINGS = tuple(f.name for f in dataclasses.fields(RunConfig) if f.metadata["workload"])


def declared_plugin(options: type) -> tuple[str, str]:
    """The plug-in of one of :func:`plugin_options`' classes, as (setting, name)."""
    plugin = plugin_of(options)
    if plugin is None:
        raise TypeError(f"{options.__name__} declares no plug-in")
    return plugin


def plugin_options(config: type) -> tuple[type[PluginOptions], ...]:
    """The plug-ins' options classes a configuration class composes (its bases that
    declare a plug-in), in the order their fields follow."""
    found = [c for c in config.__mro__ if plugin_of(c) is not None]
    return tuple(reversed(found))


#: The plug-in each plug-in option belongs to, as (setting, name), by option.
OWNERS = {
    f.name: declared_plugin(options)
    for options in plugin_options(RunConfig)
    for f in dataclasses.fields(options)
}
MAY_CHANGE_ON_RESUME = tuple(
    f.name for f in dataclasses.fields(RunConfig) if f.metadata["resumes_with_another"]
)


def differences(saved: dict[str, Any], now: dict[str, Any], ignore: Iterable[str] = ()) -> str:
    """``"key ('a' there, 'b' now), ..."`` for every key whose value differs ("" if none)."""
    skip = set(ignore)
    keys = [k for k in sorted(set(saved) | set(now)) if k not in skip]
    return ", ".join(
        f"{k} ({saved.get(k)!r} there, {now.get(k)!r} now)"
        for k in keys
        if saved.get(k) != now.get(k)
    )


def choices_of(f: dataclasses.Field[Any]) -> tuple[str, ...] | None:
    choices = f.metadata.get("choices")
    if choices is None:
        return None
    return tuple(choices() if callable(choices) else choices)


def allowed_types(name: str, hints: dict[str, Any]) -> tuple[type, ...]:
    hint = hints[name]
    return typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)


def _check_type(name: str, value: Any, hints: dict[str, Any] | None = None) -> Any:
    """``value`` as the type of field ``name``: strict (no bool for a number, no number in a
    string); an int is taken where a float is expected."""
    allowed = allowed_types(name, hints or typing.get_type_hints(RunConfig))
    if value is None and type(None) in allowed:
        return None
    if any(typing.get_origin(t) is tuple for t in allowed):
        values = per_device_numbers(name, value)
        if values is not None and int in allowed:  # integers, one per device
            if not all(v.is_integer() for v in values):
                raise ConfigError(f"{name} = {value!r}: expected whole numbers, one per device")
            whole = tuple(int(v) for v in values)
            return whole[0] if len(whole) == 1 else whole
        if values is not None:
            return values[0] if len(values) == 1 and float in allowed else values
    for t in allowed:
        if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"{name} = {value!r}: expected a finite number")
            return float(value)
        if t is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if t in (str, bool) and isinstance(value, t):
            return value
    names = " or ".join("none" if t is type(None) else t.__name__ for t in allowed)
    raise ConfigError(f"{name} = {value!r}: expected {names}")


def per_device_numbers(name: str, value: Any) -> tuple[float, ...] | None:
    """A per-device setting's values: from a list (TOML), a tuple, or ``"40,60,80"`` (a flag,
    Flower's run config); None when ``value`` is none of these (a single number)."""
    if isinstance(value, str):
        try:
            items: list[Any] = [float(x) for x in value.split(",")]
        except ValueError:
            raise ConfigError(
                f"{name} = {value!r}: expected a number or numbers separated by commas"
            ) from None
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        return None
    if not items or not all(
        isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in items
    ):
        raise ConfigError(f"{name} = {value!r}: expected finite numbers, one per device")
    return tuple(float(x) for x in items)


def _check_choice_and_range(f: dataclasses.Field[Any], value: Any) -> None:
    """``value`` among the setting's choices (or a file where it takes one) and within its
    range; a :class:`ConfigError` naming the setting (and the device, for one of a
    per-device tuple) otherwise."""
    choices = choices_of(f)
    suffix = f.metadata.get("or_file")
    if suffix and isinstance(value, str) and value.endswith(suffix):
        return  # a file: read (and checked) where it is used
    if choices is not None and value not in choices:
        also = f", or a *{suffix} file" if suffix else ""
        raise ConfigError(f"{f.name} = {value!r}: expected one of {', '.join(choices)}{also}")
    within: Range | None = f.metadata["within"]
    if within is None or value is None:
        return
    for i, v in enumerate(value if isinstance(value, tuple) else (value,)):
        if not within.holds(v):
            where = f" of device {i}" if isinstance(value, tuple) else ""
            optional = " (or leave it out)" if f.default is None else ""
            raise ConfigError(f"{f.name}{where} = {v!r}: expected a value {within}{optional}")


FIELDS = tuple(f.name for f in dataclasses.fields(RunConfig))


def check_settings(values: dict[str, Any]) -> dict[str, Any]:
    """Each of ``values`` alone as :class:`RunConfig` checks it (its type, choices and
    range), for a command that reads some settings without making a run (``fsl-opt
    solve``); the values converted as a run would hold them."""
    hints = typing.get_type_hints(RunConfig)
    by_name = {f.name: f for f in dataclasses.fields(RunConfig)}
    out = {}
    for name, value in values.items():
        out[name] = _check_type(name, value, hints)
        _check_choice_and_range(by_name[name], out[name])
    return out


def config_from_dict(doc: dict[str, Any], source: str = "config") -> RunConfig:
    """A :class:`RunConfig` from a parsed TOML document (keys at the top level or in ``[run]``).

    Unknown keys and tables are an error naming them; ``"none"`` unsets an optional key.
    """
    if "run" in doc:
        others = sorted(set(doc) - {"run"})
        if others:
            raise ConfigError(f"{source}: unknown key {others[0]!r} beside [run]")
        body = doc["run"]
        if not isinstance(body, dict):
            raise ConfigError(f"{source}: [run] must be a table")
    else:
        body = doc
    hints = typing.get_type_hints(RunConfig)
    values = {}
    for key, value in body.items():
        if key not in FIELDS:
            raise ConfigError(
                f"{source}: unknown key {key!r}; known keys: {', '.join(sorted(FIELDS))}"
            )
        if value == UNSET and type(None) in allowed_types(key, hints):
            value = None
        values[key] = value
    try:
        values = {k: _check_type(k, v, hints) for k, v in values.items()}
        return RunConfig(**values)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def load_config(path: str | Path | None) -> RunConfig:
    """Read a run configuration file (defaults when ``path`` is None)."""
    if path is None:
        return RunConfig()
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8").removeprefix("\ufeff"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text (a run TOML is UTF-8)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: malformed TOML: {exc}") from None
    return config_from_dict(doc, str(path))


def _toml_value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        # A TOML basic string: escape backslash, quote and control characters.
        out = value.replace("\\", "\\\\").replace('"', '\\"')
        out = re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\u{ord(m.group()):04x}", out)
        return f'"{out}"'
    return repr(value)


def dump_toml(config: RunConfig) -> str:
    """The configuration as TOML that :func:`load_config` reads back to the same config."""
    lines = []
    for key, value in config.to_dict().items():
        lines.append(f"{key} = {_toml_value(UNSET if value is None else value)}")
    return "\n".join(lines) + "\n"


# --- Flower run config ----------------------------------------------------------------

#: Defaults of the Flower app that differ from the command line's (a folder of its own).
FLOWER_DEFAULTS = {"out": "runs/flower", "backend": "flower"}
#: Keys of the Flower app's run config that are ServerApp actions, not run settings.
FLOWER_ACTIONS = {"resume": False, "overwrite": False}


def flower_app_config() -> dict[str, Any]:
    """``[tool.flwr.app.config]``: every field (unset optional ones as ``"none"``), then
    the ServerApp's actions ``resume`` and ``overwrite``.

    Flower accepts a ``--run-config`` key only if the app declares it, so every setting is
    declared; ``pyproject.toml`` must hold exactly this table (a test checks it).
    """
    out: dict[str, Any] = {}
    for key, value in RunConfig().to_dict().items():
        value = FLOWER_DEFAULTS.get(key, value)
        out[key] = UNSET if value is None else value
    return {**out, **FLOWER_ACTIONS}


def config_from_flower(run_config: dict[str, Any]) -> RunConfig:
    """The :class:`RunConfig` of a Flower run config (``"none"`` unsets an optional key;
    the action keys :data:`FLOWER_ACTIONS` are left out)."""
    settings = {k: v for k, v in run_config.items() if k not in FLOWER_ACTIONS}
    return config_from_dict(settings, "run config")


def print_flower_table() -> None:
    """Print ``[tool.flwr.app.config]`` for ``pyproject.toml``."""
    print("[tool.flwr.app.config]")
    for key, value in flower_app_config().items():
        print(f"{key} = {_toml_value(value)}")
