"""What a run leaves behind: per-round records (JSONL and CSV) and checkpoints.

One record per round, appended and flushed to disk (fsync) as soon as the round ends: the
server's decision (rank, frequencies, binding constraints), the modeled delay and energy
per device and phase, the real payload size, the measured wall time, loss and accuracy. A
checkpoint after every round holds server state only (the adapters in safetensors, the
planner's RNG streams, torch's RNG); the backend writes its devices' state into the same
folder. It is written to ``checkpoint.tmp``, completed with a marker file, and then swapped
in, so a kill leaves either the old or the new checkpoint complete.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from fsl_opt.errors import ConfigError
from fsl_opt.federation.planner import RoundPlan, RoundPlanner
from fsl_opt.problem import cost

if TYPE_CHECKING:
    from fsl_opt.federation.backends import Backend

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
    "measured_compute_s",
    "upload_time_s",
    "download_time_s",
    "compute_energy_j",
    "upload_energy_j",
    "latency_s",
    "energy_j",
    "frequencies_hz",
    "tx_power_w",
    "binding",
    "ranks",
    "selected_devices",
    "planned_devices",
    "bandwidth_hz",
    "uploaded_bytes",
    "downloaded_bytes",
    "modeled_upload_bytes",
    "modeled_download_bytes",
    "lost_devices",
    "unavailable_devices",
    "wall_time_s",
    "train_loss",
    "test_accuracy",
    "test_loss",
    "energy_left_j",
    "time_left_s",
    "energy_queue_j",
    "time_queue_s",
    "policy_v",
    "round_length_s",
    "stop",
    "predicted_accuracy",
    "energy_price",
)
#: Record fields measured on the machine (times): they differ between two runs of the same
#: settings, which agree on every other field.
MEASURED_FIELDS = ("wall_time_s", "measured_compute_s")
#: Record fields that list device ids (not one value per device).
DEVICE_LISTS = ("selected_devices", "planned_devices", "lost_devices", "unavailable_devices")
CONFIG_FILE, LOG_JSONL, LOG_CSV, CHECKPOINT = "config.toml", "log.jsonl", "log.csv", "checkpoint"
#: The run's placement and the references its budgets were computed from.
PLACEMENT_FILE = "placement.json"
#: The fingerprint of the data the run trains and tests on (checked by a resume).
DATA_FILE = "data.json"
#: Which code made the run: a line each time a process starts or resumes it.
PROVENANCE_FILE = "provenance.jsonl"


def replace_file(path: Path, text: str) -> None:
    """Make ``path`` hold ``text``, whole or not at all: a new file is written beside it,
    flushed to disk and renamed over it (the old one is never removed first), so a kill at
    any instant leaves either the old content or the new."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as fh:
        fh.write(text)
        _sync(fh)
    os.replace(tmp, path)
    _sync_dir(path.parent)


#: Bytes of one round's records (log.jsonl and log.csv together): a fixed part and a part
#: per device (measured: 1000 devices x 3 rounds of ``plan`` wrote 1.0 MB, 340 bytes per
#: device-round); the estimate takes more of each, to refuse before running out.
RECORD_BYTES, RECORD_BYTES_PER_DEVICE = 4000, 500


def check_room(rounds: int, devices: int, folder: Path) -> None:
    """Refuse, before anything is written, records that would not fit on the disk holding
    ``folder`` (``rounds`` x ``devices`` device-rounds), or in memory (a plan keeps its
    records until it ends; about 3x their bytes as Python objects)."""
    need = rounds * (RECORD_BYTES + RECORD_BYTES_PER_DEVICE * devices)
    existing = next((p for p in [folder, *folder.absolute().parents] if p.exists()), Path("/"))
    free = shutil.disk_usage(existing).free
    if need > free:
        raise ConfigError(
            f"rounds = {rounds} with devices = {devices}: the records would take about "
            f"{need / 1e9:.1f} GB, more than the {free / 1e9:.1f} GB free on the disk holding "
            f"{folder}; plan fewer rounds or devices"
        )
    try:
        memory = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not on Linux
        return
    if 3 * need > memory:
        raise ConfigError(
            f"rounds = {rounds} with devices = {devices}: the records would take about "
            f"{3 * need / 1e9:.1f} GB of memory, more than the {memory / 1e9:.1f} GB "
            "available; plan fewer rounds or devices"
        )


def note_provenance(out: Path, first_round: int, **setup: Any) -> dict[str, Any]:
    """Record in ``out``'s :data:`PROVENANCE_FILE` that this process trains the run from
    ``first_round`` on: the git commit, package versions, machine and time, and ``setup``
    (the precision and devices the rounds run at). A fresh run (``first_round`` 0) starts
    the file; a resume adds a line, so a run continued by newer code says so."""
    from datetime import datetime, timezone

    from fsl_opt.provenance import git_commit, machine, versions

    line = {
        "first_round": first_round,
        "commit": git_commit(),
        "time_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        **setup,
        "versions": versions(),
    }
    path = out / PROVENANCE_FILE
    text = json.dumps(line) + "\n"
    if first_round == 0:
        replace_file(path, text)
    else:
        with path.open("a") as fh:
            fh.write(text)
            _sync(fh)
    return line


