"""Configuration of a federated run: a TOML file, then command-line overrides.

Every key of :class:`RunConfig` may appear at the top level of the file (or under ``[run]``);
unknown keys are an error naming the key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fsl_opt.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True)
class RunConfig:
    """One federated LoRA run (defaults: the short offline run of the README).

    Attributes
    ----------
    model : str
        ``minilm`` (offline default), ``roberta-base`` (the paper), a hub id or a local
        folder; ``tiny`` is a random 4-layer model for tests.
    data : str
        ``news4`` (offline default), ``reuters8``, ``ag_news`` or ``ag_news:/folder``.
    layers : str
        Adapted layers: ``last3`` (the paper), ``first3``, ``middle3``, ``all``, or ``0,5``.
    samples_per_device : int or None
        Training samples per device (None: the whole training split divided evenly).
    test_samples : int or None
        Test samples evaluated after each round (None: the whole test split).
    partition : {"iid", "dirichlet"}
        IID (the paper) or label-skewed with concentration ``alpha``.
    method : str
        Solver run by the server each round; ``rank`` fixes the rank instead.
    preset : {"calibrated", "paper"}
        Device population (CPU, power, channels); d, k, layers and |D_i| come from the run.
    latency_s, energy_budget_j : float or None
        T0 and E0; None sets them from the workload so that ``reference_rank`` just fits:
        T0 = ``latency_factor`` x the slowest device's delay at that rank and f_max, and
        E0 = ``energy_factor`` x the largest energy a device spends at that rank with its
        least-energy on-time clock (both on the preset's first channel draw).
    seed : int
        Device population, channel draws, adapter initialization and data order.
    data_seed : int
        The training subset, the split over devices and the test subset.
    cache_hidden : bool
        Train from cached split-point hidden states (the default) or run every layer.
    """

    model: str = "minilm"
    data: str = "news4"
    layers: str = "last3"
    devices: int = 3
    rounds: int = 3
    samples_per_device: int | None = 256
    test_samples: int | None = 1000
    partition: str = "iid"
    alpha: float = 0.5
    max_length: int = 128
    batch_size: int = 16
    lr: float = 1e-3
    local_epochs: int = 1
    lora_scale: float = 2.0
    lora_dropout: float = 0.0
    method: str = "bisection"
    rank: int | None = None
    max_rank: int = 64
    preset: str = "calibrated"
    latency_s: float | None = None
    energy_budget_j: float | None = None
    reference_rank: int = 16
    latency_factor: float = 1.0
    energy_factor: float = 1.0
    seed: int = 0
    data_seed: int = 0
    cache_hidden: bool = True
    hidden_dtype: str = "float16"
    torch_device: str = "cpu"
    out: str = "runs/default"

    def __post_init__(self) -> None:
        positive = (
            "devices",
            "rounds",
            "max_length",
            "batch_size",
            "local_epochs",
            "max_rank",
            "lr",
            "lora_scale",
            "latency_factor",
            "energy_factor",
            "alpha",
            "reference_rank",
        )
        for name in positive:
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} = {getattr(self, name)!r}: expected a value > 0")
        for name in ("samples_per_device", "test_samples", "rank", "latency_s", "energy_budget_j"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"{name} = {value!r}: expected a value > 0 (or leave it out)")
        if self.partition not in ("iid", "dirichlet"):
            raise ConfigError(f"partition = {self.partition!r}: expected 'iid' or 'dirichlet'")
        if self.hidden_dtype not in ("float16", "bfloat16", "float32"):
            raise ConfigError(
                f"hidden_dtype = {self.hidden_dtype!r}: expected float16, bfloat16 or float32"
            )
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"lora_dropout = {self.lora_dropout!r}: expected 0 <= p < 1")

    def replace(self, **changes: Any) -> RunConfig:
        """A validated copy with ``changes`` (None values are ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every field."""
        return dataclasses.asdict(self)


def _check_type(name: str, value: Any) -> Any:
    hints = typing.get_type_hints(RunConfig)
    hint = hints[name]
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in allowed:
        return None
    for t in allowed:
        if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if t is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if t in (str, bool) and isinstance(value, t):
            return value
    names = " or ".join(getattr(t, "__name__", str(t)) for t in allowed)
    raise ConfigError(f"{name} = {value!r}: expected {names}")


def config_from_dict(doc: dict[str, Any], source: str = "config") -> RunConfig:
    """A :class:`RunConfig` from a parsed TOML document (top level or ``[run]``)."""
    body = doc.get("run", doc)
    if not isinstance(body, dict):
        raise ConfigError(f"{source}: [run] must be a table")
    known = {f.name for f in dataclasses.fields(RunConfig)}
    for key in body:
        if key not in known:
            raise ConfigError(
                f"{source}: unknown key {key!r}; known keys: {', '.join(sorted(known))}"
            )
    return RunConfig(**{k: _check_type(k, v) for k, v in body.items()})


def load_config(path: str | Path | None) -> RunConfig:
    """Read a run configuration file (defaults when ``path`` is None)."""
    if path is None:
        return RunConfig()
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: malformed TOML: {exc}") from None
    return config_from_dict(doc, str(path))


def dump_toml(config: RunConfig) -> str:
    """The configuration as TOML (None values written as comments)."""
    lines = []
    for key, value in config.to_dict().items():
        if value is None:
            lines.append(f"# {key} = (unset)")
        elif isinstance(value, bool):
            lines.append(f"{key} = {str(value).lower()}")
        elif isinstance(value, str):
            lines.append(f'{key} = "{value}"')
        else:
            lines.append(f"{key} = {value!r}")
    return "\n".join(lines) + "\n"
