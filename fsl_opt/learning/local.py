"""Client side: one device's data and its local training, apart from any orchestration.

``train(model, adapter_state, data, config)`` is a plain function from the global adapter
state to (new adapter state, number of examples, metrics), as a Flower ``ClientApp``'s fit
is; the in-process backend and the Flower backend both call it.
"""

from __future__ import annotations

import contextlib
import copy
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from fsl_opt.errors import ConfigError
from fsl_opt.learning.masks import MaskStream, dropping
from fsl_opt.learning.split_model import SplitModel
from fsl_opt.problem.compute import PRECISIONS


def bf16_support(device: torch.device) -> str:
    """Why ``device`` cannot multiply in bf16 at speed ("" when it can).

    CPUs: x86 with AVX512-BF16 or AMX, or ARM with the BF16 extension (without them
    PyTorch emulates bf16, slower than fp32). CUDA: compute capability 8.0 or newer.
    """
    if device.type == "cuda":
        return "" if torch.cuda.is_bf16_supported() else "this CUDA GPU has no native bf16"
    if device.type == "cpu":
        try:
            with open("/proc/cpuinfo") as fh:
                flags = set(fh.read().split())
        except OSError:
            flags = set()
        if flags & {"avx512_bf16", "amx_bf16", "bf16"}:
            return ""
        return "this CPU has no native bf16 (x86 AVX512-BF16 or AMX, ARM BF16)"
    return f"bf16 is not supported here on {device.type}"


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse a precision this device cannot run (a :class:`ConfigError` saying why)."""
    PRECISIONS.check(precision)
    if precision == "bf16":
        why = bf16_support(device)
        if why:
            raise ConfigError(f"precision = 'bf16': {why}; use precision = 'fp32'")


@contextlib.contextmanager
def autocast(precision: str, device: torch.device, model: SplitModel) -> Iterator[None]:
    """Run ``model``'s products in ``precision`` inside the block (fp32: nothing changes).

    bf16 on a CPU also switches the attention to the plain (eager) kernels inside the
    block: PyTorch's fused CPU attention backward is slower in bf16 than the plain
    matrix products (measured: a training step 1.5x slower), and the result is the same
    attention.
    """
    if precision == "fp32":
        yield
        return
    config = model.encoder.config
    before = config._attn_implementation
    if device.type == "cpu":
        config._attn_implementation = "eager"
    try:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            yield
    finally:
        config._attn_implementation = before


class PhaseTimer:
    """Seconds spent per phase of local training and evaluation (for benchmarks).

    ``with timer("forward"): ...`` adds the block's wall time to ``timer.seconds["forward"]``.
    """

    def __init__(self, sync: Callable[[], None] | None = None) -> None:
        self.seconds: dict[str, float] = {}
        self.sync = sync or (lambda: None)  # a GPU's queue drained at each clock reading

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        self.sync()
        t = time.perf_counter()
        try:
            yield
        finally:
            self.sync()
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - t


#: Benchmarks set this to a file path to learn each training process's torch thread count.
THREADS_LOG = "FSL_OPT_THREADS_LOG"
_threads_noted = False


def note_threads() -> None:
    """Append "pid threads" to ``$FSL_OPT_THREADS_LOG`` once per process (benchmarks)."""
    global _threads_noted
    path = os.environ.get(THREADS_LOG)
    if path and not _threads_noted:
        with open(path, "a") as fh:
            fh.write(f"{os.getpid()} {torch.get_num_threads()}\n")
        _threads_noted = True


def phase(timer: PhaseTimer | None, name: str) -> contextlib.AbstractContextManager[Any]:
    """``timer``'s phase ``name``, or nothing when there is no timer."""
    return timer(name) if timer is not None else contextlib.nullcontext()


HIDDEN_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


