"""Where a result came from: the code's git commit and the installed packages' versions.

A run records these in its folder each time a process starts or resumes it
(``provenance.jsonl``), and an experiment's ``summary.md`` names the commits its runs were
made at, so a result read later says which code made it even when its tables were drawn
again by newer code.
"""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

#: The packages whose versions a result records.
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
    "flwr",
)
#: What :func:`git_commit` says outside a git checkout (an installed wheel) or without git.
UNKNOWN = "unknown"


def git_commit(cwd: str | Path | None = None) -> str:
    """The short commit checked out at ``cwd`` (default: this package's folder), with
    ``-dirty`` when tracked files have changes, or :data:`UNKNOWN`."""
    where = Path(__file__).resolve().parent if cwd is None else cwd
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=where,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return UNKNOWN
    return (sha + ("-dirty" if dirty else "")) or UNKNOWN


def versions() -> dict[str, str]:
    """Installed versions of Python and of :data:`PACKAGES` (``absent`` where not installed)."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def machine() -> str:
    """The processor architecture (and name where the platform gives one)."""
    return f"{platform.machine()} {platform.processor() or ''}".strip()
