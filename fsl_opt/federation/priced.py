"""A policy that buys predicted accuracy at a price per joule (``policy = "energy_priced"``).

Each round maximizes its predicted accuracy gain less ``energy_price`` times the energy it
spends, over each device's rank (0: left out) and clock: the budget policy's priced round
(:func:`solvers.priced.solve_priced`) with every device at one price and no
queues, exact per round. ``fsl-opt plan --target-accuracy`` searches the price at which a run
reaches a target with the least energy (:mod:`fsl_opt.federation.target`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from fsl_opt.errors import ConfigError
from fsl_opt.problem.result import SolveResult
from fsl_opt.problem.system import System
from solvers.priced import solve_priced

if TYPE_CHECKING:
    from fsl_opt.federation.settings import RunConfig


class EnergyPriced:
    """A policy that buys predicted accuracy at ``price`` per joule (see the module).

    Implements the planner's :class:`~fsl_opt.federation.planner.Policy`; it has no queues
    and no state to checkpoint."""

    share_j: NDArray[np.float64] | None = None
    share_s: float | None = None
    time_queue_s: float = 0.0

    def __init__(self, n_devices: int, price: float) -> None:
        if not (math.isfinite(price) and price >= 0):
            raise ConfigError(f"energy price = {price!r}: expected a finite value >= 0")
        self.price = float(price)
        self.v: float | None = 1.0
        self.energy_queue_j = np.zeros(n_devices)

    @classmethod
    def from_run(
        cls, cfg: RunConfig, system: System, energy_total_j: Any, time_total_s: float | None
    ) -> EnergyPriced:
        """The policy a run's settings ask for (``energy_price``; budgets hold apart)."""
        assert cfg.energy_price is not None  # (checked by RunConfig)
        return cls(system.n_devices, cfg.energy_price)

    def decide(self, system: System, index: NDArray[np.int64]) -> SolveResult:
        return solve_priced(system, np.full(system.n_devices, self.price))

    def update(self, result: SolveResult, ranks: NDArray[np.int64]) -> None:
        return None

    def state(self) -> dict[str, Any]:
        return {"price": self.price}

    def load_state(self, state: dict[str, Any] | None) -> None:
        return None
