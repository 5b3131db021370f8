"""What aggregation costs the server: time and memory of each aggregator per round.

``fsl-opt bench aggregation`` prints and writes ``aggregation.csv``: for the offline
default's shape (MiniLM, 6 layers, hidden 384, the last 3 adapted: six 384 x 384 matrices)
and roberta-base's (12 layers, hidden 768: six 768 x 768 matrices), 3 devices at ranks
16, 32 and 64 (``fedavg``: all at 32), the server's work of one round: aggregating the
three payloads and building each device's next payload at its rank. Per aggregator:

- ``seconds``: the median of ``repeats`` rounds;
- ``peak_mib``: the peak resident memory this work adds, measured in a fresh process per
  aggregator (Linux: the high-water mark reset just before the work, minus the resident
  memory then: the round's whole transient working set, first call included);
- ``train_s``: the round's local training time on that shape (3 devices x 256 samples,
  128 tokens, one epoch), measured here on one device's 32 samples and scaled by samples;
- ``fraction``: seconds / train_s.

torch runs with the thread count it picks (printed); take it alone on the machine.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from experiments.provenance import warn_if_busy
from experiments.tables import write_csv
from fsl_opt.learning.registry import AGGREGATORS, make_aggregator

#: (name, hidden, adapted matrices, encoder for the training time)
SHAPES = (("minilm-6x384", 384, 6, "minilm"), ("roberta-12x768", 768, 6, "random:roberta-base"))
RANKS = (16, 32, 64)
ROUND_SAMPLES = 3 * 256


def payloads(hidden: int, matrices: int, ranks: tuple[int, ...]) -> list[dict[str, torch.Tensor]]:
    """One payload per rank: LoRA A and B of each matrix and a 4-class head (fp32)."""
    g = torch.Generator().manual_seed(0)
    out = []
    for r in ranks:
        p = {}
        for m in range(matrices):
            p[f"m{m}.lora_A.weight"] = torch.randn(r, hidden, generator=g) * 0.05
            p[f"m{m}.lora_B.weight"] = torch.randn(hidden, r, generator=g) * 0.05
        p["head.1.weight"] = torch.randn(4, hidden, generator=g)
        p["head.1.bias"] = torch.randn(4, generator=g)
        out.append(p)
    return out


def server_round(name: str, ps: list[dict[str, torch.Tensor]], ranks: tuple[int, ...]) -> None:
    """Aggregate, then build every device's next payload (as the planner does)."""
    agg = make_aggregator(name, 2.0, len(RANKS))
    state = agg.aggregate({}, ps, list(ranks), [256.0] * len(ps))
    for r in sorted(set(ranks)):
        agg.payload(state, r, torch.Generator().manual_seed(r))


def ranks_for(name: str) -> tuple[int, ...]:
    return (32, 32, 32) if name == "fedavg" else RANKS


def timing(name: str, hidden: int, matrices: int, repeats: int) -> float:
    ranks = ranks_for(name)
    ps = payloads(hidden, matrices, ranks)
    server_round(name, ps, ranks)  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        server_round(name, ps, ranks)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(f"/proc/self/status has no {field}")


def _peak_child(name: str, hidden: int, matrices: int) -> None:
    """In a fresh process: the peak resident memory one server round adds (printed as
    JSON): the kernel's high-water mark is reset (``clear_refs`` 5) just before the work."""
    ranks = ranks_for(name)
    ps = payloads(hidden, matrices, ranks)
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_kib("VmRSS")
    server_round(name, ps, ranks)
    print(json.dumps({"peak_mib": (_status_kib("VmHWM") - before) / 1024}))


def peak(name: str, hidden: int, matrices: int) -> float:
    code = (
        "from experiments.bench_aggregation import _peak_child; "
        f"_peak_child({name!r}, {hidden}, {matrices})"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=600
    )
    return float(json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"])


def train_seconds(encoder: str, samples: int = 32, seq_len: int = 128) -> float:
    """A round's local training time on this shape: one device's epoch on ``samples``
    cached hidden states (rank 32), scaled to the round's samples."""
    from fsl_opt.learning.local import DeviceData, LocalConfig, train
    from fsl_opt.learning.split_model import SplitModel, layer_indices, load_encoder

    torch.manual_seed(0)
    enc = load_encoder(encoder)
    model = SplitModel(enc, layer_indices("last3", len(enc.encoder.layer)), num_labels=4)
    model.set_rank(32)
    g = torch.Generator().manual_seed(0)
    hidden = enc.config.hidden_size
    data = DeviceData(
        attention_mask=torch.ones(samples, seq_len, dtype=torch.int8),
        labels=torch.randint(0, 4, (samples,), generator=g),
        hidden=torch.randn(samples, seq_len, hidden, generator=g).half(),
    )
    state = model.adapter_state()
    cfg = LocalConfig(rank=32, lr=1e-4, batch_size=16)
    train(model, state, data, cfg)  # warm-up
    t = time.perf_counter()
    train(model, state, data, cfg)
    return (time.perf_counter() - t) * ROUND_SAMPLES / samples


def main(out: Path | None = None, quick: bool = False) -> list[dict[str, Any]]:
    warn_if_busy()
    print(f"torch threads: {torch.get_num_threads()}")
    repeats = 3 if quick else 11
    shapes = SHAPES[:1] if quick else SHAPES
    rows = []
    for shape, hidden, matrices, encoder in shapes:
        train_s = train_seconds(encoder, samples=16 if quick else 32)
        for name in AGGREGATORS:
            secs = timing(name, hidden, matrices, repeats)
            row = {
                "shape": shape,
                "aggregation": name,
                "ranks": "/".join(map(str, ranks_for(name))),
                "seconds": secs,
                "peak_mib": peak(name, hidden, matrices),
                "train_s": train_s,
                "fraction": secs / train_s,
            }
            rows.append(row)
            print(
                f"{shape:>15} {name:>9} ranks {row['ranks']:>8}: {secs * 1e3:8.2f} ms "
                f"(+{row['peak_mib']:6.1f} MiB) = {row['fraction']:.2e} of a "
                f"{train_s:.1f} s training round"
            )
    if out is not None:
        write_csv(Path(out) / "aggregation.csv", rows)
    return rows
