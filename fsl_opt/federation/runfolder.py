"""Run and experiment folders: claimed with a marker, held with a lock, never assumed.

A folder is this tool's only if it holds the marker file :data:`MARKER` (written when the
tool creates it); nothing that merely looks like a run counts (a run made before markers
existed is adopted once with ``fsl-opt adopt FOLDER``). The marker's kind says what the
folder holds (:data:`KINDS`: a trained run, a plan, an experiment's or a benchmark's
results), and one kind never replaces another.

``overwrite`` removes exactly the names a folder of that kind may hold (:data:`OWNED`:
what fsl-opt writes there), never the folder's other files: where anything else is there
(a user's file, or a folder that merely received a copied marker) it refuses and names
them, and it refuses a folder holding a file the same command reads. It never deletes
through a symbolic link, nor ``.``, the empty path, a folder that holds the current
directory, or the home folder. A new run refuses a non-empty folder that is not one of
ours, and an experiment or benchmark refuses a folder that holds another one. A lock file
with the holder's pid and host refuses a second live run in the same folder; a lock whose
process is gone is stale and taken over.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fsl_opt.errors import ConfigError

#: Marker that makes a folder this tool's (its JSON says which kind).
MARKER = ".fsl-opt"
#: Lock held by the live process using the folder.
LOCK = ".fsl-opt.lock"
#: What a folder may hold: a trained run (``train``), a plan (``plan``: records, no
#: training), an experiment's or a benchmark's results.
KINDS = ("run", "plan", "experiment", "benchmark")
#: The names fsl-opt writes at the top of a run or plan folder (its files, their temporary
#: and previous copies while they are swapped); ``overwrite`` removes these and nothing else.
_RECORDS = ("config.toml*", "log.jsonl*", "log.csv*", "placement.json*")
OWNED: dict[str, tuple[str, ...]] = {
    "run": (
        *_RECORDS,
        "data.json*",
        "provenance.jsonl*",
        "checkpoint",
        "checkpoint.*",
        "adapter",
        "adapter.*",
        "run.png",
        ".run.*.tmp.png",
        "tensorboard",
        "flower_devices.json*",
    ),
    "plan": (*_RECORDS, "provenance.jsonl*", "plan.png", ".plan.*.tmp.png"),
}


def _marker(folder: Path) -> dict[str, object]:
    try:
        doc = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def kind_of(folder: Path) -> str | None:
    """``"run"``, ``"plan"``, ``"experiment"`` ... when ``folder`` carries the marker, else
    None. A plan made before plans had their own kind (marked ``"run"``, its placement
    recorded as planned, no checkpoint) is a plan."""
    kind = _marker(folder).get("kind")
    if kind == "run" and _legacy_plan(folder):
        return "plan"
    return kind if isinstance(kind, str) else None


def _legacy_plan(folder: Path) -> bool:
    if any((folder / name).exists() for name in ("checkpoint", "data.json")):
        return False
    try:
        return json.loads((folder / "placement.json").read_text()).get("planned") is True
    except (OSError, ValueError, AttributeError):
        return False


def _compatible(held: str | None, kind: str) -> bool:
    """An experiment and a benchmark of one name share a folder (``solvers`` is both); a
    results folder marked before benchmarks had their own kind is a benchmark's too."""
    return held == kind or {held, kind} == {"experiment", "benchmark"}


def _owned(name: str, kind: str) -> bool:
    """Whether fsl-opt writes an entry called ``name`` in a ``kind`` folder."""
    return any(fnmatch.fnmatchcase(name, o) for o in (*OWNED.get(kind, ()), MARKER, LOCK))


def foreign(folder: Path, kind: str) -> list[str]:
    """The entries of ``folder`` that fsl-opt does not write in a ``kind`` folder (sorted)."""
    return sorted(p.name for p in folder.iterdir() if not _owned(p.name, kind))


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def name_of(folder: Path) -> str | None:
    """Which experiment or benchmark an ``experiment`` folder holds: its marker's name, or
    (folders marked before names were) the name its ``settings.json`` records."""
    name = _marker(folder).get("name")
    if isinstance(name, str):
        return name
    try:
        recorded = json.loads((folder / "settings.json").read_text()).get("experiment")
    except (OSError, ValueError, AttributeError):
        return None
    return recorded if isinstance(recorded, str) else None


def looks_like_run(folder: Path) -> bool:
    """A run written before markers existed: a config and a log, no marker."""
    return (folder / "config.toml").is_file() and (folder / "log.jsonl").is_file()


def adopt(folder: Path) -> None:
    """Mark a run made before markers existed as fsl-opt's (once, on the user's word)."""
    if not folder.is_dir():
        raise ConfigError(f"adopt {folder}: no such folder")
    if kind_of(folder) is not None:
        raise ConfigError(f"adopt {folder}: already a fsl-opt {kind_of(folder)} folder")
    if not looks_like_run(folder):
        raise ConfigError(f"adopt {folder}: holds no config.toml and log.jsonl of a run")
    try:
        (folder / MARKER).write_text(json.dumps({"kind": "run", "adopted": time.time()}))
    except OSError as exc:
        raise ConfigError(f"adopt {folder}: cannot write ({exc.strerror or exc})") from None


def _dangerous(folder: Path) -> str | None:
    """Why deleting ``folder`` would be a disaster, if it would."""
    target = folder.resolve()
    cwd = Path.cwd().resolve()
    if target == cwd or target in cwd.parents:
        return "it is (or holds) the current directory"
    if target == Path.home().resolve() or target == Path(target.anchor):
        return "it is the home or root folder"
    return None