@dataclass
class DeviceData:
    """One device's samples: cached split-point hidden states, or token ids (plain way).

    Attributes
    ----------
    hidden : (N, S, H) tensor or None
        Output of the frozen bottom, stored compactly (half precision by default).
    input_ids : (N, S) tensor or None
        Token ids, used when hidden states are not cached (every layer on every step).
    attention_mask : (N, S) int8 tensor
    labels : (N,) int64 tensor
    """

    attention_mask: torch.Tensor
    labels: torch.Tensor
    hidden: torch.Tensor | None = None
    input_ids: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def nbytes(self) -> int:
        """Memory this device's data holds."""
        parts = [self.attention_mask, self.labels, self.hidden, self.input_ids]
        return int(sum(t.numel() * t.element_size() for t in parts if t is not None))

    def batch(
        self, idx: torch.Tensor, model: SplitModel, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(split-point hidden states in float32, attention mask) of the samples ``idx``."""
        mask = self.attention_mask[idx].to(device)
        # Trim padding columns the whole batch shares: same result, less work.
        width = batch_width(mask)
        mask = mask[:, :width]
        if self.hidden is not None:
            return self.hidden[idx, :width].to(device=device, dtype=torch.float32), mask
        assert self.input_ids is not None
        return model.bottom(self.input_ids[idx, :width].to(device), mask), mask


def batch_width(mask: torch.Tensor) -> int:
    """Columns a batch keeps: its widest sample's tokens (``DeviceData.batch`` cuts there)."""
    return int(mask.sum(1).max())


def cache_hidden(
    model: SplitModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: torch.Tensor,
    cache: bool,
    dtype: str = "float16",
    batch_size: int = 64,
    device: torch.device | None = None,
) -> DeviceData:
    """A device's :class:`DeviceData`: with ``cache`` the bottom runs once, here."""
    if not cache:
        return DeviceData(attention_mask=attention_mask, labels=labels, input_ids=input_ids)
    device = device or torch.device("cpu")
    model.eval()
    chunks = []
    for start in range(0, len(labels), batch_size):
        ids = input_ids[start : start + batch_size].to(device)
        mask = attention_mask[start : start + batch_size].to(device)
        chunks.append(model.bottom(ids, mask).to("cpu", HIDDEN_DTYPES[dtype]))
    hidden = torch.cat(chunks) if chunks else torch.empty(0)
    return DeviceData(attention_mask=attention_mask, labels=labels, hidden=hidden)


@dataclass(frozen=True)
class LocalConfig:
    """What the server sends a device for one round."""

    rank: int
    lr: float
    epochs: int = 1
    batch_size: int = 16
    seed: int = 0
    weight_decay: float = 0.0
    precision: str = "fp32"
    frozen_dropout: bool = True
    #: The device's dropout stream key (run seed, round, device); empty: (seed,).
    stream: tuple[int, ...] = ()


@dataclass
class LocalResult:
    """What a device returns: new adapter state, examples seen, metrics, optimizer state."""

    adapter_state: dict[str, torch.Tensor]
    n_examples: int
    metrics: dict[str, float]
    optimizer_state: dict[str, Any] | None = field(default=None, repr=False)


def train(
    model: SplitModel,
    adapter_state: dict[str, torch.Tensor],
    data: DeviceData,
    config: LocalConfig,
    optimizer_state: dict[str, Any] | None = None,
    device: torch.device | None = None,
    timer: PhaseTimer | None = None,
) -> LocalResult:
    """Local training of one device: ``config.epochs`` passes of AdamW over its data.

    ``model`` is the one shared frozen encoder; only its adapters and head are loaded from
    ``adapter_state`` and trained. ``optimizer_state`` (the device's AdamW moments from
    earlier rounds) is used when its shapes match the current rank, and returned updated.
    With ``config.precision = "bf16"`` the forward and backward products run in bf16
    (autocast); the adapters, their gradients and the optimizer stay fp32. With
    ``config.frozen_dropout = False`` the frozen layers run without their dropout, as the
    layers below the split (cached once, at inference) already do. Every dropout mask (the
    frozen layers' and the head's) comes from the device's keyed stream
    (:mod:`fsl_opt.learning.masks`, key ``config.stream``), so a device trained here and in
    a group draws the same masks. ``timer``
    collects the seconds of each phase (load, batch, forward, backward, optimizer, save).
    """
    device = device or torch.device("cpu")
    note_threads()
    with phase(timer, "load"):
        model.set_rank(config.rank)
        model.load_adapter_state(adapter_state)
        model.to(device)
        model.train()
        if not config.frozen_dropout:
            model.freeze_dropout()
        params = model.trainable_parameters()
        for p in params:
            p.requires_grad_(True)
        opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        if optimizer_state is not None and optimizer_state_fits(optimizer_state, params):
            # A copy: torch keeps the given step and moment tensors and updates them in
            # place, which would change the caller's saved state.
            opt.load_state_dict(copy.deepcopy(optimizer_state))
    gen = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)  # LoRA's own dropout (peft draws it from torch's stream)
    stream = MaskStream([config.stream or (config.seed,)])
    loss_fn = nn.CrossEntropyLoss()
    total, count = 0.0, 0
    for _ in range(config.epochs):
        order = torch.randperm(len(data), generator=gen)
        for start in range(0, len(data), config.batch_size):
            idx = order[start : start + config.batch_size]
            with phase(timer, "batch"):
                hidden, mask = data.batch(idx, model, device)
            stream.begin_step()
            with (
                phase(timer, "forward"),
                autocast(config.precision, device, model),
                dropping(model, stream, config.frozen_dropout),
            ):
                logits = model.top(hidden, mask)
                loss = loss_fn(logits.float(), data.labels[idx].to(device))
            with phase(timer, "backward"):
                opt.zero_grad(set_to_none=True)
                loss.backward()
            with phase(timer, "optimizer"):
                opt.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
    model.eval()
    with phase(timer, "save"):
        return LocalResult(
            adapter_state={k: v.cpu() for k, v in model.adapter_state().items()},
            n_examples=len(data),
            metrics={"train_loss": total / max(count, 1)},
            optimizer_state=_to_cpu(opt.state_dict()),
        )


