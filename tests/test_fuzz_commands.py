"""Fuzzing every command as a careless or hostile user would: flags, data files, damaged run
folders and logs, run-folder states.

Every generated case ends in exit 0 or 3 with an answer that re-checks against the cost
model exactly, or in exit 2 (1 for a solver's own ``error`` status or an OS error) with one
line from fsl-opt on stderr; never a traceback. A folder fsl-opt did not create is never
emptied. The sizes are set so that the whole file runs in about a minute on two cores; the cases are
derandomized (the same every run), so CI time and outcome do not depend on a draw.
"""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from fsl_opt.cli import main
from fsl_opt.errors import ConfigError
from fsl_opt.problem import cost
from solvers import methods

SLOW_OK = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("FSL_OPT_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def _exit(argv):
    try:
        return main(argv)
    except SystemExit as exc:  # argparse's usage errors (exit 2, usage on stderr)
        return exc.code


def _assert_clean(code, err: str, argv) -> None:
    """Exit 0/3, or exit 1/2 with exactly one fsl-opt line (argparse: its usage line)."""
    assert "Traceback" not in err, (argv, err)
    assert code in (0, 1, 2, 3), (argv, code, err)
    if code in (1, 2):
        ours = [line for line in err.splitlines() if line.startswith(("fsl-opt", "usage:"))]
        assert ours, (argv, err)
        mine = [line for line in err.splitlines() if line.startswith("fsl-opt")]
        assert len(mine) == 1, (argv, err)


# --- solve -------------------------------------------------------------------------------

#: Per flag: (values a careful user passes, values a careless one does).
SOLVE_FLAGS = {
    "--preset": (["paper", "calibrated"], ["NOSUCH", ""]),
    "--method": ([*methods(), "auto"], ["NOSUCH", ""]),
    "--latency-s": (["30", "5", "300"], ["0", "-1", "nan", "inf", "1e-9", "abc", "1e300"]),
    "--energy-budget-j": (["5", "1", "50"], ["0", "-1", "nan", "inf", "1e-12", "abc", "1e300"]),
    # Up to 8 devices: milp with reallocation on tens of devices is a long CBC search
    # (bounded by its 60 s time limit), which is a benchmark's business, not a test's.
    "--devices": (["3", "1", "8"], ["0", "-2", "abc", "2.5"]),
    "--channel": (["rayleigh", "static"], ["nosuch"]),
    "--seed": (["0", "7", "12345"], ["-1", "x", "99999999999999999999"]),
    "--option": (["levels=4", "reallocate=false"], ["solver=NOSUCH", "nokey", "x=[", "a=1"]),
}


@settings(max_examples=400, deadline=None, suppress_health_check=SLOW_OK, derandomize=True)
@given(
    flags=st.dictionaries(
        st.sampled_from(sorted(SOLVE_FLAGS)),
        st.tuples(st.integers(0, 4), st.integers(0, 50)),
        max_size=5,
    ),
    as_json=st.booleans(),
)
def test_solve_flags(capsys, flags, as_json):
    """`fsl-opt solve` under any mix of flags: a re-checked answer or one line."""
    argv = ["solve"]
    chosen = {}
    for flag, (careless, index) in flags.items():
        good, bad = SOLVE_FLAGS[flag]
        values = bad if careless == 0 else good  # one flag in five is careless
        chosen[flag] = values[index % len(values)]
    chosen.setdefault("--preset", "paper")
    for flag, value in chosen.items():
        argv += [flag, value]
    if as_json:
        argv.append("--json")
    code = _exit(argv)
    out, err = capsys.readouterr()
    event(f"exit {code}")
    _assert_clean(code, err, argv)
    if code == 0 and as_json:
        _recheck_preset_answer(chosen, json.loads(out))


def _recheck_preset_answer(chosen: dict, doc: dict) -> None:
    """Draw the same system again and judge the printed answer exactly (no tolerance)."""
    from channels import preset_round
    from fsl_opt.problem.presets import get_preset

    def num(flag):
        return float(chosen[flag]) if flag in chosen else None

    system, _ = preset_round(
        get_preset(chosen["--preset"]),
        int(chosen.get("--devices", "3")),
        np.random.default_rng(int(chosen.get("--seed", "0"))),
        channel=chosen.get("--channel", "rayleigh"),
        latency_s=num("--latency-s"),
        energy_budget_j=num("--energy-budget-j"),
    )
    assert doc["status"] in ("optimal", "fixed")
    ranks = np.asarray(doc["ranks"], dtype=np.int64)
    take = ranks > 0
    f = np.asarray(doc["frequencies_hz"], dtype=float)
    system = system.replace(bandwidth_hz=np.where(take, doc["bandwidth_hz"], system.bandwidth_hz))
    r = np.maximum(ranks, 1)
    assert np.all(f[take] <= system.f_max_hz[take])
    assert np.all(cost.latency(system, r, f)[take] <= system.latency_s)
    assert np.all(cost.energy(system, r, f)[take] <= system.energy_budget_j[take])


# --- data files ----------------------------------------------------------------------------

CSV_HEADERS = st.sampled_from(
    ["text,label\n"] * 14
    + [
        "\ufefftext,label\n",
        "label,text\n",
        "text,text\n",
        "text\n",
        "a,b,c\n",
        '"text,label\n',
        "",
    ]
)
CSV_ROWS = st.sampled_from(
    ['"hello, world",1\n', "plain words,0\n", "more words,1\n", "other words,0\n"] * 12
    + [
        "more words,1.0\n",
        "words,2\n",
        "x,\n",
        ",1\n",
        '"unclosed,1\n',
        "\n",
        "only one field\n",
        "a,b,c,d\n",
        "caf\u00e9 au lait,pos\n",
        "text,neg\n",
        '"two\nlines",1\n',
    ]
)


@settings(max_examples=400, deadline=None, suppress_health_check=SLOW_OK, derandomize=True)
@given(
    header=CSV_HEADERS,
    rows=st.lists(CSV_ROWS, max_size=14),
    binary=st.integers(0, 9).map(lambda x: x == 0),
)
def test_csv_reader(tmp_path_factory, header, rows, binary):
    """A user's CSV (one file, split 80/20) reads into a dataset whose texts and labels
    agree, or fails with one line naming the file."""
    from fsl_opt.learning.data import Columns, load_csv

    path = tmp_path_factory.mktemp("csv") / "data.csv"
    body = (header + "".join(rows)).encode()
    path.write_bytes(body + (b"\xff\xfe\x00" if binary else b""))
    try:
        data = load_csv(str(path), Columns())
    except ConfigError as exc:
        event("refused")
        message = str(exc)
        assert "\n" not in message and "data.csv" in message, message
        return
    event("read")
    splits = ((data.train_texts, data.train_labels), (data.test_texts, data.test_labels))
    for texts, labels in splits:
        assert len(texts) == len(labels) > 0
        assert all(isinstance(t, str) and t for t in texts)
        assert set(labels.tolist()) <= set(range(data.num_labels))
    assert len(set(data.label_names)) == data.num_labels >= 2
    assert not {"1", "1.0"} <= set(data.label_names)


# --- evaluate and plot on damaged run folders ---------------------------------------------


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A finished tiny run with its adapter exported and a plot drawn."""
    from fsl_opt.federation.loop import run
    from fsl_opt.federation.settings import RunConfig
    from tests.conftest import TINY_RUN

    folder = tmp_path_factory.mktemp("exported") / "run"
    run(RunConfig(**{**TINY_RUN, "rounds": 2}, out=str(folder)), progress=False)
    return folder


RUN_FILES = [
    "adapter/adapter_model.safetensors",
    "adapter/adapter_config.json",
    "adapter/head.safetensors",
    "adapter/head.json",
    "settings.json",
    "data.json",
    "config.toml",
    "log.jsonl",
    "placement.json",
]
DAMAGE = ["delete", "empty", "truncate", "garbage", "directory", "json-list", "json-null"]


def _damage(path: Path, how: str) -> None:
    if path.is_dir():  # damaged once already ("directory"): start again from nothing
        shutil.rmtree(path)
    if how == "delete":
        path.unlink(missing_ok=True)
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "truncate":
        data = path.read_bytes() if path.is_file() else b""
        path.write_bytes(data[: max(1, len(data) // 3)])
    elif how == "garbage":
        path.write_bytes(b"\x00\xff not what it should be \xfe")
    elif how == "directory":
        path.unlink(missing_ok=True)
        path.mkdir()
    elif how == "json-list":
        path.write_text("[1, 2, 3]")
    elif how == "json-null":
        path.write_text("null")


@settings(max_examples=60, deadline=None, suppress_health_check=SLOW_OK, derandomize=True)
@given(
    damages=st.lists(
        st.tuples(st.sampled_from(RUN_FILES), st.sampled_from(DAMAGE)), min_size=1, max_size=2
    ),
    as_json=st.booleans(),
)
def test_evaluate_on_damaged_runs(exported, tmp_path_factory, capsys, damages, as_json):
    """`fsl-opt evaluate` on a run with one or two files damaged: a score or one line."""
    run_copy = tmp_path_factory.mktemp("eval") / "run"
    shutil.copytree(exported, run_copy)
    for name, how in damages:
        _damage(run_copy / name, how)
    argv = ["evaluate", str(run_copy), *(["--json"] if as_json else [])]
    code = _exit(argv)
    out, err = capsys.readouterr()
    event(f"exit {code}")
    _assert_clean(code, err, (argv, damages))
    assert code in (0, 2), (damages, err)
    if code == 0 and as_json:
        assert 0.0 <= json.loads(out)["accuracy"] <= 1.0


LOG_VALUES = ["null", '"abc"', "-1", "1e400", "[]", '{"a": 1}', "[1, 2, 3]", '"1;2"', "true"]
LOG_FIELDS = ["round", "rank", "ranks", "test_accuracy", "latency_s", "energy_j", "status"]


@settings(max_examples=40, deadline=None, suppress_health_check=SLOW_OK, derandomize=True)
@given(
    edits=st.lists(
        st.tuples(st.integers(0, 3), st.sampled_from(LOG_FIELDS), st.sampled_from(LOG_VALUES)),
        max_size=3,
    ),
    tail=st.sampled_from(["", "\n", '{"round": 9', "\x00\x01", "not json\n"]),
)
def test_plot_on_damaged_logs(exported, tmp_path_factory, capsys, edits, tail):
    """`fsl-opt plot` on a log whose records hold wrong types or a torn last line: a PNG
    or one line naming the log."""
    run_copy = tmp_path_factory.mktemp("plot") / "run"
    shutil.copytree(exported, run_copy)
    log = run_copy / "log.jsonl"
    lines = log.read_text().splitlines()
    for index, field, value in edits:
        if index < len(lines):
            record = json.loads(lines[index])
            record[field] = json.loads(value) if value != "1e400" else float("inf")
            lines[index] = json.dumps(record)
    log.write_text("\n".join(lines) + "\n" + tail)
    out_png = run_copy / "fuzz.png"
    argv = ["plot", str(run_copy), "--out", str(out_png)]
    code = _exit(argv)
    _, err = capsys.readouterr()
    event(f"exit {code}")
    _assert_clean(code, err, (argv, edits, tail))
    assert code in (0, 2)
    assert (code == 0) == out_png.is_file()


# --- run-folder states under train's flags -------------------------------------------------

STATES = [
    "absent",
    "empty",
    "foreign",  # someone's folder: a thesis and a results folder, no marker
    "legacy",  # looks like an old run (config.toml, log.jsonl), no marker
    "a-file",
    "symlink-to-run",
    "finished-run",
    "run-without-log",
    "lock-is-a-folder",
]
FLAGS = [[], ["--resume"], ["--overwrite"], ["--resume", "--overwrite"]]


def _make_state(base: Path, state: str, exported: Path) -> Path:
    out = base / "out"
    if state == "empty":
        out.mkdir()
    elif state in ("foreign", "legacy"):
        out.mkdir()
        (out / "thesis.tex").write_text("months of work")
        (out / "results").mkdir()
        (out / "results" / "table.csv").write_text("a,b\n1,2\n")
        if state == "legacy":
            (out / "config.toml").write_text("[run]\nrounds = 3\n")
            (out / "log.jsonl").write_text('{"round": 0}\n')
    elif state == "a-file":
        out.write_text("not a folder")
    elif state == "symlink-to-run":
        target = base / "real"
        shutil.copytree(exported, target)
        out.symlink_to(target)
    elif state in ("finished-run", "run-without-log", "lock-is-a-folder"):
        shutil.copytree(exported, out)
        if state == "run-without-log":
            (out / "log.jsonl").unlink()
        if state == "lock-is-a-folder":
            (out / ".fsl-opt.lock").mkdir(exist_ok=True)
    return out


def _tree(path: Path) -> dict[str, bytes]:
    if not path.exists():
        return {}
    if path.is_file():
        return {"": path.read_bytes()}
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


@pytest.mark.parametrize("flags", FLAGS, ids=lambda f: "+".join(f) or "none")
@pytest.mark.parametrize("state", STATES)
def test_train_on_every_folder_state(exported, tmp_path, capsys, state, flags):
    """`fsl-opt train --out` on each folder state under each flag combination: a run, or
    one line; what fsl-opt did not create is never touched."""
    from tests.conftest import TINY_RUN

    out = _make_state(tmp_path, state, exported)
    before = _tree(out)
    real = tmp_path / "real"
    before_real = _tree(real)
    config = tmp_path / "run.toml"
    settings_ = {**TINY_RUN, "rounds": 2}
    config.write_text(
        "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings_.items() if k != "out")
    )
    argv = ["train", "--config", str(config), "--out", str(out), "--quiet", "--no-plot", *flags]
    code = _exit(argv)
    _, err = capsys.readouterr()
    _assert_clean(code, err, argv)
    assert code in (0, 2), err
    if state in ("foreign", "legacy", "a-file"):
        assert code == 2, err
        assert _tree(out) == before  # never written into, never deleted
    if state == "symlink-to-run":
        assert _tree(real) == before_real or (code == 0 and "--resume" in flags)
        assert out.is_symlink()
    if "--resume" in flags and "--overwrite" in flags:
        assert code == 2 and _tree(out) == before
    if state in ("absent", "empty", "run-without-log") and flags == ["--resume"]:
        assert code == 2, err
    if code == 0 and not out.is_symlink():
        assert (out / "log.jsonl").is_file()
    os.sync()
