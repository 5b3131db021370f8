"""Server side: decide each round's rank and frequencies, and aggregate (FedAvg).

The strategy holds no model: it turns the round's channel draw into a solver call
(``configure_round``) and the devices' returned payloads into the new global payload
(``aggregate``), so any backend (in-process, Flower) can drive it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from channels import ChannelModel, apply
from fsl_opt import cost
from fsl_opt.lora import fedavg, resize_state, state_rank
from fsl_opt.result import SolveResult
from fsl_opt.system import System
from solvers import solve
from solvers._common import build_result


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


class RankFrequencyStrategy:
    """Solve P1 on each round's channels; FedAvg weighted by |D_i|.

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
        least-energy on-time clocks (capped at f_max) and the log says if it was feasible.
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
    ) -> None:
        self.system = system
        self.channel = channel
        self.method = method
        self.fixed = rank
        rng = rng if rng is not None else np.random.default_rng(0)
        self.channel_rng, self.solver_rng = rng.spawn(2)
        self.solver_options = solver_options or {}

    def configure_round(self, rnd: int) -> RoundPlan:
        """Draw this round's channels and decide rank and frequencies."""
        state = self.channel.draw(self.channel_rng, self.system.n_devices)
        system = apply(self.system, state)
        if self.fixed is None:
            result = solve(system, self.method, rng=self.solver_rng, **self.solver_options)
        else:
            result = fixed_rank_result(system, self.fixed)
        return RoundPlan(rnd, system, result, self.fixed is not None)

    @staticmethod
    def prepare(
        global_state: dict[str, torch.Tensor], plan: RoundPlan, seed: int
    ) -> dict[str, torch.Tensor]:
        """The global payload resized to the round's rank (seeded by round, for resume)."""
        if plan.rank == state_rank(global_state):
            return global_state
        gen = torch.Generator().manual_seed(seed * 1_000_003 + plan.round)
        return resize_state(global_state, plan.rank, gen)

    @staticmethod
    def aggregate(results: list[tuple[dict[str, torch.Tensor], int]]) -> dict[str, torch.Tensor]:
        """FedAvg of (payload, n_examples) pairs."""
        return fedavg([s for s, _ in results], [float(n) for _, n in results])

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


def fixed_rank_result(system: System, rank: int) -> SolveResult:
    """A result at a given rank: least-energy on-time clocks, capped at f_max.

    Status ``optimal`` when every device meets T0 and E0 there, ``infeasible`` otherwise
    (the round still trains: a rank sweep measures accuracy, not feasibility).
    """
    started = time.perf_counter()
    f = np.minimum(cost.least_energy_frequency(system, rank), system.f_max_hz)
    missed = int((~cost.feasible_at(system, rank, f)).sum())
    res = build_result(system, "fixed_rank", rank, started, 0, frequencies=f)
    if missed == 0:
        return res
    return replace(
        res, status="infeasible", message=f"rank {rank} misses T0 or E0 on {missed} devices"
    )
