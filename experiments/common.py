"""Shared machinery of the paper's figures: a list of runs, a CSV, a PNG from the CSV.

Every experiment is a list of :class:`Run` (a label, the x value, the group it belongs to,
and the :class:`~fsl_opt.federation.settings.RunConfig` changes). Each run gets its own folder
under ``OUT/runs/`` (config, log, checkpoint), so an interrupted experiment resumes where
it stopped; one row per finished run is appended to ``OUT/NAME.csv`` at once. The PNG is
drawn from the CSV alone, and ``OUT/summary.md`` records the setup and provenance.
"""

from __future__ import annotations

import csv
import functools
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from experiments.provenance import stamp
from fsl_opt.errors import ConfigError
from fsl_opt.federation import runfolder
from fsl_opt.federation.loop import check_runnable, run
from fsl_opt.federation.settings import RunConfig, differences
from fsl_opt.federation.workload import Workload, load_workload, workload_key

#: Settings of ``--quick``: tiny data, two rounds (CI runs every experiment this way).
QUICK = dict(samples_per_device=16, test_samples=48, rounds=2, max_length=32, batch_size=8)
#: Settings of the full offline runs. bf16 products (where the CPU or GPU has them): the
#: ``precision`` experiment measured the same mean final accuracy as fp32 to 0.1 point over
#: 3 seeds, at about 1.4x less time per run; an experiment may pin ``precision`` itself.
FULL = dict(
    samples_per_device=128,
    test_samples=400,
    rounds=3,
    max_length=128,
    batch_size=16,
    precision="bf16",
)

ROW_KEYS = (
    "experiment",
    "group",
    "x",
    "seed",
    "label",
    "rounds",
    "untuned_accuracy",
    "final_accuracy",
    "best_accuracy",
    "mean_rank",
    "skipped_rounds",
    "mean_latency_s",
    "mean_max_energy_j",
    "latency_s",
    "energy_budget_j",
    "wall_s",
)


@dataclass(frozen=True)
class Run:
    """One training run of an experiment."""

    label: str
    group: str
    x: float
    seed: int
    changes: dict[str, Any] = field(default_factory=dict)


def machine_precision(wanted: str, torch_device_name: str) -> str:
    """The precision an experiment runs at on this machine: ``wanted``, or fp32 where it is
    bf16 and the device has no native bf16 (emulated bf16 is slower than fp32; the
    ``precision`` experiment measured the same mean accuracy to 0.1 point). The choice is
    recorded in the experiment's ``settings.json`` and ``summary.md``; a precision the
    user names on the command line is never replaced (it is refused where it cannot run)."""
    if wanted != "bf16":
        return wanted
    from fsl_opt.federation.workload import torch_device
    from fsl_opt.learning.local import bf16_support

    why = bf16_support(torch_device(torch_device_name))
    if not why:
        return wanted
    _say_once(f"precision: fp32 instead of the experiment's bf16 ({why})")
    return "fp32"


@functools.cache
def _say_once(line: str) -> None:
    print(line)


