"""Drift-plus-penalty: a policy that spends whole-run budgets where they buy the most.

A run with whole-run budgets (each device's battery share ``energy_total_j``, the run's
time ``time_total_s``) is a stochastic program over its rounds: the channels of later
rounds are unknown, so a round that spends its device's whole battery on a bad channel
leaves nothing for a good one. Lyapunov optimization turns it into one problem per round
(Neely, *Stochastic Network Optimization*, 2010). Each budget gets a virtual queue that
grows by what a round spends beyond its per-round share and drains by what it spends less:

    Q_i(t+1) = max(Q_i(t) + E_i(t) - e_i, 0),    e_i = energy_total_i / rounds
    Z(t+1)   = max(Z(t)   + T(t)   - tau, 0),    tau = time_total / rounds

and each round maximizes the utility minus the queue-weighted cost
(:func:`solvers.priced.solve_priced`), every queue weighed by its own share, so joules and
seconds are on one scale (the Lyapunov function is 1/2 sum (Q_i / e_i)^2 + 1/2 (Z / tau)^2):

    max  V U(r) - sum_i (Q_i / e_i^2) E_i(r_i, f_i) - (Z / tau^2) T

under the round's deadline T <= T0 and each device's budget min(E0, energy left).
U is the run's objective (``shared``: the rank; ``sum``: sum w_i r_i; ``log``:
sum w_i log(1 + r_i); ``accuracy``: the round's predicted accuracy gain, whose device values
fall as the run's predicted accuracy nears its ceiling, so that with V fixed on the first
round a late device-round must be cheap to be bought). A device left out (r_i = 0) spends
nothing; a round in which every option costs more than it buys is skipped (nobody trains,
nothing is spent).

With ``time_total_s`` the round's length T is a decision too: a shorter round saves the
run's time and a longer one lets every device run a slower clock, and compute energy
falls with the square of the clock. :meth:`DriftPlusPenalty.decide` tries
``round_lengths`` lengths from T0 down to T0 / 16 on a geometric grid and keeps the best.

V weighs utility against the queues. Its automatic value (``v=None``) is fixed on the
first round that can train: the one at which, with every queue holding one round's share,
that round at every device's largest rank is worth nothing. Larger V follows the utility
more and the per-round shares less.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fsl_opt.errors import ConfigError
from fsl_opt.problem.result import SolveResult
from fsl_opt.problem.system import System
from solvers.per_device import solve_per_device
from solvers.priced import BANDWIDTH_LEVELS, skip_round, solve_priced

if TYPE_CHECKING:
    from fsl_opt.federation.settings import RunConfig

#: Round lengths tried when the run has a time budget, from T0 down to T0 / 16.
ROUND_LENGTHS = 16


class DriftPlusPenalty:
    """The drift-plus-penalty policy of a run: its queues, V, and each round's decision.

    Parameters
    ----------
    samples : (I,) array
        Each device's samples |D_i| in the run: U's weights are the run's, also in a round
        that some devices sit out.
    rounds : int
        The run's rounds: each budget's per-round share is its total over this.
    energy_total_j : (I,) array, optional
        Each device's energy for the whole run [J].
    time_total_s : float, optional
        The run's total modeled time [s]; with it the round's length is a decision.
    v : float, optional
        Utility weight V (None: the automatic value, see the module).
    round_lengths : int
        Round lengths tried with a time budget (T0 down to T0 / 16, geometric).
    bandwidth_levels, time_limit_s
        Passed to :func:`solve_priced`.
    """

    def __init__(
        self,
        samples: ArrayLike,
        rounds: int,
        energy_total_j: ArrayLike | None = None,
        time_total_s: float | None = None,
        v: float | None = None,
        round_lengths: int = ROUND_LENGTHS,
        bandwidth_levels: int = BANDWIDTH_LEVELS,
        time_limit_s: float = 60.0,
    ) -> None:
        if energy_total_j is None and time_total_s is None:
            raise ConfigError(
                "policy drift_plus_penalty spends whole-run budgets: set energy_total_j, "
                "time_total_s or both"
            )
        if v is not None and not (math.isfinite(v) and v > 0):
            raise ConfigError(f"policy_v = {v!r}: expected a finite value > 0 (or none: automatic)")
        self.samples = np.asarray(samples, dtype=np.float64)
        n_devices = self.n_devices = int(self.samples.size)
        self.share_j = (
            None
            if energy_total_j is None
            else np.broadcast_to(np.asarray(energy_total_j, dtype=np.float64), (n_devices,))
            / rounds
        )
        self.share_s = None if time_total_s is None else float(time_total_s) / rounds
        self.v = v
        self.round_lengths = round_lengths if time_total_s is not None else 1
        self.bandwidth_levels = bandwidth_levels
        self.time_limit_s = time_limit_s
        self.energy_queue_j = np.zeros(n_devices)
        self.time_queue_s = 0.0

    @classmethod
    def from_run(
        cls,
        cfg: RunConfig,
        system: System,
        energy_total_j: ArrayLike | None,
        time_total_s: float | None,
    ) -> DriftPlusPenalty:
        """The policy a run's settings ask for: its whole-run budgets over ``cfg.rounds``,
        V = ``policy_v``."""
        return cls(system.samples, cfg.rounds, energy_total_j, time_total_s, cfg.policy_v)

    def prices(self, index: NDArray[np.int64]) -> tuple[NDArray[np.float64], float]:
        """The round's energy prices Q_i / e_i^2 of the devices ``index`` and the time
        price Z / tau^2."""
        if self.share_j is None:
            energy = np.zeros(index.size)
        else:
            energy = self.energy_queue_j[index] / self.share_j[index] ** 2
        time_price = 0.0 if self.share_s is None else self.time_queue_s / self.share_s**2
        return energy, time_price

    def weight_scale(self, system: System, index: NDArray[np.int64]) -> float:
        """U over the devices ``index`` with the run's weights, per U with their own
        (``system.weights`` sum to 1 over them): sum of their |D_i| over the run's. 1 for
        ``shared`` and ``accuracy`` (whose device values are not normalized)."""
        if system.objective in ("shared", "accuracy"):
            return 1.0
        return float(self.samples[index].sum() / self.samples.sum())

    def auto_v(self, system: System, index: NDArray[np.int64]) -> float | None:
        """V at which, with every queue at one round's share, this round at every device's
        largest rank (``per_device``'s answer) is worth nothing; None if nobody can train."""
        best = solve_per_device(system)
        if best.status != "optimal" or best.ranks is None or best.objective_value <= 0:
            return None
        taking = best.ranks > 0
        penalty = 0.0
        if self.share_j is not None:
            penalty += math.fsum(best.energy_j[taking] / self.share_j[index][taking])
        if self.share_s is not None:
            penalty += float(np.max(best.latency_s[taking])) / self.share_s
        return penalty / (best.objective_value * self.weight_scale(system, index))

    def lengths(self, deadline_s: float) -> list[float]:
        """The round lengths tried under ``deadline_s``: itself, then down to 1/16 of it."""
        k = self.round_lengths
        return [deadline_s * 16.0 ** (-j / (k - 1)) if k > 1 else deadline_s for j in range(k)]

    def decide(self, system: System, index: NDArray[np.int64]) -> SolveResult:
        """This round's allocation for the devices ``index`` of the run (``system`` holds
        them, with this round's deadline and budgets cut to what is left)."""
        started = time.perf_counter()
        if self.v is None:
            self.v = self.auto_v(system, index)
            if self.v is None:
                why = "no device can take part (V is set on the first round that can train)"
                return skip_round(system, started, why, nobody_can=True)
        energy_price, time_price = self.prices(index)
        best: SolveResult | None = None
        for length in self.lengths(system.latency_s):
            res = solve_priced(
                system.replace(latency_s=length),
                energy_price,
                time_price,
                self.v * self.weight_scale(system, index),
                bandwidth_levels=self.bandwidth_levels,
                time_limit_s=self.time_limit_s,
            )
            if res.status == "error":
                return res
            if best is None or res.extra["value"] > best.extra["value"]:
                best = replace(res, extra={**res.extra, "round_length_s": length})
        assert best is not None
        return replace(best, wall_time_s=time.perf_counter() - started)

    def update(self, result: SolveResult, ranks: NDArray[np.int64]) -> None:
        """Book a round into the queues (``ranks`` over every device of the run; a device
        that did not take part spent nothing, so its queue drains by its share)."""
        taking = ranks > 0
        if self.share_j is not None:
            spent = np.zeros(self.n_devices)
            if result.cost is not None and taking.any():
                spent = np.where(taking, np.nan_to_num(result.energy_j, nan=0.0), 0.0)
            self.energy_queue_j = np.maximum(self.energy_queue_j + spent - self.share_j, 0.0)
        if self.share_s is not None:
            length = 0.0
            if result.cost is not None and taking.any():
                length = float(np.max(np.where(taking, result.latency_s, 0.0)))
            self.time_queue_s = max(self.time_queue_s + length - self.share_s, 0.0)

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps."""
        return {
            "energy_queue_j": self.energy_queue_j.tolist(),
            "time_queue_s": self.time_queue_s,
            "v": self.v,
        }

    def load_state(self, state: dict[str, Any] | None) -> None:
        """Restore :meth:`state`."""
        if not state:
            return
        self.energy_queue_j = np.asarray(state["energy_queue_j"], dtype=np.float64)
        self.time_queue_s = float(state["time_queue_s"])
        self.v = state["v"]
