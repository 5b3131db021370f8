"""The split model: layer sets, LoRA shape, cached forward == plain forward, payloads."""

import pytest
import torch

from fsl_opt.errors import ConfigError
from fsl_opt.learning.local import cache_hidden
from fsl_opt.learning.lora import nbytes
from fsl_opt.learning.split_model import SplitModel, layer_indices, load_encoder


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("last3", [9, 10, 11]),
        ("first3", [0, 1, 2]),
        ("middle3", [4, 5, 6]),
        ("all", list(range(12))),
        ("last1", [11]),
        ("0,5, 7", [0, 5, 7]),
        ([3, 1], [1, 3]),
    ],
)
def test_layer_sets(spec, expected):
    """Named layer sets of a 12-layer model."""
    assert layer_indices(spec, 12) == expected


@pytest.mark.parametrize(
    ("spec", "pattern"),
    [("last13", "has 12 layers"), ("top3", "expected last3"), ("3,12", "0..11")],
)
def test_bad_layer_sets(spec, pattern):
    """Bad layer sets name the problem."""
    with pytest.raises(ConfigError, match=pattern):
        layer_indices(spec, 12)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = SplitModel(load_encoder("tiny"), [1, 2, 3], num_labels=4)
    model.set_rank(4)
    return model


def test_lora_shape_comes_from_the_model(tiny):
    """d, k, A_hat and l are read off the wrapped projections: 32 x 32, 2 per layer, 3."""
    s = tiny.lora_shape()
    assert (s.d, s.k, s.matrices_per_layer, s.layers, s.layers_run) == (32, 32, 2, 3, 3)


def test_payload_is_lora_plus_head_and_matches_eq5(tiny):
    """Payload = r (d + k) A_hat l fp32 LoRA parameters (eq. 5) plus the head."""
    state = tiny.adapter_state()
    lora = {k: v for k, v in state.items() if "lora_" in k}
    assert len(lora) == 2 * 2 * 3
    assert sum(v.numel() for v in lora.values()) == 4 * (32 + 32) * 2 * 3
    head = 32 * 4 + 4
    assert nbytes(state) == 4 * (4 * 64 * 6 + head)


def test_cached_forward_equals_plain_forward(tiny):
    """top(cached bottom) gives the logits of the full forward (half-precision cache)."""
    torch.manual_seed(1)
    ids = torch.randint(100, 1000, (5, 12))
    mask = torch.ones(5, 12, dtype=torch.int8)
    mask[0, 8:] = 0
    tiny.eval()
    with torch.no_grad():
        # Give the adapters a non-zero update so they matter.
        for n, p in tiny.encoder.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
        plain = tiny(ids, mask)
        data = cache_hidden(
            tiny, ids, mask, torch.zeros(5, dtype=torch.long), cache=True, dtype="float32"
        )
        h, m = data.batch(torch.arange(5), tiny, torch.device("cpu"))
        cached = tiny.top(h, m)
    torch.testing.assert_close(cached, plain, rtol=1e-5, atol=1e-5)


def test_set_rank_and_reload(tiny):
    """A payload round-trips through load_adapter_state at its rank."""
    tiny.set_rank(6)
    state = {k: torch.randn_like(v) for k, v in tiny.adapter_state().items()}
    tiny.load_adapter_state(state)
    back = tiny.adapter_state()
    for k in state:
        torch.testing.assert_close(back[k], state[k])
    assert back[next(k for k in back if "lora_A" in k)].shape[0] == 6


def test_only_adapters_and_head_train(tiny):
    """The frozen encoder has no trainable weights besides LoRA."""
    names = [n for n, p in tiny.encoder.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)


def test_roberta_architecture_splits_too():
    """A tiny random RoBERTa (the paper's architecture) runs cached == plain."""
    from transformers import AutoModel, RobertaConfig

    torch.manual_seed(0)
    cfg = RobertaConfig(
        vocab_size=500,
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        pad_token_id=1,
    )
    model = SplitModel(
        AutoModel.from_config(cfg, add_pooling_layer=False), layer_indices("last3", 4), num_labels=4
    )
    model.set_rank(2)
    model.eval()
    ids = torch.randint(3, 500, (3, 10))
    mask = torch.ones(3, 10, dtype=torch.int8)
    with torch.no_grad():
        plain = model(ids, mask)
        data = cache_hidden(
            model, ids, mask, torch.zeros(3, dtype=torch.long), cache=True, dtype="float32"
        )
        h, m = data.batch(torch.arange(3), model, torch.device("cpu"))
        torch.testing.assert_close(model.top(h, m), plain, rtol=1e-5, atol=1e-5)
    assert model.lora_shape().matrices_per_layer == 2
