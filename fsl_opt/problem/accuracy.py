"""Predicted test accuracy of a plan: a learning curve in the work the rounds train.

What a plan buys is accuracy; the rank the per-round solvers maximize is a weak stand-in
for it (most of a round's energy is the frozen layers' compute, which no rank changes,
and a LoRA fine-tune's loss depends mostly on the data it sees). This module predicts the
test accuracy after each round of a plan from what each round trains, with a few
parameters fitted from finished runs of the same model, data and learning settings
(``fsl-opt fit-accuracy``), and gives the solvers the value of a device-round.

The model
---------
Round t trains devices S_t; device i brings x_i = n_i e_i samples (its samples times its
local epochs) at rank r_i. Its **work** is

    w_t = K * sum_{i in S_t} x_i g(r_i) / U,      g(r) = r / (r + c),   U = 1000 samples,

and the accuracy after round t follows a saturating curve in the cumulative work
W_t = w_1 + ... + w_t:

    exp:    A_t = A_max - (A_max - A_0) exp(-k W_t)
    power:  A_t = A_max - (A_max - A_0) (1 + k W_t)^(-alpha)

The factor K says how a round's devices combine. ``pooling = "sum"``: K = 1, every sample
counts wherever it is trained. FedAvg averages the devices' updates, so a round is closer
to one device's local work than to the sum over devices: ``population``, K = I^(beta - 1)
for a run of I devices (beta = 0: the population's mean, a device left out adding zero);
``average``, K = m_t^(beta - 1) over the m_t devices taking part (beta = 0: the mean of the
devices that trained). ``c`` is the rank at which the rank factor is half its ceiling
(c = 0: the rank does not matter). A_0 is the untuned accuracy (each fitted run's own
round 0). ``fsl-opt fit-accuracy`` fits every form and keeps the one whose held-out
predictions are best; on the committed MiniLM / news4 runs that is ``exp-population``.

Where it must not be trusted: the fit holds for its :attr:`AccuracyModel.scope` (model,
data, adapted layers, learning rate, batch size, sequence length, IID partition, LoRA
scale); a run or plan outside it is refused, never extrapolated silently; within it, a
plan whose cumulative work or per-device samples go beyond what the fitted runs trained is
an extrapolation, and :meth:`AccuracyModel.extrapolation` says so.

The value of a device-round (the ``accuracy`` objective) is the first-order gain
dA/dW (W_t) x K x_i g(r_i) / U at the run's state (:meth:`AccuracyModel.device_values`):
a sum over devices for ``sum`` and ``population`` (not for ``average``, whose K depends on
who takes part), so the per-round solvers' machinery (each device its largest rank without
a pool, a multiple-choice knapsack with one, selection by sorting) applies as for the
weighted rank sum.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fsl_opt.errors import ConfigError
from fsl_opt.files import write_atomic

#: Learning-curve shapes in the cumulative work.
CURVES: tuple[str, ...] = ("exp", "power")
#: How a round's devices combine: every sample counts ("sum"), or the devices' updates are
#: averaged with a fitted participation exponent ("average").
POOLINGS: tuple[str, ...] = ("sum", "population", "average")
#: Samples in one unit of work (keeps the fitted rate readable: per thousand samples).
SAMPLE_UNIT = 1000.0
#: The settings an accuracy model is fitted for; a run or a plan with another value of any
#: of them is refused.
SCOPE_KEYS: tuple[str, ...] = (
    "model",
    "data",
    "layers",
    "lr",
    "batch_size",
    "max_length",
    "partition",
    "lora_scale",
)
#: The least gain per sample a device-round is given (a curve at its ceiling has none).
TINY = 1e-200
#: A file written by ``fsl-opt fit-accuracy`` says this kind.
FILE_KIND = "fsl-opt accuracy model"


@dataclass(frozen=True)
class Round:
    """What one round trained: each device's samples x local epochs and rank (0: left out).

    Attributes
    ----------
    samples : (I,) array
        x_i = n_i e_i for every device of the run (any value for a device left out).
    ranks : (I,) array of int
        r_i, 0 for a device that did not take part (left out, unavailable or lost).
    """

    samples: NDArray[np.float64]
    ranks: NDArray[np.int64]

    @staticmethod
    def of(samples: ArrayLike, ranks: ArrayLike) -> Round:
        x = np.asarray(samples, dtype=np.float64)
        r = np.asarray(ranks, dtype=np.int64)
        if x.shape != r.shape or x.ndim != 1:
            raise ConfigError(f"a round needs as many samples as ranks: {x.shape} and {r.shape}")
        if np.any(x < 0) or np.any(r < 0) or not np.all(np.isfinite(x)):
            raise ConfigError("a round's samples and ranks must be finite and >= 0")
        return Round(x, r)


@dataclass(frozen=True)
class History:
    """A finished run as the fit sees it: its rounds and the accuracy measured after each.

    Attributes
    ----------
    label : str
        Names the run in messages (its folder).
    group : str
        The experiment it belongs to: leave-one-out validation leaves whole groups out.
    untuned : float
        The accuracy measured before training (round 0).
    rounds : list of Round
    accuracy : (T,) array
        The accuracy measured after each round.
    scope : dict
        Its values of :data:`SCOPE_KEYS`.
    """

    label: str
    group: str
    untuned: float
    rounds: list[Round]
    accuracy: NDArray[np.float64]
    scope: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AccuracyModel:
    """A fitted learning curve (see the module docstring for the form).

    Attributes
    ----------
    curve : {"exp", "power"}
    pooling : {"sum", "population", "average"}
    ceiling : float
        A_max, the accuracy the curve saturates at.
    rate : float
        k, per unit of work (a thousand samples at full rank factor).
    rank_half : float
        c, the rank at which g(r) = 1/2.
    participation : float
        beta (unused by ``pooling = "sum"``).
    shape : float
        alpha of the power curve (unused by ``exp``).
    untuned : float
        A_0 for a plan that has not measured its own: the fitted runs' mean.
    scope : dict
        The settings the fit holds for (:data:`SCOPE_KEYS`).
    span : dict
        What the fitted runs covered: ``work`` (largest cumulative work), ``samples``
        (largest x_i of a device), ``rank`` (largest rank), ``devices`` (most devices in a
        round).
    fit : dict
        How it was made and how well it predicts: runs, groups, root-mean-square error,
        leave-one-group-out errors.
    """

    curve: str
    pooling: str
    ceiling: float
    rate: float
    rank_half: float
    participation: float = 1.0
    shape: float = 1.0
    untuned: float = 0.25
    scope: dict[str, Any] = field(default_factory=dict)
    span: dict[str, float] = field(default_factory=dict)
    fit: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.curve not in CURVES:
            raise ConfigError(f"curve = {self.curve!r}: expected one of {', '.join(CURVES)}")
        if self.pooling not in POOLINGS:
            raise ConfigError(f"pooling = {self.pooling!r}: expected one of {', '.join(POOLINGS)}")
        for name, low, high in (
            ("ceiling", 0.0, 1.0),
            ("untuned", 0.0, 1.0),
            ("rate", 0.0, math.inf),
            ("rank_half", 0.0, math.inf),
            ("participation", 0.0, 2.0),
            ("shape", 0.0, math.inf),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"accuracy model: {name} = {value!r}: expected a number")
            if not (math.isfinite(value) and low <= value <= high):
                raise ConfigError(
                    f"accuracy model: {name} = {value!r}: expected a number in [{low}, {high}]"
                )

    @property
    def form(self) -> str:
        """``curve-pooling``, e.g. ``exp-average``."""
        return f"{self.curve}-{self.pooling}"

    # -- the curve ------------------------------------------------------------------------

    def rank_factor(self, ranks: ArrayLike) -> NDArray[np.float64]:
        """g(r) = r / (r + c) (0 at r = 0; 1 for every r > 0 when c = 0)."""
        r = np.asarray(ranks, dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            g = np.where(r > 0, r / (r + self.rank_half), 0.0)
        return np.asarray(g, dtype=np.float64)

    def work(self, rnd: Round) -> float:
        """w_t of one round."""
        taking = rnd.ranks > 0
        m = int(taking.sum())
        if m == 0:
            return 0.0
        total = float(np.sum(rnd.samples[taking] * self.rank_factor(rnd.ranks[taking])))
        return self.crowd(m, rnd.ranks.size) * total / SAMPLE_UNIT

    def crowd(self, taking: int, population: int) -> float:
        """The participation factor: 1 (``sum``), m^(beta - 1) for m devices taking part
        (``average``) or I^(beta - 1) for a population of I devices (``population``)."""
        if self.pooling == "sum":
            return 1.0
        count = taking if self.pooling == "average" else population
        return float(max(count, 1) ** (self.participation - 1.0))

    def accuracy(self, work: ArrayLike, untuned: float | None = None) -> NDArray[np.float64]:
        """A(W): the accuracy after cumulative work W."""
        a0 = self.untuned if untuned is None else untuned
        w = np.asarray(work, dtype=np.float64)
        return np.asarray(self.ceiling - (self.ceiling - a0) * self._decay(w), dtype=np.float64)

    def _decay(self, w: NDArray[np.float64]) -> NDArray[np.float64]:
        if self.curve == "exp":
            return np.exp(-self.rate * w)
        return np.asarray((1.0 + self.rate * w) ** (-self.shape), dtype=np.float64)

    def slope(self, work: float, untuned: float | None = None) -> float:
        """dA/dW at cumulative work W (>= 0: the curve only rises towards the ceiling)."""
        a0 = self.untuned if untuned is None else untuned
        gap = max(self.ceiling - a0, 0.0)
        if self.curve == "exp":
            return float(gap * self.rate * math.exp(-self.rate * work))
        return float(gap * self.shape * self.rate * (1.0 + self.rate * work) ** (-self.shape - 1))

    def predict(self, rounds: Iterable[Round], untuned: float | None = None) -> NDArray[np.float64]:
        """The predicted accuracy after each of ``rounds`` (round 0 not included)."""
        cumulative = np.cumsum([self.work(r) for r in rounds])
        return self.accuracy(cumulative, untuned)

    @property
    def separable(self) -> bool:
        """A round's work is a sum over its devices (every pooling but ``average``, whose
        factor depends on how many take part): what the ``accuracy`` objective needs."""
        return self.pooling != "average"

    def device_values(
        self, work: float, samples: ArrayLike, untuned: float | None = None
    ) -> NDArray[np.float64]:
        """v_i: the predicted accuracy gain of device i's round at rank r is v_i g(r).

        The first-order gain dA/dW at the run's cumulative work ``work`` times the device's
        work at full rank factor; ``samples`` holds x_i for every device of the run (their
        count is the population of ``pooling = "population"``)."""
        if not self.separable:
            raise ConfigError(
                f"an accuracy model of form {self.form!r} is not a sum over a round's devices "
                "(its factor depends on how many take part), so it cannot value a device-round; "
                "fit it with a separable form (pooling sum or population)"
            )
        x = np.asarray(samples, dtype=np.float64)
        scale = self.slope(work, untuned) * self.crowd(0, x.size) / SAMPLE_UNIT
        # A curve at its ceiling (or one that never rises) still ranks devices by their
        # work: the least positive value, so that every device-round is worth something.
        return np.asarray(np.maximum(scale, TINY) * x, dtype=np.float64)

    def work_to_reach(self, target: float, untuned: float | None = None) -> float:
        """The cumulative work at which the curve reaches ``target`` (inf: never, the
        ceiling is at or below it; 0: the untuned accuracy already is)."""
        a0 = self.untuned if untuned is None else untuned
        if target <= a0:
            return 0.0
        if target >= self.ceiling or self.rate == 0:
            return math.inf
        left = (self.ceiling - target) / (self.ceiling - a0)
        if self.curve == "exp":
            return -math.log(left) / self.rate
        return (left ** (-1.0 / self.shape) - 1.0) / self.rate

    # -- where it holds -------------------------------------------------------------------

    def check_scope(self, settings: dict[str, Any], what: str = "this run") -> None:
        """Refuse ``settings`` outside the fitted scope (a :class:`ConfigError` naming every
        setting that differs)."""
        wrong = [
            f"{k} = {settings[k]!r} (fitted for {self.scope[k]!r})"
            for k in SCOPE_KEYS
            if k in self.scope and k in settings and not _same(settings[k], self.scope[k])
        ]
        if wrong:
            raise ConfigError(
                f"the accuracy model was fitted for other settings than {what}: "
                + "; ".join(wrong)
                + ". Fit one for these settings (fsl-opt fit-accuracy on runs made with them)"
            )

    def extrapolation(
        self, work: float, samples: float, rank: int, devices: int | None = None
    ) -> list[str]:
        """What in a plan goes beyond the fitted runs (empty: nothing): cumulative work or
        a device's samples more than 1.5 times the runs', a larger rank, more devices."""
        out = []
        for name, key, value in (
            ("cumulative work", "work", work),
            ("samples a device trains per round", "samples", samples),
        ):
            top = self.span.get(key)
            if top is not None and value > 1.5 * top:
                out.append(f"{name} {value:.4g} (the fitted runs' most: {top:.4g})")
        top_rank = self.span.get("rank")
        if top_rank is not None and rank > top_rank:
            out.append(f"rank {rank} (the fitted runs' most: {top_rank:g})")
        top_devices = self.span.get("devices")
        if devices is not None and top_devices is not None and devices > 1.5 * top_devices:
            out.append(f"{devices} devices (the fitted runs' most: {top_devices:g})")
        return out

    # -- files ----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {"kind": FILE_KIND, **asdict(self)}

    def save(self, path: str | Path) -> None:
        """Write the model as JSON (atomically: a temporary file renamed over ``path``)."""
        text = json.dumps(self.to_dict(), indent=1) + "\n"
        write_atomic(Path(path), lambda tmp: tmp.write_text(text))

    @staticmethod
    def from_dict(data: dict[str, Any], source: str = "accuracy model") -> AccuracyModel:
        if not isinstance(data, dict) or data.get("kind") != FILE_KIND:
            raise ConfigError(f"{source}: not an accuracy model (made by fsl-opt fit-accuracy)")
        fields = {k: v for k, v in data.items() if k != "kind"}
        known = set(AccuracyModel.__dataclass_fields__)
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown keys {', '.join(unknown)}")
        try:
            return AccuracyModel(**fields)
        except TypeError as exc:
            raise ConfigError(f"{source}: {exc}") from None
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    @staticmethod
    def load(path: str | Path) -> AccuracyModel:
        """Read a file written by :meth:`save`."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"accuracy model {path}: no such file") from None
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ConfigError(f"accuracy model {path}: cannot read it as JSON ({exc})") from None
        return AccuracyModel.from_dict(data, f"accuracy model {path}")


