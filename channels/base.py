"""The interface every channel model implements, and the registry that names them.

A channel model is built from a population's :class:`~fsl_opt.problem.placement.ChannelSpec`
(its large-scale part) by :func:`build_channel`; a new model is one file with a class that
has ``from_spec``, ``draw`` and ``mean``, registered with ``@register_channel("name")``
(and imported in ``channels/__init__.py``). The run setting ``channel`` offers every
registered name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np
from numpy.typing import NDArray

from fsl_opt.problem.placement import ChannelSpec
from fsl_opt.problem.system import System
from fsl_opt.registry import Registry


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

    def mean(self, n_devices: int) -> ChannelState:
        """The expected gains E[h] of a round (the large-scale gains): where budgets are set."""
        ...


class ChannelFactory(Protocol):
    """What a registered channel model class provides to build itself from a spec."""

    @classmethod
    def from_spec(cls, spec: ChannelSpec) -> ChannelModel: ...


#: Every channel model by name, in registration order (a :class:`~fsl_opt.registry.Registry`).
CHANNEL_MODELS: Registry[type] = Registry("channel model", setting="channel")

C = TypeVar("C", bound=type)


def register_channel(name: str, summary: str | None = None) -> Callable[[C], C]:
    """Class decorator: make a channel model buildable by ``name`` (``summary`` defaults to
    the first line of the class's docstring)."""

    def add(cls: C) -> C:
        doc = (cls.__doc__ or "").strip().splitlines()
        CHANNEL_MODELS.register(name, cls, summary or (doc[0] if doc else name))
        return cls

    return add


def build_channel(name: str, spec: ChannelSpec) -> ChannelModel:
    """The channel model ``name`` for a population whose large-scale channel is ``spec``."""
    cls = CHANNEL_MODELS.load(name)
    model: ChannelModel = cls.from_spec(spec)  # type: ignore[attr-defined]
    return model


def apply(system: System, state: ChannelState) -> System:
    """The system with this round's gains in place of the old ones."""
    return system.replace(gain_ul=state.gain_ul, gain_dl=state.gain_dl)
