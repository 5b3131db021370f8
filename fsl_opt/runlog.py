"""What a run leaves behind: per-round records (JSONL and CSV) and checkpoints.

One record per round, appended as soon as the round ends: the server's decision (rank,
frequencies, binding constraints), the modeled delay and energy per device and phase, the
real payload size, the measured wall time, loss and accuracy. A checkpoint after every
round holds the adapters (safetensors), the devices' optimizer states and the RNG states,
written atomically.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path
from typing import Any

import torch

from fsl_opt import cost
from fsl_opt.strategy import RankFrequencyStrategy, RoundPlan

#: Columns of ``log.csv``; per-device lists are joined with ';'.
CSV_COLUMNS = (
    "round",
    "rank",
    "status",
    "method",
    "round_latency_s",
    "max_energy_j",
    "total_energy_j",
    "compute_time_s",
    "upload_time_s",
    "download_time_s",
    "compute_energy_j",
    "upload_energy_j",
    "latency_s",
    "energy_j",
    "frequencies_hz",
    "binding",
    "uploaded_bytes",
    "modeled_upload_bytes",
    "wall_time_s",
    "train_loss",
    "test_accuracy",
    "test_loss",
)
CONFIG_FILE, LOG_JSONL, LOG_CSV, CHECKPOINT = "config.toml", "log.jsonl", "log.csv", "checkpoint"


def round_record(
    plan: RoundPlan | None,
    rnd: int,
    payload_bytes: int | None,
    metrics: dict[str, float],
    wall: float,
) -> dict[str, Any]:
    """One log record: decisions, modeled costs per device, measured loss and accuracy."""
    rec: dict[str, Any] = {"round": rnd}
    if plan is not None:
        res, sysm = plan.result, plan.system
        rec.update(
            rank=plan.rank,
            status=res.status,
            method=res.method,
            frequencies_hz=res.frequencies_hz.tolist(),
            binding=res.binding_names(),
            latency_budget_s=sysm.latency_s,
            energy_budget_j=sysm.energy_budget_j.tolist(),
        )
        c = res.cost
        if c is not None:
            rec.update({k: v.tolist() for k, v in c.as_dict().items()})
            rec["round_latency_s"] = float(c.latency_s.max())
            rec["max_energy_j"] = float(c.energy_j.max())
            rec["total_energy_j"] = float(c.energy_j.sum())
        if plan.rank > 0:
            m = cost.upload_params(sysm, plan.rank)
            rec["modeled_upload_bytes"] = (m * sysm.bits_per_param / 8).tolist()
    rec["uploaded_bytes"] = payload_bytes
    rec["wall_time_s"] = wall
    rec.update(metrics)
    return rec


class RunLog:
    """Appends records to ``log.jsonl`` and ``log.csv`` as soon as each round ends."""

    def __init__(self, folder: Path) -> None:
        self.jsonl = folder / LOG_JSONL
        self.csv = folder / LOG_CSV

    def append(self, rec: dict[str, Any]) -> None:
        """Write one record to both files and flush."""
        with self.jsonl.open("a") as fh:
            fh.write(json.dumps(rec) + "\n")
        new = not self.csv.exists()
        with self.csv.open("a", newline="") as fh:
            w = csv.writer(fh)
            if new:
                w.writerow(CSV_COLUMNS)
            w.writerow([_cell(rec.get(c)) for c in CSV_COLUMNS])

    def records(self) -> list[dict[str, Any]]:
        """Every record written so far."""
        if not self.jsonl.exists():
            return []
        return [json.loads(line) for line in self.jsonl.read_text().splitlines() if line]

    def truncate(self, last_round: int) -> None:
        """Drop records after ``last_round`` (written after the last checkpoint)."""
        keep = [r for r in self.records() if r["round"] <= last_round]
        for path in (self.jsonl, self.csv):
            path.unlink(missing_ok=True)
        for r in keep:
            self.append(r)


def _cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, list):
        return ";".join(f"{x:.6g}" if isinstance(x, float) else str(x) for x in v)
    return v


def save_checkpoint(
    folder: Path,
    rnd: int,
    state: dict[str, torch.Tensor],
    opt_states: list[Any],
    strategy: RankFrequencyStrategy,
) -> None:
    """Adapters (safetensors), optimizer and RNG state after round ``rnd``, atomically."""
    from safetensors.torch import save_file

    tmp = folder / (CHECKPOINT + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / "adapters.safetensors"))
    torch.save(
        {
            "round": rnd,
            "optimizers": opt_states,
            "strategy": strategy.state(),
            "torch_rng": torch.get_rng_state(),
        },
        tmp / "state.pt",
    )
    final = folder / CHECKPOINT
    old = folder / (CHECKPOINT + ".old")
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(folder: Path) -> tuple[int, dict[str, torch.Tensor], list[Any], dict[str, Any]]:
    """(round, adapters, optimizer states, strategy state) of the last checkpoint."""
    from safetensors.torch import load_file

    path = folder / CHECKPOINT
    state = load_file(str(path / "adapters.safetensors"))
    extra = torch.load(path / "state.pt", weights_only=False)
    torch.set_rng_state(extra["torch_rng"])
    return extra["round"], state, extra["optimizers"], extra["strategy"]


def summary_table(records: list[dict[str, Any]]) -> str:
    """Round, rank, delay, energy, loss and accuracy, one line per round."""
    lines = [
        f"{'round':>5} {'rank':>5} {'status':>10} {'T_round [s]':>12} {'E_max [J]':>10} "
        f"{'train loss':>10} {'test acc':>9}"
    ]
    for r in records:

        def fmt(key: str, spec: str, r: dict[str, Any] = r) -> str:
            v = r.get(key)
            return (
                format(v, spec)
                if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v))
                else "-"
            )

        lines.append(
            f"{r['round']:>5} {fmt('rank', 'd'):>5} {r.get('status', '-'):>10} "
            f"{fmt('round_latency_s', '.4g'):>12} {fmt('max_energy_j', '.4g'):>10} "
            f"{fmt('train_loss', '.4f'):>10} {fmt('test_accuracy', '.4f'):>9}"
        )
    return "\n".join(lines)
