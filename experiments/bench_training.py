"""Training benchmark: where a round's time goes against its FLOP floor; the cache; memory.

``fsl-opt bench training`` prints and writes (``--out``):

- ``round.csv``: one federated round (every device's local epoch from cached hidden states,
  aggregation, evaluation, the record and the checkpoint) timed phase by phase, for the
  default run's shape (3 devices x 256 samples, 1000 test samples, 128 tokens, rank 16)
  and for many small devices (100 x 8 samples, 32 tokens, rank 8, 64 test samples), in
  fp32 and in bf16 where this machine multiplies bf16 natively. Beside each: the round's
  FLOP floor, its arithmetic counted from the model's shapes (forward and input-gradient
  backward of the adapted layers for training, forward for the evaluation, LoRA included)
  divided by the GEMM throughput measured in the same run and precision
  ((16 x 128) x 384 by 384 x 1536, the better of readings before and after the timed
  rounds), and time / floor (the fastest of 2-3 timed rounds after a warm-up). Synthetic
  full-length inputs, so the count is exact;

- ``speed.csv``: seconds of one device's local round (one epoch) trained from cached
  hidden states and the plain way (every layer forward on every step), alternated in the
  same run, on the offline default (MiniLM, 6 layers, last 3 adapted) and on a
  random-initialized roberta-base-shaped model (12 layers, hidden 768, last 3 adapted);
  the one-time cost of building the cache is reported beside it;
- ``ops.csv``: the default round's training and evaluation passes by kind of operator
  (matrix products, softmax, GELU, layer norm, copies, ...) against their FLOP floor: how
  far the products alone would be from it, and what the rest costs;
- ``memory.csv``: resident memory after a whole in-process round with 1, 8 and 32 devices
  (each in a fresh process; the peak too), and the growth per device next to what one
  device should add: its cached hidden states plus its adapter and AdamW state. A model
  copy per device would add the encoder's size (MiniLM: 87 MiB) instead.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from experiments.tables import write_csv
from fsl_opt.federation.backends.inprocess import GROUP_TOKENS, step_tokens
from fsl_opt.learning.batched import train_batched
from fsl_opt.learning.local import DeviceData, LocalConfig, cache_hidden, train
from fsl_opt.learning.lora import nbytes
from fsl_opt.learning.split_model import SplitModel, layer_indices, load_encoder


def _model(name: str) -> SplitModel:
    torch.manual_seed(0)
    enc = load_encoder(name)
    model = SplitModel(enc, layer_indices("last3", len(enc.encoder.layer)), num_labels=4)
    model.set_rank(8)
    return model


def speed(name: str, samples: int, seq_len: int, repeats: int) -> dict[str, Any]:
    """Median seconds of a local epoch, cached vs plain, on random token ids."""
    model = _model(name)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 20000, (samples, seq_len), generator=g)
    mask = torch.ones(samples, seq_len, dtype=torch.int8)
    labels = torch.randint(0, 4, (samples,), generator=g)
    t = time.perf_counter()
    cached = cache_hidden(model, ids, mask, labels, cache=True)
    build = time.perf_counter() - t
    plain = cache_hidden(model, ids, mask, labels, cache=False)
    state = model.adapter_state()
    cfg = LocalConfig(rank=8, lr=1e-4, batch_size=16)
    times: dict[str, list[float]] = {"cached": [], "plain": []}
    train(model, state, cached, cfg)  # warm-up
    for _ in range(repeats):
        for kind, data in (("cached", cached), ("plain", plain)):
            t = time.perf_counter()
            train(model, state, data, cfg)
            times[kind].append(time.perf_counter() - t)
    c, p = float(np.median(times["cached"])), float(np.median(times["plain"]))
    return {
        "model": name,
        "layers": len(model.blocks),
        "hidden": model.lora_shape().hidden,
        "samples": samples,
        "seq_len": seq_len,
        "cached_s": c,
        "plain_s": p,
        "speedup": p / c,
        "cache_build_s": build,
        "cache_mib": cached.nbytes() / 2**20,
    }


def memory_point(n_devices: int, samples: int) -> dict[str, Any]:
    """Peak RSS of preparing and training one round with ``n_devices`` (run in a subprocess)."""
    from fsl_opt.federation.context import build_context
    from fsl_opt.federation.settings import RunConfig

    cfg = RunConfig(
        devices=n_devices, samples_per_device=samples, test_samples=16, rank=8, out="/dev/null"
    )
    ctx = build_context(cfg)
    opt: list[Any] = [None] * n_devices
    state = ctx.planner.payloads(ctx.initial_state, ctx.planner.plan_round(1), 0)[0]
    for i, data in enumerate(ctx.devices):
        res = train(ctx.model, state, data, LocalConfig(rank=8, lr=1e-4), opt[i])
        opt[i] = res.optimizer_state
    adapter = nbytes(state)
    optim = sum(
        nbytes({str(k): v for k, v in s["state"][j].items() if torch.is_tensor(v)})
        for s in opt
        if s
        for j in s["state"]
    )
    return {
        "devices": n_devices,
        "rss_mib": _rss_mib(),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "hidden_mib_per_device": float(np.mean([d.nbytes() for d in ctx.devices])) / 2**20,
        "adapter_mib": adapter / 2**20,
        "optimizer_mib_per_device": optim / n_devices / 2**20,
    }


def _same_keys(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows padded to the union of their keys (first-seen order), for one CSV."""
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    return [{k: r.get(k, "") for k in keys} for r in rows]


