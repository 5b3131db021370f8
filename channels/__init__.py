"""Channel models: each round's uplink and downlink power gains h_ul, h_dl (paper eqs. 6, 10)."""

from channels.base import ChannelModel, ChannelState, apply
from channels.path_loss import log_distance_gain
from channels.rayleigh import RayleighBlockFading

__all__ = ["ChannelModel", "ChannelState", "RayleighBlockFading", "apply", "log_distance_gain"]
