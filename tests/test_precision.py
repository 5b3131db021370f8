"""bf16 autocast: refused where the hardware lacks it; where it has it, adapters stay fp32 and
training follows fp32 closely; the frozen layers' dropout can be switched off."""

import pytest
import torch

from fsl_opt.errors import ConfigError
from fsl_opt.learning.local import (
    DeviceData,
    LocalConfig,
    bf16_support,
    check_precision,
    evaluate,
    train,
)

NATIVE = not bf16_support(torch.device("cpu"))


def tiny_model():
    from fsl_opt.learning.split_model import SplitModel, load_encoder

    torch.manual_seed(0)
    model = SplitModel(load_encoder("tiny"), [2, 3], 4)
    model.reset_adapters(0)
    model.set_rank(4)
    return model


def tiny_data(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return DeviceData(
        attention_mask=torch.ones(n, 12, dtype=torch.int8),
        labels=torch.randint(0, 4, (n,), generator=g),
        hidden=torch.randn(n, 12, 32, generator=g),
    )


def test_unsupported_precision_is_refused_with_the_reason():
    with pytest.raises(ConfigError, match="bf16 is not supported here on meta"):
        check_precision("bf16", torch.device("meta"))
    with pytest.raises(ConfigError, match="precision = 'fp16'"):
        check_precision("fp16", torch.device("cpu"))
    check_precision("fp32", torch.device("meta"))


@pytest.mark.skipif(not NATIVE, reason="this CPU has no native bf16")
def test_bf16_keeps_fp32_state_and_follows_fp32():
    """Adapters, head and optimizer moments stay fp32; the trained adapter differs from the
    fp32 one by bf16 rounding only. Measured on a CPU with native bf16 (AVX512-BF16), as a
    share of each tensor's fp32 update: value adapters and head 0.2-0.5%, query adapters
    4.6-12.5%. Adam divides each update by the gradient's own scale, and a query adapter's
    gradient (through the softmax of a random model's attention) is so small that bf16's
    rounding of it moves Adam's step; the bounds below are about 3x those figures."""
    model, data = tiny_model(), tiny_data()
    state = model.adapter_state()
    runs = {}
    for precision in ("fp32", "bf16"):
        cfg = LocalConfig(rank=4, lr=1e-2, batch_size=8, precision=precision)
        runs[precision] = train(model, state, data, cfg)
    out = runs["bf16"]
    assert all(v.dtype == torch.float32 for v in out.adapter_state.values())
    moments = [s["exp_avg"] for s in out.optimizer_state["state"].values()]
    assert moments and all(m.dtype == torch.float32 for m in moments)
    deltas = {}
    for key, ref in runs["fp32"].adapter_state.items():
        delta = (out.adapter_state[key] - ref).norm() / (ref - state[key]).norm().clamp_min(1e-12)
        deltas[key] = delta.item()
        assert delta < (0.4 if ".query." in key else 0.015), (key, delta.item())
    assert max(deltas.values()) > 1e-4, deltas  # bf16 did run: it is not fp32 under a name
    loss = runs["bf16"].metrics["train_loss"], runs["fp32"].metrics["train_loss"]
    assert loss[0] == pytest.approx(loss[1], rel=1e-3)
    m = evaluate(model, data, precision="bf16")
    assert 0 <= m["accuracy"] <= 1 and m["loss"] > 0


def test_frozen_dropout_off_is_deterministic_and_keeps_head_dropout():
    """Without the frozen layers' dropout two forward passes agree; the head's dropout
    still acts in training mode."""
    model, data = tiny_model(), tiny_data()
    cfg = LocalConfig(rank=4, lr=0.0, batch_size=8, frozen_dropout=False)
    train(model, model.adapter_state(), data, cfg)
    model.train()
    model.freeze_dropout()
    assert not any(b.training for b in model.blocks[model.split :])
    assert model.head.training
    hidden, mask = data.batch(torch.arange(4), model, torch.device("cpu"))
    body = model._run(hidden, mask, model.split, len(model.blocks))
    again = model._run(hidden, mask, model.split, len(model.blocks))
    torch.testing.assert_close(body, again, rtol=0, atol=0)


@pytest.mark.skipif(NATIVE, reason="this CPU runs bf16")
def test_a_run_in_bf16_is_refused_before_its_folder_is_made(tmp_path):
    """The precision is checked before any folder is made or any model loads."""
    from fsl_opt.federation.loop import run
    from fsl_opt.federation.settings import RunConfig

    out = tmp_path / "run"
    with pytest.raises(ConfigError, match="no native bf16"):
        run(RunConfig(model="tiny", precision="bf16", out=str(out)))
    assert not out.exists()
