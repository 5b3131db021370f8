"""The frontier on a second population: 20 ``calibrated`` devices, 5 at half their clock.

Every policy of :mod:`experiments.frontier` (selection and the per-device policies: at least
15 of the 20 devices a round; the pool: the 20 sub-bands pooled), the budget policy at the
same batteries and time budgets, the same tables (curves, the budget view relative to P1,
the budget policy's goal against the best other policy within each budget).

Each device holds 40 training samples (the frontier's 6 hold 128): a round trains about the
frontier's samples (800 against 768), so the two frontiers cost about the same and differ in
how the samples are spread, not in how many there are.
"""

from __future__ import annotations

from typing import Any

from experiments.frontier import make_experiment, policies

NAME = "frontier20"
POPULATION: dict[str, Any] = dict(
    devices=20, weak_devices=5, weak_clock=0.5, latency_factor=1.5, max_rank=64
)
POLICIES = policies(20, 15)
#: 20 x 40 samples a round, about the frontier's 6 x 128.
SAMPLES_PER_DEVICE = 40
EXPERIMENT = make_experiment(
    NAME,
    "The frontier on 20 devices, 5 at half clock",
    POPULATION,
    POLICIES,
    full=dict(samples_per_device=SAMPLES_PER_DEVICE),
)
main = EXPERIMENT.main
