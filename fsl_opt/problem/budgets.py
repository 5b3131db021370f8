"""Whole-run budgets: each device's energy for the whole run and the run's total time.

A run may hold, beside each round's deadline T0 and energy budget E0, two budgets for the
whole training: ``energy_total_j`` (each device's battery share, joules over every round)
and ``time_total_s`` (the run's modeled time, the sum of its rounds' delays). This module
keeps the account and says what a round may spend; the policy that decides how to spend
is the round's solver.

Each round, under :meth:`RunBudgets.round_system`:

- the deadline is min(T0, time left) and each device's energy budget min(E0, energy left);
- a device whose energy left cannot pay for the round at rank 1 (at any clock within the
  deadline, as :func:`~fsl_opt.problem.cost.settle` judges it) is left out of the round,
  never overdrawn;
- the run stops (:attr:`RoundBudget.stop` says why) when the time is spent, when the time
  left fits no round, or when every device's energy is spent.

After the round :meth:`RunBudgets.charge` books what the devices taking part spent (their
modeled energy) and the round's delay (the slowest of them). The account is part of the
planner's checkpoint, so a resumed run spends what an uninterrupted one does.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fsl_opt.errors import ConfigError
from fsl_opt.problem import cost
from fsl_opt.problem.result import SolveResult
from fsl_opt.problem.system import System


@dataclass(frozen=True)
class RoundBudget:
    """What one round may spend: its system (T0 and E0 cut to what is left), the devices
    left out for want of energy, and a reason to stop the run ("" to go on)."""

    system: System
    left_out: NDArray[np.bool_]
    stop: str = ""


class RunBudgets:
    """The account of a run's whole-training budgets (either may be None: no such budget).

    Parameters
    ----------
    energy_total_j : float or (I,) array, optional
        Each device's energy for the whole run [J].
    time_total_s : float, optional
        The run's total modeled time [s].
    n_devices : int
        Devices in the run.
    """

    def __init__(
        self, energy_total_j: ArrayLike | None, time_total_s: float | None, n_devices: int
    ) -> None:
        self.n_devices = n_devices
        self.energy_total_j = (
            None
            if energy_total_j is None
            else np.broadcast_to(np.asarray(energy_total_j, dtype=np.float64), (n_devices,)).copy()
        )
        if self.energy_total_j is not None and not (
            np.all(np.isfinite(self.energy_total_j)) and np.all(self.energy_total_j > 0)
        ):
            raise ConfigError(f"energy_total_j = {energy_total_j!r}: expected values > 0")
        if time_total_s is not None and not (np.isfinite(time_total_s) and time_total_s > 0):
            raise ConfigError(f"time_total_s = {time_total_s!r}: expected a value > 0")
        self.time_total_s = time_total_s
        self.spent_j = np.zeros(n_devices)
        self.elapsed_s = 0.0

    @property
    def active(self) -> bool:
        """Whether any whole-run budget is set."""
        return self.energy_total_j is not None or self.time_total_s is not None

    def energy_left_j(self) -> NDArray[np.float64] | None:
        """Each device's energy left [J] (None: no energy budget)."""
        if self.energy_total_j is None:
            return None
        return np.maximum(self.energy_total_j - self.spent_j, 0.0)

    def time_left_s(self) -> float | None:
        """The run's time left [s] (None: no time budget)."""
        if self.time_total_s is None:
            return None
        return max(self.time_total_s - self.elapsed_s, 0.0)

    def round_system(self, system: System) -> RoundBudget:
        """This round's system within what is left, and who is left out (see the module)."""
        out = np.zeros(system.n_devices, dtype=bool)
        time_left = self.time_left_s()
        if time_left is not None:
            if time_left <= 0.0:
                return RoundBudget(system, ~out, f"time_total_s = {self.time_total_s:g} s is spent")
            system = system.replace(latency_s=min(system.latency_s, time_left))
        energy_left = self.energy_left_j()
        if energy_left is not None:
            cut = energy_left < system.energy_budget_j
            budget = np.minimum(system.energy_budget_j, energy_left)
            system = system.replace(energy_budget_j=np.where(budget > 0, budget, 1e-300))
            if cut.any():
                # With a pool, at the most bandwidth the device could be given.
                judged = (
                    system
                    if system.bandwidth_total_hz is None
                    else cost.at_bandwidth(system, cost.bandwidth_limit(system))
                )
                _, ok = cost.settle(judged, 1)
                out = cut & ~ok
            if out.all():
                return RoundBudget(
                    system,
                    out,
                    "every device's energy_total_j is spent (none can pay for a round at rank 1)",
                )
        return RoundBudget(system, out)

    def charge(self, result: SolveResult, ranks: NDArray[np.int64]) -> None:
        """Book a round: each device taking part spends its modeled energy; the round lasts
        as long as its slowest device."""
        if result.cost is None:
            return
        taking = ranks > 0
        if not taking.any():
            return
        energy = np.where(taking, np.nan_to_num(result.energy_j, nan=0.0), 0.0)
        self.spent_j = self.spent_j + energy
        self.elapsed_s += float(np.max(np.where(taking, result.latency_s, 0.0)))

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps."""
        return {"spent_j": self.spent_j.tolist(), "elapsed_s": self.elapsed_s}

    def load_state(self, state: dict[str, Any] | None) -> None:
        """Restore :meth:`state` (a checkpoint without budgets: nothing spent)."""
        if not state:
            return
        self.spent_j = np.asarray(state["spent_j"], dtype=np.float64)
        self.elapsed_s = float(state["elapsed_s"])


def check_fixed_rank(
    rank: int | tuple[int, ...] | None,
    *,
    battery: str | None = None,
    policy: bool = False,
    extended: bool = False,
) -> None:
    """Refuse what a fixed rank (the paper's one shared rank, trained whatever it costs)
    cannot be combined with: a battery for the whole run (``battery``: the setting that
    names it), a policy that decides the ranks itself, or the extended problem's per-device
    ranks, selection or pool. The one statement of these rules: the settings and the
    planner both call it."""
    if rank is None:
        return
    if policy:
        raise ConfigError(
            f"rank = {rank} with a drift_plus_penalty policy: the policy decides each round's "
            "ranks itself; leave one out"
        )
    if battery is not None:
        raise ConfigError(
            f"rank = {rank} with {battery}: a fixed rank trains every device whatever it "
            "costs, which would overdraw a battery; leave one of them out"
        )
    if extended:
        raise ConfigError(
            f"rank = {rank}: a fixed rank is one shared rank for every device; leave out "
            "objective, min_devices and bandwidth_total_hz (or rank)"
        )


def embed(result: SolveResult, keep: NDArray[np.bool_], n_devices: int, note: str) -> SolveResult:
    """A result solved for the devices ``keep`` as one for all ``n_devices``: the others at
    rank 0 with no clock, no bandwidth and no cost; ``note`` is added to the message."""
    idx = np.flatnonzero(keep)

    def spread(values: Any, fill: float, dtype: Any) -> Any:
        if values is None:
            return None
        out = np.full(n_devices, fill, dtype=dtype)
        out[idx] = values
        return out

    sub_ranks = result.rank_per_device(idx.size)
    costs = None
    if result.cost is not None:
        costs = result.cost.map(lambda a: spread(a, 0.0, np.float64))
    return replace(
        result,
        frequencies_hz=spread(result.frequencies_hz, np.nan, np.float64),
        cost=costs,
        binding=spread(result.binding, 0, np.int8),
        device_ranks=spread(result.device_ranks, 0, np.int64),
        ranks=spread(sub_ranks if result.status != "infeasible" else 0, 0, np.int64),
        bandwidth_hz=spread(result.bandwidth_hz, 0.0, np.float64),
        violations=tuple(replace(v, device=int(idx[v.device])) for v in result.violations),
        message=f"{result.message}; {note}",
    )
