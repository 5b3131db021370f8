"""Run settings: one declaration, flags and Flower keys from it, checked before any load."""

import dataclasses
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fsl_opt.errors import ConfigError
from fsl_opt.federation.settings import (
    FIELDS,
    UNSET,
    RunConfig,
    config_from_dict,
    config_from_flower,
    dump_toml,
    flower_app_config,
    load_config,
)
from fsl_opt.problem.system_file import tomllib

ROOT = Path(__file__).resolve().parents[1]

#: A non-default value for every field, of the field's type.
SAMPLE = dict(
    model="tiny",
    data="reuters8",
    text_column="body",
    label_column="y",
    test_fraction=0.3,
    layers="0,2",
    devices=5,
    rounds=7,
    samples_per_device=12,
    test_samples=30,
    partition="dirichlet",
    alpha=0.3,
    max_length=64,
    batch_size=4,
    lr=0.002,
    local_epochs=2,
    lora_scale=1.5,
    lora_dropout=0.1,
    method="bnb",
    max_rank=32,
    preset="paper",
    channel="static",
    backend="flower",
    latency_s=40.0,
    energy_budget_j=20.0,
    reference_rank=8,
    latency_factor=1.1,
    energy_factor=0.9,
    weak_devices=2,
    weak_clock=0.5,
    trace="traces/lab.csv",
    accuracy_model="models/accuracy.json",
    aggregation="zero_pad",
    seed=3,
    data_seed=4,
    cache_hidden=False,
    hidden_dtype="bfloat16",
    torch_device="cpu",
    precision="bf16",
    frozen_dropout=False,
    tensorboard=True,
    export_adapter="every_round",
    reply_timeout_s=30.0,
    node_wait_s=10.0,
    ray_address="127.0.0.1:6379",
    out="runs/elsewhere",
)
#: The extended problem's fields (a rank per device, selection, pool, whole-run budgets and
#: their policy) on top of SAMPLE: they exclude a fixed rank and a named solver (the policy
#: solves each round itself), so they cannot share one config with them.
EXTENDED = dict(
    objective="log",
    min_devices=3,
    bandwidth_total_hz=1e6,
    method="auto",
    rank=None,
    energy_total_j=120.0,
    time_total_s=400.0,
    policy="drift_plus_penalty",
    policy_v=2.0,
)
#: The whole-run budgets in rounds of E0 and T0: they exclude their absolute forms (in
#: EXTENDED) and a fixed rank (in FIXED).
RELATIVE = dict(energy_total_rounds=3.5, time_total_rounds=4.0)
#: A fixed rank on top of SAMPLE: it trains without solving, so it excludes a named solver.
FIXED = dict(rank=8, method="auto")
#: Power control on top of SAMPLE: planned by per_device and the budget policy (no fixed rank).
POWER = dict(power_control=True, method="per_device")
#: Energy priced at a price per joule on top of SAMPLE: buys predicted accuracy (the accuracy
#: objective, per-device ranks), decided by the policy (no fixed rank, no named solver).
PRICED = dict(
    policy="energy_priced",
    energy_price=0.01,
    target_accuracy=0.8,
    objective="accuracy",
    aggregation="zero_pad",
    method="auto",
    rank=None,
)


def test_sample_covers_every_field():
    """The samples above name every field, each with a value other than its default."""
    every_sample = set(SAMPLE) | set(EXTENDED) | set(RELATIVE) | set(FIXED) | set(POWER)
    assert every_sample | set(PRICED) == set(FIELDS)
    default = RunConfig()
    both = {**SAMPLE, **EXTENDED}
    every = {
        **RELATIVE,
        **both,
        "rank": FIXED["rank"],
        "power_control": True,
        "energy_price": PRICED["energy_price"],
        "target_accuracy": PRICED["target_accuracy"],
    }
    assert [k for k in FIELDS if getattr(default, k) == SAMPLE.get(k, every[k])] == ["torch_device"]
    RunConfig(**SAMPLE), RunConfig(**both), RunConfig(**_relative())  # each a valid config
    RunConfig(**{**SAMPLE, **FIXED}), RunConfig(**{**SAMPLE, **POWER})
    RunConfig(**{**SAMPLE, **PRICED})
    RunConfig(**{**both, "power_control": True})  # with a pool and the budget policy


