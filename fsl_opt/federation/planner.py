"""The server's round planner: each round's ranks and frequencies, and the aggregation.

The planner holds no model and no device state: it turns the round's channel draw into a
solver call (:meth:`RoundPlanner.plan_round`: a rank per device, 0 for a device left out),
gives each device taking part its starting payload at its rank
(:meth:`RoundPlanner.payloads`) and turns the devices' returned payloads into the new global
state with the run's aggregator (:meth:`RoundPlanner.aggregate`), so any backend can drive
it. It is not a Flower ``Strategy``: the Flower backend sends its messages.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from numpy.typing import NDArray

from channels import ChannelModel, apply, log_distance_gain
from fsl_opt.errors import ConfigError
from fsl_opt.learning.lora import state_rank
from fsl_opt.learning.registry import make_aggregator
from fsl_opt.problem.accuracy import Progress
from fsl_opt.problem.budgets import RunBudgets, check_fixed_rank, embed
from fsl_opt.problem.result import SolveResult
from fsl_opt.problem.system import System
from fsl_opt.problem.trace import DeviceTrace
from solvers import AUTO, evaluate_rank, resolve_method, solve
from solvers.fixed_rank import evaluate_ranks

if TYPE_CHECKING:
    from fsl_opt.learning.local import LocalResult


class Policy(Protocol):
    """What the planner asks of a whole-run policy (:class:`~fsl_opt.federation.
    drift_plus_penalty.DriftPlusPenalty`, :class:`~fsl_opt.federation.priced.EnergyPriced`):
    a decision per round, booking the round, and state for a checkpoint."""

    share_j: NDArray[np.float64] | None
    share_s: float | None
    energy_queue_j: NDArray[np.float64]
    time_queue_s: float
    v: float | None

    def decide(self, system: System, index: NDArray[np.int64]) -> SolveResult: ...

    def update(self, result: SolveResult, ranks: NDArray[np.int64]) -> None: ...

    def state(self) -> dict[str, Any]: ...

    def load_state(self, state: dict[str, Any] | None) -> None: ...


@dataclass(frozen=True)
class RoundPlan:
    """The server's decision for one round: ranks, frequencies, modeled costs."""

    round: int
    system: System
    result: SolveResult
    fixed_rank: bool
    #: Why the run stops here ("" to go on): a whole-run budget is spent; nobody trains.
    stop: str = ""
    #: After this round: each device's energy left and the run's time left (None: unset).
    energy_left_j: list[float] | None = None
    time_left_s: float | None = None
    #: The drift-plus-penalty policy after this round: its queues, V and the round's length
    #: (None: the run has no such policy).
    policy: dict[str, Any] | None = None
    #: Devices planned to train that did not answer (set by :meth:`RoundPlanner.settle`):
    #: they did not take part, and nothing of the round is charged to them.
    lost: tuple[int, ...] = ()
    #: Devices the run's device trace marks unavailable this round (None: no trace).
    unavailable: tuple[int, ...] | None = None
    #: The accuracy model's prediction after this round (None: the run has no model, or
    #: the round is not settled yet).
    predicted_accuracy: float | None = None

    @property
    def rank(self) -> int:
        """The shared rank (per-device ranks: the least among the devices taking part; 0:
        nobody can meet the constraints and the round is skipped)."""
        return self.result.rank

    @property
    def planned_ranks(self) -> NDArray[np.int64]:
        """Each device's rank as solved for this round, 0 for a device left out."""
        if self.stop:
            return np.zeros(self.system.n_devices, dtype=np.int64)
        return self.result.rank_per_device(self.system.n_devices)

    @property
    def ranks(self) -> NDArray[np.int64]:
        """Each device's rank this round, 0 for a device left out or lost."""
        ranks = self.planned_ranks.copy()  # never the result's own array
        ranks[list(self.lost)] = 0
        return ranks

    @property
    def selected(self) -> list[int]:
        """The devices that take part (rank > 0, not lost), in order."""
        return [int(i) for i in np.flatnonzero(self.ranks > 0)]

    @property
    def planned(self) -> list[int]:
        """The devices the solver chose for this round, lost ones included."""
        return [int(i) for i in np.flatnonzero(self.planned_ranks > 0)]


