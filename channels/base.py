"""The interface every channel model implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from fsl_opt.problem.system import System


@dataclass(frozen=True)
class ChannelState:
    """Power gains of one round (block fading: constant within it), arrays ``(I,)``."""

    gain_ul: NDArray[np.float64]
    gain_dl: NDArray[np.float64]


class ChannelModel(Protocol):
    """Draws one round's channel gains from an explicit generator."""

    def draw(self, rng: np.random.Generator, n_devices: int) -> ChannelState:
        """Gains of one round for ``n_devices`` devices."""
        ...


def apply(system: System, state: ChannelState) -> System:
    """The system with this round's gains in place of the old ones."""
    return system.replace(gain_ul=state.gain_ul, gain_dl=state.gain_dl)
