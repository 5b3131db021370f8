"""The server's round planner: each round's rank and frequencies, and the aggregation.

The planner holds no model and no device state: it turns the round's channel draw into a
solver call (:meth:`RoundPlanner.plan_round`), resizes the global adapters to the round's
rank (:meth:`RoundPlanner.resize_for_round`) and turns the devices' returned payloads into
the new global payload (:meth:`RoundPlanner.aggregate`), so any backend can drive it. It
is not a Flower ``Strategy``: the Flower backend sends its messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from channels import ChannelModel, apply
from fsl_opt.learning.lora import fedavg, resize_state, state_rank
from fsl_opt.problem.result import SolveResult
from fsl_opt.problem.system import System
from solvers import evaluate_rank, solve


@dataclass(frozen=True)
class RoundPlan:
    """The server's decision for one round: rank, frequencies, modeled costs."""

    round: int
    system: System
    result: SolveResult
    fixed_rank: bool

    @property
    def rank(self) -> int:
        """Rank to train at (0: nobody can meet the constraints; the round is skipped)."""
        return self.result.rank


#: Aggregators by name: (payloads, weights) -> the new global payload.
AGGREGATORS = {"fedavg": fedavg}


class RoundPlanner:
    """Solve P1 on each round's channels; aggregate weighted by |D_i|.

    Parameters
    ----------
    system : System
        The devices and model shape; its gains are replaced every round.
    channel : ChannelModel
        Fading model, drawn each round (block fading).
    method : str
        Solver name; ignored when ``rank`` is given.
    rank : int, optional
        Train at this rank every round (a rank sweep); the frequencies are then the
        least-energy on-time clocks (capped at f_max) and the status says whether every
        device met T0 and E0 (``fixed``) or not (``over_budget``).
    rng : numpy.random.Generator
        Seeds two independent streams: one for the channels, one for the solver's own
        draws (random frequencies), so every method sees the same channels. Their states
        are checkpointed.
    """

    def __init__(
        self,
        system: System,
        channel: ChannelModel,
        method: str = "bisection",
        rank: int | None = None,
        rng: np.random.Generator | None = None,
        solver_options: dict[str, Any] | None = None,
        aggregation: str = "fedavg",
    ) -> None:
        self.system = system
        self.channel = channel
        self.method = method
        self.fixed = rank
        rng = rng if rng is not None else np.random.default_rng(0)
        self.channel_rng, self.solver_rng = rng.spawn(2)
        self.solver_options = solver_options or {}
        self._aggregate = AGGREGATORS[aggregation]

    def plan_round(self, rnd: int) -> RoundPlan:
        """Draw this round's channels and decide rank and frequencies."""
        state = self.channel.draw(self.channel_rng, self.system.n_devices)
        system = apply(self.system, state)
        if self.fixed is None:
            result = solve(system, self.method, rng=self.solver_rng, **self.solver_options)
        else:
            result = evaluate_rank(system, self.fixed)
        return RoundPlan(rnd, system, result, self.fixed is not None)

    @staticmethod
    def resize_for_round(
        global_state: dict[str, torch.Tensor], plan: RoundPlan, seed: int
    ) -> dict[str, torch.Tensor]:
        """The global payload resized to the round's rank (seeded by round, for resume)."""
        if plan.rank == state_rank(global_state):
            return global_state
        gen = torch.Generator().manual_seed(seed * 1_000_003 + plan.round)
        return resize_state(global_state, plan.rank, gen)

    def aggregate(
        self, results: list[tuple[dict[str, torch.Tensor], int]]
    ) -> dict[str, torch.Tensor]:
        """The new global payload from (payload, n_examples) pairs, weighted by examples."""
        return self._aggregate([s for s, _ in results], [float(n) for _, n in results])

    def state(self) -> dict[str, Any]:
        """What a checkpoint needs to continue the same sequence of draws."""
        return {
            "channel_rng": self.channel_rng.bit_generator.state,
            "solver_rng": self.solver_rng.bit_generator.state,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state`."""
        self.channel_rng.bit_generator.state = state["channel_rng"]
        self.solver_rng.bit_generator.state = state["solver_rng"]
