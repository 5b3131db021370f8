"""Server aggregation of LoRA adapters, equal or different ranks: pure tensor functions.

Every aggregator turns the devices' returned payloads (LoRA A and B of each adapted matrix,
plus the classification head), their ranks and their weights w_i = |D_i| / sum_j |D_j| into
the new *global state*, and hands each device its next payload at the rank the server gives
it (:meth:`Aggregator.payload`). The head is a weighted average in all of them. They differ
in what they do with the adapters, whose update to a weight matrix is Delta W = s B A:

- ``fedavg`` (the paper, FedIT): A and B averaged separately. The product of the averages is
  not the average of the products (the cross terms B_i A_j are noise); equal ranks only.
- ``zero_pad`` (HetLoRA): pad every A with zero rows and B with zero columns to the largest
  rank, average, and give each device the first r_i rows / columns.
- ``svd`` (FlexLoRA): the weighted sum of the full updates sum_i w_i B_i A_i, kept in
  factored form (stacked factors, never a d x k matrix); each device starts the next round
  from its best rank-r_i approximation (truncated SVD through the factors' QR, Eckart-Young).
- ``stack`` (FLoRA): stacking A_i and w_i B_i gives the exact weighted sum of the updates;
  it is merged into the frozen adapted weights every round (``merged.*`` entries, the
  cumulative s sum_t sum_i w_i B_i A_i) and every device restarts from fresh adapters (B = 0).

The global state is a plain ``dict[str, Tensor]`` (saved in the checkpoint as is); a payload
is what :meth:`fsl_opt.learning.split_model.SplitModel.load_adapter_state` loads.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from fsl_opt.learning.lora import (
    MERGED_PREFIX,
    grow,
    lora_pairs,
    merged_key,
    other_keys,
    pad,
    random_rows,
    shrink,
    state_rank,
)

State = dict[str, torch.Tensor]


def weighted_average(states: list[State], weights: list[float], keys: list[str]) -> State:
    """sum_i w_i state_i[key] / sum_i w_i for each key (in float64, returned in the input dtype)."""
    total = float(sum(weights))
    out = {}
    for key in keys:
        ref = states[0][key]
        acc = torch.zeros_like(ref, dtype=torch.float64)
        for s, w in zip(states, weights, strict=True):
            acc += (w / total) * s[key].double()
        out[key] = acc.to(ref.dtype)
    return out


def _check(payloads: list[State], ranks: list[int], weights: list[float]) -> None:
    if not payloads or not len(payloads) == len(ranks) == len(weights):
        raise ValueError("aggregation needs one rank and one weight per payload, at least one")
    for i, (p, r) in enumerate(zip(payloads, ranks, strict=True)):
        if state_rank(p) != r:
            raise ValueError(f"payload {i} has rank {state_rank(p)}, but its rank is given as {r}")


def stacked_factors(
    payloads: list[State], weights: list[float], a_key: str, b_key: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(A_s, B_s) with B_s A_s = sum_i w_i B_i A_i exactly: A_s = [A_1; ...; A_n] (sum r_i x k),
    B_s = [w_1 B_1, ..., w_n B_n] (d x sum r_i), weights normalized, in float64."""
    total = float(sum(weights))
    a = torch.cat([p[a_key].double() for p in payloads], dim=0)
    b = torch.cat(
        [(w / total) * p[b_key].double() for p, w in zip(payloads, weights, strict=True)], 1
    )
    return a, b


