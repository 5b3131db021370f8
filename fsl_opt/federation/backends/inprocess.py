"""The in-process backend: every device trains in turn, in this process, on one shared model.

Each device's AdamW moments are that device's own state: this backend keeps them, one
per device, and saves them beside the server checkpoint in ``devices/`` (as a device
would keep them on its own storage), so ``--resume`` continues exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from fsl_opt.federation.context import local_config
from fsl_opt.learning.local import LocalResult, train
from fsl_opt.learning.lora import state_rank

if TYPE_CHECKING:
    from fsl_opt.federation.context import RunContext
    from fsl_opt.federation.planner import RoundPlan

#: The devices' files inside a checkpoint folder.
DEVICES_FILE = "devices.pt"


class InProcessBackend:
    """Every device in this process; each device's optimizer state kept here."""

    name = "inprocess"
    restart_note = "every device's optimizer state is checkpointed: resume is exact"

    def __init__(self) -> None:
        self.optimizer_states: dict[int, dict[str, Any]] = {}

    def train_round(
        self, ctx: RunContext, payloads: dict[int, dict[str, torch.Tensor]], plan: RoundPlan
    ) -> dict[int, LocalResult]:
        """Train each device taking part in turn on the one shared model."""
        out = {}
        for i, state in payloads.items():
            local = local_config(ctx.config, state_rank(state), plan.round, i)
            res = train(
                ctx.model,
                state,
                ctx.devices[i],
                local,
                self.optimizer_states.get(i),
                ctx.torch_device,
            )
            if res.optimizer_state is not None:
                self.optimizer_states[i] = res.optimizer_state
            out[i] = res
        return out

    def save_devices(self, folder: Path) -> None:
        """Every device's optimizer state, in one file."""
        torch.save(self.optimizer_states, folder / DEVICES_FILE)

    def restore_devices(self, folder: Path) -> None:
        """Read back :meth:`save_devices` (fresh optimizers where there is none)."""
        path = folder / DEVICES_FILE
        self.optimizer_states = torch.load(path, weights_only=False) if path.exists() else {}
