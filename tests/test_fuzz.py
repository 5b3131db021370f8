"""Fuzzing the inputs a user writes: SYSTEM.toml and run TOML files, valid and invalid mixed.

Whatever the file holds, `fsl-opt solve` ends with exit 0 or 3 and an answer that re-checks
feasible with the cost model, or exit 2 and one line on stderr; never a traceback. A run TOML
either builds a valid RunConfig or raises ConfigError with a one-line message.
"""

import json
import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fsl_opt.cli import main
from fsl_opt.errors import ConfigError
from fsl_opt.federation.settings import RunConfig, load_config
from fsl_opt.problem import cost
from fsl_opt.problem.system_file import load_system

#: Values of every kind a hand-written TOML file can hold, many of them wrong somewhere.
BAD = st.sampled_from(
    [
        "nan",
        "inf",
        "-inf",
        "-1",
        "0",
        "0.0",
        "1e308",
        "1e-308",
        "1e302",
        "true",
        '"10000"',
        '"abc"',
        "[]",
        "[1.0, 2.0]",
        "[[1.0]]",
        "{ a = 1 }",
        "1979-05-27",
        "99999999999999999999",
        '"lora"',
    ]
)

VALID_SYSTEM = {
    "model": {
        "d": "64",
        "k": "64",
        "matrices_per_layer": "2",
        "layers": "3",
        "bits_per_param": "32",
        "upload_model": '"lora"',
        "max_rank": "32",
        "cycles_per_op": "1.0",
    },
    "round": {"latency_s": "30.0", "noise_w": "1e-13", "server_power_w": "1.0"},
    "devices": {
        "samples": "[100.0, 200.0, 150.0]",
        "omega": "1e-28",
        "f_max_hz": "[2e9, 2.5e9, 1.8e9]",
        "energy_budget_j": "5.0",
        "circuit_energy_j": "0.1",
        "tx_power_w": "0.2",
        "bandwidth_hz": "1e6",
        "gain_ul": "[1e-9, 3e-10, 2e-9]",
        "gain_dl": "1e-9",
        "base_cycles": "1e6",
        "round_base_cycles": "[0.0, 1e8, 2e8]",
    },
}


def _system_text(changes: dict[tuple[str, str], str], drop: set[tuple[str, str]]) -> str:
    lines = []
    for table, body in VALID_SYSTEM.items():
        lines.append(f"[{table}]")
        for key, value in body.items():
            if (table, key) in drop:
                continue
            lines.append(f"{key} = {changes.get((table, key), value)}")
    return "\n".join(lines) + "\n"


KEYS = [(t, k) for t, body in VALID_SYSTEM.items() for k in body]
#: Valid numbers that can be scaled by many orders of magnitude and stay valid.
SCALABLE = [
    (t, k)
    for t, body in VALID_SYSTEM.items()
    for k, v in body.items()
    if not v.startswith(("[", '"')) and k not in ("d", "k", "matrices_per_layer", "max_rank")
]


def _scaled(tweaks: dict[tuple[str, str], float]) -> dict[tuple[str, str], str]:
    return {key: repr(float(VALID_SYSTEM[key[0]][key[1]]) * f) for key, f in tweaks.items()}


@settings(max_examples=400, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    changes=st.one_of(st.just({}), st.dictionaries(st.sampled_from(KEYS), BAD, max_size=2)),
    tweaks=st.dictionaries(
        st.sampled_from(SCALABLE), st.sampled_from([1e-6, 1e-3, 0.3, 3.0, 1e3, 1e6]), max_size=4
    ),
    drop=st.sets(st.sampled_from(KEYS), max_size=1),
    method=st.sampled_from(["bisection", "bnb", "exhaustive", "max_frequency", "milp"]),
)
def test_solve_never_tracebacks(tmp_path_factory, capsys, changes, tweaks, drop, method):
    """Exit 0/3 with a re-checked answer, or exit 2 with one line; nothing else."""
    changes = {**_scaled(tweaks), **changes}
    path = tmp_path_factory.mktemp("sys") / "system.toml"
    path.write_text(_system_text(changes, drop))
    capsys.readouterr()
    code = main(["solve", str(path), "--method", method, "--json"])
    out, err = capsys.readouterr()
    assert code in (0, 1, 2, 3), code
    if code == 2:
        assert err.count("\n") == 1 and err.startswith("fsl-opt"), err
        return
    assert "Traceback" not in err
    doc = json.loads(out)
    if code == 1:  # a solver error is reported, never a wrong answer
        assert doc["status"] == "error" and doc["rank"] == 0
        return
    if code == 3:
        assert doc["status"] == "infeasible" and doc["rank"] == 0
        return
    system = load_system(path)
    if doc["extra"].get("bandwidth_hz"):
        system = system.replace(bandwidth_hz=doc["extra"]["bandwidth_hz"])
    f = np.asarray(doc["frequencies_hz"], dtype=float)
    r = doc["rank"]
    assert 1 <= r <= system.max_rank
    # The answer as printed, re-checked exactly: no tolerance.
    assert np.all(f > 0) and np.all(f <= system.f_max_hz)
    assert np.all(cost.latency(system, r, f) <= system.latency_s)
    assert np.all(cost.energy(system, r, f) <= system.energy_budget_j)


RUN_KEYS = [
    "devices",
    "rounds",
    "lr",
    "method",
    "preset",
    "rank",
    "max_rank",
    "latency_s",
    "energy_budget_j",
    "seed",
    "partition",
    "torch_device",
    "samples_per_device",
    "lora_dropout",
    "out",
    "cache_hidden",
    "layers",
    "data",
    "typo_key",
]
GOOD_RUN = st.sampled_from(
    ['"bisection"', '"paper"', "3", "1e-3", '"iid"', '"cpu"', "0.1", '"runs/x"', "true", '"none"']
)


@settings(max_examples=300)
@given(
    body=st.dictionaries(st.sampled_from(RUN_KEYS), st.one_of(BAD, GOOD_RUN), max_size=4),
    wrap=st.sampled_from(["", "[run]\n", "[other]\nx = 1\n[run]\n"]),
)
def test_run_toml_is_valid_or_one_line_error(tmp_path_factory, body, wrap):
    """A run TOML builds a valid RunConfig or fails with one line naming the problem."""
    path = tmp_path_factory.mktemp("run") / "run.toml"
    path.write_text(wrap + "".join(f"{k} = {v}\n" for k, v in body.items()))
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        assert "\n" not in str(exc) and str(exc)
        return
    assert isinstance(cfg, RunConfig)
    for name in ("lr", "alpha", "latency_factor"):
        assert math.isfinite(getattr(cfg, name))
    assert cfg.devices >= 1 and cfg.rounds >= 1 and cfg.seed >= 0
    assert "typo_key" not in body and "[other]" not in wrap


def test_undecodable_files_are_one_line_errors(tmp_path, capsys):
    """A binary or Latin-1 file is named as not UTF-8, for both kinds of TOML."""
    bad = tmp_path / "latin1.toml"
    bad.write_bytes("[model]\nd = 64 # caf\xe9\n".encode("latin-1"))
    assert main(["solve", str(bad)]) == 2
    assert "not UTF-8" in capsys.readouterr().err
    try:
        load_config(bad)
    except ConfigError as exc:
        assert "not UTF-8" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("a Latin-1 run TOML was accepted")