def write_json(path: Path, data: dict[str, Any]) -> None:
    """``data`` as indented JSON, written whole or not at all (:func:`replace_file`)."""
    replace_file(path, json.dumps(data, indent=1) + "\n")


#: Files of a checkpoint; ``COMPLETE`` is written last.
ADAPTERS, SERVER_STATE, COMPLETE = "adapters.safetensors", "server.pt", "COMPLETE"


def round_record(
    plan: RoundPlan | None, rnd: int, metrics: dict[str, Any], wall: float
) -> dict[str, Any]:
    """One log record: decisions (a rank, bandwidth and clock per device; rank 0 for a device
    left out, whose modeled costs are 0), modeled costs per device, the bytes each device
    really sent and received (``metrics``), measured loss and accuracy."""
    rec: dict[str, Any] = {"round": rnd}
    if plan is not None:
        res, sysm = plan.result, plan.system
        ranks = plan.ranks
        band = res.bandwidth_hz if res.bandwidth_hz is not None else sysm.bandwidth_hz
        rec.update(
            rank=plan.rank,
            ranks=ranks.tolist(),
            selected_devices=plan.selected,
            planned_devices=plan.planned,
            bandwidth_hz=np.where(ranks > 0, band, 0.0).tolist(),
            status=res.status,
            method=res.method,
            frequencies_hz=[
                float(f) if np.isfinite(f) and r > 0 else None
                for f, r in zip(res.frequencies_hz, ranks, strict=True)
            ],
            binding=res.binding_names(),
            latency_budget_s=sysm.latency_s,
            energy_budget_j=sysm.energy_budget_j.tolist(),
        )
        if sysm.power_control:  # each device's chosen uplink power (None: left out or lost)
            power = res.extra.get("tx_power_w", np.full(sysm.n_devices, np.nan))
            rec["tx_power_w"] = [
                float(p) if np.isfinite(p) and r > 0 else None
                for p, r in zip(power, ranks, strict=True)
            ]
        if plan.unavailable is not None:
            rec["unavailable_devices"] = list(plan.unavailable)
        if plan.stop:
            rec["status"] = "budget_spent"
            rec["stop"] = plan.stop
        if plan.energy_left_j is not None:
            rec["energy_left_j"] = plan.energy_left_j
        if plan.time_left_s is not None:
            rec["time_left_s"] = plan.time_left_s
        if plan.policy is not None:
            rec.update({k: v for k, v in plan.policy.items() if v is not None})
        if plan.predicted_accuracy is not None:
            rec["predicted_accuracy"] = plan.predicted_accuracy
        c = res.cost
        if c is not None and not plan.stop:
            # A device lost in the round is charged nothing, as one left out (its planned
            # costs were never spent as modeled).
            charged = {k: np.where(ranks > 0, v, 0.0) for k, v in c.as_dict().items()}
            rec.update({k: v.tolist() for k, v in charged.items()})
            rec["round_latency_s"] = float(charged["latency_s"].max())
            rec["max_energy_j"] = float(charged["energy_j"].max())
            rec["total_energy_j"] = float(charged["energy_j"].sum())
        if plan.selected:
            on = ranks > 0
            up = np.where(on, cost.upload_params(sysm, ranks), 0.0)
            down = np.where(on, cost.download_params(sysm, ranks), 0.0)
            rec["modeled_upload_bytes"] = (up * sysm.bits_per_param / 8).tolist()
            rec["modeled_download_bytes"] = (down * sysm.bits_per_param / 8).tolist()
    rec["wall_time_s"] = wall
    rec.update(metrics)
    return rec