#: Samples per evaluation forward pass by device kind (64 elsewhere). On a CPU 32 samples
#: of 128 tokens keep a layer's activations nearer the cache: the default evaluation (1000
#: samples, MiniLM, fp32, 2 threads) 1.16x as fast as at 64 (``fsl-opt bench training
#: --parts evaluation``, one run; merging the adapters into the frozen weights bought
#: nothing there: 16.5 s merged against 16.0 s plain, so it is not done).
EVAL_BATCH = {"cpu": 32}


@torch.no_grad()
def evaluate(
    model: SplitModel,
    data: DeviceData,
    batch_size: int | None = None,
    device: torch.device | None = None,
    precision: str = "fp32",
) -> dict[str, float]:
    """Accuracy and mean cross-entropy of the model as loaded (products in ``precision``);
    ``batch_size`` samples a forward pass, by default :data:`EVAL_BATCH` for the device's
    kind."""
    device = device or torch.device("cpu")
    batch_size = batch_size or EVAL_BATCH.get(device.type, 64)
    model.eval()
    correct, loss, n = 0, 0.0, len(data)
    for start in range(0, n, batch_size):
        idx = torch.arange(start, min(start + batch_size, n))
        hidden, mask = data.batch(idx, model, device)
        with autocast(precision, device, model):
            logits = model.top(hidden, mask).float()
        y = data.labels[idx].to(device)
        loss += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(-1) == y).sum())
    return {"accuracy": correct / max(n, 1), "loss": loss / max(n, 1)}


def optimizer_state_fits(state: dict[str, Any], params: list[nn.Parameter]) -> bool:
    """Whether a saved AdamW state has one entry of the right shape per parameter."""
    saved = state.get("state", {})
    if len(state.get("param_groups", [{}])[0].get("params", [])) != len(params):
        return False
    for i, p in enumerate(params):
        s = saved.get(i)
        if s is not None and s["exp_avg"].shape != p.shape:
            return False
    return True


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    return obj
