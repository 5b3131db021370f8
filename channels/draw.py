"""A preset's population with one round of fading: the one-round instance of a preset."""

from __future__ import annotations

from typing import Any

import numpy as np

from channels.base import build_channel
from fsl_opt.problem.placement import References, references
from fsl_opt.problem.presets import Preset
from fsl_opt.problem.system import System

#: The rank at which a preset's references T_ref and E_ref are reported by default.
REFERENCE_RANK = 16


def preset_round(
    preset: Preset,
    n_devices: int = 3,
    rng: np.random.Generator | None = None,
    *,
    channel: str = "rayleigh",
    latency_s: float | None = None,
    energy_budget_j: float | None = None,
    reference_rank: int = REFERENCE_RANK,
) -> tuple[System, References]:
    """Draw a population once, then one round of ``channel`` on it.

    Returns the round's system (the preset's T0 and E0 unless given) and the references
    T_ref / E_ref of that same population at its mean channel.
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    placement = preset.place(n_devices, rng)
    model = build_channel(channel, placement.channel)
    mean = model.mean(placement.n_devices)
    refs = references(preset.system(placement, mean.gain_ul, mean.gain_dl), reference_rank)
    state = model.draw(rng, placement.n_devices)
    system = preset.system(
        placement,
        state.gain_ul,
        state.gain_dl,
        latency_s=latency_s,
        energy_budget_j=energy_budget_j,
    )
    return system, refs


def preset_system(
    preset: Preset,
    n_devices: int = 3,
    rng: np.random.Generator | None = None,
    **options: Any,
) -> System:
    """The round's system of :func:`preset_round` alone (same arguments)."""
    return preset_round(preset, n_devices, rng, **options)[0]
