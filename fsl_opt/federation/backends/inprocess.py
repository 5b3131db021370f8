"""The in-process backend: every device trains in this process, on one shared model.

Devices that can step together (same number of samples and settings, no LoRA dropout,
on a CPU when the frozen layers keep their dropout) train as one group, their batches
stacked over the frozen layers and each through its own adapters and dropout stream
(:mod:`fsl_opt.learning.batched`); the others train in turn. Either way each device's
result is the one it gets alone.

Each device's AdamW moments are that device's own state: this backend keeps them, one
per device, and saves them beside the server checkpoint in ``devices/`` (as a device
would keep them on its own storage), so ``--resume`` continues exactly.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from fsl_opt.errors import ConfigError
from fsl_opt.federation.backends.base import MEASURED_COMPUTE, RoundReplies
from fsl_opt.federation.context import local_config
from fsl_opt.learning.batched import train_batched, why_not
from fsl_opt.learning.local import LocalResult, train
from fsl_opt.learning.lora import state_rank

if TYPE_CHECKING:
    from fsl_opt.federation.backends.base import Drive
    from fsl_opt.federation.context import RunContext
    from fsl_opt.federation.planner import RoundPlan
    from fsl_opt.federation.settings import RunConfig

#: The devices' files inside a checkpoint folder.
DEVICES_FILE = "devices.pt"
#: At most this many token rows (devices x batch size x sequence length) in one stacked
#: step. Past a few thousand rows a product is already at the machine's GEMM rate, and
#: larger activations only leave the caches (a one-off trial, 100 devices x 8 samples x 32
#: tokens on 2 CPU cores: 1.49x the FLOP floor in groups of 4096 rows, 2.25x in one group
#: of 25600; `fsl-opt bench training` measures the cap chosen here).
GROUP_TOKENS = 4096
#: A device whose own step has this many token rows trains alone: its products already
#: run at the machine's GEMM rate, and company only costs memory (the default run's shape,
#: 2048 rows, on 2 CPU cores: 29.9 s a round alone and 29.4 s in pairs with the frozen
#: dropout on, 23.8 s and 23.7 s without; `make run` peaked at 1.34 GB alone, 1.81-1.87 GB
#: in pairs).
ALONE_TOKENS = 2048


class InProcessBackend:
    """Every device in this process; each device's optimizer state kept here."""

    name = "inprocess"
    restart_note = "every device's optimizer state is checkpointed: resume is exact"

    @classmethod
    def launch(cls, cfg: RunConfig, drive: Drive) -> list[dict[str, Any]]:
        """Nothing to start: the loop drives a fresh backend in this process."""
        return drive(cls())

    def __init__(self, batch_devices: bool = True) -> None:
        self.optimizer_states: dict[int, dict[str, Any]] = {}
        self.batch_devices = batch_devices

    def train_round(
        self, ctx: RunContext, payloads: dict[int, dict[str, torch.Tensor]], plan: RoundPlan
    ) -> RoundReplies:
        """Train every device taking part: in groups where they can step together, else
        one at a time, on the one shared model (none is ever lost)."""
        configs = {
            i: local_config(ctx.config, state_rank(state), plan.round, i)
            for i, state in payloads.items()
        }
        out: dict[int, LocalResult] = {}
        for group in self._groups(ctx, payloads, configs):
            started = time.perf_counter()
            if len(group) > 1:
                results = train_batched(
                    ctx.model,
                    [payloads[i] for i in group],
                    [ctx.devices[i] for i in group],
                    [configs[i] for i in group],
                    [self.optimizer_states.get(i) for i in group],
                    ctx.torch_device,
                )
            else:
                i = group[0]
                results = [
                    train(
                        ctx.model,
                        payloads[i],
                        ctx.devices[i],
                        configs[i],
                        self.optimizer_states.get(i),
                        ctx.torch_device,
                    )
                ]
            # Each device's measured compute: its own training, or its share of its group's.
            share = (time.perf_counter() - started) / len(group)
            for i, res in zip(group, results, strict=True):
                res.metrics[MEASURED_COMPUTE] = share
                if res.optimizer_state is not None:
                    self.optimizer_states[i] = res.optimizer_state
                out[i] = res
        return RoundReplies(out)

    def _groups(
        self, ctx: RunContext, payloads: dict[int, dict[str, torch.Tensor]], configs: dict[int, Any]
    ) -> list[list[int]]:
        """Devices in order, consecutive ones of the same size together (at most
        ``GROUP_TOKENS`` token rows a step) when they can train together; singletons
        otherwise, and for devices of ``ALONE_TOKENS`` rows a step or more."""
        ids = list(payloads)
        if not self.batch_devices:
            return [[i] for i in ids]
        groups: list[list[int]] = []
        for i in ids:
            last = groups[-1] if groups else None
            # (A device of ALONE_TOKENS rows never gets company: one that could join it would
            # have its size and settings, so as many rows.)
            if last is not None and step_tokens(1, configs[i], ctx.devices[i]) < ALONE_TOKENS:
                pair = [last[0], i]  # every condition is per device or against the first
                if step_tokens(
                    len(last) + 1, configs[i], ctx.devices[i]
                ) <= GROUP_TOKENS and not why_not(
                    ctx.model,
                    [payloads[j] for j in pair],
                    [ctx.devices[j] for j in pair],
                    [configs[j] for j in pair],
                    ctx.torch_device,
                ):
                    last.append(i)
                    continue
            groups.append([i])
        return groups

    def save_devices(self, folder: Path) -> None:
        """Every device's optimizer state, in one file."""
        torch.save(self.optimizer_states, folder / DEVICES_FILE)

    def restore_devices(self, folder: Path) -> None:
        """Read back :meth:`save_devices`. A checkpoint without it, or with a damaged one,
        is refused: resuming would restart every device's optimizer and end elsewhere than
        the uninterrupted run, without a word."""
        path = folder / DEVICES_FILE
        if not path.is_file():
            raise ConfigError(
                f"--resume: {path} is missing, so the devices' optimizer state is gone and the "
                "run cannot continue exactly; nothing was changed (start again with --overwrite)"
            )
        try:
            states = torch.load(path, weights_only=False)
        except Exception as exc:  # truncated or foreign: torch raises many kinds
            raise ConfigError(
                f"--resume: {path} is damaged ({type(exc).__name__}); nothing was changed "
                "(start again with --overwrite)"
            ) from None
        if not isinstance(states, dict):
            raise ConfigError(f"--resume: {path} does not hold the devices' optimizer states")
        self.optimizer_states = states


def step_tokens(devices: int, config: Any, data: Any) -> int:
    """Token rows of one stacked step of ``devices`` devices like ``data``."""
    width = data.attention_mask.shape[1]
    return devices * min(config.batch_size, len(data)) * width
