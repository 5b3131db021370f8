"""Calibration: the fit recovers known constants, a preset file makes the cost model
reproduce the fitted times, bad preset files are refused, and `fsl-opt calibrate` writes a
preset that `plan` and `train` load; a trained run's records carry measured compute."""

import numpy as np
import pytest

from experiments.calibrate import _features, fit, main, modeled_seconds, preset_text, unresolved
from fsl_opt.errors import ConfigError
from fsl_opt.federation.loop import run
from fsl_opt.federation.plan_run import plan
from fsl_opt.federation.settings import RunConfig
from fsl_opt.learning.split_model import LoraShape
from fsl_opt.problem import cost
from fsl_opt.problem.compute import ComputeFit
from fsl_opt.problem.presets import get_preset

#: MiniLM's last three layers, as lora_shape() reads them.
MINILM = LoraShape(
    d=384, k=384, matrices_per_layer=2, layers=3, hidden=384, intermediate=1536, layers_run=3
)
TRUE = ComputeFit(2.5e9, 1.2e-11, 3.0e-11, 8e-4, seconds_per_round=0.03)


def by_hand(rank, samples, tokens, a, b, g, shape=MINILM, once=0.03):
    """n x (a F0 + b L + g) + h, every FLOP written out from the layer shapes."""
    h, i, s = shape.hidden, shape.intermediate, tokens
    layer = 2 * (4 * h * h + 2 * h * i + 2 * s * h) * s  # one layer's forward, one sample
    frozen = 2 * layer * shape.layers_run  # forward and input-gradient backward
    per_op = 3 * s * (shape.d + shape.k) / (shape.d * shape.k)
    ops = (2 * rank - 1) * shape.d * shape.k * shape.matrices_per_layer * shape.layers
    return samples * (a * frozen + b * per_op * ops + g) + once


CASES = [(r, n, s) for r in (4, 16, 64) for n in (16, 64) for s in (32, 64, 128)]


def test_the_fit_recovers_the_constants_that_made_the_times():
    rows = []
    for r, n, s in CASES:
        frozen, lora, _ = _features(MINILM, r, n, s)
        t = by_hand(r, n, s, TRUE.seconds_per_frozen_flop, TRUE.seconds_per_lora_flop, 8e-4)
        rows.append({"samples": n, "measured_s": t, "frozen_flops": frozen, "lora_flops": lora})
    got = fit(rows, TRUE.clock_hz, "fp32")
    assert got.seconds_per_frozen_flop == pytest.approx(TRUE.seconds_per_frozen_flop, rel=1e-6)
    assert got.seconds_per_lora_flop == pytest.approx(TRUE.seconds_per_lora_flop, rel=1e-6)
    assert got.seconds_per_sample == pytest.approx(8e-4, rel=1e-6)
    assert got.seconds_per_round == pytest.approx(0.03, rel=1e-6)
    for r, n, s in [(8, 32, 96), (128, 48, 40)]:
        want = by_hand(r, n, s, 1.2e-11, 3.0e-11, 8e-4)
        assert modeled_seconds(got, MINILM, r, n, s) == pytest.approx(want, rel=1e-6)


def test_a_timing_that_grows_with_no_flops_is_refused_and_one_kind_takes_the_other_rate():
    flat = [
        {"samples": 1, "measured_s": 1.0, "frozen_flops": 1e9 * n, "lora_flops": 1e7 * n}
        for n in (16, 32, 64)
    ]
    with pytest.raises(ConfigError, match="grow with neither the frozen nor the LoRA FLOPs"):
        fit(flat, 2e9, "fp32")
    # Times that only the frozen FLOPs explain: LoRA is charged at the frozen rate, said so.
    rows = [
        {
            "samples": n,
            "measured_s": 2e-11 * 1e9 * n * tokens,
            "frozen_flops": 1e9 * n * tokens,
            "lora_flops": 1e7 * n * (n % 3),
        }
        for n in (16, 32, 64, 80)
        for tokens in (1, 2)
    ]
    got = fit(rows, 2e9, "fp32")
    assert got.seconds_per_lora_flop == got.seconds_per_frozen_flop > 0
    assert "resolved only one" in unresolved(rows, got)[0]


