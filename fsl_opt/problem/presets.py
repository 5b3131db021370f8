"""Ready systems: the paper's Table 2 (``paper``) and a physically calibrated one (``calibrated``).

Each preset fixes every number the cost model needs; the ones the paper leaves out are
choices, written beside the value with the reason (see docs/model.md). A preset draws a
:class:`~fsl_opt.problem.placement.Placement` (Omega_i, P_i, f_max, and the channel's
large-scale part as a :class:`~fsl_opt.problem.placement.ChannelSpec`) from an explicit
generator, once per run; the fading model is built from the spec in :mod:`channels`.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from fsl_opt.errors import ConfigError, file_boundary
from fsl_opt.problem.compute import ComputeFit, transformer_cycles

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib
from fsl_opt.problem.placement import ChannelSpec, Placement, check_memory
from fsl_opt.problem.system import System


@dataclass(frozen=True)
class Preset:
    """A named population recipe with its channel and documented sweep ranges.

    Attributes
    ----------
    latency_s, energy_budget_j : float
        Default deadline T0 and energy budget E0.
    latency_range_s, energy_range_j : (float, float)
        Sweep ranges over which r* moves across roughly 1..64 and the binding
        constraint changes (checked by the tests).
    counts_flops : bool
        True: eq. (2)'s ``base_cycles`` and ``cycles_per_op`` come from the model's shapes
        (:mod:`fsl_opt.problem.compute`); False: eq. (2) as printed (c = 1, C0 = 0).
    """

    name: str
    summary: str
    latency_s: float
    energy_budget_j: float
    latency_range_s: tuple[float, float]
    energy_range_j: tuple[float, float]
    _devices: Callable[[int, np.random.Generator], dict[str, np.ndarray]]
    _fixed: Callable[[], dict[str, object]]
    _channel: Callable[[int, np.random.Generator], ChannelSpec]
    counts_flops: bool = False
    #: Compute constants measured on a machine (a preset file from ``fsl-opt calibrate``):
    #: eq. (2)'s fields come from them, and every device runs at their clock.
    fit: ComputeFit | None = None

    def compute_for(
        self, *, hidden: int, intermediate: int, layers_run: int, seq_len: int, d: int, k: int
    ) -> dict[str, float]:
        """Eq. (2)'s compute fields for a model of these shapes ({} to keep the preset's)."""
        shape = dict(
            hidden=hidden,
            intermediate=intermediate,
            layers_run=layers_run,
            seq_len=seq_len,
            d=d,
            k=k,
        )
        if self.fit is not None:
            return self.fit.cycles(**shape)
        if not self.counts_flops:
            return {}
        return transformer_cycles(**shape)

    def place(self, n_devices: int = 3, rng: np.random.Generator | None = None) -> Placement:
        """Draw a population of ``n_devices``: device parameters, then the channel's
        large-scale part (distances, where the preset has them), in that order."""
        if not isinstance(n_devices, (int, np.integer)) or isinstance(n_devices, bool):
            raise ConfigError(f"devices = {n_devices!r}: expected an integer >= 1")
        if n_devices < 1:
            raise ConfigError(f"devices = {n_devices!r}: expected an integer >= 1")
        check_memory(int(n_devices))
        rng = rng if rng is not None else np.random.default_rng(0)
        devices = self._devices(int(n_devices), rng)
        if self.fit is not None:
            devices = {**devices, "f_max_hz": np.full(int(n_devices), self.fit.clock_hz)}
        return Placement(devices, self._channel(int(n_devices), rng))

    def system(
        self,
        placement: Placement,
        gain_ul: NDArray[np.float64],
        gain_dl: NDArray[np.float64],
        *,
        latency_s: float | None = None,
        energy_budget_j: float | None = None,
    ) -> System:
        """The system of ``placement`` with these channel gains, and the preset's T0 and E0
        unless given (with a measured :attr:`fit`: eq. (2)'s cycles of RoBERTa-base's last
        3 layers at 128 tokens, the shapes the presets model, until a run sets its own)."""
        n = placement.n_devices
        system = System(
            **placement.devices,  # type: ignore[arg-type]
            gain_ul=gain_ul,
            gain_dl=gain_dl,
            energy_budget_j=np.full(
                n, self.energy_budget_j if energy_budget_j is None else energy_budget_j
            ),
            latency_s=self.latency_s if latency_s is None else latency_s,
            **self._fixed(),  # type: ignore[arg-type]
        )
        if self.fit is None:
            return system
        return system.replace(**self.fit.cycles(**ROBERTA_SHAPE))


# --- paper: Table 2 plus documented choices -------------------------------------------------


def _paper_devices(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        # Table 2: AG News' 120,000 training samples split evenly over the paper's 3 devices.
        "samples": np.full(n, 40_000.0),
        # Table 2 labels Omega a frequency; it is the energy coefficient (docs/model.md).
        "omega": rng.uniform(0.2, 1.0, n) * 1e-25,
        # Choice: 2 GHz, a common edge-CPU clock; the paper gives none.
        "f_max_hz": np.full(n, 2.0e9),
        # Choice: 1 J per round for the radio receiving and the SoC idling.
        "circuit_energy_j": np.full(n, 1.0),
        # Table 2: Unif(0.2, 1) x 0.1 W.
        "tx_power_w": rng.uniform(0.2, 1.0, n) * 0.1,
        # Table 2: 1 MHz per device.
        "bandwidth_hz": np.full(n, 1.0e6),
    }


def _paper_fixed() -> dict[str, object]:
    return {
        # RoBERTa-base: 768 x 768 query and value projections in the last 3 layers.
        "d": 768,
        "k": 768,
        "matrices_per_layer": 2,
        "layers": 3.0,
        "bits_per_param": 256.0,  # Table 2, as printed
        "max_rank": 768,
        "noise_w": 1e-10,  # choice: -70 dBm on a sub-band; the paper gives no N0
        "server_power_w": 1.0,  # choice: the paper gives no P^dl
    }


PAPER = Preset(
    name="paper",
    summary="Xie & Wen Table 2 (RoBERTa-base, last 3 layers, AG News / 3 devices) plus "
    "documented choices for N0, f_max, xi, P_dl, T0 and E0. Times are hours and energies "
    "kJ-MJ, as the printed numbers imply.",
    # With f_max = 2 GHz one unit of (2r - 1) costs 70.8 s, so T0 = 10^4 s allows r <= 71
    # on time alone; E0 = 10^6 J then makes energy bind (r* near 40).
    latency_s=1.0e4,
    energy_budget_j=1.0e6,
    latency_range_s=(1.0e2, 2.5e4),
    energy_range_j=(1.0e1, 1.0e7),
    _devices=_paper_devices,
    _fixed=_paper_fixed,
    _channel=lambda n, rng: ChannelSpec(large_scale=1e-3),  # the paper's coefficient
)


# --- calibrated: real FLOPs, a phone-class CPU, thermal noise -------------------------------

SEQ_LEN = 128  # tokens per sample: AG News articles fit in 128 RoBERTa tokens
HIDDEN = 768  # RoBERTa-base
TRAINED_LAYERS = 3
#: The shapes the presets model: RoBERTa-base's last 3 layers at 128 tokens.
ROBERTA_SHAPE = dict(
    hidden=HIDDEN,
    intermediate=4 * HIDDEN,
    layers_run=TRAINED_LAYERS,
    seq_len=SEQ_LEN,
    d=HIDDEN,
    k=HIDDEN,
)
#: eq. (2)'s compute fields for them.
ROBERTA_COMPUTE = transformer_cycles(**ROBERTA_SHAPE)


def _calibrated_devices(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        # Choice: 32 samples per round (a few local steps): keeps a round under a minute.
        "samples": np.full(n, 32.0),
        # Omega ~ 1e-28 J s^2/cycle^3 (Mao et al., MEC survey, 2017): ~1.4 W at 2.4 GHz.
        "omega": rng.uniform(0.5, 2.0, n) * 1e-28,
        # Phone big cores run 1.8-3.0 GHz (Snapdragon 8 / Dimensity 9000 class).
        "f_max_hz": rng.uniform(1.8e9, 3.0e9, n),
        # Choice: 0.5 J per round for receiving and idling.
        "circuit_energy_j": np.full(n, 0.5),
        # 23 dBm = 0.2 W, the LTE/NR handset power class 3 maximum.
        "tx_power_w": np.full(n, 0.2),
        # One 180 kHz LTE resource block per device.
        "bandwidth_hz": np.full(n, 180e3),
        "base_cycles": np.full(n, ROBERTA_COMPUTE["base_cycles"]),
    }


def _calibrated_fixed() -> dict[str, object]:
    noise_dbm = -174.0 + 10.0 * math.log10(180e3) + 9.0  # thermal noise + 9 dB noise figure
    return {
        "d": HIDDEN,
        "k": HIDDEN,
        "matrices_per_layer": 2,
        "layers": float(TRAINED_LAYERS),
        "bits_per_param": 32.0,  # fp32 adapters
        "max_rank": 768,
        "cycles_per_op": ROBERTA_COMPUTE["cycles_per_op"],
        "noise_w": 10.0 ** (noise_dbm / 10.0) / 1000.0,
        "server_power_w": 1.0,  # 30 dBm per resource block at a small cell
    }


def _calibrated_channel(n: int, rng: np.random.Generator) -> ChannelSpec:
    # Devices uniform over a 50-250 m ring around the server, 3GPP urban path loss.
    return ChannelSpec(distance_m=rng.uniform(50.0, 250.0, n))


CALIBRATED = Preset(
    name="calibrated",
    summary="Physically calibrated: RoBERTa-base last 3 layers at 128 tokens, FLOPs from the "
    "layer shapes, phone-class CPU (1.8-3.0 GHz, Omega ~ 1e-28), one 180 kHz resource "
    "block, -174 dBm/Hz thermal noise, 3GPP path loss at 50-250 m.",
    # With 32 samples a round computes for 15-25 s at f_max and each rank adds 0.2-0.5 s of
    # upload and download, so T0 = 50 s leaves room for r* of 40-90; E0 = 35 J lets the
    # deadline bind on some devices and the budget on others.
    latency_s=50.0,
    energy_budget_j=35.0,
    latency_range_s=(24.0, 60.0),
    energy_range_j=(4.0, 60.0),
    _devices=_calibrated_devices,
    _fixed=_calibrated_fixed,
    _channel=_calibrated_channel,
    counts_flops=True,
)

PRESETS: dict[str, Preset] = {p.name: p for p in (PAPER, CALIBRATED)}


#: A preset file is a TOML file: ``base`` (a preset's name) and a ``[compute]`` table of
#: :class:`ComputeFit`'s fields; ``[source]`` (what was measured, where) is free-form.
PRESET_FILE_SUFFIX = ".toml"


def get_preset(name: str) -> Preset:
    """The preset called ``name``, or the preset file at path ``name`` (``*.toml``); a
    :class:`ConfigError` lists the known names."""
    if name.endswith(PRESET_FILE_SUFFIX):
        return load_preset_file(name)
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(
            f"unknown preset {name!r}: expected one of {', '.join(PRESETS)}, or a preset "
            f"file (*{PRESET_FILE_SUFFIX}, from fsl-opt calibrate)"
        ) from None


def load_preset_file(path: str | Path) -> Preset:
    """A preset file: its ``base`` preset with the ``[compute]`` constants measured on a
    machine (every device at that machine's clock, eq. (2)'s cycles from the fit)."""
    path = Path(path)
    with file_boundary(path, "read the preset file"):
        data = tomllib.loads(path.read_text())
    unknown = set(data) - {"base", "compute", "source"}
    if unknown:
        raise ConfigError(f"{path}: unknown keys {sorted(unknown)}: expected base, compute")
    base = data.get("base")
    if base not in PRESETS:
        raise ConfigError(f"{path}: base = {base!r}: expected one of {', '.join(PRESETS)}")
    compute = data.get("compute")
    names = {f.name for f in dataclasses.fields(ComputeFit)}
    if not isinstance(compute, dict) or not set(compute) <= names:
        raise ConfigError(f"{path}: [compute] must hold only {', '.join(sorted(names))}")
    try:
        fit = ComputeFit(**compute)
    except (ConfigError, TypeError) as exc:
        raise ConfigError(f"{path}: [compute]: {exc}") from None
    preset = PRESETS[base]
    return dataclasses.replace(
        preset,
        name=str(path),
        summary=f"{preset.name} with compute measured on a machine ({path})",
        fit=fit,
    )
