"""The interface every backend implements."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import torch

from fsl_opt.learning.local import LocalResult

if TYPE_CHECKING:
    from fsl_opt.federation.context import RunContext
    from fsl_opt.federation.planner import RoundPlan


class Backend(Protocol):
    """Trains the devices of one round and owns what the devices keep between rounds.

    Attributes
    ----------
    name : str
        Logged with the run.
    restart_note : str
        What of the devices' own state survives a stop and ``--resume`` (shown in the
        docs and at resume), said honestly per backend.
    """

    name: str
    restart_note: str

    def train_round(
        self, ctx: RunContext, payloads: dict[int, dict[str, torch.Tensor]], plan: RoundPlan
    ) -> dict[int, LocalResult]:
        """Train each device in ``payloads`` (the devices taking part) from its payload, at
        that payload's rank; the results by device. A device missing from the answer was
        lost for this round (it did not reply in time). Devices not in ``payloads`` do
        nothing and their state stays as it is."""
        ...

    def save_devices(self, folder: Path) -> None:
        """Write the devices' own state into ``folder`` (part of an atomic checkpoint)."""
        ...

    def restore_devices(self, folder: Path) -> None:
        """Read back what :meth:`save_devices` wrote (``folder`` may lack it: start fresh)."""
        ...
