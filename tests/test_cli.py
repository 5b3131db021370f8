"""The ``fsl-opt solve`` command: output formats and one-line errors for bad input."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from channels import preset_system
from fsl_opt.cli import main

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "system.toml"


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_solve_example_toml_table(capsys):
    """The example system solves to a table with one row per device."""
    code, out, _ = run(capsys, "solve", str(EXAMPLE))
    assert code == 0
    assert "method bisection: optimal, rank" in out
    assert len([ln for ln in out.splitlines() if ln.strip().startswith(("0 ", "1 ", "2 "))]) == 3


@pytest.mark.parametrize(
    "method", ["bisection", "bnb", "milp", "exhaustive", "max_frequency", "random_frequency"]
)
def test_solve_json_keys(capsys, method):
    """--json carries the documented keys for every method."""
    code, out, _ = run(capsys, "solve", "--preset", "paper", "--method", method, "--json")
    doc = json.loads(out)
    assert code == 0
    assert {"status", "rank", "frequencies_hz", "latency_s", "energy_j", "method"} <= set(doc)
    assert doc["method"] == method and len(doc["frequencies_hz"]) == 3


def test_milp_json_carries_its_bandwidth(capsys):
    """milp's costs depend on its resource blocks: --json includes them, per device."""
    code, out, _ = run(capsys, "solve", "examples/system.toml", "--method", "milp", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["status"] == "optimal"
    blocks, bandwidth = doc["extra"]["blocks"], doc["extra"]["bandwidth_hz"]
    assert len(blocks) == len(bandwidth) == doc["n_devices"]
    assert sum(blocks) <= doc["extra"]["pool_blocks"]
    # The reported upload time is the one at that bandwidth.
    from fsl_opt.problem import cost
    from fsl_opt.problem.system_file import load_system

    system = load_system("examples/system.toml").replace(bandwidth_hz=bandwidth)
    assert doc["upload_time_s"] == pytest.approx(cost.upload_time(system, doc["rank"]).tolist())


def test_result_extra_is_read_only():
    """A frozen result cannot be changed through its extra mapping."""
    import numpy as np

    from fsl_opt.problem.presets import PAPER
    from solvers import solve

    res = solve(preset_system(PAPER, 3, np.random.default_rng(0)), "bnb")
    with pytest.raises(TypeError):
        res.extra["root_rank"] = 1.0  # type: ignore[index]
    assert res.to_dict()["extra"]["root_rank"] == res.extra["root_rank"]


def test_preset_overrides(capsys):
    """--latency-s, --energy-budget-j, --devices and --seed reach the system."""
    _, out, _ = run(
        capsys,
        "solve",
        "--preset",
        "calibrated",
        "--devices",
        "7",
        "--latency-s",
        "45",
        "--energy-budget-j",
        "30",
        "--seed",
        "4",
        "--json",
    )
    doc = json.loads(out)
    assert len(doc["latency_s"]) == 7
    assert max(doc["latency_s"]) <= 45 * (1 + 1e-9)
    assert max(doc["energy_j"]) <= 30 * (1 + 1e-9)


def test_infeasible_exit_status(capsys):
    """An infeasible instance prints its reasons and exits 3."""
    code, out, _ = run(capsys, "solve", "--preset", "paper", "--latency-s", "10")
    assert code == 3
    assert "infeasible even at rank 1: device 0 cannot meet the deadline T0" in out


@pytest.mark.parametrize("command", ["solve", "plan"])
def test_the_old_spellings_still_work_for_one_release(capsys, command, tmp_path):
    """--T0 and --E0 are --latency-s and --energy-budget-j, with one note each on stderr."""
    from fsl_opt.cli import build_parser

    for old, new, dest in (
        ("--T0", "--latency-s", "latency_s"),
        ("--E0", "--energy-budget-j", "energy_budget_j"),
    ):
        argv = [command, "--preset", "paper"] if command == "solve" else [command]
        args = build_parser().parse_args([*argv, old, "12.5"])
        err = capsys.readouterr().err
        assert getattr(args, dest) == 12.5
        assert f"note: {old} is deprecated and goes in the next release; write {new}" in err
        args = build_parser().parse_args([*argv, new, "12.5"])
        assert getattr(args, dest) == 12.5 and capsys.readouterr().err == ""


BAD_TOML = {
    "nan": ("omega = nan", "omega[device 0] = nan"),
    "negative power": ("tx_power_w = [0.05, -0.08, 0.03]", "tx_power_w[device 1] = -0.08"),
    "zero bandwidth": ("bandwidth_hz = 0", "bandwidth_hz[device 0] = 0.0"),
    "lengths": ("gain_ul = [1e-3, 2e-3]", "per-device lists differ in length"),
    "malformed": ("omega = [1e-26,", "malformed TOML"),
    "unknown key": ("colour = 3", "[devices] has unknown key 'colour'"),
    "string": ("samples = 'many'", "[devices] samples = 'many'"),
}


@pytest.mark.parametrize("case", list(BAD_TOML))
def test_bad_toml_is_one_line_exit_2(tmp_path, capsys, case):
    """Each bad file gives exit 2 and a one-line error that names the problem."""
    line, expected = BAD_TOML[case]
    text = EXAMPLE.read_text()
    key = line.split("=")[0].strip()
    lines = [ln for ln in text.splitlines() if not ln.startswith(key + " ")]
    lines.append(line)
    bad = tmp_path / "bad.toml"
    bad.write_text("\n".join(lines) + "\n")
    code, out, err = run(capsys, "solve", str(bad))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and expected in err, err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["solve", "--preset", "paper", "--method", "newton"],
            "method = 'newton': expected one of",
        ),
        (["solve", "--preset", "nope"], "preset = 'nope': expected one of paper"),
        (["solve", "missing.toml"], "missing.toml: cannot read"),
        (
            ["solve", "examples/system.toml", "--devices", "5", "--channel", "static"],
            "--channel, --devices: shape a population drawn with --preset",
        ),
        (["solve"], "give a SYSTEM.toml path or --preset NAME"),
        (["solve", "--preset", "paper", "--latency-s", "abc"], "expected float or none, got 'abc'"),
        (["solve", "--preset", "paper", "--latency-s", "-5"], "latency_s = -5.0"),
        (
            ["solve", "--preset", "paper", "--devices", "0"],
            "devices = 0: expected a value > 0 and <= 1000000",
        ),
        (
            ["bench", "training", "--parts", "round,speeed", "--out", "/tmp/fsl-opt-no-bench"],
            "--parts 'round,speeed': unknown speeed; choose among round, speed, memory",
        ),
    ],
)
def test_bad_arguments(argv, expected):
    """Errors end the process with exit 2 and one line, no traceback."""
    proc = subprocess.run(
        [sys.executable, "-m", "fsl_opt.cli", *argv], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and expected in proc.stderr, proc.stderr


def test_solver_options(capsys):
    """--option passes typed values to the solver; unknown ones are a one-line error."""
    code, out, _ = run(
        capsys,
        "solve",
        "--preset",
        "paper",
        "--method",
        "milp",
        "--option",
        "levels=4",
        "--option",
        "reallocate=false",
        "--json",
    )
    doc = json.loads(out)
    assert code == 0 and {f / 2e9 for f in doc["frequencies_hz"]} <= {0.25, 0.5, 0.75, 1.0}
    code, _, err = run(capsys, "solve", "--preset", "paper", "--option", "foo=1")
    assert code == 2 and "has no option 'foo'; it takes: no options" in err
    code, _, err = run(
        capsys, "solve", "--preset", "paper", "--method", "milp", "--option", "lvls=4"
    )
    assert code == 2 and err.count("\n") == 1
    assert "it takes: levels, resource_block_hz, pool_blocks, max_blocks, reallocate" in err
    for bad, why in [
        ("levels=abc", "levels = 'abc'"),
        ("resource_block_hz=0", "expected a finite number > 0"),
        ("pool_blocks=-5", "expected a finite number > 0"),
        ("reallocate=maybe", "expected bool"),
    ]:
        code, _, err = run(
            capsys, "solve", "--preset", "paper", "--method", "milp", "--option", bad
        )
        assert code == 2 and why in err and err.count("\n") == 1, (bad, err)
    code, _, err = run(
        capsys, "solve", "--preset", "paper", "--method", "bnb", "--option", "max_nodes=abc"
    )
    assert code == 2 and "max_nodes = 'abc': expected int" in err


def test_a_ctrl_c_held_up_in_an_executor_still_ends_the_process():
    """The Ctrl-C that hung a Flower simulation in the suite, reproduced without Flower: the
    KeyboardInterrupt raised inside a `with ThreadPoolExecutor` block waits in the
    executor's shutdown for a worker that never returns. Under `interrupt_deadline` the
    process still ends with status 130 and our line last; without it, it would wait."""
    import signal
    import subprocess
    import sys
    import time

    script = (
        "import sys, time\n"
        "from concurrent.futures import ThreadPoolExecutor\n"
        "from fsl_opt.cli import interrupt_deadline\n"
        "with interrupt_deadline(2.0):\n"
        "    with ThreadPoolExecutor(1) as ex:\n"
        "        ex.submit(time.sleep, 600)\n"
        "        print('ready', flush=True)\n"
        "        time.sleep(600)\n"
    )
    from tests.helpers import fresh_sigint

    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=fresh_sigint,
    )
    try:
        assert proc.stdout.readline().strip() == b"ready"
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert 2.0 <= took < 10.0, took
    assert err.decode().strip().splitlines()[-1] == "fsl-opt: interrupted"