class Progress:
    """A run's predicted accuracy as its rounds are booked: what the planner keeps.

    Parameters
    ----------
    model : AccuracyModel
    samples : (I,) array
        x_i = n_i e_i of every device of the run.
    untuned : float, optional
        The run's own untuned accuracy (default: the model's).
    """

    def __init__(
        self, model: AccuracyModel, samples: ArrayLike, untuned: float | None = None
    ) -> None:
        self.model = model
        self.samples = np.asarray(samples, dtype=np.float64)
        self.untuned = model.untuned if untuned is None else float(untuned)
        self.work = 0.0

    def values(self) -> NDArray[np.float64]:
        """Each device's value of a round now (:meth:`AccuracyModel.device_values`)."""
        return self.model.device_values(self.work, self.samples, self.untuned)

    def book(self, ranks: ArrayLike) -> float:
        """Add a round trained at ``ranks`` (0: did not take part); the predicted accuracy
        after it."""
        self.work += self.model.work(Round.of(self.samples, ranks))
        return self.predicted

    @property
    def predicted(self) -> float:
        """The predicted accuracy after the rounds booked so far."""
        return float(self.model.accuracy(self.work, self.untuned))


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-9)
    return bool(a == b)


# -- fitting ----------------------------------------------------------------------------------


def _unpack(curve: str, pooling: str, p: NDArray[np.float64]) -> dict[str, Any]:
    out = {"ceiling": p[0], "rate": math.exp(p[1]), "rank_half": math.exp(p[2]) - 1e-3}
    i = 3
    if pooling != "sum":
        out["participation"] = p[i]
        i += 1
    if curve == "power":
        out["shape"] = math.exp(p[i])
    out["rank_half"] = max(out["rank_half"], 0.0)
    return {k: float(v) for k, v in out.items()}