def base_config(quick: bool, overrides: dict[str, Any] | None = None) -> RunConfig:
    """The offline default at the experiment's size, then ``overrides`` (the command line's
    ``--model``, ``--data``, ``--torch-device``), validated as one :class:`RunConfig`."""
    return RunConfig(**{**(QUICK if quick else FULL), **(overrides or {})})


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """A run's log reduced to one row (final and best accuracy, mean rank and costs)."""
    rounds = [r for r in records if r["round"] > 0]
    ranks = [r["rank"] for r in rounds]
    lat = [r["round_latency_s"] for r in rounds if r.get("round_latency_s") is not None]
    eng = [r["max_energy_j"] for r in rounds if r.get("max_energy_j") is not None]
    return {
        "rounds": len(rounds),
        "untuned_accuracy": records[0]["test_accuracy"],
        "final_accuracy": records[-1]["test_accuracy"],
        "best_accuracy": max(r["test_accuracy"] for r in records),
        "mean_rank": float(np.mean(ranks)) if ranks else 0.0,
        "skipped_rounds": sum(1 for r in ranks if r == 0),
        "mean_latency_s": float(np.mean(lat)) if lat else float("nan"),
        "mean_max_energy_j": float(np.mean(eng)) if eng else float("nan"),
    }


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of an experiment CSV, numbers parsed."""
    if not path.exists():
        return []
    out = []
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            if None in row.values() or None in row:
                continue  # a row torn by a kill mid-write (repaired by the next run)
            parsed: dict[str, Any] = {}
            for k, v in row.items():
                try:
                    parsed[k] = float(v) if k not in ("experiment", "group", "label") else v
                except ValueError:
                    parsed[k] = v
            out.append(parsed)
    return out


def check_all(base: RunConfig, runs: list[Run]) -> None:
    """:func:`~fsl_opt.federation.loop.check_runnable` on the base settings and on every
    run that names its own trace."""
    check_runnable(base)
    for trace in dict.fromkeys(s.changes["trace"] for s in runs if s.changes.get("trace")):
        check_runnable(base.replace(trace=trace))


def run_all(
    name: str, runs: list[Run], base: RunConfig, out: Path, progress: bool = True
) -> list[dict[str, Any]]:
    """Run every run not yet in ``OUT/NAME.csv`` (appending each row as it finishes).

    ``OUT`` holds one experiment made with one set of settings: a rerun with other settings
    (another model, ``--quick`` into a full run's folder) is refused rather than mixed in.
    """
    check_all(base, runs)  # before the folder is made
    runfolder.prepare(out, "experiment", name=name)
    with runfolder.lock(out):
        _check_settings(out, name, base)
        return _run_all(name, runs, base, out, progress)


def _check_settings(out: Path, name: str, base: RunConfig) -> None:
    """Record the experiment's settings in ``OUT/settings.json``, or check them against it."""
    mine = {"experiment": name, **{k: v for k, v in base.to_dict().items() if k != "out"}}
    path = out / "settings.json"
    if path.exists():
        try:
            theirs = json.loads(path.read_text())
        except ValueError:
            raise ConfigError(f"{path}: not JSON; move it away to rerun here") from None
        # A setting added since the file was written had its default's behaviour then.
        defaults = {k: v for k, v in RunConfig().to_dict().items() if k != "out"}
        shown = differences(_resolved({**defaults, **theirs}), _resolved(mine))
        if shown:
            raise ConfigError(
                f"{out} holds {theirs.get('experiment')} results made with other settings: "
                f"{shown}; give another --out"
            )
        return
    if (out / f"{name}.csv").exists():
        raise ConfigError(
            f"{out} holds {name}.csv but no settings.json saying how it was made; "
            "give another --out"
        )
    path.write_text(json.dumps(mine, indent=1) + "\n")


def _resolved(settings: dict[str, Any]) -> dict[str, Any]:
    """``method = "auto"`` written as the solver it runs for these settings (results made
    before ``auto`` existed name that solver)."""
    if settings.get("method") != "auto":
        return settings
    cfg = RunConfig(**{k: v for k, v in settings.items() if k in RunConfig.__dataclass_fields__})
    return {**settings, "method": "per_device" if cfg.extended else "bisection"}


def _repair_tail(path: Path) -> None:
    """Cut a last line torn by a kill (no newline), so the next row starts a line of its own."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])


def _run_all(
    name: str, runs: list[Run], base: RunConfig, out: Path, progress: bool
) -> list[dict[str, Any]]:
    table = out / f"{name}.csv"
    _repair_tail(table)
    done = {(r["label"], int(r["seed"])) for r in read_rows(table)}
    workload: Workload | None = None
    todo = [r for r in runs if (r.label, r.seed) not in done]
    for spec in tqdm(todo, desc=name, unit="run", disable=not progress):
        cfg = base.replace(
            seed=spec.seed, out=str(out / "runs" / f"{spec.label}-s{spec.seed}"), **spec.changes
        )
        if workload is None or workload.key != workload_key(cfg):
            workload = load_workload(cfg)
        started = time.perf_counter()
        resume = (Path(cfg.out) / "log.jsonl").exists()
        records = run(cfg, resume=resume, progress=False, workload=workload)
        t0, e0 = _budgets(cfg.out)
        row = {
            "experiment": name,
            "group": spec.group,
            "x": spec.x,
            "seed": spec.seed,
            "label": spec.label,
            **summarize(records),
            "latency_s": t0,
            "energy_budget_j": e0,
            "wall_s": time.perf_counter() - started,
        }
        _append(table, row)
    draw_seed_runs(name, runs, out)
    return read_rows(table)


def draw_seed_runs(name: str, runs: list[Run], out: Path) -> Path | None:
    """``OUT/runs.png``: every run of the first seed, drawn by ``fsl-opt plot``'s code
    (accuracy against round, cumulative modeled latency and energy; ranks)."""
    from fsl_opt.federation.plot import draw_runs

    if not runs:
        return None
    first = min(r.seed for r in runs)
    chosen = [r for r in runs if r.seed == first]
    folders = [out / "runs" / f"{r.label}-s{r.seed}" for r in chosen]
    present = [
        (f, r.label) for f, r in zip(folders, chosen, strict=True) if (f / "log.jsonl").exists()
    ]
    if not present:
        return None
    return draw_runs(
        [f for f, _ in present],
        out / "runs.png",
        title=f"{name}: the runs of seed {first}",
        labels=[label for _, label in present],
    )


def _budgets(folder: str) -> tuple[float, float]:
    """T0 and E0 the run used (from its first round record)."""
    for line in (Path(folder) / "log.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "latency_budget_s" in rec:
            return rec["latency_budget_s"], max(rec["energy_budget_j"])
    return float("nan"), float("nan")


def _append(path: Path, row: dict[str, Any]) -> None:
    new = not path.exists()
    with path.open("a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(ROW_KEYS))
        if new:
            w.writeheader()
        w.writerow({k: row.get(k, "") for k in ROW_KEYS})
        fh.flush()
        os.fsync(fh.fileno())


def by_group(
    rows: list[dict[str, Any]], value: str = "final_accuracy"
) -> dict[str, dict[float, list[float]]]:
    """{group: {x: [value per seed]}}."""
    out: dict[str, dict[float, list[float]]] = {}
    for r in rows:
        out.setdefault(r["group"], {}).setdefault(float(r["x"]), []).append(float(r[value]))
    return out


def write_summary(
    out: Path,
    name: str,
    title: str,
    base: RunConfig,
    runs: list[Run],
    quick: bool,
    findings: list[str],
    extra: dict[str, Any] | None = None,
    rows: list[dict[str, Any]] | None = None,
) -> None:
    """``summary.md``: setup, what the numbers say, provenance. The runs and seeds named are
    those of ``rows`` (every row the CSV holds, which the findings summarize; a later call
    with other seeds adds to them), else of ``runs``."""
    if rows is not None:
        seeds = sorted({int(float(r["seed"])) for r in rows})
        count = len(rows)
    else:
        seeds, count = sorted({r.seed for r in runs}), len(runs)
    folders = (
        [out / "runs" / f"{r['label']}-s{int(float(r['seed']))}" for r in rows if "label" in r]
        if rows is not None
        else [out / "runs" / f"{r.label}-s{r.seed}" for r in runs]
    )
    made = runs_made_at(folders)
    meta = stamp(
        seeds[0] if seeds else None,
        seeds=seeds,
        quick=quick,
        runs_made_at=made,
        **(extra or {}),
    )
    shown = "; ".join(f"{k}: {v} run{'s' if v != 1 else ''}" for k, v in made.items())
    lines = [
        f"# {title}",
        "",
        f"- model `{base.model}`, data `{base.data}`, {base.devices} devices "
        f"({base.partition}), {base.samples_per_device} training samples per device, "
        f"{base.test_samples} test samples, {base.rounds} rounds, 1 local epoch, lr {base.lr}, "
        f"max length {base.max_length}, preset `{base.preset}`, {base.precision} products",
        f"- {count} runs, seeds {seeds}; results: `{name}.csv`, figure: `{name}.png`, "
        f"per-run logs: `runs/`",
        f"- runs made at commit ({shown or 'none'}); tables, figure and this summary at "
        f"commit {meta['commit']}",
        "",
        "## Findings",
        "",
        *[f"- {f}" for f in findings],
        "",
        "## Provenance",
        "",
        "```json",
        json.dumps(meta, indent=1),
        "```",
        "",
    ]
    (out / "summary.md").write_text("\n".join(lines))


#: What :func:`runs_made_at` says of a run whose folder records no provenance (made before
#: runs recorded it).
NOT_RECORDED = "not recorded"


def runs_made_at(folders: list[Path]) -> dict[str, int]:
    """How many of the runs in ``folders`` each commit made, from their provenance
    records: ``{"a3b1fb1 (fp32)": 61, "a3b1fb1 then 5e0c2d1 (fp32)": 2}`` (a run resumed by
    other code names each commit in turn), most first; runs that record none are counted
    under :data:`NOT_RECORDED`."""
    from fsl_opt.federation.runlog import PROVENANCE_FILE

    counts: dict[str, int] = {}
    for folder in folders:
        path = folder / PROVENANCE_FILE
        lines = []
        if path.is_file():
            for text in path.read_text().splitlines():
                try:
                    lines.append(json.loads(text))
                except ValueError:
                    continue  # a line torn by a kill says nothing
        lines = [x for x in lines if isinstance(x, dict)]
        if not lines:
            key = NOT_RECORDED
        else:
            commits = list(dict.fromkeys(str(x.get("commit", "unknown")) for x in lines))
            precisions = list(dict.fromkeys(str(x["precision"]) for x in lines if "precision" in x))
            key = " then ".join(commits) + (f" ({', '.join(precisions)})" if precisions else "")
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def mean_range(values: list[float]) -> tuple[float, float, float]:
    """Mean, least and largest value over seeds: the spread a figure draws (a standard
    deviation band can leave [0, 1] when one seed never trains)."""
    a = np.asarray(values, dtype=float)
    return float(a.mean()), float(a.min()), float(a.max())


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    a = np.asarray(values, dtype=float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def plot_png(
    out: Path, name: str, draw: Callable[[Any, list[dict[str, Any]]], None], ncols: int = 1
) -> Path:
    """Draw ``NAME.png`` from ``NAME.csv`` with ``draw(axes, rows)``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_rows(out / f"{name}.csv")
    fig, axes = plt.subplots(1, ncols, figsize=(5.2 * ncols, 4.0), squeeze=False)
    draw(axes[0], rows)
    fig.tight_layout()
    path = out / f"{name}.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


@dataclass
class Results:
    """What an experiment's figure and findings read: one row per run (``NAME.csv``) and
    the tables derived from the runs' logs (``NAME_<table>.csv``)."""

    rows: list[dict[str, Any]]
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


@dataclass(frozen=True)
class Experiment:
    """An experiment, declared: its runs, its figure and its findings.

    :meth:`main` (what ``fsl-opt experiment NAME`` calls) executes every declaration the
    same way: settings, runs (resumed where a folder holds some), derived tables, the PNG
    from the CSV, the findings, ``summary.md``.

    Attributes
    ----------
    name, title : str
        Results go to ``NAME.csv`` / ``NAME.png``; the title heads the summary.
    runs : callable
        ``runs(seeds, quick)``: every run, as :class:`Run` (label, group, x, seed, settings).
    draw : callable
        ``draw(axes, results)`` on a row of ``ncols`` axes.
    findings : callable
        ``findings(results)``: the summary's lines, each a number a reader can check.
    settings : dict
        Run settings at every size (a population), before the command line's overrides.
    full : dict
        Run settings at full size only (more rounds, the committed results' precision).
    seeds, quick_seeds : tuple of int
        Default seeds at full size and with ``--quick``.
    tables : callable, optional
        ``tables(out, runs, rows)``: derived tables by name, each written as CSV.
    details : callable, optional
        ``details(quick)``: extra provenance for the summary (what was swept).
    full_base : callable, optional
        ``full_base(settings)``: the full-size configuration, where it is not the
        experiments' full size (a comparison of the default run itself starts from the
        default settings).
    """

    name: str
    title: str
    runs: Callable[[list[int], bool], list[Run]]
    draw: Callable[[Any, Results], None]
    findings: Callable[[Results], list[str]]
    settings: dict[str, Any] = field(default_factory=dict)
    full: dict[str, Any] = field(default_factory=dict)
    seeds: tuple[int, ...] = (0, 1, 2)
    quick_seeds: tuple[int, ...] = (0,)
    ncols: int = 1
    tables: Callable[[Path, list[Run], list[dict[str, Any]]], dict[str, list[dict[str, Any]]]] | (
        None
    ) = None
    details: Callable[[bool], dict[str, Any]] | None = None
    full_base: Callable[[dict[str, Any]], RunConfig] | None = None

    def _planned(
        self, quick: bool, seeds: list[int] | None, overrides: dict[str, Any] | None
    ) -> tuple[RunConfig, list[Run]]:
        """The base configuration and every run."""
        seeds = seeds or list(self.quick_seeds if quick else self.seeds)
        changes = {**self.settings, **({} if quick else self.full), **(overrides or {})}
        wanted = changes.get("precision", None if quick else FULL["precision"])
        if wanted is not None and "precision" not in (overrides or {}):
            changes["precision"] = machine_precision(wanted, changes.get("torch_device", "cpu"))
        if not quick and self.full_base is not None:
            base = self.full_base(changes)
        else:
            base = base_config(quick, changes)
        return base, self.runs(seeds, quick)

    def check_options(
        self,
        quick: bool | None = None,
        seeds: list[int] | None = None,
        overrides: dict[str, Any] | None = None,
    ) -> None:
        """Refuse, before any folder is made, what the runs would refuse once started (a
        precision this machine cannot run, a bad trace)."""
        check_all(*self._planned(bool(quick), seeds, overrides))

    def main(
        self,
        out: str | Path,
        quick: bool = False,
        seeds: list[int] | None = None,
        overrides: dict[str, Any] | None = None,
    ) -> list[str]:
        """Run, tabulate, draw, summarize; the findings."""
        from experiments.tables import write_csv

        out = Path(out)
        base, specs = self._planned(quick, seeds, overrides)
        rows = run_all(self.name, specs, base, out)
        tables = self.tables(out, specs, rows) if self.tables else {}
        for table, content in tables.items():
            if content:
                write_csv(out / f"{self.name}_{table}.csv", content)
        results = Results(rows, tables)
        plot_png(
            out,
            self.name,
            lambda axes, csv_rows: self.draw(axes, Results(csv_rows, tables)),
            self.ncols,
        )
        notes = self.findings(results)
        extra = self.details(quick) if self.details else None
        write_summary(out, self.name, self.title, base, specs, quick, notes, extra, rows)
        return notes