def _relative() -> dict:
    """EXTENDED with the whole-run budgets in rounds instead of joules and seconds."""
    return {
        **SAMPLE,
        **EXTENDED,
        "energy_total_j": None,
        "time_total_s": None,
        **RELATIVE,
    }


def test_every_field_has_help():
    """Every field documents itself (the flags' help comes from here)."""
    for f in dataclasses.fields(RunConfig):
        assert len(f.metadata["help"]) > 10, f.name


def test_pyproject_declares_every_setting():
    """[tool.flwr.app.config] is exactly the generated table (every field, 'none' for unset)."""
    doc = tomllib.loads((ROOT / "pyproject.toml").read_text())
    table = doc["tool"]["flwr"]["app"]["config"]
    assert table == flower_app_config(), (
        "regenerate with: python -c 'from fsl_opt.federation.settings import "
        "print_flower_table as p; p()'"
    )
    assert config_from_flower(table).out == "runs/flower"


def test_every_field_passes_flowers_override_path():
    """Each key, given as `flwr run --run-config` would, is accepted by Flower and honoured."""
    flwr_config = pytest.importorskip("flwr.common.config")
    doc = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = flwr_config.flatten_dict(doc["tool"]["flwr"]["app"]["config"])
    for sample in (
        SAMPLE,
        {**SAMPLE, **EXTENDED},
        _relative(),
        {**SAMPLE, **FIXED},
        POWER,
        {**SAMPLE, **PRICED},
    ):
        texts = [
            f"{k}={v!r}"
            if isinstance(v, str)
            else f"{k}='none'"
            if v is None
            else f"{k}={str(v).lower()}"
            for k, v in sample.items()
        ]
        override = flwr_config.parse_config_args([" ".join(texts)])
        fused = flwr_config.fuse_dicts(declared, override)  # raises for undeclared keys
        got = config_from_flower(fused)
        for key, value in sample.items():
            assert getattr(got, key) == value, key
    # Optional keys unset again with the sentinel.
    fused = flwr_config.fuse_dicts(declared, flwr_config.parse_config_args(["rank='none'"]))
    assert config_from_flower(fused).rank is None
    with pytest.raises(ConfigError, match=r"rounds = 1.5: expected int"):
        config_from_flower(flwr_config.fuse_dicts(declared, {"rounds": 1.5}))