def fit_form(
    histories: Sequence[History], curve: str, pooling: str, scope: dict[str, Any] | None = None
) -> AccuracyModel:
    """Least squares on every round of every history (each run from its own untuned
    accuracy); a few starts, the best kept."""
    from scipy.optimize import least_squares

    if not histories:
        raise ConfigError("no runs to fit")
    names = ["ceiling", "log rate", "log rank_half"]
    lower = [0.0, -12.0, math.log(1e-3)]
    upper = [1.0, 6.0, math.log(1e4)]
    if pooling != "sum":
        names.append("participation")
        lower.append(0.0)
        upper.append(2.0)
    if curve == "power":
        names.append("log shape")
        lower.append(-4.0)
        upper.append(3.0)

    design = _Design(histories)

    def residuals(p: NDArray[np.float64]) -> NDArray[np.float64]:
        model = AccuracyModel(curve, pooling, untuned=0.25, **_unpack(curve, pooling, p))
        return design.predict(model) - design.accuracy

    top = max(float(np.max(h.accuracy)) for h in histories)
    best = None
    for rate in (0.5, 3.0, 20.0):
        for half in (1.0, 16.0):
            start = [min(top + 0.02, 1.0), math.log(rate), math.log(half + 1e-3)]
            if pooling != "sum":
                start.append(0.5)
            if curve == "power":
                start.append(0.0)
            x0 = np.clip(start, np.array(lower) + 1e-9, np.array(upper) - 1e-9)
            sol = least_squares(residuals, x0, bounds=(lower, upper), x_scale="jac")
            if best is None or sol.cost < best.cost:
                best = sol
    assert best is not None
    params = _unpack(curve, pooling, best.x)
    untuned = float(np.mean([h.untuned for h in histories]))
    return AccuracyModel(
        curve,
        pooling,
        untuned=untuned,
        scope=dict(scope or {}),
        span=_span(histories, AccuracyModel(curve, pooling, untuned=untuned, **params)),
        fit={"rmse": float(np.sqrt(np.mean(best.fun**2))), "runs": len(histories)},
        **params,
    )


