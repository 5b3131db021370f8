"""Rayleigh block fading times a large-scale coefficient.

Within a round the channel is constant; every round it is redrawn independently. The
small-scale power |g|^2 of a Rayleigh channel is Exp(1); the power gain is
h = beta |g|^2 with beta the large-scale coefficient (paper: 1e-3). Uplink and downlink
are drawn independently.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

from channels.base import ChannelState, register_channel
from fsl_opt.errors import ConfigError
from fsl_opt.problem.placement import ChannelSpec


@register_channel("rayleigh", "block fading, h = beta |g|^2 with |g|^2 ~ Exp(1) drawn each round")
@dataclass(frozen=True)
class RayleighBlockFading:
    """h = large_scale * |g|^2 with |g|^2 ~ Exp(1), fresh each round.

    Parameters
    ----------
    large_scale : float or (I,) array
        beta, the large-scale power gain (a scalar for all devices, or one per device,
        e.g. from :func:`channels.log_distance_gain`).
    min_power : float
        Floor on |g|^2, so a deep fade gives a tiny but positive rate rather than zero.
    """

    large_scale: float | NDArray[np.float64] = 1e-3
    min_power: float = 1e-12
    _beta: NDArray[np.float64] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        beta = np.asarray(self.large_scale, dtype=np.float64)
        if beta.ndim > 1 or not (np.isfinite(beta) & (beta > 0)).all():
            raise ConfigError(f"large_scale = {self.large_scale!r}: expected finite gains > 0")
        object.__setattr__(self, "_beta", beta)

    def draw(self, rng: np.random.Generator, n_devices: int) -> ChannelState:
        """Draw one round: independent uplink and downlink gains for every device."""
        beta = self._betas(n_devices)
        power = np.maximum(rng.exponential(1.0, size=(2, n_devices)), self.min_power)
        return ChannelState(gain_ul=beta * power[0], gain_dl=beta * power[1])

    def _betas(self, n_devices: int) -> NDArray[np.float64]:
        if self._beta.ndim == 1 and self._beta.shape[0] != n_devices:
            raise ConfigError(
                f"large_scale has {self._beta.shape[0]} devices, the system {n_devices}"
            )
        return np.broadcast_to(self._beta, (n_devices,)).astype(np.float64)

    def mean(self, n_devices: int) -> ChannelState:
        """E[h] = beta (E|g|^2 = 1), uplink and downlink alike."""
        beta = self._betas(n_devices)
        return ChannelState(gain_ul=beta.copy(), gain_dl=beta.copy())

    @classmethod
    def from_spec(cls, spec: ChannelSpec) -> RayleighBlockFading:
        """From a population's large-scale channel (a coefficient, or distances)."""
        if spec.distance_m is not None:
            return cls.from_distances(spec.distance_m)
        assert spec.large_scale is not None
        return cls(large_scale=spec.large_scale)

    @classmethod
    def from_distances(cls, distance_m: ArrayLike, **path_loss: float) -> RayleighBlockFading:
        """Per-device large-scale gains from distances (see :func:`log_distance_gain`)."""
        from channels.path_loss import log_distance_gain

        return cls(large_scale=log_distance_gain(distance_m, **path_loss))
