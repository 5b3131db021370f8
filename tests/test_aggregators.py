"""Aggregators for equal and different ranks, each against a reference computed here
independently (dense products in numpy, numpy's SVD, hand-made padding)."""

import numpy as np
import pytest
import torch

from fsl_opt.learning.aggregators import SVD, FedAvg, RankNormalized, Stack, ZeroPad
from fsl_opt.learning.lora import merged_key, state_rank
from fsl_opt.learning.registry import make_aggregator

D, K = 10, 7
KEYS = [("x.lora_A.weight", "x.lora_B.weight"), ("y.lora_A.weight", "y.lora_B.weight")]


def payload(rank, seed):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for ka, kb in KEYS:
        out[ka] = torch.randn(rank, K, generator=g, dtype=torch.float64)
        out[kb] = torch.randn(D, rank, generator=g, dtype=torch.float64)
    out["head.1.weight"] = torch.randn(3, D, generator=g, dtype=torch.float64)
    out["head.1.bias"] = torch.randn(3, generator=g, dtype=torch.float64)
    return out


def product(p, ka, kb):
    return p[kb].numpy() @ p[ka].numpy()


def weighted_products(payloads, weights, ka, kb):
    w = np.asarray(weights, dtype=float) / sum(weights)
    return sum(wi * product(p, ka, kb) for p, wi in zip(payloads, w, strict=True))


def check_head(out, payloads, weights):
    w = np.asarray(weights, dtype=float) / sum(weights)
    for key in ("head.1.weight", "head.1.bias"):
        ref = sum(wi * p[key].numpy() for p, wi in zip(payloads, w, strict=True))
        np.testing.assert_allclose(out[key].numpy(), ref, rtol=1e-12, atol=1e-12)


def test_fedavg_by_hand_and_refuses_different_ranks():
    """Weights 1 and 3: (1 * A1 + 3 * A2) / 4 entry by entry; ranks 2 and 3 refused."""
    p1, p2 = payload(2, 0), payload(2, 1)
    out = FedAvg().aggregate({}, [p1, p2], [2, 2], [1.0, 3.0])
    for key in p1:
        np.testing.assert_allclose(out[key].numpy(), (p1[key] + 3 * p2[key]).numpy() / 4)
    with pytest.raises(ValueError, match="ranks \\[2, 3\\]"):
        FedAvg().aggregate({}, [p1, payload(3, 2)], [2, 3], [1.0, 1.0])
    with pytest.raises(ValueError, match="payload 1 has rank 2"):
        FedAvg().aggregate({}, [p1, p2], [2, 3], [1.0, 1.0])


def test_zero_pad_with_equal_ranks_is_fedavg():
    """HetLoRA's padding changes nothing when every rank is the same."""
    ps = [payload(4, s) for s in range(3)]
    w = [1.0, 2.0, 5.0]
    a = ZeroPad().aggregate({}, ps, [4, 4, 4], w)
    b = FedAvg().aggregate({}, ps, [4, 4, 4], w)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_zero_pad_by_hand_and_truncation():
    """Ranks 1 and 3, weights 1 and 1: row 0 of A averages both, rows 1-2 are half of device
    2's (device 1 padded with zeros); a device at rank 2 gets the first 2 rows / columns."""
    p1, p3 = payload(1, 0), payload(3, 1)
    out = ZeroPad().aggregate({}, [p1, p3], [1, 3], [1.0, 1.0])
    for ka, kb in KEYS:
        a_ref = 0.5 * p3[ka].numpy()
        a_ref[0] += 0.5 * p1[ka].numpy()[0]
        b_ref = 0.5 * p3[kb].numpy()
        b_ref[:, 0] += 0.5 * p1[kb].numpy()[:, 0]
        np.testing.assert_allclose(out[ka].numpy(), a_ref, rtol=1e-12)
        np.testing.assert_allclose(out[kb].numpy(), b_ref, rtol=1e-12)
    check_head(out, [p1, p3], [1.0, 1.0])
    two = ZeroPad().payload(out, 2, torch.Generator().manual_seed(0))
    for ka, kb in KEYS:
        np.testing.assert_array_equal(two[ka].numpy(), out[ka].numpy()[:2])
        np.testing.assert_array_equal(two[kb].numpy(), out[kb].numpy()[:, :2])


