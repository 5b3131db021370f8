"""Several devices' local training in one pass over the shared frozen layers (multi-LoRA).

Training devices one after another multiplies each device's few rows by the frozen weights
on its own: with many devices of a few samples each, the products are small and the time
goes to everything around them. Here the devices of a group step together: their batches
are stacked into one, the frozen layers run once on all of it, and each device's rows go
through its own LoRA factors (a batched product over devices) and its own head. Each
device keeps everything that is its own: factors, head, data order, head-dropout draws,
AdamW moments and step count. The losses are summed, so each device's gradient is that
of its own loss alone.

The result for each device is :func:`fsl_opt.learning.local.train`'s, to float tolerance
(the products are the same sums, grouped differently). Every dropout mask (the frozen
layers' attention and hidden dropout, then the head's) comes from the device's keyed stream
(:mod:`fsl_opt.learning.masks`): the same key (run seed, round, device, step, site) gives
the same mask, each at its own batch's width (zero-padded to the group's), whether the
device trains here or alone, on a CPU or a GPU. :func:`why_not` says when a group cannot
be trained this way (LoRA dropout, different sizes or settings); the caller trains those
devices one at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from fsl_opt.learning.local import (
    DeviceData,
    LocalConfig,
    LocalResult,
    PhaseTimer,
    autocast,
    batch_width,
    note_threads,
    optimizer_state_fits,
    phase,
)
from fsl_opt.learning.lora import LORA_A, LORA_B, MERGED_PREFIX, state_rank
from fsl_opt.learning.masks import MaskStream, dropping
from fsl_opt.learning.split_model import HEAD_PREFIX, SplitModel

#: AdamW's defaults (torch.optim.AdamW), which :func:`fsl_opt.learning.local.train` uses.
BETAS, EPS = (0.9, 0.999), 1e-8


def why_not(
    model: SplitModel,
    states: list[dict[str, torch.Tensor]],
    datas: list[DeviceData],
    configs: list[LocalConfig],
    device: torch.device | None = None,
) -> str:
    """Why these devices cannot train together on ``device`` ("" when they can)."""
    if len(configs) < 2:
        return "fewer than two devices"
    first = configs[0]
    if model.lora_dropout:
        return "LoRA dropout draws inside peft's layers, where a device's stream cannot reach"
    same = ("lr", "epochs", "batch_size", "weight_decay", "precision", "frozen_dropout")
    if any(getattr(c, k) != getattr(first, k) for c in configs for k in same):
        return "the devices' training settings differ"
    if len({len(d) for d in datas}) != 1:
        return "the devices hold different numbers of samples"
    if any(d.hidden is None for d in datas):
        return "hidden states are not cached"
    if any(k.startswith(MERGED_PREFIX) for s in states for k in s):
        return "merged weights (stack) differ per payload"
    return ""


def train_batched(
    model: SplitModel,
    states: list[dict[str, torch.Tensor]],
    datas: list[DeviceData],
    configs: list[LocalConfig],
    optimizer_states: list[dict[str, Any] | None],
    device: torch.device | None = None,
    timer: PhaseTimer | None = None,
) -> list[LocalResult]:
    """Train the devices of one group together; one :class:`LocalResult` per device.

    Each device's payload is zero-padded to the group's largest rank: a zero row of A
    with a zero column of B gets zero gradient in both, so AdamW leaves it at zero and the
    device's own rank is cut back out at the end, exactly.
    """
    note_threads()
    why = why_not(model, states, datas, configs, device)
    if why:
        raise ValueError(f"train_batched: {why}")
    device = device or torch.device("cpu")
    cfg = configs[0]
    n, ranks = len(states), [state_rank(s) for s in states]
    top = max(ranks)
    with phase(timer, "load"):
        model.set_rank(top)  # the peft layers only route: their own adapters are off
        model.load_merged({})
        model.to(device)
        model.train()
        if not cfg.frozen_dropout:
            model.freeze_dropout()
        modules = model.lora_modules()
        keys = [key for prefix, _ in modules for key in (prefix + LORA_A, prefix + LORA_B)] + [
            HEAD_PREFIX + k for k, _ in model.head.named_parameters()
        ]
        params = [
            torch.stack([_padded(s[k], k, top) for s in states]).to(device).requires_grad_(True)
            for k in keys
        ]
        moments = [_moments(o, s, keys, top) for o, s in zip(optimizer_states, states, strict=True)]
        steps = torch.tensor([m[0] for m in moments], dtype=torch.float64)
        exp_avg = [torch.stack([m[1][j] for m in moments]).to(device) for j in range(len(keys))]
        exp_avg_sq = [torch.stack([m[2][j] for m in moments]).to(device) for j in range(len(keys))]
    lora = {prefix: (params[2 * j], params[2 * j + 1]) for j, (prefix, _) in enumerate(modules)}
    hooks = [
        module.base_layer.register_forward_hook(_lora_hook(*lora[prefix], n, model.lora_scale))
        for prefix, module in modules
    ]
    gens = [torch.Generator().manual_seed(c.seed) for c in configs]
    # Each device's dropout stream: the one it draws from when it trains alone.
    streams = MaskStream([c.stream or (c.seed,) for c in configs])
    size = len(datas[0])
    totals = [0.0] * n
    try:
        with model.peft.disable_adapter():
            for _ in range(cfg.epochs):
                orders = [torch.randperm(size, generator=g) for g in gens]
                for start in range(0, size, cfg.batch_size):
                    idx = [o[start : start + cfg.batch_size] for o in orders]
                    b = len(idx[0])
                    with phase(timer, "batch"):
                        # Alone, a device's batch is cut to its own width: its masks too.
                        hidden, mask, widths = _stack_batch(datas, idx, device)
                        streams.begin_step(widths)
                    with (
                        phase(timer, "forward"),
                        autocast(cfg.precision, device, model),
                        dropping(model, streams, cfg.frozen_dropout),
                    ):
                        pooled = model.features(hidden, mask)
                        pooled = model.head[0](pooled).view(n, b, -1)  # the head's dropout
                        weight, bias = params[-2], params[-1]
                        logits = torch.baddbmm(bias.unsqueeze(1), pooled, weight.transpose(1, 2))
                        labels = torch.stack([d.labels[i] for d, i in zip(datas, idx, strict=True)])
                        losses = (
                            nn.functional.cross_entropy(
                                logits.float().reshape(n * b, -1),
                                labels.reshape(-1).to(device),
                                reduction="none",
                            )
                            .view(n, b)
                            .mean(1)
                        )
                    with phase(timer, "backward"):
                        for p in params:
                            p.grad = None
                        losses.sum().backward()
                    with phase(timer, "optimizer"):
                        steps += 1
                        _adamw(params, exp_avg, exp_avg_sq, steps, cfg.lr, cfg.weight_decay)
                    for i, loss in enumerate(losses.detach().tolist()):
                        totals[i] += loss * b
    finally:
        for h in hooks:
            h.remove()
    model.eval()
    with phase(timer, "save"):
        p_cpu, m_cpu, v_cpu = (
            [t.detach().cpu() for t in ts] for ts in (params, exp_avg, exp_avg_sq)
        )
        group = _param_group(cfg, len(keys))
        return [
            _result(
                keys,
                p_cpu,
                m_cpu,
                v_cpu,
                float(steps[i]),
                i,
                ranks[i],
                group,
                size * cfg.epochs,
                totals[i],
                size,
            )
            for i in range(n)
        ]


def _padded(t: torch.Tensor, key: str, rank: int) -> torch.Tensor:
    """``t`` (the entry ``key`` of a payload or of its AdamW moments) as float32, with A's
    rows or B's columns zero-padded to ``rank``."""
    t = t.float()
    if key.endswith(LORA_A):
        return nn.functional.pad(t, (0, 0, 0, rank - t.shape[0]))
    if key.endswith(LORA_B):
        return nn.functional.pad(t, (0, rank - t.shape[1]))
    return t


