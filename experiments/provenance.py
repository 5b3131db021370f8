"""Stamps for results: git commit, package versions, seed (cf. peft's method_comparison)."""

from __future__ import annotations

import platform
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = (
    "fsl-opt",
    "numpy",
    "scipy",
    "cvxpy",
    "clarabel",
    "pulp",
    "torch",
    "transformers",
    "peft",
)


def git_commit(cwd: str | Path | None = None) -> str:
    """The current commit (with ``-dirty`` if the tree has changes), or ``unknown``."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def versions() -> dict[str, str]:
    """Installed versions of the packages results depend on."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def stamp(seed: int | None = None, **extra: Any) -> dict[str, Any]:
    """Everything needed to say where a result came from."""
    return {
        "commit": git_commit(Path(__file__).resolve().parent),
        "time_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "seed": seed,
        "versions": versions(),
        **extra,
    }


#: 1-minute load average above which a benchmark warns that it is not alone.
BUSY_LOAD = 0.5


def warn_if_busy() -> float:
    """Warn (stderr) when the 1-minute load average says another job is running; return it.

    Two jobs sharing the cores can slow each other far more than 2x (busy-waiting thread
    pools), so a benchmark taken beside another one says nothing about either. The load
    average lags by about a minute: a job that just ended still shows.
    """
    import os
    import sys

    try:
        load = os.getloadavg()[0]
    except OSError:  # not available on this platform
        return float("nan")
    if load > BUSY_LOAD:
        print(
            f"fsl-opt: warning: the 1-minute load average is {load:.2f} on {os.cpu_count()} "
            "cores: something else is running, and timings taken beside it are not comparable",
            file=sys.stderr,
        )
    return load
