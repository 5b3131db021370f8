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
    AGGREGATORS.unregister("toy")


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
        AGGREGATORS.unregister("toy_one")


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

    for name in registry.entries("bench"):
        assert registry.check("bench", name, {}) == {}
    for name in registry.entries("experiment"):
        assert registry.check("experiment", name, {"quick": True}) == {"quick": True}
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
        registry.check("experiment", "solvers", {"seeds": [1]})


def test_an_experiment_refuses_what_its_runs_would_before_any_folder(tmp_path):
    """A precision this machine cannot run and a seed with no trace are refused by the
    experiment's check (what the command line calls before it claims the folder), and by
    ``main`` before it makes one."""
    from experiments import frontier_trace, registry
    from fsl_opt.learning.local import bf16_support

    def check(options):
        return registry.check("experiment", "frontier-trace", options)

    bf16 = {"quick": True, "overrides": {"precision": "bf16"}}
    if bf16_support(torch.device("cpu")):
        with pytest.raises(ConfigError, match="no native bf16"):
            check(bf16)
    else:
        assert check(bf16) == bf16
    with pytest.raises(ConfigError, match=r"no trace for seed.*--seed 7 --out"):
        check({"quick": True, "seeds": [7]})
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


# -- one toy plug-in of every kind: registering it is all it takes to be offered ----------


def test_the_registry_shape_refuses_what_it_cannot_hold():
    """Twice the same name, a reserved name, an undeclared capability: refused at
    registration; an unknown name: one line naming the setting and the choices."""
    from fsl_opt.registry import Registry

    reg = Registry("widget", setting="widget_kind", capabilities=("fast",), reserved=("auto",))
    reg.register("a", "fsl_opt.errors:ConfigError", "one", fast=True)
    reg.register("b", None, "two")
    with pytest.raises(ValueError, match="twice"):
        reg.register("a", None, "again")
    with pytest.raises(ValueError, match="twice"):
        reg.register("auto", None, "reserved")
    with pytest.raises(ValueError, match="no capability slow"):
        reg.register("c", None, "three", slow=True)
    with pytest.raises(ConfigError, match=r"^widget_kind = 'z': expected one of a, b$"):
        reg.check("z")
    assert reg.load("a") is ConfigError and reg.with_capability("fast") == ("a",)
    assert reg.help() == "a or b" and reg.table() == "a: one\nb: two"
    with pytest.raises(TypeError, match="name only"):
        reg.load("b")


def _toy_solver(system, *, rng=None):
    """A toy solver: bisection under another name."""
    from solvers import solve

    return solve(system, "bisection")


def test_a_toy_solver_is_offered_by_solve_and_the_run_settings():
    import numpy as np

    from channels import preset_system
    from fsl_opt.problem.presets import get_preset
    from solvers import SOLVERS, register_solver, solve

    register_solver("toy_solver", "a test's solver", exact=True)(_toy_solver)
    try:
        system = preset_system(get_preset("paper"), 3, np.random.default_rng(0))
        assert solve(system, "toy_solver").rank == solve(system, "bisection").rank
        assert RunConfig(method="toy_solver").method == "toy_solver"
        assert "toy_solver" in _help("solve")
        with pytest.raises(ConfigError, match="per_device"):  # no power_control capability
            solve(system.replace(power_control=True), "toy_solver")
    finally:
        SOLVERS.unregister("toy_solver")


def _toy_extended(system, *, rng=None):
    """A toy solver of the extended problem: per_device under another name."""
    from solvers import solve

    return solve(system, "per_device")


def test_a_solver_of_the_extended_problem_registered_later_is_taken():
    """The methods of the extended problem were a tuple kept at import (`EXTENDED`): a
    solver registered afterwards with `extended=True` was refused by `solve` and by the
    run settings as one that "solves the paper's problem only"."""
    import numpy as np

    from channels import preset_system
    from fsl_opt.problem.presets import get_preset
    from solvers import SOLVERS, extended_methods, register_solver, solve

    register_solver("toy_extended", "a test's solver", extended=True)(_toy_extended)
    try:
        assert "toy_extended" in extended_methods()
        system = preset_system(get_preset("paper"), 3, np.random.default_rng(0))
        system = system.replace(objective="sum")
        got, want = solve(system, "toy_extended"), solve(system, "per_device")
        assert got.ranks.tolist() == want.ranks.tolist()
        cfg = RunConfig(method="toy_extended", objective="sum", aggregation="zero_pad")
        assert cfg.method == "toy_extended"
    finally:
        SOLVERS.unregister("toy_extended")
    assert "toy_extended" not in extended_methods()
    with pytest.raises(ConfigError, match="toy_extended"):
        RunConfig(method="toy_extended", objective="sum", aggregation="zero_pad")


class ToyChannel:
    """A toy channel model: every device's gain is half its mean."""

    def __init__(self, model):
        self.model = model

    @classmethod
    def from_spec(cls, spec):
        from channels import StaticChannel

        return cls(StaticChannel.from_spec(spec))

    def mean(self, n_devices):
        return self.model.mean(n_devices)

    def draw(self, rng, n_devices):
        from channels import ChannelState

        m = self.model.mean(n_devices)
        return ChannelState(m.gain_ul / 2, m.gain_dl / 2)


def test_a_toy_channel_is_a_run_setting_and_draws():
    import numpy as np

    from channels import CHANNEL_MODELS, build_channel, register_channel
    from fsl_opt.problem.placement import ChannelSpec

    register_channel("toy_channel", "a test's channel")(ToyChannel)
    try:
        assert RunConfig(channel="toy_channel").channel == "toy_channel"
        model = build_channel("toy_channel", ChannelSpec(distance_m=np.array([60.0, 200.0])))
        drawn, mean = model.draw(np.random.default_rng(0), 2), model.mean(2)
        np.testing.assert_allclose(drawn.gain_ul, mean.gain_ul / 2)
        assert "toy_channel: a test's channel" in _help("train")
    finally:
        CHANNEL_MODELS.unregister("toy_channel")
    with pytest.raises(ConfigError, match="channel = 'toy_channel': expected one of"):
        RunConfig(channel="toy_channel")


