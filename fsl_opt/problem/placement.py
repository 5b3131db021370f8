"""A run's devices, drawn once: their parameters, the channel they see, and the budgets'
reference point.

A :class:`Placement` is one draw of a preset's population: each device's CPU and radio
parameters and a :class:`ChannelSpec` that says what large-scale channel it sees (a fixed
coefficient, or distances through a path-loss law). It is drawn once per run and shared by
everything that needs the devices: the budgets (:func:`references`, computed at the mean
channel) and every round's fading (a channel model of :mod:`channels` built from the spec).
Two draws from one generator would give two different worlds, silently.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fsl_opt.errors import ConfigError
from fsl_opt.problem import cost
from fsl_opt.problem.system import System


@dataclass(frozen=True, eq=False)
class ChannelSpec:
    """The large-scale channel of a population; :func:`channels.build_channel` turns it into a
    fading model.

    Exactly one of the two is given.

    Parameters
    ----------
    large_scale : float, optional
        A large-scale power gain beta shared by every device (the paper: 1e-3).
    distance_m : (I,) array, optional
        Each device's distance to the server; beta_i follows the 3GPP urban path loss.
    """

    large_scale: float | None = None
    distance_m: NDArray[np.float64] | None = None

    def __post_init__(self) -> None:
        if (self.large_scale is None) == (self.distance_m is None):
            raise ValueError("ChannelSpec: give exactly one of large_scale and distance_m")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (the ones given)."""
        if self.distance_m is not None:
            return {"distance_m": [float(x) for x in self.distance_m]}
        return {"large_scale": self.large_scale}


@dataclass(frozen=True, eq=False)
class Placement:
    """One draw of a population: per-device parameters (``System`` fields) and their channel."""

    devices: dict[str, NDArray[np.float64]]
    channel: ChannelSpec

    @property
    def n_devices(self) -> int:
        """I, the number of devices."""
        return len(next(iter(self.devices.values())))


@dataclass(frozen=True)
class References:
    """The budgets' reference point: what the slowest and the hungriest device need at a rank.

    Attributes
    ----------
    rank : int
        The reference rank r_ref.
    latency_s : float
        T_ref: the slowest device's delay at r_ref with every clock at f_max.
    energy_j : float
        E_ref: the largest energy a device spends at r_ref with its least-energy clock that
        still meets T_ref.
    gain_ul, gain_dl : (I,) arrays
        The channel gains they were computed at: the placement's mean (large-scale) gains.
    """

    rank: int
    latency_s: float
    energy_j: float
    gain_ul: NDArray[np.float64]
    gain_dl: NDArray[np.float64]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {
            "reference_rank": self.rank,
            "t_ref_s": self.latency_s,
            "e_ref_j": self.energy_j,
            "mean_gain_ul": [float(x) for x in self.gain_ul],
            "mean_gain_dl": [float(x) for x in self.gain_dl],
        }


#: Peak memory per device of drawing a population and solving its round: 1.65 GB for 4e6
#: devices of the calibrated preset with `fsl-opt solve --json` (measured with
#: /usr/bin/time, about 410 bytes a device), rounded up.
BYTES_PER_DEVICE = 450


def available_memory() -> int | None:
    """Bytes the machine can still give (None where the platform does not say)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(n_devices: int) -> None:
    """Refuse a population whose draw and solve would not fit in memory (instead of being
    killed by the kernel with no message)."""
    need = n_devices * BYTES_PER_DEVICE
    have = available_memory()
    if have is not None and need > have:
        raise ConfigError(
            f"devices = {n_devices}: drawing and solving them needs about {need / 2**30:.1f} "
            f"GiB and this machine has {have / 2**30:.1f} GiB available; use fewer devices"
        )


def references(at_mean: System, rank: int) -> References:
    """T_ref and E_ref of a system whose gains are its placement's mean gains.

    Each budget scales its own reference (T0 = a T_ref, E0 = b E_ref), so sweeping one
    factor leaves the other budget unchanged. ``rank`` is capped at the system's max_rank.
    """
    r = min(int(rank), at_mean.max_rank)
    t_ref = float(cost.latency(at_mean, r, at_mean.f_max_hz).max())
    on_time = at_mean.replace(latency_s=t_ref)
    f_ref = np.minimum(cost.least_energy_frequency(on_time, r), at_mean.f_max_hz)
    e_ref = float(cost.energy(on_time, r, f_ref).max())
    return References(r, t_ref, e_ref, at_mean.gain_ul.copy(), at_mean.gain_dl.copy())