def test_a_preset_file_makes_the_cost_model_reproduce_the_fit(tmp_path):
    """Every device at the fit's clock; eq. (1)'s compute time of a RoBERTa-base round (the
    presets' model: 768 hidden, 3 layers, 128 tokens) is the fit's n (a F0 + b L + g) + h."""
    path = tmp_path / "preset.toml"
    path.write_text(preset_text(TRUE, "calibrated", {"model": "minilm", "repeats": 5}))
    preset = get_preset(str(path))
    placement = preset.place(4, np.random.default_rng(0))
    np.testing.assert_array_equal(placement.devices["f_max_hz"], np.full(4, 2.5e9))
    system = preset.system(placement, np.full(4, 1e-9), np.full(4, 1e-9))
    roberta = LoraShape(
        d=768, k=768, matrices_per_layer=2, layers=3, hidden=768, intermediate=3072, layers_run=3
    )
    for rank in (1, 8, 40):
        t = cost.compute_time(system, rank, system.f_max_hz)
        want = by_hand(rank, 32, 128, 1.2e-11, 3.0e-11, 8e-4, roberta)
        np.testing.assert_allclose(t, want, rtol=1e-9)
    # The run's own model shape wins over the presets' (what train and plan use).
    shape = dict(hidden=384, intermediate=1536, layers_run=3, seq_len=64, d=384, k=384)
    assert preset.compute_for(**shape) == TRUE.cycles(**shape)
    assert preset.latency_s == get_preset("calibrated").latency_s


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'base = "calibrated"\n[compute]\nclock_hz = -1.0\nseconds_per_frozen_flop = 1e-11\n'
            "seconds_per_lora_flop = 1e-11\n",
            r"clock_hz = -1.0: expected a finite number > 0",
        ),
        ('base = "phone"\n[compute]\n', r"base = 'phone': expected one of paper, calibrated"),
        ('base = "paper"\nextra = 1\n', r"unknown keys \['extra'\]"),
        ('base = "paper"\n[compute]\nclock = 1\n', r"\[compute\] must hold only"),
        ("not toml [", r"cannot read the preset file"),
    ],
)
def test_bad_preset_files_are_one_line_naming_the_file(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        get_preset(str(path))
    assert str(path) in str(err.value)


def test_the_preset_setting_takes_a_file_but_no_other_name():
    assert RunConfig(preset="runs/calibrate/preset.toml").preset.endswith(".toml")
    with pytest.raises(ConfigError, match=r"preset = 'phone': expected one of .*or a \*.toml file"):
        RunConfig(preset="phone")


def test_calibrate_writes_a_preset_that_plan_and_train_load(tmp_path, tiny_cfg, monkeypatch):
    """The quick calibration (tiny model) writes its three files; a plan and a training run
    with --preset PATH run every device at the fit's clock, and the trained run's records
    carry each device's measured compute time beside the modeled one."""
    monkeypatch.setenv("FSL_OPT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "cal"
    notes = main(out, repeats=1, quick=True, progress=False, clock_ghz=2.0)
    assert {p.name for p in out.iterdir()} >= {"preset.toml", "cases.csv", "calibration.png"}
    assert any(line.startswith("fit: a = ") for line in notes)
    cfg = tiny_cfg.replace(preset=str(out / "preset.toml"), rounds=2)
    planned = plan(cfg.replace(out=str(tmp_path / "plan")), progress=False)
    import json

    placement = json.loads((tmp_path / "plan" / "placement.json").read_text())
    assert placement["f_max_hz"] == [2.0e9] * cfg.devices
    assert all(f is None or f <= 2.0e9 for r in planned for f in r["frequencies_hz"])
    recs = run(cfg.replace(out=str(tmp_path / "train")), progress=False)
    for r in recs[1:]:
        for i in range(cfg.devices):
            took = r["measured_compute_s"][i]
            assert (took is not None) == (i in r["selected_devices"])
            assert took is None or 0 < took < r["wall_time_s"]


def test_a_preset_file_written_before_the_per_round_term_loads_with_none(tmp_path):
    path = tmp_path / "old.toml"
    path.write_text(
        'base = "calibrated"\n[compute]\nclock_hz = 2e9\nseconds_per_frozen_flop = 1e-11\n'
        "seconds_per_lora_flop = 2e-11\nseconds_per_sample = 1e-3\n"
    )
    preset = get_preset(str(path))
    assert preset.fit.seconds_per_round == 0.0
    shape = dict(hidden=384, intermediate=1536, layers_run=3, seq_len=64, d=384, k=384)
    assert preset.compute_for(**shape)["round_base_cycles"] == 0.0
    with pytest.raises(ConfigError, match=r"seconds_per_round = -0.1: expected a finite"):
        ComputeFit(2e9, 1e-11, 1e-11, seconds_per_round=-0.1)


def test_the_calibration_check_divides_measured_by_modeled_at_the_machines_clock():
    """ratios(): a device run at half its clock for a modeled 4 s would take 2 s at f_max;
    measured 2.2 s is 1.1; a device not trained is nan."""
    from experiments.calibration_check import ratios

    records = [
        {},
        {
            "frequencies_hz": [1e9, None],
            "compute_time_s": [4.0, None],
            "measured_compute_s": [2.2, None],
        },
    ]
    (row,) = ratios(records, [2e9, 2e9])
    assert row[0] == pytest.approx(1.1) and np.isnan(row[1])
