"""A resume resumes or refuses: it needs the run, its complete saved state and its data."""

import pytest

from fsl_opt.errors import ConfigError
from fsl_opt.federation import runlog
from fsl_opt.federation.loop import run


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("FSL_OPT_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def test_resume_and_overwrite_together_are_refused(tiny_cfg):
    """Nothing is created or deleted."""
    with pytest.raises(ConfigError, match="give one of them"):
        run(tiny_cfg, resume=True, overwrite=True, progress=False)


def test_resume_of_nothing_says_so(tiny_cfg, tmp_path):
    """A missing folder, or one whose log is gone: exit 2's error, no round 0 started."""
    missing = tiny_cfg.replace(out=str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="holds no run to continue"):
        run(missing, resume=True, progress=False)
    assert not (tmp_path / "nowhere").exists()
    cfg = tiny_cfg.replace(rounds=1)
    run(cfg, progress=False)
    (tmp_path / "run" / "log.jsonl").unlink()
    with pytest.raises(ConfigError, match="holds no run to continue"):
        run(cfg, resume=True, progress=False)


def test_resume_without_the_devices_state_is_refused(tiny_cfg, tmp_path):
    """checkpoint/devices.pt deleted (or truncated): refused, the run left as it was; the
    old code resumed with fresh optimizers and ended elsewhere."""
    cfg = tiny_cfg.replace(rounds=3)
    run(cfg, progress=False, stop_after=1)
    devices = tmp_path / "run" / "checkpoint" / "devices.pt"
    blob = devices.read_bytes()
    devices.unlink()
    log = (tmp_path / "run" / "log.jsonl").read_text()
    with pytest.raises(ConfigError, match=r"devices\.pt is missing"):
        run(cfg, resume=True, progress=False)
    devices.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ConfigError, match=r"devices\.pt is damaged"):
        run(cfg, resume=True, progress=False)
    assert (tmp_path / "run" / "log.jsonl").read_text() == log


def test_resume_on_changed_data_is_refused(tiny_cfg, tmp_path):
    """The CSV's labels edited between the stop and the resume: refused, naming the data."""
    csv = tmp_path / "data.csv"
    rows = [f"text number {i} about topic {i % 3},{'abc'[i % 3]}" for i in range(120)]
    csv.write_text("text,label\n" + "\n".join(rows) + "\n")
    cfg = tiny_cfg.replace(data=f"csv:{csv}", samples_per_device=16, test_samples=12)
    run(cfg, progress=False, stop_after=1)
    swapped = [r.replace(",a", ",X").replace(",b", ",a").replace(",X", ",b") for r in rows]
    csv.write_text("text,label\n" + "\n".join(swapped) + "\n")
    with pytest.raises(ConfigError, match="changed since the run started"):
        run(cfg, resume=True, progress=False)
    csv.write_text("text,label\n" + "\n".join(rows) + "\n")  # the same data again: resumes
    assert len(run(cfg, resume=True, progress=False)) == cfg.rounds + 1


class Crash(BaseException):
    """Stands for the process dying."""


@pytest.mark.parametrize("at", range(6))
def test_a_kill_inside_the_log_rewrite_loses_no_record(tmp_path, at, monkeypatch):
    """Truncating the log to the checkpoint (what a resume does first) killed at any of
    its writes: every record up to the checkpoint is still there, and the log is either
    the old one or the truncated one. The old code unlinked both files and appended the
    records again: a kill in between left a few lines."""
    log = runlog.RunLog(tmp_path)
    for rnd in range(8):
        log.append({"round": rnd, "test_accuracy": rnd / 10})
    writes = {"n": 0}
    real_dumps = runlog.json.dumps

    def dumps(obj, *args, **kwargs):
        writes["n"] += 1
        if writes["n"] > at:
            raise Crash
        return real_dumps(obj, *args, **kwargs)

    monkeypatch.setattr(runlog.json, "dumps", dumps)
    with pytest.raises(Crash):
        log.truncate(5)
    monkeypatch.setattr(runlog.json, "dumps", real_dumps)
    rounds = [r["round"] for r in runlog.RunLog(tmp_path).records()]
    assert rounds in (list(range(8)), list(range(6))), rounds


