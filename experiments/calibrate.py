"""Calibration: eq. (2)'s compute constants fitted to local training timed on this machine.

``fsl-opt calibrate`` times one device's local round (one epoch from cached hidden states,
AdamW, the run's default batch size) of the run's model at several ranks, sample counts and
sequence lengths: alone, after a warm-up, the fastest of at least ``repeats`` runs and of at
least 2 s of them (on a shared machine the median of three moved by up to 40% between two
calibrations), the cases' runs interleaved pass by pass, in a new seeded order each pass.
It fits the compute model of :class:`fsl_opt.problem.compute.ComputeFit`,

    t = n x (a F0(S) + b L(r, S) + g) + h

(F0: the frozen layers' forward and input-gradient FLOPs per sample; L: the LoRA FLOPs per
sample as eq. (2) counts them; h: what a round costs once, whatever its samples, such as
the optimizer's set-up) by non-negative least squares on the relative errors of the
fit cases, and reports modeled / measured for every case, the held-out ones (ranks and
shapes not used in the fit) apart. It writes:

- ``preset.toml``: the calibrated preset with these constants and this machine's clock,
  which ``--preset PATH`` loads (``fsl-opt train``, ``plan``, ``solve``);
- ``cases.csv``: every case, measured and modeled seconds, their ratio;
- ``calibration.png``: modeled against measured.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.optimize import nnls

from experiments.tables import write_csv
from fsl_opt.errors import ConfigError
from fsl_opt.learning.local import LocalConfig, cache_hidden, check_precision, train
from fsl_opt.learning.split_model import SplitModel, layer_indices, load_encoder
from fsl_opt.problem.compute import ComputeFit, layer_flops

#: (rank, samples, tokens) of the fit, and of the held-out check (ranks and shapes not
#: fitted). Sample counts are whole batches (16): a partial batch costs a whole step's
#: overhead, which a per-sample model cannot say.
FIT_CASES = [(r, n, s) for r in (4, 16, 64) for n in (16, 64) for s in (32, 64, 128)]
HELD_OUT = [(8, 32, 96), (32, 48, 48), (2, 16, 80), (128, 32, 128)]
#: A tiny model and a few small cases, for the tests (seconds).
QUICK_FIT = [(r, n, s) for r in (2, 8) for n in (16, 64) for s in (16, 64)]
QUICK_HELD_OUT = [(4, 32, 32)]

#: Each case is timed for at least this long in all (more runs of the short cases).
MIN_TIMED_S = 2.0
#: Fit within this relative error, held-out cases within the second (the targets).
TARGETS = (0.15, 0.20)


def machine_clock_hz() -> float:
    """This machine's CPU clock from /proc/cpuinfo (the largest ``cpu MHz``), else 2 GHz."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return 2.0e9
    mhz = [float(line.split(":")[1]) for line in lines if line.startswith("cpu MHz")]
    return max(mhz) * 1e6 if mhz else 2.0e9


def check_options(repeats: int, base: str) -> None:
    """Refuse bad options before anything is timed or any folder made."""
    from fsl_opt.problem.presets import PRESETS

    if repeats < 1:
        raise ConfigError(f"--repeats {repeats}: expected at least 1")
    if base not in PRESETS:
        raise ConfigError(f"--base {base!r}: expected one of {', '.join(PRESETS)}")


def _lora_ops(shape: Any, rank: int) -> int:
    """Eq. (2)'s LoRA operations per sample: (2r - 1) d k per adapted matrix."""
    return (2 * rank - 1) * shape.d * shape.k * shape.matrices_per_layer * shape.layers


def _features(shape: Any, rank: int, samples: int, seq_len: int) -> tuple[float, float, float]:
    """(n F0, n L, n) of a case: the fit's columns beside the per-round constant."""
    frozen = 2.0 * layer_flops(seq_len, shape.hidden, shape.intermediate) * shape.layers_run
    lora = _lora_ops(shape, rank) * 3.0 * seq_len * (shape.d + shape.k) / (shape.d * shape.k)
    return samples * frozen, samples * lora, float(samples)


