"""Bounds before work: every number setting has a range checked when the configuration is
made, and sizes (records, trace tables, key pairs) are checked before anything is allocated
or written. Each case was a traceback, a hang or a silent wrong answer before."""

import time

import numpy as np
import pytest

from fsl_opt.cli import main
from fsl_opt.federation.settings import RunConfig

TINY = [
    "--model",
    "tiny",
    "--rounds",
    "1",
    "--devices",
    "2",
    "--samples-per-device",
    "4",
    "--test-samples",
    "8",
    "--max-length",
    "16",
    "--quiet",
    "--no-plot",
]


def test_the_largest_documented_seed_trains(tmp_path):
    """--seed 2**63-1 (the documented maximum) overflowed torch's generator."""
    out = tmp_path / "run"
    assert main(["train", *TINY, "--seed", str(2**63 - 1), "--out", str(out)]) == 0
    assert (out / "log.jsonl").read_text().count("\n") == 2


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--lora-scale", "1e300"], "lora_scale = 1e+300: expected a value > 0 and <= 10000"),
        (["--max-length", "100000"], "max_length = 100000: expected a value > 0 and <= 8192"),
        (["--seed", str(2**63)], "seed = 9223372036854775808: expected a value >= 0"),
        (["--rounds", str(2**63 - 1)], "expected a value > 0 and <= 1000000"),
    ],
)
def test_out_of_range_settings_are_refused_before_any_folder(tmp_path, capsys, flags, message):
    out = tmp_path / "run"
    assert main(["train", *TINY, *flags, "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_max_length_beyond_the_models_positions(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--max-length", "4000", "--out", str(out)]) == 2
    assert "takes at most 512 tokens per sample" in capsys.readouterr().err


def test_records_that_cannot_fit_are_refused_before_writing(tmp_path, capsys):
    out = tmp_path / "plan"
    assert main(["plan", "--rounds", "1000000", "--devices", "1000000", "--out", str(out)]) == 2
    assert "the records would take about" in capsys.readouterr().err
    assert not out.exists()


def test_a_trace_naming_a_far_round_is_refused_before_allocating(tmp_path, capsys):
    trace = tmp_path / "t.csv"
    trace.write_text("device,round,available\n0,1000000000,1\n")
    out = tmp_path / "plan"
    started = time.perf_counter()
    assert main(["plan", "--trace", str(trace), "--out", str(out)]) == 2
    assert time.perf_counter() - started < 10
    assert "beyond what a trace may hold" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    "args",
    [
        ["trace", "synth", "--devices", "3", "--rounds", "1000000000"],
        ["credentials", "--host", "localhost", "--nodes", "1000000000"],
    ],
)
def test_sizes_that_would_hang_are_refused_at_once(tmp_path, args):
    out = tmp_path / ("x.csv" if args[0] == "trace" else "creds")
    started = time.perf_counter()
    assert main([*args, "--out", str(out)]) == 2
    assert time.perf_counter() - started < 10 and not out.exists()


def test_full_availability_is_full(tmp_path):
    """--availability 1 gave 83% of device-rounds: an always-on device went off."""
    from fsl_opt.problem.trace import synthesize

    trace = synthesize(50, 200, np.random.default_rng(0), availability=1.0)
    assert trace.tables["available"].all()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--bandwidth-total-hz", "1e-300"], "bandwidth_total_hz = 1e-300: expected a value >= 1"),
        (["--bandwidth-total-hz", "1e6", "--noise-psd-w-per-hz", "0"], "expected a density > 0"),
    ],
)
def test_a_pool_whose_noise_vanishes_is_refused(capsys, flags, message):
    """A pool of 1e-300 Hz made the noise zero and the rate infinite; a zero density was
    silently replaced by the default."""
    assert main(["solve", "--preset", "paper", *flags]) == 2
    assert message in capsys.readouterr().err


def test_bench_torch_device_is_checked_before_its_folder(tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["bench", "training", "--quick", "--torch-device", "tpu", "--out", str(out)]) == 2
    assert "--torch-device 'tpu'" in capsys.readouterr().err
    assert not out.exists()