class ToyBackend:
    """A toy backend (never launched here: the settings and the registry are the test)."""


def test_a_toy_backend_is_a_run_setting_and_loads():
    from fsl_opt.federation.registry import BACKENDS, backend_class, register_backend

    register_backend("toy_backend", "tests.test_registries:ToyBackend", "a test's backend")
    try:
        assert RunConfig(backend="toy_backend").backend == "toy_backend"
        assert backend_class("toy_backend") is ToyBackend
        assert "toy_backend: a test's backend" in _help("train")
    finally:
        BACKENDS.unregister("toy_backend")


def test_a_toy_policy_plans_a_run(tiny_cfg, tmp_path):
    """A policy registered with one line is built by the planner from the run's settings
    (here drift-plus-penalty under another name: the same plan, record for record)."""
    from fsl_opt.federation.plan_run import plan
    from fsl_opt.federation.registry import POLICIES, register_policy

    register_policy(
        "toy_policy",
        "fsl_opt.federation.drift_plus_penalty:DriftPlusPenalty",
        "a test's policy",
        needs_budgets=True,
    )
    try:
        settings = dict(rounds=3, energy_total_rounds=2.2, objective="sum", min_devices=1)
        settings["aggregation"] = "zero_pad"
        with pytest.raises(ConfigError, match="toy_policy' spends whole-run budgets"):
            tiny_cfg.replace(policy="toy_policy", objective="sum", aggregation="zero_pad")
        toy = plan(tiny_cfg.replace(policy="toy_policy", out=str(tmp_path / "a"), **settings))
        dpp = plan(
            tiny_cfg.replace(policy="drift_plus_penalty", out=str(tmp_path / "b"), **settings),
            progress=False,
        )

        def decisions(records):
            return [{k: v for k, v in r.items() if k != "wall_time_s"} for r in records]

        assert decisions(toy) == decisions(dpp) and len(toy) >= 2
        assert all(r["energy_queue_j"] is not None for r in toy if "energy_queue_j" in r)
    finally:
        POLICIES.unregister("toy_policy")


def open_toy(arg, cols):
    """A toy data set: two classes, four texts each, the argument repeated in every text."""
    import numpy as np

    from fsl_opt.learning.data import TextDataset

    texts = [f"{arg} {word}" for word in ("red", "blue", "green", "pink")]
    labels = np.array([0, 1, 0, 1])
    return TextDataset("toy", texts, labels, texts, labels, ("a", "b"))


def test_a_toy_data_set_loads_by_name():
    from fsl_opt.learning.data import load_dataset
    from fsl_opt.learning.registry import DATASETS, register_dataset

    register_dataset("toy_data", "tests.test_registries:open_toy", "a test's data", argument=True)
    try:
        assert RunConfig(data="toy_data:hello").data == "toy_data:hello"
        assert load_dataset("toy_data:hello").train_texts[0] == "hello red"
        assert "toy_data: a test's data" in _help("train")
    finally:
        DATASETS.unregister("toy_data")
    with pytest.raises(ConfigError, match="news4 takes no ':' argument"):
        RunConfig(data="news4:x")


def test_objectives_and_precisions_are_read_from_their_registries():
    """A name-only kind: the choices, the help and the errors come from the registry (a new
    objective also needs a solver that knows it: the registry says which ones do)."""
    from fsl_opt.problem.compute import PRECISIONS
    from fsl_opt.problem.system import OBJECTIVES

    text = _help("train")
    for name, entry in (*OBJECTIVES.items(), *PRECISIONS.items()):
        assert f"{name}: {entry.summary}" in text
    assert OBJECTIVES.with_capability("per_device") == ("sum", "log", "accuracy")
    OBJECTIVES.register("toy_objective", None, "a test's objective")
    try:
        assert RunConfig(objective="toy_objective").objective == "toy_objective"
    finally:
        OBJECTIVES.unregister("toy_objective")
    with pytest.raises(ConfigError, match="objective = 'toy_objective': expected one of"):
        RunConfig(objective="toy_objective")


def main(out, quick=None):
    """A toy experiment: writes one file."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "toy.txt").write_text("done")
    return ["toy done"]


def test_a_toy_experiment_and_benchmark_run_by_name(tmp_path):
    from experiments import registry

    registry.register("experiment", "toy-exp", "tests.test_registries", "a test's experiment")
    registry.register("bench", "toy-bench", "tests.test_registries", "a test's benchmark")
    try:
        assert registry.run("experiment", "toy-exp", tmp_path / "e", {"quick": True})
        assert (tmp_path / "e" / "toy.txt").read_text() == "done"
        with pytest.raises(ConfigError, match="takes no --seeds"):
            registry.check("bench", "toy-bench", {"seeds": [1]})
        assert "toy-exp: a test's experiment" in _help("experiment")
        assert "toy-bench: a test's benchmark" in _help("bench")
    finally:
        registry.EXPERIMENTS.unregister("toy-exp")
        registry.BENCHMARKS.unregister("toy-bench")


def _help(command):
    """``fsl-opt COMMAND --help``, built in this process (so toy registrations show)."""
    from fsl_opt.cli import build_parser

    parser = build_parser()
    sub = next(
        a for a in parser._actions if isinstance(a, __import__("argparse")._SubParsersAction)
    )
    return " ".join(sub.choices[command].format_help().split())
