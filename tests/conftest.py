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


if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two workers on two cores: one torch thread each (the default, every core per worker,
    # oversubscribes the machine and slows both).
    import torch

    torch.set_num_threads(1)
