"""Plug-ins are known in one place: registering one makes every front end offer it."""

import subprocess
import sys

import pytest
import torch

from fsl_opt.errors import ConfigError
from fsl_opt.federation.settings import RunConfig, config_from_flower, flower_app_config
from fsl_opt.learning.aggregators import ZeroPad
from fsl_opt.learning.registry import AGGREGATORS, make_aggregator, register_aggregator


class Toy(ZeroPad):
    """A toy aggregator: HetLoRA's, under another name."""

    name = "toy"


@pytest.fixture
def toy():
    register_aggregator("toy", "tests.test_registries:Toy", "a test's aggregator")
    yield "toy"
    del AGGREGATORS["toy"]


def test_a_registered_aggregator_is_a_setting_choice(toy, tiny_cfg):
    """RunConfig, the Flower run config and the planner take it; unknown names still fail."""
    assert RunConfig(aggregation=toy).aggregation == toy
    table = flower_app_config()
    cfg = config_from_flower({**table, "aggregation": toy, "backend": "flower"})
    assert cfg.aggregation == toy
    agg = make_aggregator(toy, 2.0, 3)
    assert isinstance(agg, Toy)
    a, b = torch.ones(2, 5), torch.ones(4, 2)
    state = {"x.lora_A.weight": a, "x.lora_B.weight": b}
    assert agg.aggregate({}, [state], [2], [1.0])["x.lora_A.weight"].shape == (2, 5)
    with pytest.raises(ConfigError, match="toy"):  # the error lists it among the choices
        RunConfig(aggregation="toyy")


def test_a_one_rank_aggregator_refuses_per_device_ranks():
    """The settings check reads one_rank from the registry, not a name written in it."""
    with pytest.raises(ConfigError, match="one rank only"):
        RunConfig(aggregation="fedavg", objective="sum")
    register_aggregator("toy_one", "tests.test_registries:Toy", "one rank", one_rank=True)
    try:
        with pytest.raises(ConfigError, match="'toy_one' cannot aggregate"):
            RunConfig(aggregation="toy_one", objective="log")
    finally:
        del AGGREGATORS["toy_one"]


def test_help_lists_every_registry():
    """`fsl-opt solve --help` and `fsl-opt train --help` list the registered names."""
    from channels import CHANNEL_MODELS
    from fsl_opt.federation.registry import BACKENDS
    from solvers import SOLVERS

    def helptext(*argv):
        return subprocess.run(
            [sys.executable, "-m", "fsl_opt.cli", *argv, "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            env={"COLUMNS": "400", **__import__("os").environ},
        ).stdout

    solve, train = helptext("solve"), helptext("train")
    assert all(name in solve for name in SOLVERS)
    for names in (AGGREGATORS, BACKENDS, CHANNEL_MODELS):
        assert all(name in train for name in names), names


def test_solver_registered_twice_is_refused():
    from solvers import register_solver

    with pytest.raises(ValueError, match="twice"):
        register_solver("bisection")(lambda system, **kw: None)


def test_every_registered_experiment_and_benchmark_resolves():
    """Each entry's module has a main; each figure is an Experiment declaration run by the
    one driver, and Figs. 4/5 are two declarations of the one budget sweep."""
    from experiments import fig4, fig5, registry
    from experiments.common import Experiment

    for kind in ("experiment", "bench"):
        for entry in registry.entries(kind).values():
            assert entry.check({}) == {}
    names = ("fig2", "fig3", "fig4", "fig5", "frontier", "frontier20", "aggregators", "precision")
    for name in names:
        module = __import__(f"experiments.{name}", fromlist=["EXPERIMENT"])
        assert isinstance(module.EXPERIMENT, Experiment) and module.main == module.EXPERIMENT.main
    assert fig4.EXPERIMENT.runs.__code__ is fig5.EXPERIMENT.runs.__code__
    from experiments import frontier, frontier20

    # The second frontier is the first's declaration on another population, not a copy.
    assert frontier20.EXPERIMENT.tables is frontier.EXPERIMENT.tables
    assert set(frontier20.POLICIES) == set(frontier.POLICIES)
    assert frontier20.POLICIES["sum + pool"]["bandwidth_total_hz"] == 20 * frontier.SUB_BAND_HZ
    with pytest.raises(ConfigError, match="takes no --seeds"):
        registry.entries("experiment")["solvers"].check({"seeds": [1]})