def test_rank_normalized_by_hand_and_with_equal_ranks():
    """Ranks 1, 3 and 2 with weights 1, 3 and 2, entry by entry in numpy: row 0 of A is the
    mean of all three (weights 1:3:2), row 1 of devices 2 and 3 (3:2), row 2 device 2's
    alone (no zero from the others pulls it down, as zero padding's 3/6 does); B's columns
    alike; the head over all three. Equal ranks: zero_pad's (and fedavg's) answer exactly."""
    ps, ranks, w = [payload(1, 0), payload(3, 1), payload(2, 2)], [1, 3, 2], [1.0, 3.0, 2.0]
    out = RankNormalized().aggregate({}, ps, ranks, w)
    for ka, kb in KEYS:
        for j in range(3):
            holders = [(p, wi) for p, r, wi in zip(ps, ranks, w, strict=True) if r > j]
            total = sum(wi for _, wi in holders)
            a_j = sum(wi * p[ka].numpy()[j] for p, wi in holders) / total
            b_j = sum(wi * p[kb].numpy()[:, j] for p, wi in holders) / total
            np.testing.assert_allclose(out[ka].numpy()[j], a_j, rtol=1e-12)
            np.testing.assert_allclose(out[kb].numpy()[:, j], b_j, rtol=1e-12)
    check_head(out, ps, w)
    padded = ZeroPad().aggregate({}, ps, ranks, w)
    for ka, _ in KEYS:  # zero padding shrinks row 2 to device 2's share of the weight
        np.testing.assert_allclose(padded[ka].numpy()[2], 0.5 * out[ka].numpy()[2], rtol=1e-12)
    same = [payload(4, s) for s in range(3)]
    a = RankNormalized().aggregate({}, same, [4, 4, 4], w)
    b = ZeroPad().aggregate({}, same, [4, 4, 4], w)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-15, atol=1e-15)
    two = RankNormalized().payload(out, 2, torch.Generator().manual_seed(0))
    for ka, kb in KEYS:  # devices restart from the first rows / columns, as with zero_pad
        np.testing.assert_array_equal(two[ka].numpy(), out[ka].numpy()[:2])
        np.testing.assert_array_equal(two[kb].numpy(), out[kb].numpy()[:, :2])


def test_svd_identical_updates_give_that_update_back():
    """Equal ranks, identical device updates: the aggregate is that update, and a device at
    the same rank starts from exactly it (to float tolerance)."""
    p = payload(3, 0)
    out = SVD().aggregate({}, [p, p, p], [3, 3, 3], [1.0, 4.0, 2.0])
    back = SVD().payload(out, 3, torch.Generator().manual_seed(0))
    for ka, kb in KEYS:
        np.testing.assert_allclose(product(out, ka, kb), product(p, ka, kb), atol=1e-12)
        np.testing.assert_allclose(product(back, ka, kb), product(p, ka, kb), atol=1e-10)
    check_head(out, [p, p, p], [1.0, 4.0, 2.0])


def test_svd_is_the_weighted_sum_and_devices_get_its_best_approximation():
    """Ranks 1, 2, 4: the global update is sum_i w_i B_i A_i; a device at rank r gets the
    truncated SVD of it, whose error is the norm of the dropped singular values (numpy)."""
    ps = [payload(r, s) for s, r in enumerate((1, 2, 4))]
    w = [3.0, 1.0, 2.0]
    out = SVD().aggregate({}, ps, [1, 2, 4], w)
    assert state_rank(out) == 7
    for r in (1, 2, 5):
        dev = SVD().payload(out, r, torch.Generator().manual_seed(0))
        assert state_rank(dev) == r
        for ka, kb in KEYS:
            ref = weighted_products(ps, w, ka, kb)
            np.testing.assert_allclose(product(out, ka, kb), ref, atol=1e-12)
            s = np.linalg.svd(ref, compute_uv=False)
            err = np.linalg.norm(ref - product(dev, ka, kb))
            assert err == pytest.approx(np.sqrt((s[r:] ** 2).sum()), rel=1e-9, abs=1e-9)