def _moments(
    opt: dict[str, Any] | None, state: dict[str, torch.Tensor], keys: list[str], rank: int
) -> tuple[float, list[torch.Tensor], list[torch.Tensor]]:
    """(step, first moments, second moments) of one device, padded to the group's
    ``rank``: its saved AdamW state where the shapes match its own rank (as ``train``
    decides), else fresh."""
    own = [state[k] for k in keys]
    saved = opt["state"] if opt is not None and optimizer_state_fits(opt, own) else {}  # type: ignore[arg-type]
    if not saved:
        fresh = [_padded(torch.zeros_like(t), k, rank) for t, k in zip(own, keys, strict=True)]
        return 0.0, fresh, [z.clone() for z in fresh]
    m = [_padded(saved[j]["exp_avg"], k, rank) for j, k in enumerate(keys)]
    v = [_padded(saved[j]["exp_avg_sq"], k, rank) for j, k in enumerate(keys)]
    return float(saved[0]["step"]), m, v


def _lora_hook(
    a: torch.Tensor, b: torch.Tensor, n: int, scale: float
) -> Callable[[nn.Module, Any, torch.Tensor], torch.Tensor]:
    """A forward hook on a frozen Linear: add each device's own s B_i A_i x to its rows."""

    def hook(module: nn.Module, inputs: Any, out: torch.Tensor) -> torch.Tensor:
        x = inputs[0]
        rows = x.reshape(n, -1, x.shape[-1])
        delta = torch.bmm(
            torch.bmm(rows, a.transpose(1, 2).to(rows.dtype)), b.transpose(1, 2).to(rows.dtype)
        )
        return out + (delta * scale).reshape(out.shape).to(out.dtype)

    return hook