class Aggregator:
    """Base: the head is averaged; subclasses say what happens to the adapters."""

    name: ClassVar[str]
    #: Whether a device's next payload is its own fresh adapters plus merged weights (stack),
    #: so what it downloads is the merged update rather than an adapter at its rank.
    sends_merged: ClassVar[bool] = False

    def aggregate(
        self, previous: State, payloads: list[State], ranks: list[int], weights: list[float]
    ) -> State:
        """The new global state from the devices' payloads (``previous``: the last one)."""
        raise NotImplementedError

    def payload(self, state: State, rank: int, generator: torch.Generator) -> State:
        """What a device at ``rank`` starts the round from (new directions drawn from
        ``generator``, seeded by the caller so that equal calls give equal payloads)."""
        out = dict(state)
        for ka, kb in lora_pairs(state):
            r = state[ka].shape[0]
            if rank > r:
                out[ka], out[kb] = grow(state[ka], state[kb], rank, generator)
            elif rank < r:
                out[ka], out[kb] = self._cut(state[ka], state[kb], rank, generator)
        return out

    def _cut(
        self, a: torch.Tensor, b: torch.Tensor, rank: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A rank-``rank`` adapter from a larger global one (default: best approximation)."""
        return shrink(a, b, rank, generator)


class FedAvg(Aggregator):
    """A and B averaged separately (the paper); every payload must have the same rank."""

    name = "fedavg"

    def aggregate(
        self, previous: State, payloads: list[State], ranks: list[int], weights: list[float]
    ) -> State:
        _check(payloads, ranks, weights)
        if len(set(ranks)) > 1:
            raise ValueError(
                f"aggregation 'fedavg' averages A and B entry by entry, which needs one rank; "
                f"the devices have ranks {sorted(set(ranks))} (use zero_pad, svd or stack)"
            )
        return weighted_average(payloads, weights, list(payloads[0]))


class ZeroPad(Aggregator):
    """HetLoRA: zero-pad to the largest rank, average, truncate per device."""

    name = "zero_pad"

    def aggregate(
        self, previous: State, payloads: list[State], ranks: list[int], weights: list[float]
    ) -> State:
        _check(payloads, ranks, weights)
        top = max(ranks)
        padded = []
        for p in payloads:
            q = dict(p)
            for ka, kb in lora_pairs(p):
                q[ka], q[kb] = pad(p[ka], p[kb], top)
            padded.append(q)
        return weighted_average(padded, weights, list(padded[0]))

    def _cut(
        self, a: torch.Tensor, b: torch.Tensor, rank: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``rank`` rows of A and columns of B (HetLoRA's truncation)."""
        return a[:rank].contiguous(), b[:, :rank].contiguous()


class SVD(Aggregator):
    """FlexLoRA: the weighted sum of the full updates, each device given its truncated SVD.

    The global adapter is the stacked factors, rank R = sum r_i (or min(d, k) when that is
    smaller: the stack is then re-factored losslessly), so evaluating the global model
    uses the exact average update; a device's rank-r_i start is computed through the
    factors' QR decompositions, O((d + k) R^2), never forming the d x k product.
    """

    name = "svd"

    def aggregate(
        self, previous: State, payloads: list[State], ranks: list[int], weights: list[float]
    ) -> State:
        _check(payloads, ranks, weights)
        out = weighted_average(payloads, weights, other_keys(payloads[0]))
        for ka, kb in lora_pairs(payloads[0]):
            a, b = stacked_factors(payloads, weights, ka, kb)
            full = min(b.shape[0], a.shape[1])
            if a.shape[0] > full:  # rank of the sum is at most min(d, k): re-factor exactly
                a, b = shrink(a, b, full)
            out[ka] = a.to(payloads[0][ka].dtype)
            out[kb] = b.to(payloads[0][kb].dtype)
        return out


class Stack(Aggregator):
    """FLoRA: the stacked (exact) weighted sum of updates merged into the frozen weights.

    Parameters
    ----------
    scale : float
        The LoRA scaling s (alpha / r, fixed across ranks): the merged weight change of an
        adapted matrix is s sum_i w_i B_i A_i.

    Every device restarts each round from fresh adapters (A drawn like peft's init from the
    caller's generator, B = 0, so the model starts exactly at the merged weights) and the
    averaged head. The merged weights belong to adapted layers, all at or above the split,
    so the cached hidden states below the split stay valid.
    """

    name = "stack"
    sends_merged = True

    def __init__(self, scale: float) -> None:
        self.scale = float(scale)

    def aggregate(
        self, previous: State, payloads: list[State], ranks: list[int], weights: list[float]
    ) -> State:
        _check(payloads, ranks, weights)
        out = weighted_average(payloads, weights, other_keys(payloads[0]))
        for ka, kb in lora_pairs(payloads[0]):
            a, b = stacked_factors(payloads, weights, ka, kb)
            key = merged_key(ka)
            before = previous.get(key)
            update = self.scale * (b @ a)
            merged = update if before is None else before.double() + update
            out[key] = merged.to(payloads[0][ka].dtype)
            # The global adapter after a merge contributes nothing: rank 1, B = 0.
            out[ka] = a.new_zeros(1, a.shape[1]).to(payloads[0][ka].dtype)
            out[kb] = b.new_zeros(b.shape[0], 1).to(payloads[0][kb].dtype)
        for key, value in previous.items():  # matrices no payload touched keep their merge
            if key.startswith(MERGED_PREFIX) and key not in out:
                out[key] = value
        return out

    def payload(self, state: State, rank: int, generator: torch.Generator) -> State:
        """Fresh adapters at ``rank`` (B = 0) over the merged weights, and the head."""
        out = dict(state)
        for ka, kb in lora_pairs(state):
            k, d = state[ka].shape[1], state[kb].shape[0]
            out[ka] = random_rows(rank, k, generator).to(state[ka])
            out[kb] = state[kb].new_zeros(d, rank)
        return out


def make_aggregator(name: str, scale: float) -> Aggregator:
    """The aggregator called ``name`` (``scale``: the LoRA s, used by ``stack``)."""
    if name == "stack":
        return Stack(scale)
    table: dict[str, type[Aggregator]] = {"fedavg": FedAvg, "zero_pad": ZeroPad, "svd": SVD}
    if name not in table:
        raise ValueError(f"unknown aggregation {name!r}: expected one of {', '.join(AGGREGATIONS)}")
    return table[name]()


#: Aggregation names, as the ``aggregation`` run setting takes them.
AGGREGATIONS = ("fedavg", "zero_pad", "svd", "stack")
