"""Draw runs from their logs: the one way fsl-opt draws a run (``fsl-opt plot``, the end of
``fsl-opt train``, the experiments).

Four panels, one line per run: test accuracy against the round, against the cumulative
modeled latency (the sum of each round's delay, the slowest device's) and against the
cumulative modeled energy (all devices), and the LoRA rank per round (per device when the
devices' ranks differ and one run is drawn; otherwise the mean over the devices taking part,
with their range as a band). A plan made with an accuracy model gets a fifth panel, the
predicted accuracy against the energy spent; a trained run's predictions are dashed beside
its measured accuracy.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from fsl_opt.errors import ConfigError, file_boundary
from fsl_opt.federation.runlog import LOG_JSONL, RunLog
from fsl_opt.files import write_atomic


def _ranks(rec: dict[str, Any]) -> list[float]:
    """A record's per-device ranks (or its shared rank), checked to be numbers."""
    ranks = rec.get("ranks") or ([rec["rank"]] if rec.get("rank") is not None else [])
    if not isinstance(ranks, list) or not all(
        isinstance(x, (int, float)) and not isinstance(x, bool) for x in ranks
    ):
        raise ValueError(f"round {rec.get('round')}: ranks = {ranks!r} is not a list of numbers")
    return [float(x) for x in ranks]


def run_series(folder: Path) -> dict[str, Any]:
    """A run's per-round series from its log: rounds, accuracy, cumulative latency and
    energy, ranks (round 0, the untuned model, at zero cost)."""
    if not (folder / LOG_JSONL).is_file():
        raise ConfigError(f"{folder}: no {LOG_JSONL} (not a run folder)")
    recs = RunLog(folder).records()
    if not recs:
        raise ConfigError(f"{folder}: the log has no records yet")
    with file_boundary(folder / LOG_JSONL, "draw the run's log"):
        if recs[0]["round"] != 0:  # a plan (fsl-opt plan): no training, no round 0
            return _plan_series(folder, recs)
        rounds = np.array([r["round"] for r in recs])
        acc = np.array([r["test_accuracy"] for r in recs], dtype=float)
        lat = np.cumsum(np.array([r.get("round_latency_s") or 0.0 for r in recs], dtype=float))
        energy = np.cumsum(np.array([r.get("total_energy_j") or 0.0 for r in recs], dtype=float))
        ranks = [_ranks(r) for r in recs]
    return {
        "label": folder.name,
        "round": rounds,
        "accuracy": acc,
        "predicted": _predicted(recs),
        "latency_s": lat,
        "energy_j": energy,
        "ranks": ranks[1:],
        "rank_rounds": rounds[1:],
    }


def _predicted(recs: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray] | None:
    """The rounds and the accuracy model's predictions where the records hold them."""
    have = [r for r in recs if isinstance(r.get("predicted_accuracy"), (int, float))]
    if not have:
        return None
    return (
        np.array([r["round"] for r in have]),
        np.array([r["predicted_accuracy"] for r in have], dtype=float),
    )


def _integer_ticks(ax: Any, y: bool = False) -> None:
    """Rounds (and ranks) are whole numbers: no tick between them."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if y:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def _plan_series(folder: Path, recs: list[dict[str, Any]]) -> dict[str, Any]:
    """A plan's series: no accuracy; energy left (mean and least over the devices)."""
    rounds = np.array([r["round"] for r in recs])
    left: list[Any] = [r.get("energy_left_j") for r in recs]
    have_left = all(isinstance(x, list) and x for x in left)
    return {
        "label": folder.name,
        "plan": True,
        "round": rounds,
        "accuracy": None,
        "latency_s": np.cumsum([r.get("round_latency_s") or 0.0 for r in recs]),
        "energy_j": np.cumsum([r.get("total_energy_j") or 0.0 for r in recs]),
        "energy_left_mean": np.array([np.mean(x) for x in left]) if have_left else None,
        "energy_left_min": np.array([np.min(x) for x in left]) if have_left else None,
        "predicted": _predicted(recs),
        "ranks": [_ranks(r) for r in recs],
        "rank_rounds": rounds,
    }


def _draw_plans(axes: Any, series: list[dict[str, Any]]) -> None:
    """Plans: cumulative modeled latency and energy against the round, energy left."""
    for s in series:
        c = s["color"]
        axes[0].plot(s["round"], s["latency_s"], "o-", ms=3, label=s["label"], color=c)
        axes[1].plot(s["round"], s["energy_j"], "o-", ms=3, label=s["label"], color=c)
        if s["energy_left_mean"] is not None:
            axes[2].plot(s["round"], s["energy_left_mean"], "o-", ms=3, label=s["label"], color=c)
            axes[2].plot(s["round"], s["energy_left_min"], "--", color=c, lw=1)
    labels = (
        "cumulative modeled latency [s]",
        "cumulative modeled energy, all devices [J]",
        "energy left per device [J] (mean; dashed: least)",
    )
    for ax, label in zip(axes[:3], labels, strict=True):
        ax.set_xlabel("round")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        _integer_ticks(ax)
    if len(axes) > 4:  # the accuracy model's prediction against the energy spent
        ax = axes[4]
        for s in series:
            if s["predicted"] is None:
                continue
            at, acc = s["predicted"]
            energy = np.interp(at, s["round"], s["energy_j"])
            ax.plot(energy, acc, "o-", ms=3, label=s["label"], color=s["color"])
        ax.set_xlabel("cumulative modeled energy, all devices [J]")
        ax.set_ylabel("predicted test accuracy (accuracy model)")
        ax.grid(True, alpha=0.3)