def _stack_batch(
    datas: list[DeviceData], idx: list[torch.Tensor], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """All devices' batches as one: hidden states (float32) and masks, cut to the widest;
    and each device's own width (where its batch alone would be cut)."""
    masks = [d.attention_mask[i] for d, i in zip(datas, idx, strict=True)]
    widths = [batch_width(m) for m in masks]
    width = max(widths)
    hidden = torch.cat([d.hidden[i, :width] for d, i in zip(datas, idx, strict=True)])  # type: ignore[index]
    mask = torch.cat([m[:, :width] for m in masks])
    return hidden.to(device=device, dtype=torch.float32), mask.to(device), widths


@torch.no_grad()
def _adamw(
    params: list[torch.Tensor],
    exp_avg: list[torch.Tensor],
    exp_avg_sq: list[torch.Tensor],
    steps: torch.Tensor,
    lr: float,
    weight_decay: float,
) -> None:
    """torch.optim.AdamW's update, every device at once, each with its own step count."""
    beta1, beta2 = BETAS
    bc1 = 1 - beta1**steps
    bc2_sqrt = (1 - beta2**steps).sqrt()
    step_size = (lr / bc1).float()
    for p, m, v in zip(params, exp_avg, exp_avg_sq, strict=True):
        shape = (-1,) + (1,) * (p.dim() - 1)
        if weight_decay:
            p.mul_(1 - lr * weight_decay)
        assert p.grad is not None
        m.lerp_(p.grad, 1 - beta1)
        v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
        denom = (v.sqrt() / bc2_sqrt.float().to(p.device).view(shape)).add_(EPS)
        p.add_(-step_size.to(p.device).view(shape) * m / denom)


def _param_group(cfg: LocalConfig, n_params: int) -> dict[str, Any]:
    """The ``param_groups`` entry of ``torch.optim.AdamW(params, lr, weight_decay)``'s
    state dict for ``n_params`` parameters (what ``train`` saves)."""
    dummy = [nn.Parameter(torch.zeros(1)) for _ in range(n_params)]
    opt = torch.optim.AdamW(dummy, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return dict(opt.state_dict()["param_groups"][0])


def _result(
    keys: list[str],
    params: list[torch.Tensor],
    exp_avg: list[torch.Tensor],
    exp_avg_sq: list[torch.Tensor],
    step: float,
    i: int,
    rank: int,
    group: dict[str, Any],
    seen: int,
    total: float,
    size: int,
) -> LocalResult:
    """Device ``i``'s payload and AdamW state at its own rank, as ``train`` returns them
    (from the group's tensors, already on the CPU)."""

    def own(t: torch.Tensor, key: str) -> torch.Tensor:
        t = t[i]
        if key.endswith(LORA_A):
            t = t[:rank]
        elif key.endswith(LORA_B):
            t = t[:, :rank]
        return t.clone().contiguous()

    state = {
        j: {
            "step": torch.tensor(step),
            "exp_avg": own(exp_avg[j], k),
            "exp_avg_sq": own(exp_avg_sq[j], k),
        }
        for j, k in enumerate(keys)
    }
    return LocalResult(
        adapter_state={k: own(p, k) for k, p in zip(keys, params, strict=True)},
        n_examples=size,
        metrics={"train_loss": total / max(seen, 1)},
        optimizer_state={
            "state": state,
            "param_groups": [{**group, "params": list(group["params"])}],
        },
    )
