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