def test_dump_toml_round_trips(tmp_path):
    """config.toml reads back to the same config, whatever the strings hold."""
    cfg = RunConfig(**{**SAMPLE, **FIXED, "out": 'C:\\runs\\"odd" name\t1'})
    path = tmp_path / "c.toml"
    path.write_text(dump_toml(cfg))
    assert load_config(path) == cfg
    unset = RunConfig(rank=None, latency_s=None)
    path.write_text(dump_toml(unset))
    assert load_config(path) == unset and f'rank = "{UNSET}"' in path.read_text()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"method": "newtn"}, "method = 'newtn': expected one of auto, bisection"),
        ({"preset": "papr"}, "preset = 'papr': expected one of paper, calibrated"),
        ({"torch_device": "tpu"}, "torch_device = 'tpu'"),
        ({"partition": "skewed"}, "partition = 'skewed'"),
        ({"aggregation": "mean"}, "aggregation = 'mean'"),
        ({"data": "imdb"}, "data = 'imdb'"),
        ({"layers": "top3"}, "layers = 'top3'"),
        ({"rounds": 1.5}, "rounds = 1.5: expected int"),
        ({"rounds": True}, "rounds = True: expected int"),
        ({"lr": "0.1"}, "lr = '0.1': expected float"),
        ({"latency_s": True}, "latency_s = True: expected float or none"),
        ({"latency_s": float("inf")}, "latency_s = inf: expected a finite number"),
        ({"seed": -1}, "seed = -1: expected a value >= 0 and <= 2**63 - 1"),
        ({"seed": 2**63}, "seed = 9223372036854775808: expected a value >= 0"),
        ({"lora_scale": 1e300}, "lora_scale = 1e+300: expected a value > 0 and <= 10000"),
        ({"lr": float("nan")}, "lr = nan: expected a finite number"),
        ({"max_length": 100000}, "max_length = 100000: expected a value > 0 and <= 8192"),
        ({"bandwidth_total_hz": 1e-300}, "bandwidth_total_hz = 1e-300: expected a value >= 1"),
        (
            {"rounds": 2**63 - 1},
            "rounds = 9223372036854775807: expected a value > 0 and <= 1000000",
        ),
        ({"rank": 100, "max_rank": 64}, "rank = 100: above max_rank = 64"),
        ({"rank": 8, "method": "bnb"}, "rank = 8 with method = 'bnb': a fixed rank trains"),
        ({"out": " "}, "out = ''"),
    ],
)
def test_bad_values_fail_when_built(changes, message):
    """Every choice, type and range is checked when the config is built."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        RunConfig(**changes)


def test_run_toml_rejects_unknown_keys_and_tables():
    """A typo or an extra table beside [run] is an error naming it."""
    with pytest.raises(ConfigError, match="unknown key 'lr_rate'"):
        config_from_dict({"lr_rate": 0.1})
    with pytest.raises(ConfigError, match="unknown key 'model' beside \\[run\\]"):
        config_from_dict({"run": {"lr": 0.1}, "model": "x"})
    assert config_from_dict({"run": {"lr": 1}}).lr == 1.0


def test_replace_sets_none():
    """replace(rank=None) unsets the rank, as dataclasses.replace does."""
    assert RunConfig(rank=8).replace(rank=None).rank is None


@pytest.mark.parametrize(
    "flags",
    [
        ["--method", "nosuch"],
        ["--preset", "papr"],
        ["--partition", "skew"],
        ["--aggregation", "svdx"],
        ["--torch-device", "tpu"],
        ["--rounds", "1.5"],
    ],
)
def test_train_typo_fails_fast_without_loading(tmp_path, flags):
    """`fsl-opt train` with a bad setting: exit 2, one line, well under 2 s, nothing written."""
    out = tmp_path / "run"
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "fsl_opt.cli", "train", "--out", str(out), *flags],
        capture_output=True,
        text=True,
        timeout=60,
    )
    elapsed = time.perf_counter() - started
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()
    assert elapsed < 2.0, elapsed


def test_train_flags_cover_every_setting():
    """`fsl-opt train --help` lists a flag for every RunConfig field."""
    proc = subprocess.run(
        [sys.executable, "-m", "fsl_opt.cli", "train", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    for name in FIELDS:
        assert "--" + name.replace("_", "-") in proc.stdout, name
    assert "--latency-s" in proc.stdout and "--no-cache-hidden" in proc.stdout


def test_energy_total_j_per_device_in_every_spelling(tmp_path):
    """One battery per device: a TOML array, a flag `1,2,3`, Flower's `"1,2,3"`; one value
    still one value; a wrong count or a non-positive value named."""
    from fsl_opt.cli import build_parser
    from fsl_opt.cli.flags import overrides_from_args

    want = (40.0, 60.0, 80.0)
    assert RunConfig(devices=3, energy_total_j=[40, 60, 80]).energy_total_j == want
    path = tmp_path / "run.toml"
    path.write_text("devices = 3\nenergy_total_j = [40, 60, 80.0]\n")
    cfg = load_config(path)
    assert cfg.energy_total_j == want
    path.write_text(dump_toml(cfg))
    assert load_config(path) == cfg
    args = build_parser().parse_args(["train", "--devices", "3", "--energy-total-j", "40,60,80"])
    assert RunConfig(**overrides_from_args(args)).energy_total_j == want
    args = build_parser().parse_args(["train", "--energy-total-j", "50"])
    assert RunConfig(**overrides_from_args(args)).energy_total_j == 50.0
    assert config_from_flower({"devices": 3, "energy_total_j": "40,60,80"}).energy_total_j == want
    assert config_from_flower({"energy_total_j": "50"}).energy_total_j == 50.0
    with pytest.raises(ConfigError, match="2 values for devices = 3"):
        RunConfig(devices=3, energy_total_j=[1.0, 2.0])
    with pytest.raises(ConfigError, match=r"energy_total_j of device 1 = -2\.0: expected a value"):
        RunConfig(devices=3, energy_total_j=[1.0, -2.0, 3.0])
    with pytest.raises(ConfigError, match="numbers separated by commas"):
        config_from_flower({"energy_total_j": "40;60"})
    with pytest.raises(ConfigError, match=r"energy_total_j = -1\.0"):
        RunConfig(energy_total_j=-1.0)


def test_every_committed_run_configuration_still_loads():
    """Every config.toml under experiments/results (written by older code too) loads on this
    code, and each of its settings reads back as it was written (newer settings take their
    defaults): the TOML a run folder holds keeps working, so the run can resume."""
    from fsl_opt.federation.settings import dump_toml, load_config

    paths = sorted((ROOT / "experiments" / "results").rglob("config.toml"))
    assert len(paths) > 50
    for path in paths:
        written = tomllib.loads(path.read_text())
        again = tomllib.loads(dump_toml(load_config(str(path))))
        assert {k: again[k] for k in written} == written, path


def test_help_lists_the_settings_by_section_and_plug_in_options_under_their_plug_in():
    """Each setting sits in its section's group of `fsl-opt train --help`; a plug-in's own
    options in the plug-in's group; and an option of a policy not chosen is refused."""
    from fsl_opt.cli import build_parser
    from fsl_opt.federation.settings import SECTIONS, RunConfig

    sub = next(a for a in build_parser()._actions if hasattr(a, "choices") and a.choices)
    train = sub.choices["train"]
    group_of = {
        action.dest: group.title
        for group in train._action_groups
        for action in group._group_actions
    }
    from fsl_opt.federation.registry import BACKENDS, POLICIES

    owner = {
        f.name: (table.setting, name)
        for table in (BACKENDS, POLICIES)
        for name, entry in table.items()
        if entry.options is not None
        for f in dataclasses.fields(entry.options)
    }
    assert {"policy_v", "energy_price", "reply_timeout_s"} <= set(owner)
    for f in dataclasses.fields(RunConfig):
        want = (
            f"options of {owner[f.name][0]} {owner[f.name][1]}"
            if f.name in owner
            else SECTIONS[f.metadata["section"]]
        )
        assert group_of[f.name] == want, f.name
    assert group_of["data"].startswith("data:") and group_of["policy_v"].endswith("penalty")
    with pytest.raises(ConfigError, match=r"energy_price = 0\.5: an option of policy"):
        RunConfig(energy_price=0.5)


