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
"""

from __future__ import annotations

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