def test_a_kill_between_the_two_renames_keeps_the_records(tmp_path, monkeypatch):
    """Killed after the new JSONL replaced the old and before the CSV: the JSONL is the
    truncated log, whole (the record of truth), and the next truncate mends the CSV."""
    log = runlog.RunLog(tmp_path)
    for rnd in range(4):
        log.append({"round": rnd})
    real = runlog.os.replace
    calls = {"n": 0}

    def replace(src, dst):
        calls["n"] += 1
        if calls["n"] == 2:
            raise Crash
        real(src, dst)

    monkeypatch.setattr(runlog.os, "replace", replace)
    with pytest.raises(Crash):
        log.truncate(2)
    monkeypatch.setattr(runlog.os, "replace", real)
    assert [r["round"] for r in log.records()] == [0, 1, 2]
    log.truncate(2)
    assert (tmp_path / "log.csv").read_text().count("\n") == 4  # header + rounds 0-2


def test_round_zero_is_evaluated_once_per_seed_and_workload(tiny_cfg, tmp_path, monkeypatch):
    """An experiment's runs of one seed share the untuned evaluation: a run on a workload
    that has evaluated it logs the same records as the same run on a fresh workload, and
    the test split is evaluated one time less."""
    from fsl_opt.federation import loop
    from fsl_opt.federation.loop import run
    from fsl_opt.federation.runlog import MEASURED_FIELDS
    from fsl_opt.federation.workload import load_workload

    monkeypatch.setenv("FSL_OPT_CACHE", str(tmp_path / "cache"))
    calls = []
    real = loop.evaluate
    monkeypatch.setattr(loop, "evaluate", lambda *a, **k: calls.append(1) or real(*a, **k))
    cfg = tiny_cfg.replace(rounds=2)
    shared = load_workload(cfg)
    run(cfg.replace(out=str(tmp_path / "a")), progress=False, workload=shared)
    first = len(calls)
    other = cfg.replace(rank=3, out=str(tmp_path / "b"))
    reused = run(other, progress=False, workload=shared)
    assert len(calls) - first == first - 1  # round 0 not evaluated again
    fresh = run(other.replace(out=str(tmp_path / "c")), progress=False)

    def stable(recs):
        return [{k: v for k, v in r.items() if k not in MEASURED_FIELDS} for r in recs]

    assert stable(reused) == stable(fresh)


def test_resume_binds_every_input(tiny_cfg, tmp_path):
    """An edited trace, a deleted data.json, a checkpoint copied from another run of the
    same shape and a log that lost records: each refused with its reason, nothing changed;
    the old code accepted all four (the last continued with a gap: rounds 0, 1, 4, 5)."""
    import json
    import shutil

    import numpy as np

    from fsl_opt.problem.trace import synthesize

    trace = tmp_path / "trace.csv"
    synthesize(tiny_cfg.devices, 4, np.random.default_rng(0), availability=1.0).to_csv(trace)
    cfg = tiny_cfg.replace(rounds=4, trace=str(trace))
    out = tmp_path / "run"
    run(cfg, progress=False, stop_after=2)
    log = (out / "log.jsonl").read_text()
    recorded = json.loads((out / "data.json").read_text())
    assert set(recorded["inputs"]) == {"trace"} and len(recorded["run_id"]) == 32

    # an edited trace
    original = trace.read_text()
    trace.write_text(original.replace("\n1,", "\n1,", 1) + "\n")
    with pytest.raises(ConfigError, match=r"trace \(.*trace\.csv\) changed since the run started"):
        run(cfg, resume=True, progress=False)
    trace.write_text(original)

    # a deleted data.json
    data = (out / "data.json").read_text()
    (out / "data.json").unlink()
    with pytest.raises(ConfigError, match=r"data\.json is missing"):
        run(cfg, resume=True, progress=False)
    (out / "data.json").write_text(data)

    # another run's checkpoint, same shape
    other = cfg.replace(out=str(tmp_path / "other"))
    run(other, progress=False, stop_after=2)
    mine = tmp_path / "mine-checkpoint"
    shutil.copytree(out / "checkpoint", mine)
    shutil.rmtree(out / "checkpoint")
    shutil.copytree(tmp_path / "other" / "checkpoint", out / "checkpoint")
    with pytest.raises(ConfigError, match="checkpoint of another run"):
        run(cfg, resume=True, progress=False)
    shutil.rmtree(out / "checkpoint")
    shutil.copytree(mine, out / "checkpoint")

    # a log that lost a record before the checkpoint
    lines = log.splitlines(keepends=True)
    (out / "log.jsonl").write_text(lines[0] + lines[2])
    with pytest.raises(ConfigError, match="rounds 1 are missing"):
        run(cfg, resume=True, progress=False)
    assert (out / "log.jsonl").read_text() == lines[0] + lines[2]
    (out / "log.jsonl").write_text(log)

    records = run(cfg, resume=True, progress=False)  # all restored: it resumes
    assert [r["round"] for r in records] == [0, 1, 2, 3, 4]


