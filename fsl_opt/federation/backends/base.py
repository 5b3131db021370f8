"""The interface every backend implements.

Backends are named in :mod:`fsl_opt.federation.registry`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # torch stays unloaded for a settings check (fsl-opt train's typos)
    import torch

    from fsl_opt.federation.context import RunContext
    from fsl_opt.federation.planner import RoundPlan
    from fsl_opt.federation.settings import RunConfig
    from fsl_opt.learning.local import LocalResult


#: The key of a result's metrics that holds the seconds its device spent training (measured
#: on the machine that trained it; a device trained in a group is charged its share).
MEASURED_COMPUTE = "measured_compute_s"


@dataclass(frozen=True)
class RoundReplies:
    """What came back from one round's devices.

    Attributes
    ----------
    results : dict[int, LocalResult]
        Each device that answered in time, by device; a device sent a payload but missing
        here was lost for the round.
    received : frozenset[int]
        The devices known to have received their payload: every device in ``results``, and
        a lost one only where the backend knows its payload reached it (its training began
        and failed). The round's ``downloaded_bytes`` count these devices only.
    """

    results: dict[int, LocalResult]
    received: frozenset[int] = field(default=frozenset())

    def __post_init__(self) -> None:
        object.__setattr__(self, "received", frozenset(self.received) | set(self.results))


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
    ) -> RoundReplies:
        """Train each device in ``payloads`` (the devices taking part) from its payload, at
        that payload's rank; the results by device, and which devices received their
        payload. A device missing from the results was lost for this round (it did not
        reply in time): the round's record leaves it out of the devices that took part and
        charges it nothing. Devices not in ``payloads`` do nothing and their state stays as
        it is."""
        ...

    def save_devices(self, folder: Path) -> None:
        """Write the devices' own state into ``folder`` (part of an atomic checkpoint)."""
        ...

    def restore_devices(self, folder: Path) -> None:
        """Read back what :meth:`save_devices` wrote (``folder`` may lack it: start fresh)."""
        ...
