"""Kill a run anywhere: the log stays a prefix of the true one and --resume ends identical.

Two ways: crashes injected at every point of the record/checkpoint window (in process, each
point in every round), and real SIGKILLs of a `fsl-opt train` process at random instants.
"""

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from fsl_opt.errors import ConfigError
from fsl_opt.federation import loop, runlog
from fsl_opt.federation.loop import run


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("FSL_OPT_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


class Crash(BaseException):
    """Stands for the process dying: nothing after it runs (not even `except Exception`)."""


def _stable(records):
    """Records without the measured times (the only fields that may differ)."""
    return [{k: v for k, v in r.items() if k not in runlog.MEASURED_FIELDS} for r in records]


def _records(folder: Path):
    return runlog.RunLog(folder).records()


def _is_prefix(part, whole):
    return _stable(part) == _stable(whole)[: len(part)]


def _crash_in_append(fraction):
    real = runlog.RunLog.append

    def append(self, rec):
        if rec["round"] == 2:
            line = json.dumps(rec) + "\n"
            with self.jsonl.open("a") as fh:  # a torn line: part of the record, no newline
                fh.write(line[: int(len(line) * fraction)])
            raise Crash
        real(self, rec)

    return append


def _crash_in_checkpoint(stage):
    real_save = runlog.save_checkpoint

    def save(folder, rnd, state, planner, backend, run_id=None):
        if rnd != 2:
            return real_save(folder, rnd, state, planner, backend, run_id)
        if stage == "before":
            raise Crash
        tmp = folder / (runlog.CHECKPOINT + ".tmp")
        if stage == "tmp_incomplete":
            tmp.mkdir()
            (tmp / runlog.ADAPTERS).write_bytes(b"garbage")
            raise Crash
        real_rename = Path.rename

        def rename(self, target):
            real_rename(self, target)
            if stage == "between_renames" and self.name == runlog.CHECKPOINT:
                raise Crash  # old checkpoint moved aside, new one not yet in place

        Path.rename = rename  # type: ignore[method-assign]
        try:
            real_save(folder, rnd, state, planner, backend, run_id)
        finally:
            Path.rename = real_rename  # type: ignore[method-assign]
        if stage == "after":
            raise Crash

    return save


@pytest.mark.parametrize(
    "where",
    [
        ("append", 0.0),
        ("append", 0.5),
        ("append", 0.999),
        ("checkpoint", "before"),
        ("checkpoint", "tmp_incomplete"),
        ("checkpoint", "between_renames"),
        ("checkpoint", "after"),
    ],
)
def test_crash_in_the_record_checkpoint_window(tmp_path, tiny_cfg, monkeypatch, where):
    """A crash at each point of round 2's record/checkpoint writes, then --resume."""
    straight = run(tiny_cfg.replace(out=str(tmp_path / "straight")), progress=False)
    cfg = tiny_cfg.replace(out=str(tmp_path / "crashed"))
    kind, arg = where
    if kind == "append":
        monkeypatch.setattr(runlog.RunLog, "append", _crash_in_append(arg))
    else:
        monkeypatch.setattr(loop, "save_checkpoint", _crash_in_checkpoint(arg))
    with pytest.raises(Crash):
        run(cfg, progress=False)
    monkeypatch.undo()
    folder = Path(cfg.out)
    assert _is_prefix(_records(folder), straight)
    (folder / ".fsl-opt.lock").unlink(missing_ok=True)  # a killed process leaves none in-process
    resumed = run(cfg, resume=True, progress=False)
    assert _stable(resumed) == _stable(straight)
    assert _stable(_records(folder)) == _stable(straight)


def test_resume_refuses_without_checkpoint_and_deletes_nothing(tmp_path, tiny_cfg):
    """A log with no checkpoint beside it is refused, and the log is left as it was."""
    cfg = tiny_cfg.replace(rounds=1, out=str(tmp_path / "r"))
    run(cfg, progress=False)
    folder = Path(cfg.out)
    before = (folder / "log.jsonl").read_bytes()
    import shutil

    shutil.rmtree(folder / "checkpoint")
    with pytest.raises(ConfigError, match="no complete checkpoint"):
        run(cfg.replace(rounds=2), resume=True, progress=False)
    assert (folder / "log.jsonl").read_bytes() == before


def test_damaged_checkpoint_is_one_error(tmp_path, tiny_cfg):
    """Garbage adapters or an empty state file: one ConfigError, nothing deleted."""
    cfg = tiny_cfg.replace(rounds=1, out=str(tmp_path / "d"))
    run(cfg, progress=False)
    ckpt = Path(cfg.out) / "checkpoint"
    for name in (runlog.ADAPTERS, runlog.SERVER_STATE):
        saved = (ckpt / name).read_bytes()
        (ckpt / name).write_bytes(b"" if name == runlog.SERVER_STATE else b"\x00garbage")
        with pytest.raises(ConfigError, match="damaged checkpoint"):
            run(cfg.replace(rounds=2), resume=True, progress=False)
        (ckpt / name).write_bytes(saved)
    assert len(run(cfg.replace(rounds=2), resume=True, progress=False)) == 3


def test_resume_from_a_moved_folder_and_other_spellings(tmp_path, tiny_cfg, monkeypatch):
    """Resume keys on the settings: a moved folder, ./x, x/ and an absolute path all resume."""
    monkeypatch.chdir(tmp_path)
    straight = run(tiny_cfg.replace(out="straight"), progress=False)
    run(tiny_cfg.replace(out="first"), progress=False, stop_after=1)
    Path("first").rename("moved")
    run(tiny_cfg.replace(out="./moved/"), resume=True, progress=False, stop_after=2)
    done = run(tiny_cfg.replace(out=str(tmp_path / "moved")), resume=True, progress=False)
    assert _stable(done) == _stable(straight)
    with pytest.raises(ConfigError, match="rounds can grow on resume, not shrink"):
        run(tiny_cfg.replace(out="moved", rounds=1), resume=True, progress=False)
    longer = run(tiny_cfg.replace(out="moved", rounds=4), resume=True, progress=False)
    assert [r["round"] for r in longer] == [0, 1, 2, 3, 4]


#: The run the SIGKILLs interrupt: per-device ranks, a device left out (a weak one) and svd,
#: the paths with the most state to carry across a kill (the paper's settings are crashed
#: at every point of the record/checkpoint window above, in process).
PER_DEVICE_SVD = [
    *("--objective", "sum", "--min-devices", "2", "--aggregation", "svd"),
    *("--weak-devices", "1", "--weak-clock", "0.05"),
]
#: Seconds after a resumed process's first new record within which it is killed.
KILL_WINDOW_S = 0.15


def test_random_sigkills(tmp_path, monkeypatch, fsl_opt_process):
    """SIGKILL a real `fsl-opt train` process, resume after each kill: the same records as
    the same command run straight through (in this process). The first kill comes once
    round 1 is logged (the usual crash: between rounds); each later one at a random instant
    within KILL_WINDOW_S of the process's first new record (inside a round, a record or a
    checkpoint: the tiny run's rounds take 0.1-0.2 s, against the seconds of a process's
    start, where a kill timed from the launch would land). The processes are forked with
    their imports done (:func:`tests.helpers.preloaded_command`): the kills land in the
    command's own work either way, and four fresh interpreters' imports cost this test
    most of its time beside the suite's other workers."""
    monkeypatch.setenv("FSL_OPT_CACHE", str(tmp_path / "cache"))  # for the processes too
    cfg = tmp_path / "run.toml"
    cfg.write_text(
        'model = "tiny"\nsamples_per_device = 24\ntest_samples = 48\nrounds = 5\n'
        "max_length = 32\nbatch_size = 8\nlr = 5e-3\nmax_rank = 8\nreference_rank = 4\n"
    )
    args = ["train", "--config", str(cfg), "--quiet", "--no-plot", *PER_DEVICE_SVD]
    from fsl_opt.cli import main

    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    straight = _records(tmp_path / "a")
    rng = np.random.default_rng(7)
    out = tmp_path / "b"
    log = out / "log.jsonl"

    def lines() -> int:
        return len(log.read_text().splitlines()) if log.exists() else 0

    env, output = dict(os.environ), tmp_path / "processes.log"
    kills, instants = 0, []
    for attempt in range(3):  # the first kill after round 1, then up to two at random
        resume = ["--resume"] if log.exists() else []
        had = lines()
        proc = fsl_opt_process([*args, "--out", str(out), *resume], env, output)
        deadline = time.monotonic() + 240
        while lines() < (3 if attempt == 0 else had + 1) and proc.is_alive():
            assert time.monotonic() < deadline, f"no new record in attempt {attempt}"
            time.sleep(0.005)
        if attempt:
            instants.append(float(rng.uniform(0.0, KILL_WINDOW_S)))
            time.sleep(instants[-1])
        if proc.is_alive():
            os.kill(proc.pid, signal.SIGKILL)
            proc.join()
            assert proc.exitcode == -signal.SIGKILL, proc.exitcode
            kills += 1
            print(f"attempt {attempt}: killed with {lines()} records logged")
            assert _is_prefix(_records(out), straight), attempt
            continue
        proc.join()
        assert proc.exitcode == 0, output.read_text()
        break
    else:
        proc = fsl_opt_process([*args, "--out", str(out), "--resume"], env, output)
        proc.join(timeout=300)
        assert proc.exitcode == 0, output.read_text()
    assert kills >= 2, (kills, instants)  # one between rounds, at least one inside
    assert _stable(_records(out)) == _stable(straight)
    # The settings took: the weak device left out of round 1, the others' ranks differing.
    ranks = [r["ranks"] for r in straight[1:3]]
    assert ranks[0][0] == 0 and len(set(ranks[0][1:] + ranks[1][1:])) > 1, ranks
