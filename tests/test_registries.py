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

    for entry in registry.entries("bench").values():
        assert entry.check({}) == {}
    for entry in registry.entries("experiment").values():
        assert entry.check({"quick": True}) == {"quick": True}
    names = (
        "fig2",
        "fig3",
        "fig4",
        "fig5",
        "frontier",
        "frontier20",
        "frontier_trace",
        "aggregators",
        "precision",
    )
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


def test_an_experiment_refuses_what_its_runs_would_before_any_folder(tmp_path):
    """A precision this machine cannot run and a seed with no trace are refused by the
    experiment's check (what the command line calls before it claims the folder), and by
    ``main`` before it makes one."""
    from experiments import frontier_trace, registry
    from fsl_opt.learning.local import bf16_support

    entry = registry.entries("experiment")["frontier-trace"]
    bf16 = {"quick": True, "overrides": {"precision": "bf16"}}
    if bf16_support(torch.device("cpu")):
        with pytest.raises(ConfigError, match="no native bf16"):
            entry.check(bf16)
    else:
        assert entry.check(bf16) == bf16
    with pytest.raises(ConfigError, match=r"no trace for seed.*--seed 7 --out"):
        entry.check({"quick": True, "seeds": [7]})
    with pytest.raises(ConfigError, match="no trace for seed"):
        frontier_trace.main(tmp_path / "out", quick=True, seeds=[7])
    assert not (tmp_path / "out").exists()


def test_the_trace_frontier_replays_its_committed_traces(tmp_path):
    """Each seed's committed trace is the one its recipe draws (byte for byte), and every
    run of that seed replays it."""
    from experiments import frontier_trace

    for seed in (0, 1, 2):
        drawn = frontier_trace.write_trace(seed, tmp_path / f"s{seed}.csv")
        assert drawn.read_bytes() == frontier_trace.trace_path(seed).read_bytes()
    with pytest.raises(ConfigError, match="exists"):
        frontier_trace.write_trace(0, tmp_path / "s0.csv")
    specs = frontier_trace.runs([0, 2])
    assert len(specs) == 2 * len(frontier_trace.POLICIES)
    for spec in specs:
        assert spec.changes["trace"] == str(frontier_trace.trace_path(spec.seed))
    assert frontier_trace.POLICIES["selection"]["min_devices"] == 3
