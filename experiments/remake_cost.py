"""What the committed experiments cost against their FLOP floor (``fsl-opt bench remake-cost``).

Reads the committed results only: every results folder with runs (``runs/``) and its
table (``NAME.csv``, or the experiment's own name for a variant such as ``fig3-reuters8``);
each finished run's settings (``config.toml``) and records (``log.jsonl``) give the
arithmetic its rounds had to do, counted as the round profile counts it
(:func:`experiments.bench_training.round_flops`: forward and input-gradient backward of the
layers from the split up for every sample a device trained, times its local epochs, at its
rank; forward of the test samples after each round, at the round's largest rank); the
round-0 evaluation, done once per seed and workload, is left out, so the floor is a lower
bound. The floor divides that arithmetic by the GEMM rate the round profile measured on
this machine at the runs' precision (``experiments/results/training/round.csv``: the best
reading, 2 torch threads). Each run's time is its CSV row's ``wall_s`` (the sum of its
rounds' wall times). The ratio of the two says what the set cost beyond its arithmetic;
where runs were made side by side with other jobs their times are long, and the ratio says
so rather than measures the code.

Nothing is trained or timed here and nothing committed is written: the table goes to
``OUT/remake_cost.csv``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from experiments.tables import run_table, write_csv
from fsl_opt.federation.settings import load_config

RESULTS = Path(__file__).resolve().parent / "results"


def gemm_rate(results: Path = RESULTS) -> dict[str, float]:
    """The best GEMM rate [FLOP/s] of each precision in the committed round profile."""
    best: dict[str, float] = {}
    with (results / "training" / "round.csv").open() as f:
        for row in csv.DictReader(f):
            rate = float(row["gemm_gflop_s"]) * 1e9
            best[row["precision"]] = max(best.get(row["precision"], 0.0), rate)
    return best


def _shape(model: str, layers: str, cache: dict[tuple[str, str], Any]) -> Any:
    """The model's LoRA shape (the encoder is loaded once per model and layers)."""
    if (model, layers) not in cache:
        from fsl_opt.learning.split_model import SplitModel, layer_indices, load_encoder

        enc = load_encoder(model)
        split = SplitModel(enc, layer_indices(layers, len(enc.encoder.layer)), num_labels=2)
        cache[(model, layers)] = split.lora_shape()
    return cache[(model, layers)]


def run_flops(run: Path, cache: dict[tuple[str, str], Any]) -> tuple[float, int, str]:
    """A finished run's arithmetic (FLOP), its trained rounds and its precision."""
    from experiments.bench_training import round_flops

    cfg = load_config(run / "config.toml")
    shape = _shape(cfg.model, cfg.layers, cache)
    per_device = cfg.samples_per_device or 0
    flops, rounds = 0.0, 0
    with (run / "log.jsonl").open() as f:
        for line in f:
            rec = json.loads(line)
            ranks = rec.get("ranks") or []
            trained = [i for i in rec.get("selected_devices") or [] if i < len(ranks)]
            if not rec.get("round") or not trained:
                continue
            rounds += 1
            for i in trained:
                samples = per_device * cfg.local_epochs
                flops += round_flops(shape, int(ranks[i]), samples, 0, cfg.max_length)
            top = max(int(ranks[i]) for i in trained)
            flops += round_flops(shape, top, 0, cfg.test_samples or 0, cfg.max_length)
    return flops, rounds, cfg.precision


def experiment_cost(
    folder: Path, rates: dict[str, float], cache: dict[tuple[str, str], Any]
) -> dict[str, Any] | None:
    """One results folder's runs, trained rounds, arithmetic, floor and time (None: no
    finished runs)."""
    name = folder.name
    table = run_table(folder)
    if table is None or not (folder / "runs").is_dir():
        return None
    flops = wall = floor = 0.0
    runs = rounds = unrated = 0
    precisions = set()
    with table.open() as f:
        for row in csv.DictReader(f):
            run = folder / "runs" / f"{row['label']}-s{int(float(row['seed']))}"
            if not (run / "log.jsonl").exists():
                continue
            f_run, r_run, precision = run_flops(run, cache)
            if precision not in rates:  # no round profile at that precision on this machine
                unrated += 1
                continue
            flops += f_run
            floor += f_run / rates[precision]
            wall += float(row["wall_s"])
            runs += 1
            rounds += r_run
            precisions.add(precision)
    if not runs and not unrated:
        return None
    return {
        "experiment": name,
        "precision": ",".join(sorted(precisions)) or "-",
        "runs": runs,
        "trained_rounds": rounds,
        "tflop": flops / 1e12,
        "floor_h": floor / 3600,
        "wall_h": wall / 3600,
        "over_floor": wall / floor if floor else float("nan"),
        "runs_without_floor": unrated,
    }


def main(out: str | Path, quick: bool = False, results: Path = RESULTS) -> list[dict[str, Any]]:
    """Write ``OUT/remake_cost.csv`` and print each results folder's and the set's ratio
    (``quick``: the first folder with runs alone)."""
    folders = sorted(d for d in results.iterdir() if (d / "runs").is_dir())
    rates = gemm_rate(results)
    cache: dict[tuple[str, str], Any] = {}
    rows = []
    for folder in folders:
        row = experiment_cost(folder, rates, cache)
        if row is not None:
            rows.append(row)
            if quick:
                break
    if rows:
        total = {
            "experiment": "all",
            "precision": ",".join(sorted({p for r in rows for p in r["precision"].split(",")})),
            **{
                k: sum(r[k] for r in rows)
                for k in (
                    "runs",
                    "trained_rounds",
                    "runs_without_floor",
                    "tflop",
                    "floor_h",
                    "wall_h",
                )
            },
        }
        total["over_floor"] = total["wall_h"] / total["floor_h"]
        rows.append(total)
    Path(out).mkdir(parents=True, exist_ok=True)
    write_csv(Path(out) / "remake_cost.csv", rows)
    rate = ", ".join(f"{p} {r / 1e9:.0f} GFLOP/s" for p, r in rates.items())
    print(f"GEMM rate of the committed round profile: {rate}")
    for r in rows:
        print(
            f"{r['experiment']:>16}: {r['runs']:3d} runs, {r['trained_rounds']:4d} trained rounds, "
            f"{r['tflop']:8.1f} TFLOP, floor {r['floor_h']:.2f} h, runs' time {r['wall_h']:.2f} h "
            f"= {r['over_floor']:.2f}x the floor ({r['precision']}"
            + (
                f"; {r['runs_without_floor']} runs left out: no round profile at their "
                "precision here)"
                if r["runs_without_floor"]
                else ")"
            )
        )
    return rows