def test_the_run_configuration_composes_every_registered_plug_ins_options():
    """Each registered backend's and policy's options class is a base of RunConfig, its
    fields are run settings (after the run's own, in registration order), and a field
    belongs to one class only."""
    from fsl_opt.federation.registry import BACKENDS, PLUGIN_OPTIONS, POLICIES
    from fsl_opt.federation.settings import RunConfig, RunSettings

    declared = [e.options for t in (BACKENDS, POLICIES) for e in t.values() if e.options]
    assert declared and set(declared) == set(PLUGIN_OPTIONS)
    names = [f.name for f in dataclasses.fields(RunConfig)]
    own = [f.name for f in dataclasses.fields(RunSettings)]
    options = [f.name for c in PLUGIN_OPTIONS for f in dataclasses.fields(c)]
    assert issubclass(RunConfig, tuple(declared))
    assert names == own + options  # the TOML and --help order
    assert len(set(names)) == len(names)


def test_a_plug_ins_own_check_runs_only_when_it_is_chosen():
    """FlowerOptions.check_options refuses a Ray address Ray cannot attach to, for the
    Flower backend only (another backend ignores the option, and may change on resume)."""
    with pytest.raises(ConfigError, match=r"ray_address = 'localhost': expected auto, HOST:PORT"):
        RunConfig(backend="flower", ray_address="localhost")
    for ok in ("", "auto", "127.0.0.1:6379", "ray://head:10001", "[::1]:6379"):
        RunConfig(backend="flower", ray_address=ok)
    RunConfig(backend="inprocess", ray_address="localhost")  # not this backend's option