def test_plan_resume_says_why_not(tmp_path, capsys):
    from fsl_opt.cli import main

    assert main(["plan", "--resume", "--out", str(tmp_path / "p")]) == 2
    assert "a plan is not resumed" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


def test_every_record_is_reported_once_in_order(tiny_cfg):
    """run(on_record=...) sees each round's record after it is logged and checkpointed (the
    deployed ServerApp logs a line per round with it)."""
    from fsl_opt.federation.flower_app import round_line

    seen = []
    records = run(tiny_cfg.replace(rounds=2), progress=False, on_record=seen.append)
    assert seen == records and [r["round"] for r in seen] == [0, 1, 2]
    line = round_line(records[1], 2)
    assert line.startswith(f"round 1/2, rank {records[1]['rank']}, accuracy ")
    assert round_line({**records[1], "lost_devices": [1]}, 2).count("lost devices 1") == 1


def test_a_checkpoint_that_does_not_fit_the_model_is_one_line(tiny_cfg, tmp_path):
    """The run's own checkpoint with its adapters' shapes changed (as another label count or
    layers would leave it): refused with the reason, not a traceback."""
    import torch
    from safetensors.torch import load_file, save_file

    cfg = tiny_cfg.replace(rounds=3)
    run(cfg, progress=False, stop_after=1)
    path = tmp_path / "run" / "checkpoint" / runlog.ADAPTERS
    state = load_file(str(path))
    key = next(iter(state))
    state[key] = torch.zeros(*(n + 3 for n in state[key].shape))
    save_file(state, str(path))
    with pytest.raises(ConfigError, match="does not fit this run's model"):
        run(cfg, resume=True, progress=False)


def test_a_run_records_which_code_made_each_stretch_of_it(tiny_cfg, tmp_path, monkeypatch):
    """provenance.jsonl: a line when the run starts (round 0) and one per resume (the first
    round it trains), each naming the commit; a resume by other code is visible."""
    import json

    from fsl_opt import provenance

    cfg = tiny_cfg.replace(rounds=3)
    monkeypatch.setattr(provenance, "git_commit", lambda cwd=None: "aaaaaaa")
    run(cfg, progress=False, stop_after=1)
    monkeypatch.setattr(provenance, "git_commit", lambda cwd=None: "bbbbbbb")
    run(cfg, resume=True, progress=False)
    lines = [
        json.loads(x) for x in (tmp_path / "run" / "provenance.jsonl").read_text().splitlines()
    ]
    assert [(x["first_round"], x["commit"]) for x in lines] == [(0, "aaaaaaa"), (2, "bbbbbbb")]
    assert {x["precision"] for x in lines} == {cfg.precision}
    assert all(x["versions"]["torch"] != "absent" for x in lines)
    # A finished run resumed again trains nothing and records nothing.
    run(cfg, resume=True, progress=False)
    assert len((tmp_path / "run" / "provenance.jsonl").read_text().splitlines()) == 2
    # Started again from scratch, the file starts again.
    run(cfg.replace(rounds=1), overwrite=True, progress=False)
    lines = (tmp_path / "run" / "provenance.jsonl").read_text().splitlines()
    assert [json.loads(x)["first_round"] for x in lines] == [0]