def draw_runs(
    folders: list[Path], out: Path, title: str | None = None, labels: list[str] | None = None
) -> Path:
    """Draw ``folders`` into the PNG ``out`` (written whole: a temporary file renamed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = [run_series(Path(f)) for f in folders]
    if labels is not None:
        for s, label in zip(series, labels, strict=True):
            s["label"] = label
    plans = [s.get("plan", False) for s in series]
    if any(plans) and not all(plans):
        raise ConfigError("draw trained runs and plans (fsl-opt plan) in separate figures")
    predicted = all(plans) and any(s["predicted"] is not None for s in series)
    panels = 5 if predicted else 4
    # Many runs: one color each (up to twenty) and the legend in a panel of its own, so
    # that it covers no curve.
    apart = len(series) > MAX_LEGEND_INSIDE
    cmap = matplotlib.colormaps["tab10" if len(series) <= 10 else "tab20"]
    for i, s in enumerate(series):
        s["color"] = cmap(i % cmap.N)
    ncols = panels + 1 if apart else panels
    fig, axes = plt.subplots(1, ncols, figsize=(4.5 * ncols, 4.0))
    _draw_ranks(axes[3], series)
    if all(plans):
        _draw_plans(axes, series)
    else:
        told = False  # one legend entry says what the dashed lines are
        for s in series:
            c = s["color"]
            axes[0].plot(s["round"], s["accuracy"], "o-", label=s["label"], color=c)
            if s["predicted"] is not None:
                name = "_" if told else "predicted (dashed)"
                axes[0].plot(*s["predicted"], "--", color=c, lw=1, label=name)
                told = True
            axes[1].plot(s["latency_s"], s["accuracy"], "o-", label=s["label"], color=c)
            axes[2].plot(s["energy_j"], s["accuracy"], "o-", label=s["label"], color=c)
        for ax, xlabel in zip(
            axes[:3],
            (
                "round",
                "cumulative modeled latency [s]",
                "cumulative modeled energy, all devices [J]",
            ),
            strict=True,
        ):
            ax.set_xlabel(xlabel)
            ax.set_ylabel("test accuracy")
            ax.grid(True, alpha=0.3)
        _integer_ticks(axes[0])
    if apart:
        handles, names = axes[0].get_legend_handles_labels()
        axes[-1].axis("off")
        axes[-1].legend(
            handles,
            names,
            fontsize=7,
            loc="center left",
            frameon=False,
            ncol=1 if len(names) <= 14 else 2,
        )
    else:
        axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    try:
        with file_boundary(out, "write the plot"):
            write_atomic(out, lambda tmp: fig.savefig(tmp, dpi=110))
    finally:
        plt.close(fig)
    return out


#: Up to this many runs the legend sits in the first panel; more get a panel of their own.
MAX_LEGEND_INSIDE = 6
#: One run's ranks are drawn per device up to this many devices (a band beyond).
MAX_DEVICE_LINES = 12


def _draw_ranks(ax: Any, series: list[dict[str, Any]]) -> None:
    """Rank per round: each device's when one run's devices differ, else the mean of those
    taking part and their range (the range left out when many runs are drawn)."""
    one = len(series) == 1
    for s in series:
        if not s["ranks"]:
            continue
        width = max(len(r) for r in s["ranks"])
        table = np.array([r + [0] * (width - len(r)) for r in s["ranks"]], dtype=float)
        varied = bool((table.max(1) != table.min(1)).any())
        if one and varied and width <= MAX_DEVICE_LINES:
            for i in range(width):
                ax.plot(s["rank_rounds"], table[:, i], ".-", lw=1, label=f"device {i}")
            ax.legend(fontsize=7, ncol=2)
            continue
        taking = np.where(table > 0, table, np.nan)
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)  # a round nobody took part in
            mean = np.nan_to_num(np.nanmean(taking, axis=1)) if varied else table[:, 0]
            low = np.nan_to_num(np.nanmin(taking, axis=1))
            high = np.nan_to_num(np.nanmax(taking, axis=1))
        ax.plot(s["rank_rounds"], mean, "o-", label=s["label"], color=s.get("color"))
        if varied and len(series) <= MAX_LEGEND_INSIDE:  # many runs' bands hide each other
            ax.fill_between(s["rank_rounds"], low, high, alpha=0.15, color=s.get("color"))
    ax.set_xlabel("round")
    ax.set_ylabel(
        "LoRA rank (0: left out)" if one else "LoRA rank of the devices taking part (mean, range)"
    )
    ax.grid(True, alpha=0.3)
    _integer_ticks(ax, y=True)
