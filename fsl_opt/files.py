"""A user's output file: never written over unasked, never through a link, whole or absent.

Every command that writes a single file the user names (``plot``, ``trace``,
``fit-accuracy``) checks it with :func:`new_file` before any work and writes it with
:func:`write_atomic`, so an existing file is replaced only with ``--overwrite``, a symbolic
link is refused rather than followed, and a crash mid-write leaves the old file (or none),
never half of one.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from fsl_opt.errors import ConfigError


def new_file(path: str | Path, *, overwrite: bool, flag: str = "--out", suffix: str = "") -> Path:
    """``path`` checked as a file to write: its suffix (``suffix``, e.g. ``".csv"``), not a
    link, not a folder, not there yet unless ``overwrite``."""
    path = Path(path)
    if suffix and path.suffix.lower() != suffix:
        raise ConfigError(f"{flag} {path}: expected a {suffix} file")
    if path.is_symlink():
        raise ConfigError(
            f"{flag} {path}: a symbolic link (fsl-opt never writes through one); give the "
            "file itself"
        )
    if path.is_dir():
        raise ConfigError(f"{flag} {path}: a folder; give a file name")
    if path.exists() and not overwrite:
        raise ConfigError(f"{flag} {path} exists: pass --overwrite to replace it")
    return path


def write_atomic(path: Path, write: Callable[[Path], object]) -> Path:
    """``write(tmp)`` to a temporary file beside ``path`` (same suffix), then renamed over
    ``path`` (a link there is replaced, not followed); the temporary file never stays."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