def _rss_mib() -> float:
    """Resident memory now (Linux /proc), after the round: what the run holds on to."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def memory(counts: list[int], samples: int) -> list[dict[str, Any]]:
    """Each point in a fresh interpreter, so peaks do not mix."""
    rows = []
    for n in counts:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "experiments.bench_training",
                "--memory-point",
                str(n),
                "--samples",
                str(samples),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    base = rows[0]
    for r in rows:
        grown = r["devices"] - base["devices"]
        r["growth_per_device_mib"] = (
            (r["rss_mib"] - base["rss_mib"]) / grown if grown else float("nan")
        )
        r["expected_per_device_mib"] = (
            r["hidden_mib_per_device"] + r["adapter_mib"] + r["optimizer_mib_per_device"]
        )
    return rows


def gemm_flops_per_s(
    precision: str,
    m: int = 2048,
    k: int = 384,
    n: int = 1536,
    device: torch.device | None = None,
) -> float:
    """Sustained matmul throughput in ``precision`` on ``device``: best of 20 timed products
    (on a GPU, each the mean of 50 launched back to back)."""
    device = device or torch.device("cpu")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    g = torch.Generator().manual_seed(0)
    a = torch.randn(m, k, generator=g).to(device, dtype)
    b = torch.randn(k, n, generator=g).to(device, dtype)
    sync = _sync(device)
    reps = 50 if device.type == "cuda" else 1
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(20):
        sync()
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        sync()
        best = min(best, (time.perf_counter() - t) / reps)
    return 2.0 * m * k * n / best


def _sync(device: torch.device) -> Any:
    """What waits for ``device``'s queued work (nothing on a CPU)."""
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def synthetic(n: int, seq_len: int, hidden: int, generator: torch.Generator) -> DeviceData:
    """A device's data for timing: ``n`` full-length samples of cached hidden states
    (random, half precision), random labels of 4 classes."""
    return DeviceData(
        attention_mask=torch.ones(n, seq_len, dtype=torch.int8),
        labels=torch.randint(0, 4, (n,), generator=generator),
        hidden=torch.randn(n, seq_len, hidden, generator=generator).half(),
    )


def round_flops(
    shape: Any, rank: int, train_samples: int, test_samples: int, seq_len: int
) -> float:
    """Arithmetic of one round: training (forward and input-gradient backward through the
    layers from the split up, LoRA's 6 r S (d + k) per adapted matrix) and evaluation
    (forward, LoRA's 2 r S (d + k))."""
    from fsl_opt.problem.compute import layer_flops

    layer = layer_flops(seq_len, shape.hidden, shape.intermediate) * shape.layers_run
    lora = rank * seq_len * (shape.d + shape.k) * shape.matrices_per_layer * shape.layers
    return train_samples * (2 * layer + 6 * lora) + test_samples * (layer + 2 * lora)


