"""Two threads in one process, or two single-threaded processes side by side?

A machine with two cores can run the experiments' runs one at a time, each on two torch
threads, or two at a time, each on one thread. ``fsl-opt bench threads`` times both on the
same run (the frontier's population: six ``calibrated`` devices, two at half clock, 128
training samples each, 400 test samples, MiniLM, 128 tokens, the machine's precision), each
``fsl-opt train`` in a fresh process:

- ``one run, 2 threads``: one run alone, torch's default threads on two cores;
- ``two runs, 1 thread each``: two copies of that run started together, each with
  ``OMP_NUM_THREADS=1``; the wall time until both end.

It prints the runs per hour of each and their ratio (above 1: side by side is faster) and
writes ``threads.csv``. A first, untimed run fills the token cache both cases then read. Take
it alone on the machine: anything else running makes the side-by-side case look worse.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from experiments.common import FULL as EXPERIMENT_FULL
from experiments.common import machine_precision
from experiments.frontier import POPULATION
from experiments.provenance import warn_if_busy
from experiments.tables import write_csv

#: The frontier's run at the experiments' full size (two rounds instead of eight: the rounds
#: are alike; the precision is the machine's, set below).
FULL = {
    **POPULATION,
    **{k: v for k, v in EXPERIMENT_FULL.items() if k != "precision"},
    "rounds": 2,
}
QUICK = dict(
    model="tiny", devices=3, samples_per_device=16, test_samples=48, max_length=32, rounds=1
)


def _command(settings: dict[str, Any], out: Path) -> list[str]:
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in settings.items()]
    return [
        sys.executable,
        "-m",
        "fsl_opt.cli",
        "train",
        *flags,
        "--quiet",
        "--no-plot",
        "--out",
        str(out),
    ]


def _start(
    settings: dict[str, Any], out: Path, cache: Path, threads: int | None, log: Path
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "FSL_OPT_CACHE": str(cache), "FSL_OPT_THREADS_LOG": str(log)}
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.pop(var, None)
        if threads is not None:
            env[var] = str(threads)
    return subprocess.Popen(
        _command(settings, out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def _wait(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        _, err = p.communicate()
        if p.returncode:
            raise RuntimeError(f"a timed run failed ({p.returncode}): {err.decode()[-2000:]}")


def _threads(log: Path) -> str:
    """The torch thread counts the runs reported, e.g. "2" or "1,1"."""
    seen = (
        [line.split()[1] for line in log.read_text().splitlines() if line.strip()]
        if log.exists()
        else []
    )
    return ",".join(seen) or "?"


def main(out: str | Path, quick: bool = False) -> list[dict[str, Any]]:
    """Time both cases; write ``threads.csv`` and print the ratio."""
    out = Path(out)
    warn_if_busy()
    settings = dict(QUICK if quick else FULL)
    settings["precision"] = machine_precision("bf16", "cpu")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cache = root / "cache"
        print("warm-up run (untimed: fills the token cache)", flush=True)
        _wait([_start(settings, root / "warm", cache, None, root / "warm.log")])
        for case, copies, threads in (
            ("one run, 2 threads", 1, None),
            ("two runs, 1 thread each", 2, 1),
        ):
            log = root / f"{copies}.log"
            t = time.perf_counter()
            _wait(
                [
                    _start(settings, root / f"{copies}-{i}", cache, threads, log)
                    for i in range(copies)
                ]
            )
            seconds = time.perf_counter() - t
            rows.append(
                {
                    "case": case,
                    "runs": copies,
                    "seconds": seconds,
                    "runs_per_hour": copies * 3600 / seconds,
                    "torch_threads": _threads(log),
                    "cpus": os.cpu_count(),
                    "precision": settings["precision"],
                }
            )
    base = float(rows[0]["runs_per_hour"])
    for row in rows:
        row["vs_one_process"] = row["runs_per_hour"] / base
        print(
            f"{row['case']:>24}: {row['runs']} run(s) in {row['seconds']:6.1f} s, "
            f"{row['runs_per_hour']:6.1f} runs/h ({row['vs_one_process']:.2f}x), "
            f"torch threads {row['torch_threads']}, {row['precision']}"
        )
    write_csv(out / "threads.csv", rows)
    return rows
