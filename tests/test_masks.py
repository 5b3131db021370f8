"""The keyed dropout stream: keep rate and independence (statistics), the same masks at any
thread count and block split, alone and in a group."""

import numpy as np
import pytest
import torch
from scipy import stats

from fsl_opt.learning import masks
from fsl_opt.learning.masks import MaskStream, keep_threshold

P = 0.1


def _mask(keys, shape, p=P, step=1, site=0, widths=None):
    stream = MaskStream(keys)
    stream.step = step - 1
    stream.begin_step(widths)
    stream.site = site
    return stream.masks(torch.empty(shape), p, (0,))


def test_keep_rate_is_one_minus_p_chi_square():
    """200 masks of 50,000 values (keys over devices, steps and sites): the kept counts
    fit Binomial(50,000, 0.9) (chi-square of the 200 counts against it, and of their sum),
    and a kept value is exactly 1 / (1 - p)."""
    n, counts = 50_000, []
    for device in range(5):
        for step in range(1, 9):
            for site in range(5):
                m = _mask([(7, 3, device)], (1, n), step=step, site=site)
                kept = m != 0
                assert torch.all(m[kept] == torch.tensor(1 / (1 - P), dtype=torch.float32))
                counts.append(int(kept.sum()))
    counts = np.array(counts)
    z = (counts - n * (1 - P)) / np.sqrt(n * P * (1 - P))
    chi2 = float((z**2).sum())
    assert stats.chi2.sf(chi2, len(counts)) > 1e-3, chi2
    total = counts.sum()
    z_all = (total - len(counts) * n * (1 - P)) / np.sqrt(len(counts) * n * P * (1 - P))
    assert abs(z_all) < 4, z_all


@pytest.mark.parametrize(
    "other",
    [dict(device=1), dict(step=2), dict(site=1), dict(round=2), dict(seed=1)],
    ids=["device", "step", "site", "round", "seed"],
)
def test_masks_of_different_keys_are_independent(other):
    """Two masks that differ in one part of the key: the 2x2 table of (kept, kept) counts
    passes a chi-square test of independence and the correlation is within 4 standard
    errors of zero."""
    n = 400_000
    base = dict(seed=0, round=1, device=0, step=1, site=0)
    a_key = base
    b_key = {**base, **other}

    def draw(k):
        return (
            _mask([(k["seed"], k["round"], k["device"])], (1, n), step=k["step"], site=k["site"])
            != 0
        ).numpy()[0]

    a, b = draw(a_key), draw(b_key)
    table = np.array([[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]])
    assert stats.chi2_contingency(table)[1] > 1e-3, table
    r = np.corrcoef(a.astype(float), b.astype(float))[0, 1]
    assert abs(r) < 4 / np.sqrt(n), r


def test_same_key_same_mask_any_thread_count_and_blocks():
    """A mask larger than a block, drawn at 1 and at 2 threads: identical; and the same
    key twice gives the same mask (a keyed stream, not a sequential one)."""
    shape = (3, masks.BLOCK + 12345)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _mask([(1, 2, 3)], shape)
        torch.set_num_threads(2)
        two = _mask([(1, 2, 3)], shape)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)
    assert not torch.equal(one, _mask([(1, 2, 4)], shape))


def test_a_device_draws_the_same_mask_alone_and_in_a_group():
    """In a group of three with the batch padded to the widest device, each device's rows
    hold the mask it draws alone at its own width, and zeros beyond."""
    keys = [(5, 1, d) for d in range(3)]
    widths = [7, 12, 9]
    b, hidden = 4, 6
    grouped = _mask(keys, (3 * b, 12, hidden), widths=widths)
    for i, (key, w) in enumerate(zip(keys, widths, strict=True)):
        alone = _mask([key], (b, w, hidden))
        rows = grouped[i * b : (i + 1) * b]
        assert torch.equal(rows[:, :w], alone)
        assert torch.all(rows[:, w:] == 0)


@pytest.mark.parametrize("p", [0.1, 0.3, 0.05])
def test_bf16_masks_are_the_float32_masks_converted(p):
    """A bf16 mask (drawn as its bits) holds, bit for bit, the float32 mask of the same key
    converted to bf16: alone across several blocks, and in a padded group."""
    keys = [(5, 1, d) for d in range(3)]
    for shape, widths in (((2, 3 * masks.BLOCK // 2 + 17), None), ((12, 12, 6), [7, 12, 9])):
        pair = []
        for dtype in (torch.float32, torch.bfloat16):
            stream = MaskStream(keys if widths else keys[:1])
            stream.begin_step(widths)
            pair.append(stream.masks(torch.empty(shape, dtype=dtype), p, (0,)))
        assert pair[1].dtype == torch.bfloat16
        assert torch.equal(pair[1].view(torch.int16), pair[0].to(torch.bfloat16).view(torch.int16))
    with pytest.raises(ValueError, match="float32 or bf16 bits"):
        masks.kept_value(p, np.dtype(np.float64))


def test_keep_threshold_edges():
    """p = 0 keeps every 32-bit value; p = 0.5 half of them; p outside [0, 1) is refused."""
    assert keep_threshold(0.0) == 2**31  # every int32 is below it
    assert keep_threshold(0.5) == 0
    with pytest.raises(ValueError, match="expected 0 <= p < 1"):
        keep_threshold(1.0)
    assert torch.all(_mask([(0,)], (2, 1000), p=0.0) == 1)
