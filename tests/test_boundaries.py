"""One error boundary: damaged files, unwritable places and bad numbers are one line naming
the file (or the flag), exit 2 or 1, never a traceback."""

import json
import shutil

import pytest

from fsl_opt.cli import main
from fsl_opt.federation.loop import run


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("FSL_OPT_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def _one_line(capsys, code, expected, want):
    """Exit ``want``; fsl-opt's one line (a library's progress bar may stand before it)."""
    err = capsys.readouterr().err
    assert code == want, err
    ours = [line for line in err.splitlines() if line.startswith("fsl-opt")]
    assert len(ours) == 1 and "Traceback" not in err, err
    assert expected in ours[0], err


def _exit_code(argv):
    try:
        return main(argv)
    except SystemExit as exc:  # argparse's usage errors
        return exc.code


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A finished tiny run with its adapter exported."""
    from fsl_opt.federation.settings import RunConfig
    from tests.conftest import TINY_RUN

    folder = tmp_path_factory.mktemp("exported") / "run"
    run(RunConfig(**{**TINY_RUN, "rounds": 1}, out=str(folder)), progress=False)
    return folder


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda a: (a / "adapter_model.safetensors").write_bytes(b"\x00" * 7), "load the adapter"),
        (lambda a: (a / "adapter_model.safetensors").write_bytes(b""), "load the adapter"),
        (lambda a: (a / "head.safetensors").unlink(), "head.safetensors: cannot read the head"),
        (lambda a: (a / "head.json").write_text("{not json"), "head.json: cannot read"),
        (lambda a: (a / "head.json").write_text("[]"), "expected the keys base and labels"),
        (lambda a: (a / "adapter_config.json").write_text("{"), "load the adapter"),
    ],
    ids=["truncated", "empty", "no-head", "head-json", "head-json-list", "adapter-config"],
)
def test_evaluate_on_a_damaged_adapter_is_one_line(exported, tmp_path, capsys, damage, expected):
    run_copy = tmp_path / "run"
    shutil.copytree(exported, run_copy)
    damage(run_copy / "adapter")
    _one_line(capsys, main(["evaluate", str(run_copy)]), expected, 2)


def test_plot_into_a_place_that_cannot_be_written_is_one_line(exported, capsys):
    code = main(["plot", str(exported), "--out", "/proc/fsl-opt-nowhere/runs.png"])
    _one_line(capsys, code, "cannot write the plot", 2)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["solve", "--preset", "paper", "--seed", "-1"], "seed = -1: expected a value >= 0"),
        (["bench", "solvers", "--quick", "--seed", "-1"], "expected an integer >= 0"),
        (
            ["solve", "--preset", "paper", "--method", "bnb", "--option", "solver=NOSUCH"],
            "not an installed cvxpy solver",
        ),
    ],
)
def test_bad_numbers_and_options_exit_2(capsys, argv, expected):
    _one_line(capsys, _exit_code(argv), expected, 2)


def test_a_toml_with_a_byte_order_mark_reads(tmp_path, capsys):
    """A SYSTEM.toml or run TOML saved with a BOM reads as without one."""
    from pathlib import Path

    from fsl_opt.federation.settings import load_config

    system = tmp_path / "system.toml"
    system.write_bytes(b"\xef\xbb\xbf" + Path("examples/system.toml").read_bytes())
    assert main(["solve", str(system), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rank"] == 37
    runs = tmp_path / "run.toml"
    runs.write_bytes(b"\xef\xbb\xbf" + Path("examples/run.toml").read_bytes())
    assert load_config(runs).partition == "dirichlet"


def test_a_population_too_large_for_memory_is_refused_before_it_is_drawn(capsys, monkeypatch):
    """`solve --preset calibrated --devices 100000000` was killed by the kernel at 22 GB."""
    from fsl_opt.problem import placement

    # A machine with 64 MB free (the devices' count must stay within the range a setting
    # may take, which the parser checks first)
    have = 64 * 2**20
    monkeypatch.setattr(placement, "available_memory", lambda: have)
    n = int(2 * have / placement.BYTES_PER_DEVICE) + 1
    code = main(["solve", "--preset", "calibrated", "--devices", str(n)])
    _one_line(capsys, code, f"devices = {n}: drawing and solving them needs about", 2)


def test_plot_of_a_log_with_bad_ranks_is_one_line(exported, tmp_path, capsys):
    """A log whose ranks were edited into text: one line naming the log and the round."""
    bad = tmp_path / "run"
    shutil.copytree(exported, bad)
    log = bad / "log.jsonl"
    lines = log.read_text().splitlines()
    rec = json.loads(lines[-1])
    rec["ranks"] = "abc"
    log.write_text("\n".join([*lines[:-1], json.dumps(rec)]) + "\n")
    code = main(["plot", str(bad), "--out", str(tmp_path / "p.png")])
    _one_line(capsys, code, "ranks = 'abc' is not a list of numbers", 2)


def test_a_folder_where_the_lock_should_be_is_one_line(tmp_path):
    """A directory named .fsl-opt.lock: named, not an IsADirectoryError traceback."""
    from fsl_opt.errors import ConfigError
    from fsl_opt.federation import runfolder

    folder = tmp_path / "run"
    runfolder.prepare(folder, "run")
    (folder / runfolder.LOCK).mkdir()
    with pytest.raises(ConfigError, match="not a lock file"):
        with runfolder.lock(folder):
            pass


def test_evaluate_on_other_data_uses_its_whole_test_split(exported, tmp_path, capsys):
    """`evaluate --data` on a small CSV: its test split, not the run's test_samples (which
    evaluate cannot change and which the old code required of the new data)."""
    labels = json.loads((exported / "adapter" / "head.json").read_text())["labels"]
    rows = "".join(f"words of sample {i},{labels[i % len(labels)]}\n" for i in range(40))
    csv = tmp_path / "small.csv"
    csv.write_text("text,label\n" + rows)
    assert main(["evaluate", str(exported), "--data", f"csv:{csv}", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["samples"] == 8  # 20% of 40
