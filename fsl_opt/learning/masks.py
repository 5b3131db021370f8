"""Dropout masks from a keyed stream: a device's masks are the same alone or in a group, on a
CPU or a GPU, at any thread count.

Local training drops in the frozen layers above the split (the encoder's attention and
hidden dropout) and in the head. Each mask is drawn from its own key::

    (stream key of the device: run seed, round, device) + (step, site, block)

``step`` counts the device's optimizer steps in the round, ``site`` the dropout sites of
one forward pass in the order they run (each layer's attention probabilities and hidden
states, then the head), and ``block`` the mask's values in blocks of :data:`BLOCK`. A
block's key sets a PCG64 generator's state (BLAKE2b of the key), whose 32-bit outputs keep
a value iff below a threshold set so that the keep rate is 1 - p to 2**-33; each block is
drawn and turned into its mask on its own, so blocks go side by side on as many threads as
torch computes with and no draw depends on another's order. Masks are drawn on the CPU and
moved to the device that computes.

Measured here (2 cores, one attention site of 16 x 12 x 128 x 128): PCG64 ``random_raw``
660 M 32-bit values/s against numpy's Philox 352 M on one thread, so PCG64; a finished
float mask 490 M values/s against 120 M for torch's CPU ``bernoulli_`` and division (a
sequential Mersenne Twister, the stream this replaces, the same at 1 and 2 threads).

:func:`dropping` is the one place the masks enter a forward pass: it hooks the frozen
layers' dropout modules and the head's, and routes attention through :func:`attention`
(the encoder's plain attention, its probabilities dropped with the mask). The
one-device path (:func:`fsl_opt.learning.local.train`) and the grouped path
(:func:`fsl_opt.learning.batched.train_batched`) both run inside it.
"""

from __future__ import annotations

import functools
import hashlib
import math
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from fsl_opt.learning.split_model import SplitModel

#: Values per keyed block of a mask (small enough that a block's bits stay in cache while
#: they become its mask, large enough that keying it costs a few percent).
BLOCK = 1 << 17
#: The attention implementation (transformers' ``AttentionInterface`` name) that drops the
#: attention probabilities with a stream's masks.
ATTENTION = "fsl_opt_keyed_dropout"

_POOL: dict[int, ThreadPoolExecutor] = {}
_LOCAL = threading.local()


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


def keyed_generator(key: Sequence[int]) -> np.random.PCG64:
    """PCG64 at the state of ``key``: BLAKE2b of the key (64-bit words) gives its 128-bit
    state and (odd) increment. One generator object per thread, re-keyed for each block
    (4.5 us against 25 us for a fresh ``PCG64(SeedSequence(key))``, measured here)."""
    bits = getattr(_LOCAL, "bits", None)
    if bits is None:
        bits = _LOCAL.bits = np.random.PCG64()
    digest = hashlib.blake2b(np.asarray(key, dtype=np.uint64).tobytes(), digest_size=32).digest()
    bits.state = {
        "bit_generator": "PCG64",
        "state": {
            "state": int.from_bytes(digest[:16], "little"),
            "inc": int.from_bytes(digest[16:], "little") | 1,
        },
        "has_uint32": 0,
        "uinteger": 0,
    }
    return bits


@functools.lru_cache(maxsize=64)
def kept_value(p: float, dtype: np.dtype) -> np.generic:
    """What a kept value of a mask holds in an array of ``dtype``: 1 / (1 - p) as float32,
    or, in a uint16 array, the bits of that float32 rounded to bf16 (what torch's
    conversion to bf16 gives). Kept per (p, dtype): every dropout site of every step asks."""
    scale = np.float32(1.0 / (1.0 - p))
    if dtype == np.float32:
        return scale
    if dtype == np.uint16:
        bits = int(torch.tensor(float(scale)).to(torch.bfloat16).view(torch.int16).item())
        return np.uint16(bits & 0xFFFF)
    raise ValueError(f"masks are float32 or bf16 bits (uint16), not {dtype}")


def fill_masks(jobs: Sequence[tuple[tuple[int, ...], np.ndarray]], p: float) -> None:
    """Write each (key, array) job's mask into its array (float32, or uint16 holding bf16
    bits: :func:`kept_value`): 1 / (1 - p) where kept, 0 where dropped. Every block of
    :data:`BLOCK` values is a task keyed (key, block), drawn and turned into its mask while
    in cache, on as many threads as torch uses."""
    threshold = keep_threshold(p)
    dtypes = {arr.dtype for _, arr in jobs}
    if len(dtypes) > 1:
        raise ValueError(f"one dtype for every job's array, not {sorted(map(str, dtypes))}")
    scale = kept_value(p, dtypes.pop()) if dtypes else np.float32(1.0)
    tasks = [
        ((*key, block), arr[block * BLOCK : (block + 1) * BLOCK])
        for key, arr in jobs
        for block in range(math.ceil(arr.size / BLOCK))
    ]

    def draw(task: tuple[tuple[int, ...], np.ndarray]) -> None:
        key, part = task
        raw = keyed_generator(key).random_raw((part.size + 1) // 2).view(np.int32)
        np.multiply(raw[: part.size] < threshold, scale, out=part)

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
        offsets = np.cumsum([0, *sizes])
        # bf16 masks are drawn as their bits: half the bytes, and no conversion pass; the
        # values are those the float32 mask converts to.
        bf16 = like.dtype == torch.bfloat16
        flat = np.empty(offsets[-1], dtype=np.uint16 if bf16 else np.float32)
        fill_masks(
            [
                ((*key, self.step, site), flat[offsets[i] : offsets[i + 1]])
                for i, key in enumerate(self.keys)
            ],
            p,
        )
        values = (
            torch.from_numpy(flat).view(torch.bfloat16)
            if bf16
            else torch.from_numpy(flat).to(like.dtype)
        )
        if all(s == row for s in shapes):
            return values.view(like.shape).to(like.device)
        out = torch.zeros(like.shape, dtype=like.dtype)
        for i, shape in enumerate(shapes):
            part = out[i * b : (i + 1) * b]
            region = part[(slice(None), *(slice(0, w) for w in shape))]
            region.copy_(values[offsets[i] : offsets[i + 1]].view(b, *shape))
        return out.to(like.device)


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
