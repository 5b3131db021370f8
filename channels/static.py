"""No fading: every round sees the large-scale gains (an ablation of the fading)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from channels.base import ChannelState, register_channel
from channels.rayleigh import RayleighBlockFading
from fsl_opt.problem.placement import ChannelSpec


@register_channel("static", "no fading: every round has the mean gain beta")
@dataclass(frozen=True)
class StaticChannel:
    """h = beta every round: the population's mean channel, with no draw."""

    large_scale: RayleighBlockFading

    @classmethod
    def from_spec(cls, spec: ChannelSpec) -> StaticChannel:
        """The same large-scale gains as ``rayleigh`` would fade around."""
        return cls(RayleighBlockFading.from_spec(spec))

    def draw(self, rng: np.random.Generator, n_devices: int) -> ChannelState:
        """The mean gains; ``rng`` is not touched."""
        return self.mean(n_devices)

    def mean(self, n_devices: int) -> ChannelState:
        """beta for every device."""
        return self.large_scale.mean(n_devices)
