"""CPU cycles of training the adapted top of a transformer: the one compute model.

Eq. (2) counts C_i = (2r - 1) d k A_hat l_i operations per sample, one cycle each. A real
device also runs the frozen layers above the split forward and backward, and one counted
LoRA operation is not one cycle. The calibrated preset therefore sets eq. (2)'s
``base_cycles`` C0 and ``cycles_per_op`` c from the model's shapes, here, and nowhere else:

- forward FLOPs of one layer on one sample of S tokens, hidden h, feed-forward width i:
  2 (4 h^2 + 2 h i + 2 S h) S (the Q, K, V, O projections, the feed-forward, the
  attention scores and weighted sum); the backward pass through frozen weights computes
  activation gradients only, about one forward more; both run through every layer from
  the split up, so C0 = 2 x layer FLOPs x layers / FLOPs per cycle;
- LoRA on a d x k matrix costs 6 r S (d + k) FLOPs per sample (forward 2 r (d + k) per
  token, backward twice that), so one operation counted by eq. (2) is worth
  3 S (d + k) / (d k) FLOPs: c = that / FLOPs per cycle.

:class:`ComputeFit` replaces the assumed FLOPs per cycle with constants measured on a real
machine (``fsl-opt calibrate``), in the same form.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fsl_opt.errors import ConfigError
from fsl_opt.registry import Registry

#: The arithmetic of the adapted layers' forward and backward passes and of the evaluation
#: (run setting ``precision``; a measured compute fit states the one it was measured at).
#: Names only: :mod:`fsl_opt.learning.local` acts on them. Adapters, optimizer states and
#: aggregation stay fp32 in both.
PRECISIONS: Registry[None] = Registry("precision")
PRECISIONS.register("fp32", None, "32-bit floats")
PRECISIONS.register("bf16", None, "bfloat16 products where the CPU or GPU multiplies bf16 natively")

#: Sustained fp32 FLOPs per cycle of one phone big core: 2 NEON FMA pipes x 4 lanes x 2 = 16
#: at peak; half of peak is what dense GEMM kernels reach on such cores.
FLOPS_PER_CYCLE = 8.0


def layer_flops(seq_len: int, hidden: int, intermediate: int) -> float:
    """Forward FLOPs of one frozen transformer layer on one sample."""
    h, i = hidden, intermediate
    return 2.0 * (4 * h * h + 2 * h * i + 2 * seq_len * h) * seq_len


def transformer_cycles(
    *,
    hidden: int,
    intermediate: int,
    layers_run: int,
    seq_len: int,
    d: int,
    k: int,
    flops_per_cycle: float = FLOPS_PER_CYCLE,
) -> dict[str, float]:
    """``base_cycles`` (C0) and ``cycles_per_op`` (c) of eq. (2) for a model's shapes.

    Parameters
    ----------
    hidden, intermediate : int
        Hidden size and feed-forward width of a layer.
    layers_run : int
        Layers from the split up (forward and backward run through all of them).
    seq_len : int
        Tokens per sample.
    d, k : int
        Shape of each LoRA-adapted matrix.
    """
    layer = layer_flops(seq_len, hidden, intermediate)
    return {
        "base_cycles": 2.0 * layer * layers_run / flops_per_cycle,
        "cycles_per_op": 3.0 * seq_len * (d + k) / (d * k) / flops_per_cycle,
    }


@dataclass(frozen=True)
class ComputeFit:
    """Eq. (2)'s compute constants measured on a machine (``fsl-opt calibrate``).

    A device's local round of n samples at rank r and S tokens is modeled as
    n x (a F0(S) + b L(r, S) + g) + h seconds at clock ``clock_hz``, where F0 is the frozen
    layers' forward and input-gradient FLOPs per sample (``2 x layer_flops x layers``) and
    L the LoRA FLOPs per sample as eq. (2) counts them ((2r - 1) d k operations per adapted
    matrix, 3 S (d + k) / (d k) FLOPs each). In eq. (2)'s terms, at that clock:
    ``base_cycles = (a F0(S) + g) x clock`` and ``cycles_per_op = b x 3 S (d + k) / (d k)
    x clock`` and ``round_base_cycles = h x clock``.

    Attributes
    ----------
    clock_hz : float
        The machine's clock: every device's f_max under this fit.
    seconds_per_frozen_flop, seconds_per_lora_flop : float
        a and b above (> 0).
    seconds_per_sample : float
        g above (>= 0): what a sample costs beyond its FLOPs (the optimizer step, the
        framework).
    seconds_per_round : float
        h above (>= 0): what a local round costs once, whatever its samples (the
        optimizer's set-up, loading and saving the adapters).
    precision : str
        The arithmetic the fit was measured in (fp32 or bf16).
    """

    clock_hz: float
    seconds_per_frozen_flop: float
    seconds_per_lora_flop: float
    seconds_per_sample: float = 0.0
    precision: str = "fp32"
    seconds_per_round: float = 0.0

    def __post_init__(self) -> None:
        for name in (
            "clock_hz",
            "seconds_per_frozen_flop",
            "seconds_per_lora_flop",
            "seconds_per_sample",
            "seconds_per_round",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                # TOML's true would otherwise be 1 (a 1 Hz clock)
                raise ConfigError(f"{name} = {value!r}: expected a number")
        for name in ("clock_hz", "seconds_per_frozen_flop", "seconds_per_lora_flop"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} = {value!r}: expected a finite number > 0")
        for name in ("seconds_per_sample", "seconds_per_round"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} = {value!r}: expected a finite number >= 0")
        PRECISIONS.check(self.precision)

    def cycles(
        self, *, hidden: int, intermediate: int, layers_run: int, seq_len: int, d: int, k: int
    ) -> dict[str, float]:
        """``base_cycles``, ``cycles_per_op`` and ``round_base_cycles`` of eqs. (1)-(2) for a
        model of these shapes."""
        frozen = 2.0 * layer_flops(seq_len, hidden, intermediate) * layers_run
        per_op = 3.0 * seq_len * (d + k) / (d * k)
        return {
            "base_cycles": (self.seconds_per_frozen_flop * frozen + self.seconds_per_sample)
            * self.clock_hz,
            "cycles_per_op": self.seconds_per_lora_flop * per_op * self.clock_hz,
            "round_base_cycles": self.seconds_per_round * self.clock_hz,
        }