class _Design:
    """Every round of every history flattened once, so that a fit's thousands of
    predictions are a few vector operations (the same numbers as
    :meth:`AccuracyModel.predict` run by run)."""

    def __init__(self, histories: Sequence[History]) -> None:
        rows, samples, ranks, taking, population, untuned, run_of = [], [], [], [], [], [], []
        k = 0
        for j, h in enumerate(histories):
            for rnd in h.rounds:
                on = rnd.ranks > 0
                rows.append(np.full(int(on.sum()), k))
                samples.append(rnd.samples[on])
                ranks.append(rnd.ranks[on])
                taking.append(int(on.sum()))
                population.append(rnd.ranks.size)
                untuned.append(h.untuned)
                run_of.append(j)
                k += 1
        self.rounds = k
        self.row = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
        self.samples = np.concatenate(samples) if samples else np.zeros(0)
        self.ranks = np.concatenate(ranks).astype(np.float64) if ranks else np.zeros(0)
        self.taking = np.asarray(taking, dtype=np.float64)
        self.population = np.asarray(population, dtype=np.float64)
        self.untuned = np.asarray(untuned)
        self.run_of = np.asarray(run_of)
        self.accuracy = np.concatenate([h.accuracy for h in histories])
        # The first round of each run: cumulative sums restart there.
        self.starts = np.flatnonzero(np.r_[True, self.run_of[1:] != self.run_of[:-1]])

    def predict(self, model: AccuracyModel) -> NDArray[np.float64]:
        g = self.ranks / (self.ranks + model.rank_half) if model.rank_half > 0 else 1.0
        total = np.bincount(self.row, weights=self.samples * g, minlength=self.rounds)
        if model.pooling == "sum":
            crowd = np.ones(self.rounds)
        else:
            count = self.taking if model.pooling == "average" else self.population
            crowd = np.maximum(count, 1.0) ** (model.participation - 1.0)
        work = crowd * total / SAMPLE_UNIT
        cumulative = np.cumsum(work)
        before = np.r_[0.0, cumulative][self.starts]
        lengths = np.diff(np.r_[self.starts, self.rounds])
        cumulative = cumulative - np.repeat(before, lengths)
        decay = model._decay(cumulative)
        return np.asarray(model.ceiling - (model.ceiling - self.untuned) * decay)


