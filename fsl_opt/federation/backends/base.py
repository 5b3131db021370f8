"""The interface every backend implements.

Backends are named in :mod:`fsl_opt.federation.registry`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # torch stays unloaded for a settings check (fsl-opt train's typos)
    import torch

    from fsl_opt.federation.context import RunContext
    from fsl_opt.federation.planner import RoundPlan
    from fsl_opt.federation.settings import RunConfig
    from fsl_opt.learning.local import LocalResult

#: What a backend's :meth:`Backend.launch` calls with the backend that trains the run: the
#: round loop, bound to the run's settings; it returns the run's records.
Drive = Callable[["Backend"], list[dict[str, Any]]]


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

    @classmethod
    def launch(cls, cfg: RunConfig, drive: Drive) -> list[dict[str, Any]]:
        """Start whatever this backend needs (an engine, nodes), hand ``drive`` a backend
        that trains through it, and return the run's records once the loop has ended."""
        ...

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