def round_profile(
    case: str,
    devices: int,
    samples: int,
    test_samples: int,
    seq_len: int,
    rank: int,
    precision: str,
    frozen_dropout: bool = True,
    together: bool = False,
    device: torch.device | None = None,
    model_name: str = "minilm",
    repeats: int = 2,
) -> dict[str, Any]:
    """One in-process round, phase by phase, against its FLOP floor (a warm-up round, then
    the fastest of ``repeats`` timed rounds against the best GEMM rate of two readings).

    ``together``: the devices step together (:mod:`fsl_opt.learning.batched`, in groups of
    at most the in-process backend's ``GROUP_TOKENS`` token rows a step), even where that
    backend keeps them apart (devices of ``ALONE_TOKENS`` rows a step: this is what tells
    whether company pays); otherwise one device after another."""
    import tempfile

    from fsl_opt.learning.aggregators import FedAvg
    from fsl_opt.learning.local import PhaseTimer, evaluate

    device = device or torch.device("cpu")
    model = _model(model_name)
    shape = model.lora_shape()
    g = torch.Generator().manual_seed(0)

    def data(n: int) -> DeviceData:
        return synthetic(n, seq_len, shape.hidden, g)

    shards = [data(samples) for _ in range(devices)]
    test = data(test_samples)
    model.set_rank(rank)
    state = model.adapter_state()
    opts: list[Any] = [None] * devices
    timed: list[tuple[float, dict[str, float]]] = []
    rates = []
    for attempt in range(1 + repeats):  # a warm-up, then the timed rounds
        if attempt == 1:
            rates.append(gemm_flops_per_s(precision, device=device))
        sync = _sync(device)
        timer = PhaseTimer(sync=sync)
        sync()
        t_round = time.perf_counter()
        replies = []
        cfgs = [
            LocalConfig(
                rank=rank,
                lr=1e-4,
                batch_size=16,
                seed=i,
                precision=precision,
                frozen_dropout=frozen_dropout,
            )
            for i in range(devices)
        ]
        step = max(1, GROUP_TOKENS // step_tokens(1, cfgs[0], shards[0])) if together else 1
        for lo in range(0, devices, step):
            ids = range(lo, min(lo + step, devices))
            if together and len(ids) > 1:
                got = train_batched(
                    model,
                    [state] * len(ids),
                    [shards[i] for i in ids],
                    [cfgs[i] for i in ids],
                    [opts[i] for i in ids],
                    device=device,
                    timer=timer,
                )
            else:
                got = [
                    train(model, state, shards[i], cfgs[i], opts[i], device=device, timer=timer)
                    for i in ids
                ]
            for i, res in zip(ids, got, strict=True):
                opts[i] = res.optimizer_state
                replies.append(res)
        with timer("aggregation"):
            new = FedAvg().aggregate(
                state, [r.adapter_state for r in replies], [rank] * devices, [1.0] * devices
            )
            model.load_adapter_state(new)
        with timer("evaluation"):
            evaluate(model, test, precision=precision, device=device)
        with timer("record+checkpoint"), tempfile.TemporaryDirectory() as tmp:
            from safetensors.torch import save_file

            save_file(new, f"{tmp}/adapters.safetensors")
            torch.save(opts, f"{tmp}/devices.pt")
        sync()
        total = time.perf_counter() - t_round
        if attempt:
            timed.append((total, timer.seconds))
    rates.append(gemm_flops_per_s(precision, device=device))
    # The fastest timed round against the best GEMM rate measured before and after: a
    # machine that slows down for a while (these shared cores do) spoils neither side.
    total, phases = min(timed, key=lambda t: t[0])
    flops = round_flops(shape, rank, devices * samples, test_samples, seq_len)
    rate = max(rates)
    floor = flops / rate
    return {
        "case": case,
        "device": str(device),
        "model": model_name,
        "precision": precision,
        "frozen_dropout": frozen_dropout,
        "devices_together": together,
        "devices": devices,
        "samples": samples,
        "seq_len": seq_len,
        "rank": rank,
        "repeats": repeats,
        "round_s": total,
        **{f"{k}_s": v for k, v in phases.items()},
        "tflop": flops / 1e12,
        "gemm_gflop_s": rate / 1e9,
        "floor_s": floor,
        "over_floor": total / floor,
    }


#: Timed rounds per row (the fastest is kept): short rounds are cheap to repeat.
REPEATS = {"default": 2, "100x8": 3}
CASES = {
    "default": dict(devices=3, samples=256, test_samples=1000, seq_len=128, rank=16),
    "100x8": dict(devices=100, samples=8, test_samples=64, seq_len=32, rank=8),
}


def rounds(
    quick: bool, device: torch.device | None = None, model_name: str = "minilm"
) -> list[dict[str, Any]]:
    """Every case in fp32, and in bf16 where ``device`` has it."""
    from fsl_opt.learning.local import bf16_support

    device = device or torch.device("cpu")
    precisions = ["fp32"] + ([] if bf16_support(device) else ["bf16"])
    cases = {
        "default": dict(CASES["default"], samples=32, test_samples=64)
        if quick
        else CASES["default"],
        "100x8": dict(CASES["100x8"], devices=10) if quick else CASES["100x8"],
    }
    out = []
    for case, kw in cases.items():
        for precision in precisions:
            for dropout, together in ((True, False), (True, True), (False, False), (False, True)):
                row = round_profile(
                    case,
                    precision=precision,
                    frozen_dropout=dropout,
                    together=together,
                    device=device,
                    model_name=model_name,
                    repeats=1 if quick else REPEATS[case],
                    **kw,
                )
                out.append(row)
                phases = ", ".join(
                    f"{k[:-2]} {v:.2f}"
                    for k, v in row.items()
                    if k.endswith("_s") and k not in ("round_s", "floor_s", "gemm_gflop_s")
                )
                print(
                    f"{case} {precision} frozen dropout {'on' if dropout else 'off'}"
                    f"{', devices together' if together else ''}: "
                    f"round {row['round_s']:.2f} s = {row['over_floor']:.2f}x its "
                    f"FLOP floor {row['floor_s']:.2f} s ({row['tflop']:.3f} TFLOP at "
                    f"{row['gemm_gflop_s']:.0f} GFLOP/s); {phases}"
                )
    return out


#: The parts of ``fsl-opt bench training --parts``.
PARTS = ("round", "speed", "memory", "masks", "evaluation", "ops")

#: Operator kinds of :func:`op_profile`, by torch operator name (forward and backward).
OP_KINDS = {
    "matrix products": ("aten::mm", "aten::addmm", "aten::bmm"),
    "fused attention": (
        "aten::_scaled_dot_product_flash_attention_for_cpu",
        "aten::_scaled_dot_product_flash_attention_for_cpu_backward",
    ),
    "softmax": ("aten::_softmax", "aten::_softmax_backward_data"),
    "gelu": ("aten::gelu", "aten::gelu_backward"),
    "layer norm": ("aten::native_layer_norm", "aten::native_layer_norm_backward"),
    "multiply": ("aten::mul", "aten::mul_"),
    "add": ("aten::add", "aten::add_"),
    "copies and casts": ("aten::copy_", "aten::_to_copy", "aten::clone", "aten::contiguous"),
}


def op_column(kind: str) -> str:
    """The ``ops.csv`` column of an :data:`OP_KINDS` kind: its seconds."""
    return kind.replace(" ", "_") + "_s"


def op_profile(
    quick: bool, device: torch.device | None = None, model_name: str = "minilm"
) -> list[dict[str, Any]]:
    """Where the default round's passes spend their time against their FLOP floor, by kind
    of operator: a local epoch of 64 samples (4 steps of 16, frozen dropout on and off) and
    an evaluation of 128 samples, 128 tokens, rank 16, in fp32 and in bf16 where this
    machine has it. Each pass is profiled 3 times after a warm-up (``torch.profiler``, the
    operators' own time), the fastest kept; ``unaccounted_s`` is the pass's wall time
    outside torch's operators: the dropout masks' draws (numpy) and Python.
    ``floor_if_products_only`` is what the pass would be against its floor were every
    other operator free."""
    from torch.profiler import ProfilerActivity, profile

    from fsl_opt.learning.local import bf16_support, evaluate

    device = device or torch.device("cpu")
    kw = CASES["default"]
    seq_len, rank = kw["seq_len"], kw["rank"]
    n_train, n_test = (16, 32) if quick else (64, 128)
    model = _model(model_name)
    model.set_rank(rank)
    shape = model.lora_shape()
    g = torch.Generator().manual_seed(0)
    shard, test = (synthetic(n, seq_len, shape.hidden, g) for n in (n_train, n_test))
    state = model.adapter_state()
    sync = _sync(device)
    out = []
    for precision in ["fp32"] + ([] if bf16_support(device) else ["bf16"]):
        rates = [gemm_flops_per_s(precision, device=device)]
        rows = []
        passes: dict[str, tuple[Any, float]] = {
            "train, dropout on": (
                lambda p=precision: train(model, state, shard, _cfg(rank, p, True), device=device),
                round_flops(shape, rank, n_train, 0, seq_len),
            ),
            "train, dropout off": (
                lambda p=precision: train(model, state, shard, _cfg(rank, p, False), device=device),
                round_flops(shape, rank, n_train, 0, seq_len),
            ),
            "evaluation": (
                lambda p=precision: evaluate(model, test, device=device, precision=p),
                round_flops(shape, rank, 0, n_test, seq_len),
            ),
        }
        for what, (fn, flops) in passes.items():
            fn()  # warm-up
            profiled = []
            for _ in range(1 if quick else 3):  # the fastest of 3 profiled passes
                sync()
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    start = time.perf_counter()
                    fn()
                    sync()
                    profiled.append((time.perf_counter() - start, prof))
            wall, prof = min(profiled, key=lambda t: t[0])
            own = {e.key: e.self_cpu_time_total / 1e6 for e in prof.key_averages()}
            kinds = {k: sum(own.get(n, 0.0) for n in names) for k, names in OP_KINDS.items()}
            rows.append(
                {
                    "precision": precision,
                    "pass": what,
                    "threads": torch.get_num_threads(),
                    "wall_s": wall,
                    "flops": flops,
                    **{op_column(k): v for k, v in kinds.items()},
                    "other_ops_s": sum(own.values()) - sum(kinds.values()),
                    "unaccounted_s": wall - sum(own.values()),
                }
            )
        # The best GEMM rate of a reading before and after the passes (a slow spell of
        # these shared cores spoils neither the floor nor the passes alone).
        rates.append(gemm_flops_per_s(precision, device=device))
        for r in rows:
            floor = r.pop("flops") / max(rates)
            products = r[op_column("matrix products")] + r[op_column("fused attention")]
            r.update(
                gemm_gflop_s=max(rates) / 1e9,
                floor_s=floor,
                over_floor=r["wall_s"] / floor,
                floor_if_products_only=products / floor,
            )
        out += rows
    return out


def _cfg(rank: int, precision: str, dropout: bool) -> LocalConfig:
    return LocalConfig(
        rank=rank, lr=1e-4, batch_size=16, precision=precision, frozen_dropout=dropout
    )


def evaluation_profile(
    quick: bool, device: torch.device | None = None, model_name: str = "minilm"
) -> list[dict[str, Any]]:
    """The default round's evaluation (1000 samples of 128 tokens, rank 16, fp32) at 64
    samples a forward pass (what evaluation did before) and at the default batch
    (:data:`~fsl_opt.learning.local.EVAL_BATCH`), and (not ``quick``) at the default batch
    with the layers above the split compiled by ``torch.compile`` (inductor: fused
    elementwise kernels; its compile time is left out), each the fastest of several passes
    taken in turns, against its FLOP floor at the best GEMM rate read before and after, in
    one run."""
    from fsl_opt.learning.local import EVAL_BATCH, evaluate

    device = device or torch.device("cpu")
    kw = CASES["default"]
    n, seq_len, rank = (64 if quick else kw["test_samples"]), kw["seq_len"], kw["rank"]
    model = _model(model_name)
    model.set_rank(rank)
    shape = model.lora_shape()
    g = torch.Generator().manual_seed(0)
    test = synthetic(n, seq_len, shape.hidden, g)
    rows = EVAL_BATCH.get(device.type, 64)
    # Each variant: samples a pass, and the compiled top layers or None (the model's own).
    variants: dict[str, tuple[int, Any]] = {
        "64 a pass (before)": (64, None),
        f"{rows} a pass (now)": (rows, None),
    }
    if not quick:
        variants[f"{rows} a pass, torch.compile"] = (rows, torch.compile(model.top, dynamic=False))
    sync = _sync(device)
    rates = [gemm_flops_per_s("fp32", device=device)]
    seconds: dict[str, list[float]] = {k: [] for k in variants}
    for attempt in range(1 if quick else 3):
        for what, (batch, compiled) in variants.items():  # in turns: a slow spell hits all
            if compiled is not None:
                model.top = compiled  # type: ignore[method-assign]  # this pass only
            try:
                if attempt == 0:
                    evaluate(model, test, batch, device=device)  # warm-up (and compile)
                sync()
                start = time.perf_counter()
                evaluate(model, test, batch, device=device)
                sync()
                seconds[what].append(time.perf_counter() - start)
            finally:
                if compiled is not None:
                    del model.top
    rates.append(gemm_flops_per_s("fp32", device=device))
    floor = round_flops(shape, rank, 0, n, seq_len) / max(rates)
    before = min(seconds["64 a pass (before)"])
    return [
        {
            "what": what,
            "device": str(device),
            "model": model_name,
            "threads": torch.get_num_threads(),
            "samples": n,
            "seq_len": seq_len,
            "rank": rank,
            "seconds": min(times),
            "floor_s": floor,
            "over_floor": min(times) / floor,
            "speedup_vs_before": before / min(times),
        }
        for what, times in seconds.items()
    ]


def mask_rates(quick: bool) -> list[dict[str, Any]]:
    """Dropout-mask values per second: the keyed stream (:mod:`fsl_opt.learning.masks`), in
    float32 and in bf16 (drawn as bf16 bits, against a float32 mask converted, as before),
    against torch's CPU ``bernoulli_`` and division (the stream it replaced), and the raw
    32-bit draws of numpy's PCG64 against its Philox, in one run at torch's thread count
    (the best of several repeats; one attention site of 16 x 12 x 128 x 128)."""
    from fsl_opt.learning.masks import MaskStream

    shape = (4, 12, 128, 128) if quick else (16, 12, 128, 128)
    n = math.prod(shape)
    like = torch.empty(shape)
    bf16 = torch.empty(shape, dtype=torch.bfloat16)
    repeats = 3 if quick else 10

    def best(fn: Any) -> float:
        fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return n / min(times)

    stream = MaskStream([(0, 1, 0)])
    stream.begin_step()
    gen = torch.Generator().manual_seed(0)
    rows = {
        "torch bernoulli_ + div (the old stream)": best(
            lambda: like.bernoulli_(0.9, generator=gen).div_(0.9)
        ),
        "keyed stream, finished mask": best(lambda: stream.masks(like, 0.1, (1, 2))),
        "keyed stream, bf16 mask (its bits)": best(lambda: stream.masks(bf16, 0.1, (1, 2))),
        "keyed stream, float32 mask converted to bf16 (before)": best(
            lambda: stream.masks(like, 0.1, (1, 2)).to(torch.bfloat16)
        ),
        "numpy PCG64 random_raw (32-bit values)": best(
            lambda: np.random.PCG64(0).random_raw(n // 2)
        ),
        "numpy Philox random_raw (32-bit values)": best(
            lambda: np.random.Philox(0).random_raw(n // 2)
        ),
    }
    base = rows["torch bernoulli_ + div (the old stream)"]
    return [
        {"what": k, "threads": torch.get_num_threads(), "values_per_s": v, "vs_old": v / base}
        for k, v in rows.items()
    ]


def check_options(parts: tuple[str, ...] = PARTS, **_: Any) -> None:
    """Refuse an unknown part before any folder is made."""
    from experiments.registry import check_parts

    check_parts(parts, PARTS)


def main(
    out: str | Path,
    quick: bool = False,
    parts: tuple[str, ...] = PARTS,
    torch_device: str = "cpu",
    model_name: str = "minilm",
) -> None:
    """Run the ``parts``, write their CSVs and print the headline ratios (``torch_device``
    and ``model_name``: where and on which encoder the round profile runs)."""
    from experiments.provenance import warn_if_busy
    from fsl_opt.federation.workload import torch_device as resolve_device

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    warn_if_busy()
    print(f"torch threads: {torch.get_num_threads()}")
    if "round" in parts:
        rows = rounds(quick, resolve_device(torch_device), model_name)
        write_csv(out / "round.csv", _same_keys(rows))
    if "speed" in parts:
        _speed(out, quick)
    if "memory" in parts:
        _memory(out, quick)
    if "evaluation" in parts:
        rows = evaluation_profile(quick, resolve_device(torch_device), model_name)
        write_csv(out / "evaluation.csv", rows)
        for r in rows:
            print(
                f"evaluation, {r['what']}: {r['seconds']:.2f} s = {r['over_floor']:.2f}x its "
                f"FLOP floor {r['floor_s']:.2f} s ({r['speedup_vs_before']:.2f}x as fast as "
                f"before, {r['threads']} threads)"
            )
    if "ops" in parts:
        rows = op_profile(quick, resolve_device(torch_device), model_name)
        write_csv(out / "ops.csv", rows)
        for r in rows:
            kinds = ", ".join(f"{k} {r[op_column(k)]:.3f}" for k in OP_KINDS if r[op_column(k)])
            print(
                f"{r['precision']} {r['pass']}: {r['wall_s']:.2f} s = {r['over_floor']:.2f}x "
                f"its FLOP floor {r['floor_s']:.2f} s; matrix products alone would be "
                f"{r['floor_if_products_only']:.2f}x ({kinds}, other operators "
                f"{r['other_ops_s']:.3f}, outside operators {r['unaccounted_s']:.3f} s; "
                f"{r['threads']} threads)"
            )
    if "masks" in parts:
        rows = mask_rates(quick)
        write_csv(out / "masks.csv", rows)
        for r in rows:
            print(
                f"{r['what']}: {r['values_per_s'] / 1e6:.0f} M values/s "
                f"({r['vs_old']:.2f}x the old stream, {r['threads']} threads)"
            )


def _speed(out: Path, quick: bool) -> None:
    cases = [("minilm", 64 if not quick else 16), ("random:roberta-base", 32 if not quick else 8)]
    rows = [speed(name, n, 128, 1 if quick else 3) for name, n in cases]
    write_csv(out / "speed.csv", rows)
    for r in rows:
        print(
            f"{r['model']}: local epoch of {r['samples']} samples, cached {r['cached_s']:.2f} s "
            f"vs plain {r['plain_s']:.2f} s -> {r['speedup']:.2f}x faster "
            f"(cache built once in {r['cache_build_s']:.2f} s, {r['cache_mib']:.1f} MiB)"
        )


def _memory(out: Path, quick: bool) -> None:
    mem = memory([1, 4] if quick else [1, 8, 32], 16 if quick else 64)
    write_csv(out / "memory.csv", mem)
    for r in mem[1:]:
        print(
            f"{r['devices']} devices: resident {r['rss_mib']:.0f} MiB after the round (peak "
            f"{r['peak_rss_mib']:.0f}); growth "
            f"{r['growth_per_device_mib']:.2f} MiB/device vs expected "
            f"{r['expected_per_device_mib']:.2f} (hidden {r['hidden_mib_per_device']:.2f} + "
            f"adapter {r['adapter_mib']:.2f} + AdamW {r['optimizer_mib_per_device']:.2f})"
        )
    print(
        f"1 device: resident {mem[0]['rss_mib']:.0f} MiB, peak {mem[0]['peak_rss_mib']:.0f} "
        "MiB (the shared model and the dataset, loaded once)"
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--memory-point", type=int)
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--out", default="experiments/results/training")
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    if a.memory_point:
        print(json.dumps(memory_point(a.memory_point, a.samples)))
    else:
        main(a.out, a.quick)