def _is_empty(folder: Path) -> bool:
    return not any(folder.iterdir())


def _check_writable_dir(folder: Path, what: str) -> None:
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{what} {folder}: exists and is not a folder")
    parent = next((p for p in [folder, *folder.parents] if p.exists()), None)
    if parent is not None and not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {folder}: {parent} is not writable")


def prepare(
    folder: Path,
    kind: str,
    *,
    overwrite: bool = False,
    what: str = "--out",
    name: str | None = None,
    reads: dict[str, Path] | None = None,
) -> bool:
    """Make ``folder`` ready as a ``kind`` folder; True when it already holds one.

    - ``overwrite``: empty it first of what fsl-opt wrote there (:data:`OWNED`), only if it
      carries our marker of the same kind, is not a symbolic link, holds nothing else, and
      holds none of the files the command reads (``reads``: each one's setting, e.g.
      ``data``, and its path).
    - otherwise an existing folder must be empty or ours (of the same kind, and for a named
      experiment or benchmark, of the same name); whether an existing one may be continued
      is the caller's decision.
    """
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r}: expected one of {KINDS}")
    if overwrite and kind not in OWNED:
        raise ValueError(f"a {kind} folder is never overwritten")
    if str(folder).strip() in ("", "."):
        raise ConfigError(f"{what} {str(folder)!r}: give a folder of its own, not '.' or ''")
    if folder.is_symlink() and overwrite:
        raise ConfigError(
            f"--overwrite {folder}: refused, it is a symbolic link (fsl-opt never deletes "
            "through one); remove the link or give the folder it points to"
        )
    _check_writable_dir(folder, what)
    existing = folder.exists() and not _is_empty(folder)
    ours = kind_of(folder) if existing else None
    if existing and not _compatible(ours, kind):
        found = f"a fsl-opt {ours} folder" if ours else "files that are not a fsl-opt " + kind
        hint = (
            f" (a run made before fsl-opt marked its folders: `fsl-opt adopt {folder}` "
            "once makes it one)"
            if ours is None and looks_like_run(folder)
            else ""
        )
        raise ConfigError(
            f"{what} {folder}: holds {found}; choose an empty or new folder "
            f"(fsl-opt deletes or writes into only its own {kind} folders){hint}"
        )
    held = name_of(folder) if existing and name is not None else None
    if held is not None and held != name:
        raise ConfigError(
            f"{what} {folder}: holds the results of {held!r}, not {name!r}; choose another "
            "folder (fsl-opt never writes one experiment's results over another's)"
        )
    if overwrite and existing:
        danger = _dangerous(folder)
        if danger:
            raise ConfigError(f"--overwrite {folder}: refused, {danger}")
        read = [f"{key} ({path})" for key, path in (reads or {}).items() if _inside(path, folder)]
        if read:
            raise ConfigError(
                f"--overwrite {folder}: refused, this command reads {', '.join(read)} inside "
                "it; move that out of the folder first (fsl-opt never deletes its own input)"
            )
        others = foreign(folder, kind)
        if others:
            shown = ", ".join(others[:5]) + (
                f" and {len(others) - 5} more" if len(others) > 5 else ""
            )
            raise ConfigError(
                f"--overwrite {folder}: refused, it holds {shown}, which fsl-opt did not write "
                f"in a {kind} folder; move them out, or choose another folder (fsl-opt deletes "
                "only what it wrote)"
            )
        with lock(folder):
            pass  # refuses while a live process holds it
        _empty_owned(folder, kind)
        existing = False
    try:
        folder.mkdir(parents=True, exist_ok=True)
        marker = _marker(folder)
        if not marker or (name is not None and "name" not in marker):
            stamp = {"kind": kind, "created": time.time(), **marker}
            if name is not None:
                stamp["name"] = name
            (folder / MARKER).write_text(json.dumps(stamp))
    except OSError as exc:
        raise ConfigError(f"{what} {folder}: cannot write ({exc.strerror or exc})") from None
    return existing


def _empty_owned(folder: Path, kind: str) -> None:
    """Remove what fsl-opt wrote in ``folder`` (a ``kind`` folder) and nothing else, the
    marker last; links are removed, never followed."""
    for entry in sorted(folder.iterdir()):
        if entry.name in (MARKER, LOCK) or not _owned(entry.name, kind):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    (folder / MARKER).unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def lock(folder: Path) -> Iterator[None]:
    """Hold ``folder``'s lock for the block; a live holder is refused with its pid."""
    path = folder / LOCK
    if (path.exists() or path.is_symlink()) and not path.is_file():
        raise ConfigError(
            f"{path}: not a lock file (a folder or a dangling link stands where fsl-opt keeps "
            "its lock); remove it if no fsl-opt process uses this folder"
        )
    me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                holder = json.loads(path.read_text())
            except (OSError, ValueError):
                holder = {}
            pid, host = holder.get("pid"), holder.get("host")
            if isinstance(pid, int) and (host != me["host"] or _alive(pid)):
                raise ConfigError(
                    f"{folder} is in use by process {pid} on {host}; wait for it to end "
                    f"(or remove {path} if that process is gone)"
                ) from None
            path.unlink(missing_ok=True)  # stale: its process is gone
            continue
        with os.fdopen(fd, "w") as fh:
            json.dump(me, fh)
        break
    else:  # pragma: no cover - two processes racing for a stale lock
        raise ConfigError(f"{folder}: could not take the lock {path}")
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
