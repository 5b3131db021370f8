"""Backend benchmark: in-process against Flower's simulation engine, 3 / 30 / 100 devices.

``fsl-opt bench flower`` runs, for each device count and backend, a fresh process with a
2-round run of the offline model on tiny shards, and reports the round times from the run's
own log (solve, local training of every device, aggregation, evaluation; the first round
apart, since Flower starts its actors and each loads the model then), the peak resident
memory of the whole process tree (the Flower run's Ray workers included), sampled every
0.2 s, and the torch thread count of every process that trained (reported by the processes
themselves). Take it alone: it warns when the cores are busy as it starts. Both backends
run the same client and server code; the difference is the transport (and Flower's
per-actor copy of the model).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from experiments.tables import write_csv
from fsl_opt.learning.local import THREADS_LOG


def _tree_rss_mib(root: int) -> float:
    """Resident memory of ``root`` and all its descendants (Linux /proc)."""
    total, stack, seen = 0, [root], set()
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            for task in Path(f"/proc/{pid}/task").iterdir():
                children = (task / "children").read_text().split()
                stack.extend(int(c) for c in children)
        except (OSError, ValueError):
            continue
    return total / 1024


def measure(backend: str, devices: int, out: Path) -> dict[str, Any]:
    """One run in a fresh interpreter; peak memory of its process tree."""
    folder = out / "runs" / f"{backend}-{devices}"
    cmd = [
        sys.executable,
        "-m",
        "fsl_opt.cli",
        "train",
        "--backend",
        backend,
        "--quiet",
        "--overwrite",
        "--devices",
        str(devices),
        "--samples-per-device",
        "8",
        "--test-samples",
        "64",
        "--rounds",
        "2",
        "--rank",
        "8",
        "--out",
        str(folder),
        "--config",
        str(out / "bench.toml"),
    ]
    threads_log = out / f"threads-{backend}-{devices}.txt"
    threads_log.unlink(missing_ok=True)
    env = {**os.environ, THREADS_LOG: str(threads_log)}
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env
    )
    peak = 0.0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_rss_mib(proc.pid))
            time.sleep(0.2)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    _, err = proc.communicate()
    done.set()
    watcher.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{backend} with {devices} devices failed:\n{err[-2000:]}")
    noted = [line.split() for line in threads_log.read_text().splitlines() if line.strip()]
    threads_log.unlink()
    return {
        "backend": backend,
        "devices": devices,
        **round_times(folder),
        "total_s": time.perf_counter() - started,
        "peak_tree_rss_mib": peak,
        "training_processes": len(noted),
        "torch_threads": "/".join(sorted({t for _, t in noted})),
    }


def round_times(folder: Path) -> dict[str, float]:
    """First round (Flower: actors start and load the model) and the later rounds' mean."""
    records = [json.loads(x) for x in (folder / "log.jsonl").read_text().splitlines()]
    rounds = [r["wall_time_s"] for r in records if r["round"] > 0]
    return {"first_round_s": rounds[0], "steady_round_s": sum(rounds[1:]) / len(rounds[1:])}


def main(out: str | Path, quick: bool = False) -> list[dict[str, Any]]:
    """Both backends at each device count; CSV and a printed table."""
    from experiments.provenance import warn_if_busy

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    warn_if_busy()
    (out / "bench.toml").write_text("max_length = 32\nbatch_size = 8\n")
    rows = [
        measure(b, n, out)
        for n in ([3] if quick else [3, 30, 100])
        for b in ("inprocess", "flower")
    ]
    write_csv(out / "backends.csv", rows)
    by = {(r["backend"], r["devices"]): r for r in rows}
    for n in sorted({r["devices"] for r in rows}):
        a, b = by[("inprocess", n)], by[("flower", n)]
        print(
            f"{n:>4} devices: later rounds {a['steady_round_s']:.2f} s in-process vs "
            f"{b['steady_round_s']:.2f} s Flower "
            f"({b['steady_round_s'] / a['steady_round_s']:.2f}x); first round "
            f"{a['first_round_s']:.1f} vs {b['first_round_s']:.1f} s; peak memory "
            f"{a['peak_tree_rss_mib']:.0f} vs {b['peak_tree_rss_mib']:.0f} MiB "
            f"({b['peak_tree_rss_mib'] / a['peak_tree_rss_mib']:.2f}x); torch threads: "
            f"{a['torch_threads']} in the one in-process process, {b['torch_threads']} in each "
            f"of Flower's {b['training_processes']} training processes"
        )
    return rows