def _case(
    model: SplitModel,
    case: tuple[int, int, int],
    g: torch.Generator,
    batch_size: int,
    precision: str,
) -> tuple[Any, dict[str, torch.Tensor], LocalConfig]:
    """A case's cached data (random tokens), fresh adapters at its rank, and its config."""
    rank, samples, seq_len = case
    ids = torch.randint(1000, 20000, (samples, seq_len), generator=g)
    mask = torch.ones(samples, seq_len, dtype=torch.int8)
    labels = torch.randint(0, 2, (samples,), generator=g)
    data = cache_hidden(model, ids, mask, labels, cache=True)
    model.set_rank(rank)
    cfg = LocalConfig(rank=rank, lr=1e-4, batch_size=batch_size, precision=precision)
    return data, model.adapter_state(), cfg


def measure(
    model: SplitModel,
    cases: list[tuple[int, int, int]],
    repeats: int,
    precision: str,
    batch_size: int,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Seconds of one device's local epoch per (rank, samples, tokens) case: the fastest of
    at least ``repeats`` runs and :data:`MIN_TIMED_S` of them, after a warm-up.

    The runs are interleaved: each pass times every case still short of runs once, so that
    a drift of the machine's speed over the minutes (its clock, another process) falls on
    every case alike rather than on whichever case was being timed then."""
    shape = model.lora_shape()
    g = torch.Generator().manual_seed(0)
    # The first timed case ran up to 30% slower than its neighbours after a per-case
    # warm-up alone: the process warms up too (thread pool, allocator, clocks).
    largest = max(cases, key=lambda c: c[1] * c[2])
    data, state, cfg = _case(model, largest, g, batch_size, precision)
    for _ in range(2):
        train(model, state, data, cfg)
    prepared = [_case(model, case, g, batch_size, precision) for case in cases]
    for data, state, cfg in prepared:
        train(model, state, data, cfg)  # warm-up: allocations, kernels
    times: list[list[float]] = [[] for _ in cases]

    def short(t: list[float]) -> bool:
        # At least `repeats` runs and MIN_TIMED_S of them (a short case is the noisiest).
        return len(t) < repeats or (sum(t) < MIN_TIMED_S and len(t) < 50)

    passes = 0
    order_rng = np.random.default_rng(0)
    while todo := [i for i, t in enumerate(times) if short(t)]:
        passes += 1
        started = time.perf_counter()
        # A seeded shuffle per pass: a case never always follows the same one (the
        # allocator's and the caches' state after a case is that case's, not the next's).
        for i in order_rng.permutation(todo).tolist():
            data, state, cfg = prepared[i]
            t = time.perf_counter()
            train(model, state, data, cfg)
            times[i].append(time.perf_counter() - t)
        if progress:
            print(
                f"  pass {passes}: {len(todo)} of {len(cases)} cases timed "
                f"({time.perf_counter() - started:.1f} s)",
                flush=True,
            )
    rows = []
    for number, ((rank, samples, seq_len), runs) in enumerate(zip(cases, times, strict=True), 1):
        seconds = min(runs)  # the least disturbed run (others' work only adds time)
        frozen, lora, _ = _features(shape, rank, samples, seq_len)
        rows.append(
            {
                "rank": rank,
                "samples": samples,
                "tokens": seq_len,
                "measured_s": seconds,
                "frozen_flops": frozen,
                "lora_flops": lora,
            }
        )
        if progress:
            print(
                f"  [{number}/{len(cases)}] rank {rank:3d}, {samples:3d} samples, "
                f"{seq_len:3d} tokens: {seconds:.3f} s (fastest of {len(runs)})",
                flush=True,
            )
    return rows


def fit(rows: list[dict[str, Any]], clock_hz: float, precision: str) -> ComputeFit:
    """The constants (a, b, g, h) minimizing the squared relative errors, each >= 0.

    Where the timings cannot resolve one kind of FLOP (its fitted rate is 0: its share of
    the work is within the noise, as LoRA's is on a small model), it is charged at the
    other kind's rate, which :func:`unresolved` reports; timings that grow with neither are
    refused."""
    a = np.array(
        [[r["frozen_flops"], r["lora_flops"], r["samples"], 1.0] for r in rows], dtype=float
    )
    t = np.array([r["measured_s"] for r in rows], dtype=float)
    scale = a.max(axis=0)  # columns of one order, for a well-conditioned solve
    coef, _ = nnls((a / scale) / t[:, None], np.ones(len(t)))
    coef = coef / scale
    if coef[0] <= 0 and coef[1] <= 0:
        raise ConfigError(
            "calibration: the timings grow with neither the frozen nor the LoRA FLOPs "
            f"(fit {coef.tolist()}); was the machine busy? Run it alone"
        )
    frozen = coef[0] if coef[0] > 0 else coef[1]
    lora = coef[1] if coef[1] > 0 else coef[0]
    return ComputeFit(
        clock_hz,
        float(frozen),
        float(lora),
        seconds_per_sample=float(coef[2]),
        precision=precision,
        seconds_per_round=float(coef[3]),
    )


def unresolved(rows: list[dict[str, Any]], fitted: ComputeFit) -> list[str]:
    """The kinds of FLOP whose rate the fit took from the other kind (equal rates)."""
    if fitted.seconds_per_frozen_flop != fitted.seconds_per_lora_flop:
        return []
    share = sum(r["lora_flops"] for r in rows) / sum(r["frozen_flops"] for r in rows)
    return [
        f"the frozen and LoRA FLOPs got one rate: the timings resolved only one of them "
        f"(LoRA is {share:.1%} of the frozen work in these cases)"
    ]


def modeled_seconds(fitted: ComputeFit, shape: Any, rank: int, samples: int, seq_len: int) -> float:
    """Eq. (1)'s compute time of a case under ``fitted``: its cycles over its clock."""
    cycles = fitted.cycles(
        hidden=shape.hidden,
        intermediate=shape.intermediate,
        layers_run=shape.layers_run,
        seq_len=seq_len,
        d=shape.d,
        k=shape.k,
    )
    per_sample = cycles["base_cycles"] + cycles["cycles_per_op"] * _lora_ops(shape, rank)
    return (samples * per_sample + cycles["round_base_cycles"]) / fitted.clock_hz


def preset_text(fitted: ComputeFit, base: str, source: dict[str, Any]) -> str:
    """The preset file: ``base``, ``[compute]`` (the fit), ``[source]`` (what was measured)."""
    lines = [
        "# Written by fsl-opt calibrate: load with --preset PATH.",
        f'base = "{base}"',
        "",
        "[compute]",
        f"clock_hz = {fitted.clock_hz!r}",
        f"seconds_per_frozen_flop = {fitted.seconds_per_frozen_flop!r}",
        f"seconds_per_lora_flop = {fitted.seconds_per_lora_flop!r}",
        f"seconds_per_sample = {fitted.seconds_per_sample!r}",
        f"seconds_per_round = {fitted.seconds_per_round!r}",
        f'precision = "{fitted.precision}"',
        "",
        "[source]",
    ]
    for key, value in source.items():
        lines.append(f"{key} = {value!r}" if not isinstance(value, str) else f'{key} = "{value}"')
    return "\n".join(lines) + "\n"


def main(
    out: Path,
    model: str = "minilm",
    repeats: int = 5,
    precision: str = "fp32",
    clock_ghz: float | None = None,
    base: str = "calibrated",
    quick: bool = False,
    progress: bool = True,
) -> list[str]:
    """Time, fit, write ``preset.toml``, ``cases.csv`` and ``calibration.png``; the lines to
    print."""
    check_options(repeats, base)
    device = torch.device("cpu")
    check_precision(precision, device)
    name = "tiny" if quick else model
    fit_cases, held_out = (QUICK_FIT, QUICK_HELD_OUT) if quick else (FIT_CASES, HELD_OUT)
    torch.manual_seed(0)
    encoder = load_encoder(name)
    split = SplitModel(encoder, layer_indices("last3", len(encoder.encoder.layer)), num_labels=2)
    shape = split.lora_shape()
    clock = clock_ghz * 1e9 if clock_ghz is not None else machine_clock_hz()
    batch = LocalConfig(rank=1, lr=1e-4).batch_size
    threads = torch.get_num_threads()
    if progress:
        print(
            f"calibrate: {name}, {precision}, {threads} torch threads, clock {clock / 1e9:.3g} GHz"
        )
    rows = measure(split, fit_cases + held_out, repeats, precision, batch, progress)
    for row, case in zip(rows, fit_cases + held_out, strict=True):
        row["held_out"] = case in held_out
    fitted = fit([r for r in rows if not r["held_out"]], clock, precision)
    caveats = unresolved(rows, fitted)
    for r in rows:
        r["modeled_s"] = modeled_seconds(fitted, shape, r["rank"], r["samples"], r["tokens"])
        r["ratio"] = r["modeled_s"] / r["measured_s"]
    out.mkdir(parents=True, exist_ok=True)
    source = {
        "model": name,
        "machine": platform.processor() or platform.machine(),
        "torch_threads": threads,
        "repeats": repeats,
        "batch_size": batch,
        "date": time.strftime("%Y-%m-%d"),
    }
    (out / "preset.toml").write_text(preset_text(fitted, base, source))
    keys = ["rank", "samples", "tokens", "held_out", "measured_s", "modeled_s", "ratio"]
    write_csv(out / "cases.csv", [{k: r[k] for k in keys} for r in rows])
    _plot(rows, out / "calibration.png", name)
    worst_fit = max(abs(r["ratio"] - 1) for r in rows if not r["held_out"])
    worst_held = max(abs(r["ratio"] - 1) for r in rows if r["held_out"])
    notes = [
        f"fit: a = {fitted.seconds_per_frozen_flop:.4g} s per frozen FLOP "
        f"({1 / fitted.seconds_per_frozen_flop / 1e9:.3g} GFLOP/s), b = "
        f"{fitted.seconds_per_lora_flop:.4g} s per LoRA FLOP "
        f"({1 / fitted.seconds_per_lora_flop / 1e9:.3g} GFLOP/s), g = "
        f"{fitted.seconds_per_sample * 1e3:.4g} ms per sample, h = "
        f"{fitted.seconds_per_round * 1e3:.4g} ms per round",
        f"modeled / measured: fit cases within {worst_fit:.1%} (target "
        f"{TARGETS[0]:.0%}: {'met' if worst_fit <= TARGETS[0] else 'NOT met'}), held-out "
        f"within {worst_held:.1%} (target {TARGETS[1]:.0%}: "
        f"{'met' if worst_held <= TARGETS[1] else 'NOT met'})",
        *caveats,
        f"preset: {out / 'preset.toml'} (--preset {out / 'preset.toml'})",
    ]
    return notes


def _plot(rows: list[dict[str, Any]], path: Path, model: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4.5))
    for held, marker, label in ((False, "o", "fit cases"), (True, "^", "held out")):
        pick = [r for r in rows if r["held_out"] == held]
        ax.scatter(
            [r["measured_s"] for r in pick],
            [r["modeled_s"] for r in pick],
            marker=marker,
            label=label,
        )
    top = max(max(r["measured_s"], r["modeled_s"]) for r in rows) * 1.1
    ax.plot([0, top], [0, top], "k-", lw=0.8)
    ax.plot([0, top], [0, top * 1.15], "k:", lw=0.6)
    ax.plot([0, top], [0, top * 0.85], "k:", lw=0.6, label="+-15%")
    ax.set_xlabel("measured local round [s]")
    ax.set_ylabel("modeled (eq. 1 with the fit) [s]")
    ax.set_title(f"Compute model calibrated on this machine ({model})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