def test_svd_refactors_losslessly_past_full_rank():
    """Ranks summing past min(d, k): the global adapter is re-factored at min(d, k) with the
    same product."""
    ps = [payload(5, s) for s in range(3)]  # 15 > min(10, 7)
    out = SVD().aggregate({}, ps, [5, 5, 5], [1.0, 1.0, 1.0])
    assert state_rank(out) == min(D, K)
    for ka, kb in KEYS:
        np.testing.assert_allclose(
            product(out, ka, kb), weighted_products(ps, [1, 1, 1], ka, kb), atol=1e-10
        )


def test_stack_merges_the_exact_weighted_sum():
    """FLoRA: merged change = s sum_i w_i B_i A_i (accumulated over rounds); the global
    adapter then contributes nothing, and devices restart with B = 0."""
    ps = [payload(r, s) for s, r in enumerate((2, 3, 1))]
    w = [1.0, 2.0, 3.0]
    agg = Stack(scale=2.0)
    first = agg.aggregate({}, ps, [2, 3, 1], w)
    second = agg.aggregate(first, ps[:2], [2, 3], w[:2])
    for ka, kb in KEYS:
        one = 2.0 * weighted_products(ps, w, ka, kb)
        np.testing.assert_allclose(first[merged_key(ka)].numpy(), one, rtol=1e-12, atol=1e-12)
        two = one + 2.0 * weighted_products(ps[:2], w[:2], ka, kb)
        np.testing.assert_allclose(second[merged_key(ka)].numpy(), two, rtol=1e-12, atol=1e-12)
        assert not first[kb].any()
    check_head(first, ps, w)
    dev = agg.payload(second, 4, torch.Generator().manual_seed(0))
    assert state_rank(dev) == 4
    for ka, kb in KEYS:
        assert not dev[kb].any() and dev[ka].abs().sum() > 0
        assert dev[merged_key(ka)] is second[merged_key(ka)]


def test_stacked_merge_computes_what_the_adapter_did():
    """A payload's adapter B A on the tiny model and the same adapter merged by ``stack``
    into the frozen weights give the same logits: the scale and the module paths are right."""
    from fsl_opt.learning.split_model import SplitModel, load_encoder

    torch.manual_seed(0)
    model = SplitModel(load_encoder("tiny"), [2, 3], 4, lora_scale=2.0)
    model.reset_adapters(0)
    model.set_rank(3)
    g = torch.Generator().manual_seed(1)
    state = {k: torch.randn(v.shape, generator=g) * 0.3 for k, v in model.adapter_state().items()}
    model.load_adapter_state(state)
    hidden = torch.randn(2, 5, 32, generator=g)
    mask = torch.ones(2, 5, dtype=torch.long)
    model.eval()
    with torch.no_grad():
        want = model.top(hidden, mask)
        merged = Stack(scale=2.0).aggregate({}, [state], [3], [1.0])
        model.set_rank(state_rank(merged))
        model.load_adapter_state(merged)
        got = model.top(hidden, mask)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
        assert (got - model.top(hidden, mask)).abs().max() == 0
        model.set_rank(3)
        model.load_adapter_state(state)  # no merged entries: the pre-trained weights are back
        torch.testing.assert_close(model.top(hidden, mask), want, rtol=1e-5, atol=1e-6)


def test_unknown_aggregation_is_named():
    with pytest.raises(ValueError, match="fedavg, zero_pad, rank_normalized, svd, stack"):
        make_aggregator("svdx", 2.0, 3)