def test_every_number_setting_declares_its_range_in_help():
    import dataclasses

    numbers = [
        f
        for f in dataclasses.fields(RunConfig)
        if f.type in ("int", "float", "int | None", "float | None")
        and f.name not in ("test_fraction", "lora_dropout", "target_accuracy", "energy_price")
    ]
    missing = [f.name for f in numbers if f.metadata["within"] is None]
    assert not missing, f"number settings without a range: {missing}"


def test_a_seed_named_twice_is_refused(tmp_path, capsys):
    """`experiment --seeds 0,0` wrote duplicate rows."""
    out = tmp_path / "e"
    assert main(["experiment", "fig2", "--quick", "--seeds", "0,0", "--out", str(out)]) == 2
    assert "a seed named twice" in capsys.readouterr().err
    assert not out.exists()


def test_the_summary_names_the_seeds_of_every_row(tmp_path):
    """A later `--seeds 1` into the same folder said "seeds [1]" over means of all rows."""
    from experiments.common import Run, write_summary

    base = RunConfig()
    rows = [{"seed": "0"}, {"seed": "0.0"}, {"seed": "1"}]
    write_summary(tmp_path, "x", "X", base, [Run("a", "a", 0, 1, {})], True, [], rows=rows)
    assert "- 3 runs, seeds [0, 1];" in (tmp_path / "summary.md").read_text()


def test_an_empty_cache_variable_is_unset(monkeypatch, tmp_path):
    """`FSL_OPT_CACHE=` wrote a cache into the current folder."""
    from fsl_opt.learning.data import default_cache_dir

    monkeypatch.setenv("FSL_OPT_CACHE", "")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / ".cache" / "fsl-opt"


def test_a_preset_file_with_true_for_a_clock_is_refused_before_the_folder(tmp_path, capsys):
    """`clock_hz = true` in a preset file was a 1 Hz clock."""
    preset = tmp_path / "p.toml"
    preset.write_text(
        'base = "calibrated"\n[compute]\nclock_hz = true\n'
        "seconds_per_frozen_flop = 1e-11\nseconds_per_lora_flop = 1e-11\n"
    )
    out = tmp_path / "plan"
    assert main(["plan", "--preset", str(preset), "--out", str(out)]) == 2
    assert "clock_hz = True: expected a number" in capsys.readouterr().err
    assert not out.exists()


def test_the_summary_counts_the_commits_that_made_its_runs(tmp_path):
    """Tables drawn again by newer code said the newer commit had made the runs: the
    summary now counts each run's own commits (a resume by other code names both), and
    runs that record none as such."""
    import json

    from experiments.common import Run, runs_made_at, write_summary

    def made(name, *lines):
        folder = tmp_path / "runs" / name
        folder.mkdir(parents=True)
        if lines:
            text = "\n".join(json.dumps(x) for x in lines) + "\n"
            (folder / "provenance.jsonl").write_text(text + '{"commit": "torn')
        return folder

    one = {"first_round": 0, "commit": "aaaaaaa", "precision": "fp32"}
    folders = [
        made("a-s0", one),
        made("b-s0", one),
        made("c-s0", one, {**one, "first_round": 3, "commit": "bbbbbbb"}),
        made("d-s0"),
    ]
    assert runs_made_at(folders) == {
        "aaaaaaa (fp32)": 2,
        "aaaaaaa then bbbbbbb (fp32)": 1,
        "not recorded": 1,
    }
    rows = [{"label": x, "seed": "0"} for x in "abcd"]
    write_summary(tmp_path, "x", "X", RunConfig(), [Run("a", "a", 0, 0, {})], True, [], rows=rows)
    text = (tmp_path / "summary.md").read_text()
    assert (
        "- runs made at commit (aaaaaaa (fp32): 2 runs; aaaaaaa then bbbbbbb (fp32): 1 run; "
        "not recorded: 1 run); tables, figure and this summary at commit"
    ) in text
    assert '"runs_made_at"' in text