def test_an_options_class_outside_the_package_composes_with_the_run_configuration():
    """A plug-in's options compose by inheritance: a subclass of RunConfig that adds a
    toy policy's options takes them as settings, refuses them while another policy is
    chosen, asks for a needed one and runs the plug-in's own check."""
    from dataclasses import dataclass

    from fsl_opt.federation.fields import PluginOptions, Range, setting
    from fsl_opt.federation.registry import POLICIES, register_policy
    from fsl_opt.federation.settings import plugin_options

    @dataclass(frozen=True)
    class ToyOptions(PluginOptions, plugin=("policy", "toy_policy")):
        toy_weight: float | None = setting(
            None, "toy: a weight", within=Range(0, 10), needed=True, section="whole_run"
        )

        def check_options(self) -> None:
            if self.toy_weight == 3.0:
                raise ConfigError("toy_weight = 3.0: the toy refuses three")

    @dataclass(frozen=True)
    class ToyConfig(ToyOptions, RunConfig):
        pass

    register_policy("toy_policy", None, "a toy", ToyOptions)
    try:
        assert plugin_options(ToyConfig)[-1] is ToyOptions
        assert ToyConfig(policy="toy_policy", toy_weight=2.0).toy_weight == 2.0
        with pytest.raises(ConfigError, match=r"policy = 'toy_policy' needs toy_weight"):
            ToyConfig(policy="toy_policy")
        with pytest.raises(ConfigError, match=r"toy_weight = 2\.0: an option of policy"):
            ToyConfig(toy_weight=2.0)
        with pytest.raises(ConfigError, match="the toy refuses three"):
            ToyConfig(policy="toy_policy", toy_weight=3.0)
        with pytest.raises(ConfigError, match=r"toy_weight = 11\.0: expected a value > 0"):
            ToyConfig(policy="toy_policy", toy_weight=11.0)
    finally:
        POLICIES.unregister("toy_policy")


def test_a_rank_per_device_is_checked_by_name():
    """`rank` takes one rank per device (flag "4,0,64", a TOML array): whole numbers, one
    per device, 0 leaving a device out but not every one, different ranks only with an
    aggregation that takes them; one rank alone stays a number."""
    cfg = RunConfig(devices=3, rank="4,0,64", aggregation="zero_pad")
    assert cfg.rank == (4, 0, 64) and cfg.fixed_ranks() == (4, 0, 64)
    assert RunConfig(devices=3, rank=[8]).rank == 8
    assert RunConfig(devices=3, rank=8).fixed_ranks() == (8, 8, 8)
    assert RunConfig(devices=3, rank=(8, 8, 8)).rank == (8, 8, 8)  # one rank: fedavg takes it
    for given, message in (
        (dict(rank="4,64"), "rank has 2 values for devices = 3"),
        (dict(rank="4,4.5,64"), "expected whole numbers"),
        (dict(rank=(0, 0, 0)), "every device left out"),
        (dict(rank=0), "every device left out"),
        (dict(rank=(4, -1, 64)), "rank of device 1 = -1"),
        (dict(rank=(4, 4, 65)), "above max_rank = 64"),
    ):
        with pytest.raises(ConfigError, match=message):
            RunConfig(devices=3, aggregation="zero_pad", **given)
    with pytest.raises(ConfigError, match="'fedavg' cannot aggregate"):
        RunConfig(devices=3, rank=(4, 4, 64))
