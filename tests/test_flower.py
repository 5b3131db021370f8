"""The Flower backend reaches the same aggregate adapters as the in-process backend."""

import pytest
import torch

pytest.importorskip("flwr")


def test_flower_simulation_matches_in_process(tmp_path, monkeypatch, tiny_cfg):
    """3 devices, 2 rounds, tiny model: same ranks, adapters and accuracy, same log format."""
    from safetensors.torch import load_file

    from fsl_opt.federation.backends.flower import run_flower_simulation
    from fsl_opt.federation.loop import run

    monkeypatch.setenv("FSL_OPT_CACHE", str(tmp_path / "cache"))
    cfg = tiny_cfg.replace(rounds=2, out=str(tmp_path / "flower"))
    flower = run_flower_simulation(cfg, progress=False)
    local = run(cfg.replace(out=str(tmp_path / "local")), progress=False)
    assert [r.get("rank") for r in flower] == [r.get("rank") for r in local]
    assert set(flower[-1]) == set(local[-1])
    a = load_file(str(tmp_path / "flower" / "checkpoint" / "adapters.safetensors"))
    b = load_file(str(tmp_path / "local" / "checkpoint" / "adapters.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    assert flower[-1]["test_loss"] == pytest.approx(local[-1]["test_loss"], rel=1e-5)