def _span(histories: Sequence[History], model: AccuracyModel) -> dict[str, float]:
    work = max(sum(model.work(r) for r in h.rounds) for h in histories)
    taking = [r.samples[r.ranks > 0] for h in histories for r in h.rounds]
    return {
        "work": float(work),
        "samples": float(max((float(x.max()) for x in taking if x.size), default=0.0)),
        "rank": float(max(int(r.ranks.max(initial=0)) for h in histories for r in h.rounds)),
        "devices": float(max(int((r.ranks > 0).sum()) for h in histories for r in h.rounds)),
    }


@dataclass(frozen=True)
class HeldOut:
    """Errors of a form when each group is predicted by a fit on the others."""

    form: str
    #: group -> (mean |error| of the final accuracy, worst |error| of the final accuracy,
    #: mean |error| over every round, runs)
    groups: dict[str, tuple[float, float, float, int]]

    @property
    def final_mean(self) -> float:
        """Mean over runs of |predicted - measured| final accuracy."""
        runs = sum(g[3] for g in self.groups.values())
        return sum(g[0] * g[3] for g in self.groups.values()) / max(runs, 1)

    @property
    def final_worst(self) -> float:
        return max((g[1] for g in self.groups.values()), default=0.0)

    @property
    def round_mean(self) -> float:
        runs = sum(g[3] for g in self.groups.values())
        return sum(g[2] * g[3] for g in self.groups.values()) / max(runs, 1)


