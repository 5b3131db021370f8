"""Adapter resizing on random matrices (aggregation: tests/test_aggregators.py)."""

import numpy as np
import pytest
import torch

from fsl_opt.learning.aggregators import FedAvg
from fsl_opt.learning.lora import grow, lora_pairs, nbytes, shrink, state_rank


def pair(d=12, k=9, r=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(r, k, generator=g, dtype=torch.float64), torch.randn(
        d, r, generator=g, dtype=torch.float64
    )


def test_grow_keeps_the_product_exactly():
    """Zero-padded B and new A rows: B' A' == B A, shapes grow."""
    a, b = pair()
    a2, b2 = grow(a, b, 8, torch.Generator().manual_seed(1))
    assert a2.shape == (8, 9) and b2.shape == (12, 8)
    torch.testing.assert_close(b2 @ a2, b @ a, rtol=0, atol=0)
    assert (a2[5:].abs() > 0).all()  # the new directions can learn


def test_shrink_is_the_best_low_rank_approximation():
    """Error of the SVD truncation equals the norm of the dropped singular values
    (Eckart-Young), computed independently with numpy."""
    a, b = pair(r=7)
    a2, b2 = shrink(a, b, 3)
    m = (b @ a).numpy()
    s = np.linalg.svd(m, compute_uv=False)
    err = np.linalg.norm(m - (b2 @ a2).numpy())
    assert err == pytest.approx(np.sqrt((s[3:] ** 2).sum()), rel=1e-9)
    # Any other rank-3 factorization does no better (a random one, for instance).
    ra, rb = pair(r=3, seed=5)
    assert np.linalg.norm(m - (rb @ ra).numpy()) > err


def test_shrink_of_exact_low_rank_is_lossless():
    """A product of rank 2 survives shrinking from 6 to 2 exactly."""
    a, b = pair(r=2)
    a6, b6 = grow(a, b, 6, torch.Generator().manual_seed(0))
    a2, b2 = shrink(a6, b6, 2)
    torch.testing.assert_close(b2 @ a2, b @ a)


def test_shrink_of_zero_product_keeps_adapter_alive():
    """B = 0 (a fresh adapter): shrinking leaves B A = 0 but A non-zero, so it can learn."""
    a, b = pair(r=6)
    b.zero_()
    a2, b2 = shrink(a, b, 3, torch.Generator().manual_seed(0))
    assert torch.count_nonzero(b2 @ a2) == 0
    assert (a2.abs().sum(1) > 0).all()


def test_resize_state_and_rank():
    """A payload at another rank: every pair resized, other entries left alone."""
    a, b = pair()
    state = {"x.lora_A.weight": a, "x.lora_B.weight": b, "head.1.bias": torch.ones(3)}
    assert lora_pairs(state) == [("x.lora_A.weight", "x.lora_B.weight")]
    assert state_rank(state) == 5
    big = FedAvg().payload(state, 9, torch.Generator().manual_seed(0))
    small = FedAvg().payload(state, 2, torch.Generator().manual_seed(0))
    assert state_rank(big) == 9 and state_rank(small) == 2
    assert big["head.1.bias"] is state["head.1.bias"]


def test_nbytes():
    """numel x element size."""
    assert nbytes({"w": torch.zeros(2), "v": torch.zeros(3, dtype=torch.float64)}) == 8 + 24
