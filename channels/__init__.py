"""Channel models: each round's uplink and downlink power gains h_ul, h_dl (paper eqs. 6, 10).

Every model is registered by name (:data:`CHANNEL_MODELS`); importing this package
registers the built-in ones.
"""

from channels.base import (
    CHANNEL_MODELS,
    ChannelModel,
    ChannelState,
    apply,
    build_channel,
    register_channel,
)
from channels.draw import REFERENCE_RANK, preset_round, preset_system
from channels.path_loss import log_distance_gain
from channels.rayleigh import RayleighBlockFading
from channels.static import StaticChannel

__all__ = [
    "CHANNEL_MODELS",
    "REFERENCE_RANK",
    "ChannelModel",
    "ChannelState",
    "RayleighBlockFading",
    "StaticChannel",
    "apply",
    "build_channel",
    "log_distance_gain",
    "preset_round",
    "preset_system",
    "register_channel",
]
