"""Adapter payloads: LoRA pairs, rank changes between rounds, merged weights, sizes.

A LoRA pair is B (d x r) and A (r x k) with update Delta W = s B A (s fixed, see
``SplitModel``). When the solver changes r between rounds the global adapters are resized
without losing what was learned:

- grow r -> r' > r: B gets r' - r zero columns and A r' - r new random rows, so B' A' = B A
  exactly and the new directions can still learn (B's zeros get gradients through A);
- shrink r -> r' < r: the truncated SVD of B A, split evenly, B' = U_r' S^(1/2),
  A' = S^(1/2) V_r'^T: the best rank-r' approximation (Eckart-Young).
"""

from __future__ import annotations

import math

import torch

LORA_A, LORA_B = "lora_A.weight", "lora_B.weight"
#: Payload entries holding a change merged into a frozen adapted weight (the ``stack``
#: aggregator): ``merged.<module path>.weight``, the module path as in the LoRA keys.
MERGED_PREFIX = "merged."


def merged_key(a_key: str) -> str:
    """The ``merged.*`` entry of the adapted matrix whose LoRA A entry is ``a_key``."""
    return MERGED_PREFIX + a_key[: -len(LORA_A)] + "weight"


def lora_pairs(state: dict[str, torch.Tensor]) -> list[tuple[str, str]]:
    """(A key, B key) of every adapted matrix in a payload."""
    pairs = []
    for key in state:
        if key.endswith(LORA_A):
            b = key[: -len(LORA_A)] + LORA_B
            if b not in state:
                raise KeyError(f"{key} has no matching {b}")
            pairs.append((key, b))
    return pairs


def state_rank(state: dict[str, torch.Tensor]) -> int:
    """The LoRA rank of a payload (0 if it has no adapters)."""
    pairs = lora_pairs(state)
    return int(state[pairs[0][0]].shape[0]) if pairs else 0


def grow(
    a: torch.Tensor, b: torch.Tensor, rank: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad B and add random rows to A: B' A' = B A exactly.

    New rows of A are drawn like peft's default init (Kaiming-uniform, a = sqrt(5)), i.e.
    uniform on +-1/sqrt(k).
    """
    r, k = a.shape
    if rank < r:
        raise ValueError(f"grow: rank {rank} < current {r}")
    a2 = torch.cat([a, random_rows(rank - r, k, generator).to(a)], dim=0)
    b2 = torch.cat([b, b.new_zeros(b.shape[0], rank - r)], dim=1)
    return a2, b2


def shrink(
    a: torch.Tensor, b: torch.Tensor, rank: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Best rank-``rank`` factors of B A by truncated SVD, singular values split evenly.

    Directions with (numerically) zero singular value would leave both factors zero, and a
    LoRA pair with A = B = 0 never learns again; those rows of A are re-drawn like
    :func:`grow`'s (with B's columns zero, B A is unchanged).
    """
    r, k = a.shape
    if rank > r:
        raise ValueError(f"shrink: rank {rank} > current {r}")
    # SVD of B A through its factors: B = Q_b R_b, A^T = Q_a R_a, so B A = Q_b (R_b R_a^T) Q_a^T
    # and only the r x r core needs an SVD: O((d + k) r^2), never the d x k product.
    q_b, r_b = torch.linalg.qr(b.double())
    q_a, r_a = torch.linalg.qr(a.double().T)
    u_c, s, vh_c = torch.linalg.svd(r_b @ r_a.T)
    u, vh = q_b @ u_c, vh_c @ q_a.T
    root = s[:rank].sqrt()
    b2 = u[:, :rank] * root
    a2 = root[:, None] * vh[:rank]
    dead = (
        s[:rank] <= 1e-12 * max(float(s[0]), 1e-30)
        if s.numel()
        else torch.ones(rank, dtype=torch.bool, device=s.device)
    )
    if dead.any():
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        fresh = random_rows(int(dead.sum()), k, gen)
        a2[dead] = fresh.to(a2)
        b2[:, dead] = 0.0
    return a2.to(a.dtype).contiguous(), b2.to(b.dtype).contiguous()


def pad(a: torch.Tensor, b: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A with zero rows and B with zero columns up to ``rank``: B A unchanged, no new
    direction that can learn (HetLoRA's padding; :func:`grow` draws new rows instead)."""
    r = a.shape[0]
    if rank < r:
        raise ValueError(f"pad: rank {rank} < current {r}")
    return (
        torch.cat([a, a.new_zeros(rank - r, a.shape[1])], 0),
        torch.cat([b, b.new_zeros(b.shape[0], rank - r)], 1),
    )


def other_keys(state: dict[str, torch.Tensor]) -> list[str]:
    """Entries that are neither LoRA factors nor merged weights: the head."""
    return [
        k
        for k in state
        if not (k.endswith(LORA_A) or k.endswith(LORA_B) or k.startswith(MERGED_PREFIX))
    ]


def random_rows(n: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """Rows like peft's default lora_A init (Kaiming-uniform, a = sqrt(5)): U(+-1/sqrt(k)).

    Drawn on the CPU, where ``generator`` lives (callers move them): the same rows for a
    model on any device."""
    bound = 1.0 / math.sqrt(k)
    return (torch.rand(n, k, generator=generator, dtype=torch.float64) * 2 - 1) * bound


def nbytes(state: dict[str, torch.Tensor]) -> int:
    """Bytes of a payload as stored (numel x element size)."""
    return int(sum(v.numel() * v.element_size() for v in state.values()))
