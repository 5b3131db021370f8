"""Results as CSV: every experiment and benchmark writes and reads its tables here."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rows of dicts with the same keys, as CSV."""
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def read_csv(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV written by :func:`write_csv`."""
    with path.open() as fh:
        return list(csv.DictReader(fh))


def run_table(folder: Path) -> Path | None:
    """The CSV of an experiment's results folder whose rows are its finished runs (columns
    ``label``, ``seed`` and ``wall_s``): ``NAME.csv``, or the one such table of a variant's
    folder (``fig3-reuters8/fig3.csv``); None where there is none."""
    for table in [folder / f"{folder.name}.csv", *sorted(folder.glob("*.csv"))]:
        if table.exists():
            with table.open() as f:
                header = next(csv.reader(f), [])
            if {"label", "seed", "wall_s"} <= set(header):
                return table
    return None


def finished_runs(folder: Path) -> set[str] | None:
    """The run folders' names (``LABEL-sSEED``) with a row in the experiment's table: the
    runs that finished (a run in progress has a folder and no row yet); None where the
    folder has no such table."""
    table = run_table(folder)
    if table is None:
        return None
    return {f"{r['label']}-s{int(float(r['seed']))}" for r in read_csv(table)}