class RoundPlanner:
    """Solve each round's allocation on fresh channels; aggregate weighted by |D_i|.

    Parameters
    ----------
    system : System
        The devices and model shape; its gains are replaced every round.
    channel : ChannelModel
        Fading model, drawn each round (block fading).
    method : str
        Solver name (``auto``: bisection for the paper's problem, per_device for the
        extended one); ignored when ``rank`` is given.
    rank : int, optional
        Train at this rank every round (a rank sweep); the frequencies are then the
        least-energy on-time clocks (capped at f_max) and the status says whether every
        device met T0 and E0 (``fixed``) or not (``over_budget``).
    rng : numpy.random.Generator
        Seeds two independent streams: one for the channels, one for the solver's own
        draws (random frequencies), so every method sees the same channels. Their states
        are checkpointed.
    aggregation : str
        A registered aggregator (:data:`fsl_opt.learning.registry.AGGREGATORS`); it also
        says what each device downloads, which the cost model charges.
    lora_scale : float
        The LoRA scaling s, for the ``stack`` aggregator's merged weights.
    budgets : RunBudgets, optional
        Whole-run budgets (each device's energy for the run, the run's total time); each
        round is planned within what is left of them
        (:mod:`fsl_opt.problem.budgets`), and the account is checkpointed.
    policy : Policy, optional
        Decide each round by a policy instead of the solver: drift-plus-penalty
        (:mod:`fsl_opt.federation.drift_plus_penalty`) spends whole-run budgets, ``EnergyPriced``
        (:mod:`fsl_opt.federation.target`) buys predicted accuracy at a price per joule;
        its state is checkpointed.
    trace : DeviceTrace, optional
        Replay device traces (:mod:`fsl_opt.problem.trace`): each round, a device the
        trace marks unavailable is left out before the solver runs, a clock cap lowers its
        f_max, and a distance (path loss) or gain replaces its large-scale channel under the
        round's fading.
    accuracy : Progress, optional
        A fitted accuracy model and the run's per-device samples: each round's prediction
        is recorded, and ``objective = "accuracy"`` values each device-round by it
        (:mod:`fsl_opt.problem.accuracy`); its progress is checkpointed.
    """

    def __init__(
        self,
        system: System,
        channel: ChannelModel,
        method: str = AUTO,
        rank: int | tuple[int, ...] | None = None,
        rng: np.random.Generator | None = None,
        solver_options: dict[str, Any] | None = None,
        aggregation: str = "fedavg",
        lora_scale: float = 2.0,
        budgets: RunBudgets | None = None,
        policy: Policy | None = None,
        trace: DeviceTrace | None = None,
        accuracy: Progress | None = None,
    ) -> None:
        self.budgets = budgets or RunBudgets(None, None, system.n_devices)
        if system.objective == "accuracy" and accuracy is None:
            raise ConfigError(
                "objective = 'accuracy' needs an accuracy model (accuracy_model = FILE, "
                "written by fsl-opt fit-accuracy)"
            )
        if accuracy is not None and accuracy.samples.size != system.n_devices:
            raise ValueError("the accuracy progress must hold every device of the run")
        self.accuracy = accuracy
        if trace is not None:
            trace.check_devices(system.n_devices)
        self.trace = trace
        self.policy = policy
        check_fixed_rank(rank, policy=policy is not None)
        battery = "energy_total_j" if self.budgets.energy_total_j is not None else None
        check_fixed_rank(rank, battery=battery, extended=not system.is_p1)
        self.system = system
        self.channel = channel
        self.method = resolve_method(method, system)
        self.fixed = rank
        rng = rng if rng is not None else np.random.default_rng(0)
        self.channel_rng, self.solver_rng = rng.spawn(2)
        self.solver_options = solver_options or {}
        self.aggregator = make_aggregator(aggregation, lora_scale, system.n_devices)
        #: The round planned with ``settle=False`` and not yet charged (None: none).
        self.unsettled: int | None = None

    def plan_round(self, rnd: int, settle: bool = True) -> RoundPlan:
        """Draw this round's channels and decide ranks and frequencies (within what is left
        of the whole-run budgets), and charge the round to the budgets.

        Parameters
        ----------
        settle : bool
            Charge every device planned to take part at once (a plan that trains nobody, or
            a run that is only planned). ``False``: the round is charged by :meth:`settle`
            once the devices have answered, with the devices that did; until then the
            planner refuses to plan again or to save its state, so no round goes
            uncharged.
        """
        if self.unsettled is not None:
            raise RuntimeError(
                f"round {self.unsettled} was planned with settle=False and never settled"
            )
        plan = self._plan_round(rnd)
        if plan.stop:
            return plan
        self.unsettled = rnd
        return self.settle(plan, set(plan.planned)) if settle else plan

    def _plan_round(self, rnd: int) -> RoundPlan:
        """This round's fading, the trace's round on top of it, then the decision."""
        state = self.channel.draw(self.channel_rng, self.system.n_devices)
        system = apply(self.system, state)
        if self.trace is None:
            return self._decide(rnd, system, np.zeros(system.n_devices, dtype=bool))
        system, offline = self._replay(system, rnd)
        unavailable = tuple(int(i) for i in np.flatnonzero(offline))
        return replace(self._decide(rnd, system, offline), unavailable=unavailable)

    def _decide(self, rnd: int, system: System, offline: NDArray[np.bool_]) -> RoundPlan:
        """Ranks and frequencies on the round's ``system``, ``offline`` devices left out."""
        download = self.aggregator.download_params(
            system.d, system.k, system.matrices_per_layer, system.layers
        )
        if download is not None:
            system = system.replace(download_params=download)
        if system.objective == "accuracy":
            assert self.accuracy is not None
            system = system.replace(
                device_value=self.accuracy.values(), rank_half=self.accuracy.model.rank_half
            )
        deadline = system.latency_s
        budget = self.budgets.round_system(system)
        system, out, stop = budget.system, budget.left_out, budget.stop
        kept = int((~out).sum())
        if not stop and system.min_devices is not None and kept < system.min_devices:
            stop = (
                f"only {kept} devices have energy left for a round, fewer than min_devices = "
                f"{system.min_devices}"
            )
        if stop:
            return self._plan(rnd, system, _stopped(system, self.method, stop), stop)
        here = int((~out & ~offline).sum())
        if offline.any() and (here == 0 or here < (system.min_devices or 0)):
            # Devices come back: a round too few can join is skipped, not the run's end.
            why = f"devices {_listed(offline)} unavailable (trace): {here} can take part" + (
                "" if here == 0 else f", fewer than min_devices = {system.min_devices}"
            )
            return self._plan(rnd, system, _stopped(system, self.method, why), "")
        if out.any() or offline.any():
            keep = np.flatnonzero(~out & ~offline)
            sub = system.subset(keep)
            if system.min_devices is not None:
                sub = sub.replace(min_devices=system.min_devices, objective=system.objective)
            notes = []
            if out.any():
                notes.append(
                    f"devices {_listed(out)} left out: their energy left cannot pay for rank 1"
                )
            if offline.any():
                notes.append(f"devices {_listed(offline)} unavailable (trace)")
            result = embed(
                self._solve(sub, keep), ~out & ~offline, system.n_devices, "; ".join(notes)
            )
        else:
            result = self._solve(system, np.arange(system.n_devices))
        if system.latency_s < deadline and (
            not result.meets_constraints or result.extra.get("nobody_can", False)
        ):
            stop = (
                f"the {system.latency_s:.6g} s left of time_total_s = "
                f"{self.budgets.time_total_s:g} s fit no round"
            )
            return self._plan(rnd, system, result, stop)
        return self._plan(rnd, system, result, "")

    def _replay(self, system: System, rnd: int) -> tuple[System, NDArray[np.bool_]]:
        """The trace's round ``rnd`` applied to ``system`` (the round's fading in place):
        clock caps, large-scale gains; and the devices it marks unavailable."""
        assert self.trace is not None
        n = system.n_devices
        view = self.trace.at(rnd, n)
        placed = self.channel.mean(n).gain_ul  # the placement's large-scale gains
        beta = placed
        if not np.isnan(view.distance_m).all():
            d = view.distance_m
            beta = np.where(np.isnan(d), placed, log_distance_gain(np.where(np.isnan(d), 1.0, d)))
        elif not np.isnan(view.gain).all():
            beta = np.where(np.isnan(view.gain), placed, view.gain)
        scale = beta / placed
        system = system.replace(
            gain_ul=system.gain_ul * scale,
            gain_dl=system.gain_dl * scale,
            f_max_hz=np.minimum(system.f_max_hz, view.clock_cap_hz),
        )
        return system, ~view.available

    def settle(self, plan: RoundPlan, answered: set[int]) -> RoundPlan:
        """The round as it happened: the devices of ``plan`` that did not answer are lost
        (rank 0 in the record, no modeled energy or time); the whole-run budgets and the
        policy's queues are charged for the devices that took part only."""
        if self.unsettled != plan.round:
            raise RuntimeError(
                f"round {plan.round} is not waiting to be settled (plan it with settle=False)"
            )
        self.unsettled = None
        lost = tuple(i for i in plan.planned if i not in answered)
        settled = replace(plan, lost=lost)
        self.budgets.charge(plan.result, settled.ranks)
        if self.policy is not None:
            self.policy.update(plan.result, settled.ranks)
        predicted = None if self.accuracy is None else self.accuracy.book(settled.ranks)
        left = self.budgets.energy_left_j()
        return replace(
            settled,
            predicted_accuracy=predicted,
            energy_left_j=None if left is None else left.tolist(),
            time_left_s=self.budgets.time_left_s(),
            policy=None if self.policy is None else self._policy_record(plan.result),
        )

    def _solve(self, system: System, index: NDArray[np.int64]) -> SolveResult:
        """The round's allocation for the devices ``index`` of the run (held by ``system``)."""
        if self.policy is not None:
            return self.policy.decide(system, index)
        if self.fixed is None:
            return solve(system, self.method, rng=self.solver_rng, **self.solver_options)
        if isinstance(self.fixed, tuple):  # one per device of the run
            given = np.asarray(self.fixed, dtype=np.int64)[index]
            if not (given > 0).any():
                return SolveResult.without_allocation(
                    system.n_devices,
                    "fixed",
                    "fixed_rank",
                    "no device here was given a rank above 0: nobody trains this round",
                )
            return evaluate_ranks(system, given)
        return evaluate_rank(system, self.fixed)

    def _plan(self, rnd: int, system: System, result: SolveResult, stop: str) -> RoundPlan:
        left = self.budgets.energy_left_j()
        return RoundPlan(
            rnd,
            system,
            result,
            self.fixed is not None,
            stop=stop,
            energy_left_j=None if left is None else left.tolist(),
            time_left_s=self.budgets.time_left_s(),
            policy=None if self.policy is None else self._policy_record(result),
        )

    def _policy_record(self, result: SolveResult) -> dict[str, Any]:
        assert self.policy is not None
        p = self.policy
        return {
            "energy_queue_j": None if p.share_j is None else p.energy_queue_j.tolist(),
            "time_queue_s": None if p.share_s is None else p.time_queue_s,
            "policy_v": p.v,
            "round_length_s": result.extra.get("round_length_s"),
        }

    def payloads(
        self, state: dict[str, torch.Tensor], plan: RoundPlan, seed: int
    ) -> dict[int, dict[str, torch.Tensor]]:
        """Each device taking part: its starting payload at its rank.

        New directions are drawn from a generator seeded by (seed, round), anew for each
        device, so devices at the same rank start from the same payload and a resumed run
        draws what a straight one does.
        """
        out: dict[int, dict[str, torch.Tensor]] = {}
        by_rank: dict[int, dict[str, torch.Tensor]] = {}
        for i in plan.selected:
            r = int(plan.ranks[i])
            if r not in by_rank:
                gen = torch.Generator().manual_seed((seed * 1_000_003 + plan.round) % 2**63)
                by_rank[r] = self.aggregator.payload(state, r, gen)
            out[i] = by_rank[r]
        return out

    def download_bytes(self, payload: dict[str, torch.Tensor], plan: RoundPlan, device: int) -> int:
        """Bytes device ``device`` receives, as the aggregator sends it and the cost model
        charges it."""
        return self.aggregator.download_bytes(payload, device, plan.system.download_params)

    def aggregate(
        self,
        state: dict[str, torch.Tensor],
        replies: dict[int, LocalResult],
        plan: RoundPlan,
        received: Collection[int] = (),
    ) -> dict[str, torch.Tensor]:
        """The new global state from the devices' replies, weighted by examples
        (``received``: the devices known to hold this round's payload, the replying ones
        among them)."""
        order = sorted(replies)
        payloads = [replies[i].adapter_state for i in order]
        ranks = [state_rank(p) for p in payloads]
        weights = [float(replies[i].n_examples) for i in order]
        try:
            new = self.aggregator.aggregate(state, payloads, ranks, weights)
        except ValueError as exc:
            raise ConfigError(f"round {plan.round}: {exc}") from None
        self.aggregator.after_aggregate(sorted(set(received) | set(replies)), ranks)
        return new

    def state(self) -> dict[str, Any]:
        """What a checkpoint needs to continue the same sequence of draws."""
        if self.unsettled is not None:
            raise RuntimeError(
                f"round {self.unsettled} is planned but not settled: its charges are not "
                "in the budgets yet"
            )
        return {
            "channel_rng": self.channel_rng.bit_generator.state,
            "solver_rng": self.solver_rng.bit_generator.state,
            "aggregator": self.aggregator.state(),
            "budgets": self.budgets.state(),
            "policy": None if self.policy is None else self.policy.state(),
            "accuracy_work": None if self.accuracy is None else self.accuracy.work,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state`."""
        self.channel_rng.bit_generator.state = state["channel_rng"]
        self.solver_rng.bit_generator.state = state["solver_rng"]
        # Checkpoints before the aggregator kept its own state held stack's pending ranks.
        old = {"pending_rank": state["pending_rank"]} if "pending_rank" in state else {}
        self.aggregator.load_state(state.get("aggregator", old))
        self.budgets.load_state(state.get("budgets"))
        if self.policy is not None:
            self.policy.load_state(state.get("policy"))
        if self.accuracy is not None:
            work = state.get("accuracy_work")
            if work is None:
                raise ConfigError(
                    "the checkpoint was made without an accuracy model: its predicted "
                    "progress is unknown; resume without accuracy_model, or start anew"
                )
            self.accuracy.work = float(work)


def _listed(mask: NDArray[np.bool_]) -> str:
    return ", ".join(str(i) for i in np.flatnonzero(mask))


def _stopped(system: System, method: str, why: str) -> SolveResult:
    """The result of a round the run does not train: nobody takes part."""
    result = SolveResult.without_allocation(system.n_devices, "infeasible", method, why)
    return replace(result, ranks=np.zeros(system.n_devices, dtype=np.int64))
