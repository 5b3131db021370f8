"""The frontier on devices that come and go: six policies replayed on a synthetic trace.

The population of :mod:`experiments.frontier` (six ``calibrated`` devices, two at half their
clock, T0 = 1.5 T_ref), each seed's run replaying its own synthetic device trace
(``experiments/traces/frontier-trace-sSEED.csv``, drawn by :func:`write_trace`): on/off
Markov availability with a long-run share of 70% and a mean of five rounds on, and
random-waypoint mobility in the cell (20 m a round). An unavailable device is left out of
the round before the solver; a moved device's path loss follows its distance. Selection and
the per-device policies need at least 3 devices a round (4 of 6 in the trace-free frontier:
with about 4.5 devices available a round, a floor of 4 would skip a round in five).

The tables are the frontier's: every round's cumulative latency, energy and megabytes
against accuracy, the best accuracy within P1's whole-run energy and time, and the budget
policy against the best other policy within its budget.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from experiments.common import Run
from experiments.frontier import POPULATION, label, make_experiment, policies
from fsl_opt.errors import ConfigError

NAME = "frontier-trace"
#: The traces' folder (committed inputs, one file per seed).
TRACES = Path(__file__).resolve().parent / "traces"
#: How each seed's trace is drawn: ``fsl-opt trace synth --devices 6 --rounds 8
#: --availability 0.7 --mean-on-rounds 5 --speed-m 20 --seed SEED`` writes the same file.
AVAILABILITY, MEAN_ON_ROUNDS, SPEED_M = 0.7, 5.0, 20.0
ROUNDS = 8
DEVICES = int(POPULATION["devices"])
#: The policies run on the trace: the paper's, the per-device ranks with and without a pool,
#: selection, a fixed rank and the budget policy on a battery of 4 rounds of E0 (a round of
#: MiniLM takes 30-50 s on a 2-core CPU: the trace-free frontier's 15 policies x 3 seeds
#: would take about 5 hours there).
CHOSEN = (
    "P1",
    "sum",
    "sum + pool",
    "selection",
    "rank 32",
    "budget policy, battery 4 rounds",
    "accuracy",
    "accuracy budget policy, battery 4 rounds",
)
POLICIES = {name: policies(DEVICES, 3)[name] for name in CHOSEN}


def trace_path(seed: int) -> Path:
    """Seed ``seed``'s trace file."""
    return TRACES / f"{NAME}-s{seed}.csv"


def write_trace(seed: int, path: Path | None = None) -> Path:
    """Draw seed ``seed``'s trace (as ``fsl-opt trace synth`` does) and write it to
    ``path`` (default: :func:`trace_path`); an existing file is never replaced."""
    from fsl_opt.problem.trace import synthesize

    path = path or trace_path(seed)
    if path.exists():
        raise ConfigError(f"{path} exists; move it away to draw it again")
    trace = synthesize(
        DEVICES,
        ROUNDS,
        np.random.default_rng(seed),
        availability=AVAILABILITY,
        mean_on_rounds=MEAN_ON_ROUNDS,
        speed_m=SPEED_M,
    )
    trace.to_csv(path)
    return path


def runs(seeds: list[int], quick: bool = False) -> list[Run]:
    """One run per policy and seed, each replaying its seed's trace."""
    missing = [s for s in seeds if not trace_path(s).exists()]
    if missing:
        s = missing[0]
        raise ConfigError(
            f"no trace for seed(s) {', '.join(map(str, missing))} in {TRACES}: draw seed {s}'s "
            f"with fsl-opt trace synth --devices {DEVICES} --rounds {ROUNDS} "
            f"--availability {AVAILABILITY} --mean-on-rounds {MEAN_ON_ROUNDS:g} "
            f"--speed-m {SPEED_M:g} --seed {s} --out {trace_path(s)}"
        )
    out = []
    for s in seeds:
        for i, (name, changes) in enumerate(POLICIES.items()):
            if quick and changes.get("objective") == "accuracy":
                continue  # its model holds for the full runs' settings only
            out.append(Run(label(name), name, i, s, {**changes, "trace": str(trace_path(s))}))
    return out


EXPERIMENT = make_experiment(
    NAME,
    "The frontier on a device trace (about 70% availability, mobility)",
    POPULATION,
    POLICIES,
    runs=runs,
)
main = EXPERIMENT.main
