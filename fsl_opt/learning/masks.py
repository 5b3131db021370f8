"""Dropout masks from a keyed stream: a device's masks are the same alone or in a group, on a
CPU or a GPU, at any thread count.

Local training drops in the frozen layers above the split (the encoder's attention and
hidden dropout) and in the head. Each mask is drawn from its own key::

    (stream key of the device: run seed, round, device) + (step, site, block)

``step`` counts the device's optimizer steps in the round, ``site`` the dropout sites of
one forward pass in the order they run (each layer's attention probabilities and hidden
states, then the head), and ``block`` the mask's values in blocks of :data:`BLOCK`. Every
block seeds numpy's PCG64 through a ``SeedSequence`` of its key and is drawn on its own
(32 random bits a value, kept iff below a threshold set so that the keep rate is 1 - p to
2**-32), so blocks are drawn side by side on as many threads as torch computes with and
no draw depends on another's order. Masks are drawn on the CPU and moved to the device
that computes.

PCG64 was measured against numpy's Philox here (``random_raw``, 2 cores): 660 M 32-bit
values/s against 352 M on one thread; torch's CPU ``bernoulli_`` (a sequential Mersenne
Twister, the stream this replaces) draws 90-150 M values/s whatever the thread count.

:func:`dropping` is the one place the masks enter a forward pass: it hooks the frozen
layers' dropout modules and the head's, and routes attention through :func:`attention`
(the encoder's plain attention, its probabilities dropped with the mask). The
one-device path (:func:`fsl_opt.learning.local.train`) and the grouped path
(:func:`fsl_opt.learning.batched.train_batched`) both run inside it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from fsl_opt.learning.split_model import SplitModel

#: Values per keyed block of a mask.
BLOCK = 1 << 20
#: The attention implementation (transformers' ``AttentionInterface`` name) that drops the
#: attention probabilities with a stream's masks.
ATTENTION = "fsl_opt_keyed_dropout"

_POOL: dict[int, ThreadPoolExecutor] = {}


def _pool(workers: int) -> ThreadPoolExecutor:
    if workers not in _POOL:
        _POOL[workers] = ThreadPoolExecutor(workers, thread_name_prefix="fsl-opt-masks")
    return _POOL[workers]


def keep_threshold(p: float) -> int:
    """A signed 32-bit value is kept iff it is below this: 2**32 - round(p 2**32) of the
    2**32 values are, so the keep rate is 1 - p to within 2**-33."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability {p!r}: expected 0 <= p < 1")
    return 2**31 - round(p * 2**32)


def draw_bits(key: Sequence[int], n: int) -> np.ndarray:
    """``n`` signed 32-bit values of ``key``: blocks of :data:`BLOCK`, each from its own
    PCG64 (key + (block,)), drawn side by side."""
    out = np.empty(n, dtype=np.int32)
    _fill([(tuple(key), out)])
    return out