class RunLog:
    """Appends records to ``log.jsonl`` and ``log.csv``, each flushed to disk before return;
    with ``tensorboard``, the same numbers to TensorBoard (``OUT/tensorboard``) as well."""

    def __init__(self, folder: Path, tensorboard: bool = False) -> None:
        self.folder = folder
        self.jsonl = folder / LOG_JSONL
        self.csv = folder / LOG_CSV
        self.tensorboard = tensorboard
        self.writer: Any = None

    def open_tensorboard(self, first_round: int) -> None:
        """Start the TensorBoard writer; events from ``first_round`` on (a resumed run's
        redone rounds) are purged, so each round shows once."""
        if not self.tensorboard:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                "tensorboard = true needs TensorBoard: pip install 'fsl-opt[tensorboard]'"
            ) from None
        self.writer = SummaryWriter(str(self.folder / "tensorboard"), purge_step=first_round)

    def close(self) -> None:
        """Flush and close the TensorBoard writer, if any."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def append(self, rec: dict[str, Any]) -> None:
        """Write one record to both files and fsync them (and to TensorBoard, if open)."""
        if self.writer is not None:
            _scalars(self.writer, rec)
        with self.jsonl.open("a") as fh:
            fh.write(json.dumps(rec) + "\n")
            _sync(fh)
        new = not self.csv.exists()
        with self.csv.open("a", newline="") as fh:
            w = csv.writer(fh)
            if new:
                w.writerow(CSV_COLUMNS)
            w.writerow([_cell(rec.get(c)) for c in CSV_COLUMNS])
            _sync(fh)

    def records(self) -> list[dict[str, Any]]:
        """Every complete record written so far (a torn last line, from a kill mid-write,
        is left out; a damaged line before the last is an error naming it)."""
        if not self.jsonl.exists():
            return []
        lines = self.jsonl.read_text(encoding="utf-8", errors="replace").split("\n")
        out = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                if number >= len(lines) - 1:  # the last line: torn by a kill
                    break
                raise ConfigError(f"{self.jsonl}: line {number} is not a record") from None
            if not isinstance(rec, dict) or not isinstance(rec.get("round"), int):
                raise ConfigError(f"{self.jsonl}: line {number} is not a record")
            out.append(rec)
        return out

    def last_round(self) -> int:
        """The last round logged (-1 for none)."""
        recs = self.records()
        return recs[-1]["round"] if recs else -1

    def truncate(self, last_round: int) -> None:
        """Keep the records up to ``last_round`` (the checkpoint's). Each file is rewritten
        whole (:func:`replace_file`), the JSONL first: a kill during a resume leaves every
        record that was there, never a shortened log."""
        keep = [r for r in self.records() if r["round"] <= last_round]
        replace_file(self.jsonl, "".join(json.dumps(r) + "\n" for r in keep))
        table = io.StringIO()
        w = csv.writer(table)
        w.writerow(CSV_COLUMNS)
        w.writerows([_cell(r.get(c)) for c in CSV_COLUMNS] for r in keep)
        replace_file(self.csv, table.getvalue())


def _scalars(writer: Any, rec: dict[str, Any]) -> None:
    """Every number of a record as a TensorBoard scalar at step = round (lists per device)."""
    step = rec["round"]
    for key, value in rec.items():
        if key == "round" or isinstance(value, bool):
            continue
        if isinstance(value, (int, float)) and math.isfinite(value):
            writer.add_scalar(key, value, step)
        elif isinstance(value, list) and key not in DEVICE_LISTS:
            for i, v in enumerate(value):
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                    writer.add_scalar(f"{key}/{i}", v, step)
    writer.flush()


def _sync(fh: Any) -> None:
    fh.flush()
    os.fsync(fh.fileno())


def _sync_dir(folder: Path) -> None:
    """Flush a rename in ``folder`` to disk (where the platform allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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
    planner: RoundPlanner,
    backend: Backend,
    run_id: str | None = None,
) -> None:
    """Server state after round ``rnd`` (and the backend's devices' state), atomically;
    ``run_id`` names the run it belongs to (a checkpoint copied from another run is then
    refused on resume)."""
    from safetensors.torch import save_file

    tmp = folder / (CHECKPOINT + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / ADAPTERS))
    server = {
        "round": rnd,
        "planner": planner.state(),
        "torch_rng": torch.get_rng_state(),
        "run_id": run_id,
    }
    torch.save(server, tmp / SERVER_STATE)
    backend.save_devices(tmp)
    (tmp / COMPLETE).write_text(str(rnd))
    final = folder / CHECKPOINT
    old = folder / (CHECKPOINT + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def has_checkpoint(folder: Path) -> int | None:
    """The round of the complete checkpoint in ``folder`` (None if there is none).

    Finishes an interrupted swap first: a complete ``checkpoint.tmp`` is the newest, else
    ``checkpoint.old`` is the last complete one.
    """
    final = folder / CHECKPOINT
    if not final.exists():
        for candidate in (folder / (CHECKPOINT + ".tmp"), folder / (CHECKPOINT + ".old")):
            if (candidate / COMPLETE).exists():
                candidate.rename(final)
                break
    try:
        return int((final / COMPLETE).read_text())
    except (OSError, ValueError):
        return None


def load_checkpoint(
    folder: Path, run_id: str | None = None
) -> tuple[int, dict[str, torch.Tensor], dict[str, Any]]:
    """(round, adapters, planner state) of the last checkpoint; restores torch's RNG. A
    checkpoint of another run than ``run_id`` (the id its ``data.json`` records) is
    refused."""
    from safetensors.torch import load_file

    path = folder / CHECKPOINT
    try:
        state = load_file(str(path / ADAPTERS))
        server = torch.load(path / SERVER_STATE, weights_only=False)
        rnd, planner, rng = server["round"], server["planner"], server["torch_rng"]
        own = server.get("run_id")
    except Exception as exc:  # a damaged file raises many kinds (SafetensorError, EOFError, ...)
        raise ConfigError(
            f"{path}: damaged checkpoint ({type(exc).__name__}); nothing was changed"
        ) from None
    if own != run_id:
        raise ConfigError(
            f"--resume: {path} is the checkpoint of another run (run {own or 'without an id'}, "
            f"this folder's data.json says {run_id or 'none'}); nothing was changed"
        )
    torch.set_rng_state(rng)
    return rnd, state, planner


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
