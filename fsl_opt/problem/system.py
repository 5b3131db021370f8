"""The system model of one round: devices, LoRA model shape and round settings.

Symbols follow Xie & Wen (paper eqs. 1-12, Table 1); ``docs/model.md`` restates the
model in English. Every per-device quantity is a numpy array of shape ``(I,)``,
so one object describes 3 devices or a million and every cost function is vectorized.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fsl_opt.errors import ConfigError
from fsl_opt.registry import Registry

UploadModel = Literal["lora", "paper"]
Objective = Literal["shared", "sum", "log", "accuracy"]
#: What a round maximizes: one rank for every device taking part (the paper), the
#: weighted sum of per-device ranks, the weighted sum of log(1 + rank) (proportional fair),
#: or the predicted accuracy gain of the round (each device's value times a rank factor,
#: from a fitted accuracy model: :mod:`fsl_opt.problem.accuracy`).
#: Capabilities: ``per_device`` (a rank per device, so an aggregator of one rank cannot
#: serve it), ``needs_accuracy_model``.
OBJECTIVES: Registry[None] = Registry(
    "objective", capabilities=("per_device", "needs_accuracy_model")
)
OBJECTIVES.register("shared", None, "one rank for every device (the paper)")
OBJECTIVES.register("sum", None, "the weighted sum of the devices' ranks, w_i r_i", per_device=True)
OBJECTIVES.register("log", None, "the sum of w_i log(1 + r_i)", per_device=True)
OBJECTIVES.register(
    "accuracy",
    None,
    "the round's predicted accuracy gain (needs an accuracy model)",
    per_device=True,
    needs_accuracy_model=True,
)

# Per-device fields and the check each must pass: "pos" (> 0) or "nonneg" (>= 0).
DEVICE_FIELDS: dict[str, str] = {
    "samples": "pos",
    "omega": "pos",
    "f_max_hz": "pos",
    "energy_budget_j": "pos",
    "circuit_energy_j": "nonneg",
    "tx_power_w": "pos",
    "bandwidth_hz": "pos",
    "gain_ul": "pos",
    "gain_dl": "pos",
    "layers": "pos",
    "base_cycles": "nonneg",
    "round_base_cycles": "nonneg",
}


def _as_device_array(name: str, value: ArrayLike, n: int | None) -> NDArray[np.float64]:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        if n is None:
            raise ConfigError(f"{name}: a scalar needs at least one per-device array beside it")
        arr = np.full(n, float(arr))
    if arr.ndim != 1:
        raise ConfigError(
            f"{name}: expected a scalar or a 1-D array of devices, got shape {arr.shape}"
        )
    return arr


def _check(name: str, arr: NDArray[np.float64], rule: str) -> None:
    bad = ~np.isfinite(arr)
    if rule == "pos":
        bad |= ~(arr > 0)
        want = "a finite number > 0"
    else:
        bad |= ~(arr >= 0)
        want = "a finite number >= 0"
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        more = f" (and {int(bad.sum()) - 1} more devices)" if bad.sum() > 1 else ""
        raise ConfigError(f"{name}[device {i}] = {float(arr[i])!r}: expected {want}{more}")


def _positive_number(name: str, value: object) -> float:
    """``value`` as a finite float > 0, or a ConfigError naming ``name``."""
    if isinstance(value, (bool, str, bytes)):  # float() would take True and "1e4"
        raise ConfigError(f"{name} = {value!r}: expected a number")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"{name} = {value!r}: expected a number") from None
    if not (np.isfinite(number) and number > 0):
        raise ConfigError(f"{name} = {value!r}: expected a finite number > 0")
    return number


@dataclass(frozen=True, eq=False)
class System:
    """One round of the federated split-learning system (immutable, validated).

    Parameters
    ----------
    samples : (I,) array
        |D_i|, samples device i processes in one round.
    omega : (I,) array
        Omega_i, effective switched capacitance of the CPU [J s^2 / cycle^3], eq. (3).
    f_max_hz : (I,) array
        Largest CPU frequency f_i,max [cycles/s].
    energy_budget_j : (I,) array
        E_i0, energy budget of one round [J].
    circuit_energy_j : (I,) array
        xi_i, circuit energy of one round, receiving the download included [J], eq. (12).
    tx_power_w : (I,) array
        P_i^ul, uplink transmit power [W].
    bandwidth_hz : (I,) array
        B_i, the device's orthogonal sub-band [Hz].
    gain_ul, gain_dl : (I,) arrays
        h_i^ul, h_i^dl: channel power gains of this round (large-scale times |g|^2).
    layers : (I,) array
        l_i, number of LoRA-adapted transformer layers device i trains.
    base_cycles : (I,) array
        Rank-independent cycles per sample added to eq. (2); 0 in the paper, the frozen
        forward/backward work of the trained layers in the ``calibrated`` preset.
    round_base_cycles : (I,) array
        Cycles a local round costs once, whatever its samples and rank (setting up the
        optimizer, loading and saving the adapters); 0 in the paper and the built-in
        presets, measured by ``fsl-opt calibrate``.
    d, k : int
        Each adapted weight matrix is d x k.
    matrices_per_layer : int
        A_hat, adapted matrices per layer (query and value: 2).
    bits_per_param : float
        Q, bits per transmitted parameter.
    upload_model : {"lora", "paper"}
        ``"lora"``: M = r (d + k) A_hat l (true LoRA count); ``"paper"``: eq. (5) as printed,
        M = (r + k) d A_hat l.
    max_rank : int
        Largest admissible rank (at most min(d, k)).
    cycles_per_op : float
        CPU cycles per operation counted by eq. (2); 1 in the paper.
    latency_s : float
        T0, the per-round deadline [s].
    noise_w : float
        N0, noise power on a sub-band [W], eqs. (6), (10).
    server_power_w : float
        P^dl, server transmit power [W], eq. (10).
    objective : {"shared", "sum", "log", "accuracy"}
        ``shared``: maximize one rank r taken by every device that takes part (the paper);
        ``sum``: maximize sum_i w_i r_i; ``log``: maximize sum_i w_i log(1 + r_i), with
        w_i = |D_i| / sum_j |D_j|; ``accuracy``: maximize the round's predicted accuracy
        gain sum_i v_i r_i / (r_i + c) (``device_value`` v, ``rank_half`` c).
    device_value : (I,) array, optional
        v_i > 0, the predicted accuracy gain of device i's round at full rank factor
        (:meth:`fsl_opt.problem.accuracy.AccuracyModel.device_values`); required by
        ``objective = "accuracy"`` and ignored by the others.
    rank_half : float
        c >= 0, the rank at which the accuracy objective's rank factor is one half.
    bandwidth_total_hz : float, optional
        A shared pool the solver splits among the devices taking part; each device's
        ``bandwidth_hz`` is then its upper limit. None: every device keeps its sub-band.
    noise_psd_w_per_hz : float, optional
        N0 as a density [W/Hz], required with a pool: a device on B_i Hz sees noise
        N0 B_i, so its rate is B_i log2(1 + g P / (N0 B_i)).
    min_devices : int, optional
        At least this many devices take part; the others may be left out (rank 0, no
        bandwidth, no cost). None: every device takes part.
    download_params : (I,) array, optional
        Parameters device i downloads this round when that is not what it uploads: an
        aggregator that sends back something other than an adapter at the device's own
        rank (stacked updates to merge) sets it, and the download is then independent of
        r. None: M_i(r), the same as the upload (eq. 9).
    power_control : bool
        Each device chooses its uplink power in (0, P_i] with its clock
        (:mod:`fsl_opt.problem.power`); P_i (``tx_power_w``) is then its most. Only
        without a pool, and only ``per_device`` solves it so far.

    Notes
    -----
    Scalars given for a per-device field are broadcast to the number of devices; build
    variants with :func:`dataclasses.replace`, which re-runs the validation.
    """

    samples: NDArray[np.float64]
    omega: NDArray[np.float64]
    f_max_hz: NDArray[np.float64]
    energy_budget_j: NDArray[np.float64]
    circuit_energy_j: NDArray[np.float64]
    tx_power_w: NDArray[np.float64]
    bandwidth_hz: NDArray[np.float64]
    gain_ul: NDArray[np.float64]
    gain_dl: NDArray[np.float64]
    latency_s: float
    noise_w: float
    server_power_w: float
    d: int = 768
    k: int = 768
    matrices_per_layer: int = 2
    layers: NDArray[np.float64] = field(default_factory=lambda: np.asarray(3.0))
    bits_per_param: float = 256.0
    upload_model: UploadModel = "lora"
    max_rank: int = 768
    cycles_per_op: float = 1.0
    base_cycles: NDArray[np.float64] = field(default_factory=lambda: np.asarray(0.0))
    round_base_cycles: NDArray[np.float64] = field(default_factory=lambda: np.asarray(0.0))
    objective: Objective = "shared"
    bandwidth_total_hz: float | None = None
    noise_psd_w_per_hz: float | None = None
    min_devices: int | None = None
    download_params: NDArray[np.float64] | None = None
    power_control: bool = False
    device_value: NDArray[np.float64] | None = None
    rank_half: float = 0.0

    def __post_init__(self) -> None:
        for name in DEVICE_FIELDS:
            if np.ndim(getattr(self, name)) > 1:
                _as_device_array(name, getattr(self, name), None)  # raises with the shape
        sized = {
            name: len(getattr(self, name))
            for name in DEVICE_FIELDS
            if np.ndim(getattr(self, name)) == 1
        }
        if not sized:
            raise ConfigError("no per-device array given: at least one field must list the devices")
        n = next(iter(sized.values()))
        mismatch = {name: m for name, m in sized.items() if m != n}
        if mismatch:
            first = next(iter(sized))
            detail = ", ".join(f"{name} has {m}" for name, m in mismatch.items())
            raise ConfigError(f"per-device lists differ in length: {first} has {n}, {detail}")
        if n == 0:
            raise ConfigError("the system has no devices")
        for name, rule in DEVICE_FIELDS.items():
            arr = _as_device_array(name, getattr(self, name), n)
            _check(name, arr, rule)
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        if not np.all(self.layers == np.round(self.layers)):
            raise ConfigError("layers: expected whole numbers of layers")
        for name in ("latency_s", "noise_w", "server_power_w", "bits_per_param", "cycles_per_op"):
            object.__setattr__(self, name, _positive_number(name, getattr(self, name)))
        for name in ("d", "k", "matrices_per_layer", "max_rank"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ConfigError(f"{name} = {value!r}: expected an integer >= 1")
            object.__setattr__(self, name, int(value))
        if self.upload_model not in ("lora", "paper"):
            raise ConfigError(f"upload_model = {self.upload_model!r}: expected 'lora' or 'paper'")
        self._check_round_choices(n)
        if self.download_params is not None:
            arr = _as_device_array("download_params", self.download_params, n)
            _check("download_params", arr, "nonneg")
            arr.setflags(write=False)
            object.__setattr__(self, "download_params", arr)
        if self.max_rank > min(self.d, self.k):
            raise ConfigError(
                f"max_rank = {self.max_rank}: a LoRA rank cannot exceed min(d, k) = "
                f"{min(self.d, self.k)}"
            )

    def _check_round_choices(self, n: int) -> None:
        OBJECTIVES.check(self.objective)
        for name in ("bandwidth_total_hz", "noise_psd_w_per_hz"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, _positive_number(name, getattr(self, name)))
        if self.bandwidth_total_hz is not None and self.noise_psd_w_per_hz is None:
            raise ConfigError(
                "bandwidth_total_hz needs noise_psd_w_per_hz: when the pool is split, the "
                "noise on a device's band is a density times its width"
            )
        if self.noise_psd_w_per_hz is not None and self.bandwidth_total_hz is None:
            raise ConfigError(
                "noise_psd_w_per_hz is used only with a pool: give bandwidth_total_hz too "
                "(without a pool, noise_w is the noise on each fixed sub-band)"
            )
        if self.objective == "accuracy" and self.device_value is None:
            raise ConfigError(
                "objective = 'accuracy' needs device_value: each device's predicted accuracy "
                "gain, from an accuracy model (fsl-opt fit-accuracy)"
            )
        if self.device_value is not None:
            arr = _as_device_array("device_value", self.device_value, n)
            _check("device_value", arr, "pos")
            arr.setflags(write=False)
            object.__setattr__(self, "device_value", arr)
        c = self.rank_half
        if (
            isinstance(c, bool)
            or not isinstance(c, (int, float))
            or not (np.isfinite(c) and c >= 0)
        ):
            raise ConfigError(f"rank_half = {c!r}: expected a finite number >= 0")
        object.__setattr__(self, "rank_half", float(c))
        if not isinstance(self.power_control, (bool, np.bool_)):
            raise ConfigError(f"power_control = {self.power_control!r}: expected true or false")
        object.__setattr__(self, "power_control", bool(self.power_control))
        m = self.min_devices
        if m is not None:
            if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or not 1 <= m <= n:
                raise ConfigError(f"min_devices = {m!r}: expected an integer in 1..{n}")
            object.__setattr__(self, "min_devices", int(m))

    @property
    def required_devices(self) -> int:
        """How many devices must take part (``min_devices``, or all)."""
        return self.min_devices if self.min_devices is not None else self.n_devices

    @property
    def is_p1(self) -> bool:
        """The paper's problem: one shared rank, every device, fixed sub-bands."""
        return (
            self.objective == "shared"
            and self.bandwidth_total_hz is None
            and self.required_devices == self.n_devices
            and not self.power_control
        )

    @property
    def weights(self) -> NDArray[np.float64]:
        """w_i = |D_i| / sum_j |D_j|."""
        return self.samples / self.samples.sum()

    def gain(self, devices: ArrayLike, ranks: ArrayLike) -> NDArray[np.float64]:
        """What device ``devices[j]`` at rank ``ranks[j]`` adds to a separable objective
        (``sum``, ``log``, ``accuracy``; 0 at rank 0): w_i r, w_i log(1 + r) or
        v_i r / (r + c). ``shared`` is not a sum over devices and has no gain."""
        dev = np.asarray(devices, dtype=np.int64)
        r = np.asarray(ranks, dtype=np.float64)
        if self.objective == "sum":
            return np.asarray(self.weights[dev] * r, dtype=np.float64)
        if self.objective == "log":
            return np.asarray(self.weights[dev] * np.log1p(r), dtype=np.float64)
        if self.objective == "accuracy":
            assert self.device_value is not None
            with np.errstate(invalid="ignore", divide="ignore"):
                factor = np.where(r > 0, r / (r + self.rank_half), 0.0)
            return np.asarray(self.device_value[dev] * factor, dtype=np.float64)
        raise ValueError("objective 'shared' is not a sum over devices")

    @property
    def n_devices(self) -> int:
        """Number of devices I."""
        return int(self.samples.shape[0])

    def replace(self, **changes: Any) -> System:
        """Return a validated copy with ``changes`` applied (:func:`dataclasses.replace`)."""
        return dataclasses.replace(self, **changes)

    def derived(self, **changes: Any) -> System:
        """A copy with ``changes`` applied *unchecked*: for values a caller computed from
        this validated system and knows valid (gains scaled by a positive factor, powers
        chosen in (0, P_i], the pool dropped). A solver's inner loop asks for thousands of
        these; anything else goes through :meth:`replace`. A per-device field is stored as
        a read-only array of one value per device."""
        new = copy.copy(self)
        n = self.n_devices
        for name, value in changes.items():
            if name not in self.__dataclass_fields__:
                raise TypeError(f"System has no field {name!r}")
            if name in DEVICE_FIELDS:
                arr = np.array(np.broadcast_to(np.asarray(value, dtype=np.float64), (n,)))
                arr.setflags(write=False)
                value = arr
            object.__setattr__(new, name, value)
        return new

    def subset(self, index: ArrayLike) -> System:
        """The system restricted to the devices selected by ``index`` (all of them required)."""
        idx = np.asarray(index)
        # The selection rule is the whole system's: the subset keeps every device it holds.
        dl = None if self.download_params is None else self.download_params[idx]
        value = None if self.device_value is None else self.device_value[idx]
        return self.replace(
            min_devices=None,
            download_params=dl,
            device_value=value,
            **{name: getattr(self, name)[idx] for name in DEVICE_FIELDS},
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python view (lists for arrays), e.g. for a run's resolved config."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.tolist() if isinstance(v, np.ndarray) else v
        return out