def _fill(jobs: list[tuple[tuple[int, ...], np.ndarray]]) -> None:
    """Fill each (key, array) job's array with its key's values, every block a task."""
    tasks = [
        ((*key, block), arr[block * BLOCK : (block + 1) * BLOCK])
        for key, arr in jobs
        for block in range(math.ceil(arr.size / BLOCK))
    ]

    def draw(task: tuple[tuple[int, ...], np.ndarray]) -> None:
        key, part = task
        bits = np.random.PCG64(np.random.SeedSequence(key))
        part[:] = bits.random_raw((part.size + 1) // 2).view(np.int32)[: part.size]

    workers = min(len(tasks), torch.get_num_threads())
    if workers > 1:
        list(_pool(workers).map(draw, tasks))
    else:
        for task in tasks:
            draw(task)


class MaskStream:
    """The dropout masks of the devices training together (one device alone is a group of
    one), device after device along the batch dimension.

    Parameters
    ----------
    keys : list of tuple of int
        Each device's stream key (run seed, round, device).
    """

    def __init__(self, keys: Sequence[Sequence[int]]) -> None:
        self.keys = [tuple(int(k) for k in key) for key in keys]
        if any(k < 0 for key in self.keys for k in key):
            raise ValueError(f"stream keys must be >= 0: {self.keys}")
        self.step = 0
        self.site = 0
        self.widths: list[int] | None = None

    def begin_step(self, widths: Sequence[int] | None = None) -> None:
        """A new optimizer step; ``widths``: each device's own batch width (its widest
        sample) when the group's batch is padded wider, else None."""
        self.step += 1
        self.site = 0
        self.widths = None if widths is None else [int(w) for w in widths]

    def masks(self, like: torch.Tensor, p: float, seq_dims: tuple[int, ...]) -> torch.Tensor:
        """The next site's mask for ``like`` (the group's rows, device after device): each
        device's kept values scaled by 1 / (1 - p), at its own width along ``seq_dims``
        (dimensions of one row), zero beyond it; in ``like``'s dtype, on its device."""
        site = self.site
        self.site += 1
        n = len(self.keys)
        b = like.shape[0] // n
        row = tuple(like.shape[1:])
        widths: list[int | None] = list(self.widths) if self.widths else [None] * n
        shapes = [
            tuple(w if (w is not None and d in seq_dims) else s for d, s in enumerate(row))
            for w in widths
        ]
        sizes = [b * math.prod(s) for s in shapes]
        bits = np.empty(sum(sizes), dtype=np.int32)
        offsets = np.cumsum([0, *sizes])
        _fill(
            [
                ((*key, self.step, site), bits[offsets[i] : offsets[i + 1]])
                for i, key in enumerate(self.keys)
            ]
        )
        keep = torch.from_numpy(bits).lt_(keep_threshold(p)) if p else torch.ones(bits.size)
        values = keep.to(like.dtype)
        full = all(s == row for s in shapes)
        out = values.view(like.shape) if full else torch.zeros(like.shape, dtype=like.dtype)
        if not full:
            for i, shape in enumerate(shapes):
                part = out[i * b : (i + 1) * b]
                region = part[(slice(None), *(slice(0, w) for w in shape))]
                region.copy_(values[offsets[i] : offsets[i + 1]].view(b, *shape))
        return out.div_(1 - p).to(like.device)


#: The stream of the forward pass running now (read by :func:`attention`).
_ACTIVE: list[MaskStream] = []


def attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The encoder's plain attention, its probabilities dropped with the stream's masks."""
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = nn.functional.softmax(weights, dim=-1)
    if dropout and module.training:
        weights = weights * _ACTIVE[-1].masks(weights, dropout, (1, 2))
    out = torch.matmul(weights, value).transpose(1, 2).contiguous()
    return out, weights


def _register() -> None:
    """Make :data:`ATTENTION` known to transformers (with the plain attention's mask)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask

    if ATTENTION not in AttentionInterface._global_mapping:
        AttentionInterface.register(ATTENTION, attention)
        ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION, eager_mask)


@contextmanager
def dropping(model: SplitModel, stream: MaskStream, frozen: bool) -> Iterator[None]:
    """Inside the block every dropout of the training forward pass draws from ``stream``:
    the head's always, the frozen layers' from the split up when ``frozen`` (else they run
    without dropout, as :meth:`~fsl_opt.learning.split_model.SplitModel.freeze_dropout`
    leaves them)."""
    head = model.head[0]
    assert isinstance(head, nn.Dropout)
    modules: list[nn.Module] = [head]
    config = model.encoder.config
    before = config._attn_implementation
    if frozen:
        _register()
        modules = [
            m
            for block in model.blocks[model.split :]
            for m in block.modules()
            if type(m) is nn.Dropout
        ] + modules

    def hook(module: nn.Module, inputs: Any, out: torch.Tensor) -> torch.Tensor:
        assert isinstance(module, nn.Dropout)
        return out * stream.masks(out, module.p, tuple(range(out.dim() - 2)))

    active = [m for m in modules if m.training and float(getattr(m, "p", 0.0)) > 0]
    hooks = [m.register_forward_hook(hook) for m in active]
    for m in active:
        m.eval()  # the hook drops instead
    if frozen:
        config._attn_implementation = ATTENTION
    _ACTIVE.append(stream)
    try:
        yield
    finally:
        _ACTIVE.pop()
        config._attn_implementation = before
        for h in hooks:
            h.remove()
        for m in active:
            m.train()
