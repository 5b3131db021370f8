"""`fsl-opt bench remake-cost`: the arithmetic of a finished run, counted by hand."""

import csv
import json

import pytest

from experiments import remake_cost
from fsl_opt.federation.settings import RunConfig, dump_toml
from fsl_opt.learning.split_model import LoraShape

# hidden 4, intermediate 8, seq 2: one layer forward = 2 (4*16 + 2*4*8 + 2*2*4) * 2 = 576
SHAPE = LoraShape(d=4, k=4, matrices_per_layer=2, layers=1, hidden=4, intermediate=8, layers_run=2)
LAYERS = 2 * 576  # the layers from the split up, forward, one sample


def lora(r):  # r S (d + k) per adapted matrix, 2 matrices, 1 adapted layer
    return r * 2 * (4 + 4) * 2


@pytest.fixture
def results(tmp_path):
    (tmp_path / "training").mkdir()
    with (tmp_path / "training" / "round.csv").open("w") as f:
        f.write("precision,gemm_gflop_s\nfp32,100\nfp32,250\n")
    run = tmp_path / "exp" / "runs" / "a-s0"
    run.mkdir(parents=True)
    cfg = RunConfig(
        model="tiny", samples_per_device=10, test_samples=20, max_length=2, local_epochs=3
    )
    (run / "config.toml").write_text(dump_toml(cfg))
    records = [
        {"round": 0, "test_accuracy": 0.25},
        {"round": 1, "selected_devices": [0, 2], "ranks": [4, 0, 2]},
        {"round": 2, "selected_devices": [], "ranks": [0, 0, 0]},  # skipped: nothing trained
    ]
    (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    with (tmp_path / "exp" / "exp.csv").open("w") as f:
        csv.writer(f).writerows([["label", "seed", "wall_s"], ["a", "0", "7.5"]])
    return tmp_path


def test_a_runs_arithmetic_and_floor_by_hand(results, tmp_path):
    # two devices, 10 samples x 3 epochs each: forward + input-gradient backward (2 x the
    # layers) and LoRA's 6 r S (d + k) at their own ranks; then 20 test samples forward at
    # the round's largest rank (4); round 0 and an untrained round count nothing
    train = 30 * (2 * LAYERS + 6 * lora(4)) + 30 * (2 * LAYERS + 6 * lora(2))
    evaluation = 20 * (LAYERS + 2 * lora(4))
    assert train + evaluation == 30 * (2304 + 768) + 30 * (2304 + 384) + 20 * (1152 + 256)
    cache = {("tiny", "last3"): SHAPE}
    flops, rounds, precision = remake_cost.run_flops(results / "exp" / "runs" / "a-s0", cache)
    assert (flops, rounds, precision) == (train + evaluation, 1, "fp32")
    rates = remake_cost.gemm_rate(results)
    assert rates == {"fp32": 250e9}  # the best reading
    row = remake_cost.experiment_cost(results / "exp", rates, cache)
    assert row["runs"] == 1 and row["floor_h"] == pytest.approx(flops / 250e9 / 3600)
    assert row["over_floor"] == pytest.approx(7.5 / (flops / 250e9))
