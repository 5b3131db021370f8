"""Stamps for results: git commit, package versions, seed (cf. peft's method_comparison);
and whether the machine is busy enough to spoil a timing."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fsl_opt.provenance import git_commit, machine, versions


def stamp(seed: int | None = None, **extra: Any) -> dict[str, Any]:
    """Everything needed to say where a result came from."""
    return {
        "commit": git_commit(Path(__file__).resolve().parent),
        "time_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "seed": seed,
        "versions": versions(),
        **extra,
    }


#: Share of all cores busy (measured over half a second) above which a benchmark warns.
BUSY_SHARE = 0.25


def cpu_busy_share(seconds: float = 0.5) -> float:
    """The share of all cores' time spent busy over the next ``seconds`` (Linux /proc/stat;
    nan elsewhere). Unlike the load average it does not lag."""
    import time

    def read() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields), idle

    try:
        total0, idle0 = read()
        time.sleep(seconds)
        total1, idle1 = read()
    except (OSError, ValueError, IndexError):
        return float("nan")
    spent = total1 - total0
    return 1.0 - (idle1 - idle0) / spent if spent > 0 else 0.0


def warn_if_busy() -> float:
    """Warn (stderr) when something else keeps the cores busy; return the busy share.

    Two jobs sharing the cores can slow each other far more than 2x (busy-waiting thread
    pools), so a benchmark taken beside another one says nothing about either.
    """
    import os
    import sys

    share = cpu_busy_share()
    if share > BUSY_SHARE:
        print(
            f"fsl-opt: warning: {100 * share:.0f}% of the {os.cpu_count()} cores were busy "
            "just before this benchmark: something else is running, and timings taken beside "
            "it are not comparable",
            file=sys.stderr,
        )
    return share