def held_out(histories: Sequence[History], curve: str, pooling: str) -> HeldOut:
    """Leave one group (experiment) out at a time: fit on the rest, predict its runs."""
    groups = sorted({h.group for h in histories})
    if len(groups) < 2:
        raise ConfigError(
            "leave-one-out validation needs runs of at least two experiments (groups)"
        )
    out: dict[str, tuple[float, float, float, int]] = {}
    for g in groups:
        train = [h for h in histories if h.group != g]
        out[g] = errors(fit_form(train, curve, pooling), [h for h in histories if h.group == g])
    return HeldOut(f"{curve}-{pooling}", out)


def errors(model: AccuracyModel, histories: Sequence[History]) -> tuple[float, float, float, int]:
    """``model``'s errors on ``histories``: (mean |predicted - measured| final accuracy,
    the worst of those, the mean over runs of each run's mean |error| over its rounds, the
    number of runs)."""
    finals, every = [], []
    for h in histories:
        pred = model.predict(h.rounds, h.untuned)
        finals.append(abs(float(pred[-1] - h.accuracy[-1])))
        every.append(float(np.mean(np.abs(pred - h.accuracy))))
    return float(np.mean(finals)), float(np.max(finals)), float(np.mean(every)), len(histories)


def fit(
    histories: Sequence[History],
    forms: Sequence[tuple[str, str]] | None = None,
    scope: dict[str, Any] | None = None,
) -> tuple[AccuracyModel, list[HeldOut]]:
    """Fit every form, validate each by leaving one group out, keep the separable form
    (:attr:`AccuracyModel.separable`) whose held-out final accuracy is best on average,
    refit on every history; the others' errors are reported beside it.

    With a single group, no held-out errors can be computed: the form with the least
    root-mean-square error on the fit is kept and the list is empty."""
    forms = list(forms or [(c, p) for c in CURVES for p in POOLINGS])
    groups = {h.group for h in histories}
    scores = [held_out(histories, c, p) for c, p in forms] if len(groups) > 1 else []
    if scores:
        # The kept form must value a device-round (the accuracy objective): separable only.
        usable = [s for s in scores if not s.form.endswith("-average")] or scores
        best = min(usable, key=lambda s: (s.final_mean, s.round_mean))
        curve, pooling = best.form.split("-")
        model = fit_form(histories, curve, pooling, scope)
    else:
        fitted = [fit_form(histories, c, p, scope) for c, p in forms if p != "average"]
        model = min(fitted, key=lambda m: m.fit["rmse"])
    report = {
        "runs": len(histories),
        "groups": sorted(groups),
        "rmse": model.fit["rmse"],
        "held_out": {
            s.form: {
                "final_mean": s.final_mean,
                "final_worst": s.final_worst,
                "round_mean": s.round_mean,
                "groups": {
                    g: {"final_mean": v[0], "final_worst": v[1], "round_mean": v[2], "runs": v[3]}
                    for g, v in s.groups.items()
                },
            }
            for s in scores
        },
    }
    model = AccuracyModel(**{**asdict(model), "fit": report})
    return model, scores
