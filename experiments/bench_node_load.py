"""What a Flower node loads before it can train: every device's data (before) or its own.

``fsl-opt bench node-load`` times, each in a fresh process (as Flower starts a new
ClientApp process every round), with the README's default run settings (3 devices, 256
samples each, 1000 test samples, MiniLM, 128 tokens):

- ``all devices``: what a node loaded before: the whole workload (model, every device's
  cached hidden states and the test set), every round;
- ``own, first round``: the model and its own partition, computing and caching its hidden
  states (cold disk cache);
- ``own, later rounds``: the same with the disk cache warm.

It prints seconds and peak resident memory of each, and the ratios against ``all devices``
measured in the same run. Take it alone on the machine: the thread count is printed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from experiments.provenance import warn_if_busy
from experiments.tables import write_csv

_CHILD = """
import json, resource, sys, time, torch
from fsl_opt.federation.settings import RunConfig
from fsl_opt.federation.workload import load_device, load_workload
cfg = RunConfig(**json.loads(sys.argv[2]))
t = time.perf_counter()
if sys.argv[1] == "all":
    load_workload(cfg)
else:
    load_device(cfg, 0)
print(json.dumps({"seconds": time.perf_counter() - t,
                  "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "threads": torch.get_num_threads()}))
"""


def _measure(kind: str, settings: dict[str, Any], cache: Path) -> dict[str, Any]:
    import os

    env = {**os.environ, "FSL_OPT_CACHE": str(cache)}
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, kind, json.dumps(settings)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def main(out: str | Path, quick: bool = False) -> list[dict[str, Any]]:
    """Measure the three cases; write ``node_load.csv`` and print the ratios."""
    out = Path(out)
    warn_if_busy()
    settings: dict[str, Any] = (
        {"model": "tiny", "samples_per_device": 24, "test_samples": 48, "max_length": 32}
        if quick
        else {}
    )
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp)
        # Tokenize once first, so both sides read the same warm token cache.
        _measure("all", settings, cache)
        rows = [
            {"case": "all devices", **_measure("all", settings, cache)},
            {"case": "own, first round", **_measure("own", settings, cache)},
            {"case": "own, later rounds", **_measure("own", settings, cache)},
        ]
    base = rows[0]
    for row in rows:
        row["time_ratio"] = row["seconds"] / base["seconds"]
        row["memory_ratio"] = row["peak_mib"] / base["peak_mib"]
        print(
            f"{row['case']:>18}: {row['seconds']:6.2f} s ({row['time_ratio']:.2f}x), "
            f"peak {row['peak_mib']:7.1f} MiB ({row['memory_ratio']:.2f}x), "
            f"torch threads {row['threads']}"
        )
    write_csv(out / "node_load.csv", rows)
    return rows
