"""Devices trained together (multi-LoRA over the shared frozen layers) against the oracle:
each device trained alone by ``local.train``."""

import pytest
import torch

from fsl_opt.learning.batched import train_batched, why_not
from fsl_opt.learning.local import LocalConfig, cache_hidden, train
from fsl_opt.learning.split_model import SplitModel, layer_indices, load_encoder


def _model():
    torch.manual_seed(0)
    encoder = load_encoder("tiny")
    model = SplitModel(encoder, layers=layer_indices("last2", 4), num_labels=3)
    model.reset_adapters(0)
    return model


def _data(model, n, seed):
    """n samples of random tokens with ragged lengths (padding differs between devices)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 2000, (n, 16), generator=g)
    lengths = torch.randint(3, 17, (n,), generator=g)
    mask = (torch.arange(16)[None, :] < lengths[:, None]).to(torch.int8)
    labels = torch.randint(0, 3, (n,), generator=g)
    return cache_hidden(model, ids, mask, labels, cache=True)


def _state(model, rank, seed):
    """A payload at ``rank`` with nonzero A and B (as after some rounds)."""
    model.set_rank(rank)
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=g) * 0.1 for k, v in model.adapter_state().items()}


def _config(rank, seed, frozen_dropout=False, **kw):
    kw = {"batch_size": 8, **kw}
    return LocalConfig(rank=rank, lr=5e-3, seed=seed, frozen_dropout=frozen_dropout, epochs=2, **kw)


@pytest.mark.parametrize(
    ("frozen_dropout", "attention"),
    [(False, "eager"), (True, "eager"), (True, "sdpa")],
    ids=["no-frozen-dropout", "frozen-dropout-eager", "frozen-dropout-sdpa"],
)
def test_devices_trained_together_get_what_each_gets_alone(frozen_dropout, attention):
    """Three devices, ranks 2/4/3, ragged padding, 20 samples (a short last batch), two
    epochs, the head's dropout on, and saved AdamW moments for one of them: every
    device's adapters, loss and moments equal training it alone. With the frozen layers'
    dropout on, alone with the encoder set to its plain attention or torch's fused one
    (training routes either through the keyed stream's attention), so every mask must
    come out of each device's stream as it does alone."""
    model = _model()
    model.encoder.config._attn_implementation = attention
    ranks, seeds = [2, 4, 3], [11, 12, 13]
    datas = [_data(model, 20, s) for s in seeds]
    states = [_state(model, r, s) for r, s in zip(ranks, seeds, strict=True)]
    configs = [_config(r, s, frozen_dropout) for r, s in zip(ranks, seeds, strict=True)]
    # Device 1 has moments from an earlier round at its rank.
    earlier = train(model, states[1], datas[1], configs[1])
    opts = [None, earlier.optimizer_state, None]

    saved_step = float(opts[1]["state"][0]["step"])
    alone = [
        train(model, st, d, c, o) for st, d, c, o in zip(states, datas, configs, opts, strict=True)
    ]
    assert float(opts[1]["state"][0]["step"]) == saved_step  # train() leaves its input be
    together = train_batched(model, states, datas, configs, opts)

    for a, t, r in zip(alone, together, ranks, strict=True):
        assert set(t.adapter_state) == set(a.adapter_state)
        assert {v.shape[0] for k, v in t.adapter_state.items() if "lora_A" in k} == {r}
        for k, v in a.adapter_state.items():
            assert t.adapter_state[k].shape == v.shape
            torch.testing.assert_close(t.adapter_state[k], v, rtol=1e-4, atol=1e-6)
        assert t.metrics["train_loss"] == pytest.approx(a.metrics["train_loss"], rel=1e-5)
        assert t.n_examples == a.n_examples
        sa, st = a.optimizer_state["state"], t.optimizer_state["state"]
        assert set(sa) == set(st)
        for j in sa:
            assert float(st[j]["step"]) == float(sa[j]["step"])
            torch.testing.assert_close(st[j]["exp_avg"], sa[j]["exp_avg"], rtol=1e-4, atol=1e-7)
            torch.testing.assert_close(
                st[j]["exp_avg_sq"], sa[j]["exp_avg_sq"], rtol=1e-4, atol=1e-9
            )
    assert float(together[1].optimizer_state["state"][0]["step"]) == 2 * 2 * 3  # 2 rounds
    assert model.encoder.config._attn_implementation == attention  # put back
    if frozen_dropout:  # the masks matter: without them the answer differs
        off = train_batched(
            model, states, datas, [_config(r, s) for r, s in zip(ranks, seeds, strict=True)], opts
        )
        assert not torch.allclose(
            off[0].adapter_state[next(iter(off[0].adapter_state))],
            together[0].adapter_state[next(iter(off[0].adapter_state))],
        )


def test_why_not_names_what_keeps_devices_apart():
    """Devices whose masks would come from elsewhere (LoRA dropout, drawn inside peft),
    or that differ in size or settings, are refused (and train_batched raises rather than
    give a different answer)."""
    model = _model()
    datas = [_data(model, 8, 1), _data(model, 8, 2)]
    states = [_state(model, 2, 1), _state(model, 2, 2)]
    ok = [_config(2, 1), _config(2, 2)]
    assert why_not(model, states, datas, ok) == ""
    dropout = [LocalConfig(rank=2, lr=5e-3, seed=s) for s in (1, 2)]  # frozen dropout on
    assert why_not(model, states, datas, dropout) == ""
    # Masks come from the keyed stream on any device: a GPU groups with dropout on too.
    assert why_not(model, states, datas, dropout, torch.device("cuda")) == ""
    assert why_not(model, states, datas, ok, torch.device("cuda")) == ""
    assert "samples" in why_not(model, states, [datas[0], _data(model, 9, 3)], ok)
    assert "settings" in why_not(model, states, datas, [ok[0], _config(2, 2, weight_decay=0.1)])
    assert "settings" in why_not(model, states, datas, [ok[0], dropout[1]])
    model.lora_dropout = 0.1
    assert "LoRA dropout" in why_not(model, states, datas, ok)
    with pytest.raises(ValueError, match="LoRA dropout"):
        train_batched(model, states, datas, ok, [None, None])


@pytest.mark.parametrize("frozen_dropout", [False, True], ids=["no-frozen-dropout", "default"])
def test_run_with_batched_devices_logs_the_records_of_devices_in_turn(tmp_path, frozen_dropout):
    """A whole run, with and without the frozen layers' dropout: the in-process backend's
    groups give the records (ranks, losses, accuracies) of the same run trained device by
    device."""
    from fsl_opt.federation.backends.inprocess import InProcessBackend
    from fsl_opt.federation.loop import run
    from fsl_opt.federation.settings import RunConfig

    from .conftest import TINY_RUN

    def go(name, batch):
        cfg = RunConfig(**TINY_RUN, frozen_dropout=frozen_dropout, out=str(tmp_path / name))
        return run(cfg, progress=False, backend=InProcessBackend(batch_devices=batch))

    together, alone = go("together", True), go("alone", False)
    assert len(together) == len(alone) == TINY_RUN["rounds"] + 1
    for t, a in zip(together, alone, strict=True):
        assert t.get("ranks") == a.get("ranks")
        assert t["test_accuracy"] == a["test_accuracy"]
        if "train_loss" in a:
            assert t["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)


def test_groups_leave_devices_with_full_steps_alone():
    """The in-process backend groups small devices up to GROUP_TOKENS rows a step, and
    leaves a device whose own step has ALONE_TOKENS rows alone (no gain, more memory)."""
    from types import SimpleNamespace

    from fsl_opt.federation.backends.inprocess import (
        ALONE_TOKENS,
        GROUP_TOKENS,
        InProcessBackend,
    )

    model = _model()

    def groups(n, samples, width, batch):
        data = _data(model, samples, 1)
        data.attention_mask = torch.ones(samples, width, dtype=torch.int8)
        ctx = SimpleNamespace(model=model, devices=[data] * n, torch_device=torch.device("cpu"))
        state = _state(model, 2, 1)
        configs = {i: _config(2, i, True, batch_size=batch) for i in range(n)}
        return InProcessBackend()._groups(ctx, dict.fromkeys(range(n), state), configs)

    # 16 x 16 rows a device: GROUP_TOKENS // 256 devices a group.
    per_group = GROUP_TOKENS // 256
    assert groups(40, 20, 16, 16) == [
        list(range(lo, min(lo + per_group, 40))) for lo in range(0, 40, per_group)
    ]
    # A full step (batch x width = ALONE_TOKENS rows): alone, whatever the cap allows.
    assert groups(3, 20, ALONE_TOKENS // 16, 16) == [[0], [1], [2]]
    assert groups(3, 20, ALONE_TOKENS // 16 - 1, 16) == [[0, 1], [2]]
    assert InProcessBackend(batch_devices=False)._groups(
        SimpleNamespace(model=model, devices=[None] * 2, torch_device=None), {0: {}, 1: {}}, {}
    ) == [[0], [1]]
