"""Federated runs end to end on a tiny random model: records, resume, errors."""

import numpy as np
import pytest
import torch

from fsl_opt.errors import ConfigError
from fsl_opt.federation.loop import run
from fsl_opt.federation.settings import RunConfig, config_from_dict
from fsl_opt.federation.workload import build_system
from fsl_opt.learning.split_model import LoraShape
from fsl_opt.problem.presets import CALIBRATED


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("FSL_OPT_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def test_records_hold_decisions_costs_and_accuracy(tmp_path, tiny_cfg):
    """Round 0 is the untuned model; every later round logs rank, f, costs, bytes, accuracy."""
    cfg = tiny_cfg
    recs = run(cfg, progress=False)
    assert [r["round"] for r in recs] == [0, 1, 2, 3]
    assert "rank" not in recs[0] and 0 <= recs[0]["test_accuracy"] <= 1
    for r in recs[1:]:
        assert 1 <= r["rank"] <= 8 and r["status"] == "optimal"
        assert len(r["frequencies_hz"]) == 3 and len(r["binding"]) == 3
        assert r["round_latency_s"] <= build_system_t0(cfg) * (1 + 1e-9)
        # Real payload = modeled LoRA bytes (eq. 5, Q = 32 bits) + the head (32 x 4 + 4 floats).
        assert r["ranks"] == [r["rank"]] * 3 and r["selected_devices"] == [0, 1, 2]
        for i in range(3):
            assert r["uploaded_bytes"][i] == r["modeled_upload_bytes"][i] + 4 * 132
            assert r["downloaded_bytes"][i] == r["uploaded_bytes"][i]
        assert r["train_loss"] > 0 and 0 <= r["test_accuracy"] <= 1
    csv_lines = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert len(csv_lines) == 5 and csv_lines[0].startswith("round,rank,status")
    assert (tmp_path / "run" / "checkpoint" / "adapters.safetensors").exists()


def build_system_t0(cfg):
    from channels import build_channel
    from fsl_opt.learning.split_model import SplitModel, layer_indices, load_encoder
    from fsl_opt.problem.presets import get_preset

    torch.manual_seed(0)
    enc = load_encoder("tiny")
    m = SplitModel(enc, layer_indices(cfg.layers, 4), 4)
    m.set_rank(1)
    placement = get_preset(cfg.preset).place(cfg.devices, np.random.default_rng(cfg.seed))
    channel = build_channel(cfg.channel, placement.channel)
    return build_system(cfg, m.lora_shape(), [24, 24, 24], placement, channel)[0].latency_s


def test_resume_matches_uninterrupted_run(tmp_path, tiny_cfg):
    """Stopping after round 1 and resuming ends exactly where a straight run ends."""
    straight = run(tiny_cfg.replace(out=str(tmp_path / "a")), progress=False)
    cfg = tiny_cfg.replace(out=str(tmp_path / "b"))
    run(cfg, progress=False, stop_after=1)
    resumed = run(cfg, resume=True, progress=False)
    assert [r["rank"] for r in resumed[1:]] == [r["rank"] for r in straight[1:]]
    assert resumed[-1]["test_accuracy"] == straight[-1]["test_accuracy"]
    assert resumed[-1]["test_loss"] == pytest.approx(straight[-1]["test_loss"], rel=1e-6)


def test_fixed_rank_and_skipped_round(tmp_path, tiny_cfg):
    """--rank trains at that rank, or at one rank per device; an impossible T0 skips
    training but still logs."""
    recs = run(tiny_cfg.replace(rounds=1, rank=3, out=str(tmp_path / "f")), progress=False)
    assert recs[1]["rank"] == 3
    given = tiny_cfg.replace(
        rounds=1, rank=(2, 0, 3), aggregation="zero_pad", out=str(tmp_path / "v")
    )
    assert tiny_cfg.devices == 3
    recs = run(given, progress=False)  # one rank per device, 0 left out
    assert recs[1]["ranks"] == [2, 0, 3] and recs[1]["selected_devices"] == [0, 2]
    recs = run(tiny_cfg.replace(rounds=1, latency_s=1e-6, out=str(tmp_path / "s")), progress=False)
    assert recs[1]["rank"] == 0 and recs[1]["status"] == "infeasible"
    assert recs[1]["test_accuracy"] == recs[0]["test_accuracy"]


def test_existing_run_needs_resume_or_overwrite(tmp_path, tiny_cfg):
    """A second run into the same folder is refused with advice."""
    cfg = tiny_cfg.replace(rounds=1, out=str(tmp_path / "x"))
    run(cfg, progress=False)
    with pytest.raises(ConfigError, match="already holds a run: pass --resume"):
        run(cfg, progress=False)
    with pytest.raises(ConfigError, match=r"differ from .* in lr"):
        run(cfg.replace(lr=1e-3), resume=True, progress=False)
    assert len(run(cfg, overwrite=True, progress=False)) == 2


def test_config_errors():
    """Unknown keys and bad types in a run config are named."""
    with pytest.raises(ConfigError, match="unknown key 'lr_rate'"):
        config_from_dict({"lr_rate": 0.1})
    with pytest.raises(ConfigError, match="rounds = 'three': expected int"):
        config_from_dict({"rounds": "three"})
    with pytest.raises(ConfigError, match="partition = 'skewed'"):
        RunConfig(partition="skewed")
    assert config_from_dict({"run": {"lr": 1}}).lr == 1.0


def test_calibrated_compute_by_hand():
    """h = 32, i = 64, S = 8, 3 layers: layer = 2 (4 h^2 + 2 h i + 2 S h) S FLOPs."""
    shape = LoraShape(
        d=32, k=32, matrices_per_layer=2, layers=3, hidden=32, intermediate=64, layers_run=3
    )
    layer = 2 * (4 * 32 * 32 + 2 * 32 * 64 + 2 * 8 * 32) * 8
    out = CALIBRATED.compute_for(
        hidden=shape.hidden,
        intermediate=shape.intermediate,
        layers_run=shape.layers_run,
        seq_len=8,
        d=shape.d,
        k=shape.k,
    )
    assert out["base_cycles"] == pytest.approx(2 * layer * 3 / 8)
    assert out["cycles_per_op"] == pytest.approx(3 * 8 * 64 / 1024 / 8)
