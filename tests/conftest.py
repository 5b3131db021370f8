"""Hypothesis profiles: ``ci`` is the default; ``HYPOTHESIS_PROFILE=thorough`` runs more."""

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.register_profile("thorough", deadline=None, max_examples=5000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


#: A federated run that takes seconds: random 4-layer BERT, a few samples per device.
TINY_RUN = dict(
    model="tiny",
    samples_per_device=24,
    test_samples=48,
    max_length=32,
    batch_size=8,
    rounds=3,
    devices=3,
    lr=5e-3,
    max_rank=8,
    reference_rank=4,
)


@pytest.fixture
def tiny_cfg(tmp_path):
    """The tiny run's configuration, writing under ``tmp_path``."""
    from fsl_opt.federation.settings import RunConfig

    return RunConfig(**TINY_RUN, out=str(tmp_path / "run"))


#: The suite's longest tests, longest first (seconds on 2 cores beside another worker). They
#: start first, so that the workers finish together: with `--maxschedchunk=1` (the
#: Makefile's) each worker takes the next test when it is done, and one left for the end
#: would run alone. A name missing here only runs in its usual place.
LONGEST_FIRST = (
    "test_deployment.py::test_deployment_matches_in_process_and_survives_a_lost_node",
    "test_flower.py::test_ctrl_c_ends_a_flower_run",
    "test_crash.py::test_random_sigkills",
    "test_notebook.py::test_walkthrough_runs",
    "test_flower.py::test_flower_simulation_matches_in_process",
    "test_drift_plus_penalty.py::test_no_device_spends_more_than_its_battery",
    "test_experiments.py::test_quick_aggregation_benchmark",
    "test_calibrate.py::test_calibrate_writes_a_preset_that_plan_and_train_load",
    "test_experiments.py::test_quick_solver_benchmark",
    "test_experiments.py::test_quick_frontier",
    "test_solvers.py::test_exact_solvers_match_exhaustive",
    "test_experiments.py::test_quick_experiment",
)


def pytest_collection_modifyitems(items):
    """Start the :data:`LONGEST_FIRST` tests first, in that order; the rest keep theirs."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("/")[-1].split("[")[0], len(rank)))


if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two workers on two cores: one torch thread each (the default, every core per worker,
    # oversubscribes the machine and slows both).
    import torch

    torch.set_num_threads(1)


@pytest.fixture
def fsl_opt_process():
    """``start(args, env, log)``: `fsl-opt ARGS` in a process forked with its imports done
    (:func:`tests.helpers.preloaded_command`); any still running when the test ends, passed
    or failed, is killed."""
    from tests.helpers import preloaded_command

    started = []

    def start(args, env, log):
        started.append(preloaded_command(args, env, log))
        return started[-1]

    yield start
    for proc in started:
        if proc.is_alive():
            proc.kill()
            proc.join()
