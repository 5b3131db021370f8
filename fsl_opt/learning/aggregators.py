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
- ``rank_normalized``: zero-padded, but each rank component averaged over the devices that
  hold it (zero padding counts the others as zeros there, which shrinks the components
  past the smallest ranks every round).
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

from typing import Any, ClassVar

import numpy as np
import torch
from numpy.typing import NDArray

from fsl_opt.learning.lora import (
    MERGED_PREFIX,
    grow,
    lora_pairs,
    merged_key,
    nbytes,
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
    """Base: the head is averaged; subclasses say what happens to the adapters.

    Besides the tensor functions (:meth:`aggregate`, :meth:`payload`), an aggregator owns
    the server's bookkeeping of what it sends back: what each device downloads
    (:meth:`download_params`, :meth:`download_bytes`), updated after each aggregation
    (:meth:`after_aggregate`) and checkpointed (:meth:`state`, :meth:`load_state`). The
    base sends each device an adapter at its own rank, so it keeps nothing.

    Parameters
    ----------
    scale : float
        The LoRA scaling s.
    n_devices : int
        Devices of the run.
    """

    name: ClassVar[str]

    def __init__(self, scale: float = 2.0, n_devices: int = 1) -> None:
        self.scale = float(scale)
        self.n_devices = int(n_devices)

    def download_params(
        self, d: int, k: int, matrices_per_layer: int, layers: NDArray[np.float64]
    ) -> NDArray[np.float64] | None:
        """Parameters each device downloads this round, for the cost model; None: the
        adapter at the device's rank, which is what it uploads (eq. 9)."""
        return None

    def download_bytes(
        self, payload: State, device: int, params: NDArray[np.float64] | None
    ) -> int:
        """Bytes ``device`` receives when sent ``payload`` (``params``: what
        :meth:`download_params` said this round)."""
        return nbytes(payload)

    def after_aggregate(self, selected: list[int], ranks: list[int]) -> None:
        """Bookkeeping once the devices ``selected`` returned payloads of ``ranks``."""

    def state(self) -> dict[str, Any]:
        """What a checkpoint needs to continue the bookkeeping."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state`."""

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
            from fsl_opt.learning.registry import AGGREGATORS

            others = ", ".join(n for n, e in AGGREGATORS.items() if not e.has("one_rank"))
            raise ValueError(
                f"aggregation 'fedavg' averages A and B entry by entry, which needs one rank; "
                f"the devices have ranks {sorted(set(ranks))} (use one of {others})"
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


class RankNormalized(ZeroPad):
    """Zero-padded like HetLoRA, but each rank component averaged over the devices that
    hold it: row j of A (column j of B) is sum_{i: r_i >= j} w_i A_i[j] / sum_{i: r_i >= j}
    w_i. Zero padding counts a device of rank r_i < j as a zero in component j, so each
    round multiplies the components past the smallest ranks by the share of the weight
    that holds them, and a device at a low rank shrinks what the others learned there at a
    geometric rate over the rounds. Equal ranks: the same as ``zero_pad`` and ``fedavg``.
    Devices restart from the first r_i rows / columns, as with ``zero_pad``."""

    name = "rank_normalized"

    def aggregate(
        self, previous: State, payloads: list[State], ranks: list[int], weights: list[float]
    ) -> State:
        _check(payloads, ranks, weights)
        out = weighted_average(payloads, weights, other_keys(payloads[0]))
        top = max(ranks)
        held = torch.zeros(top, dtype=torch.float64)  # the weight that holds each component
        for r, w in zip(ranks, weights, strict=True):
            held[:r] += w
        for ka, kb in lora_pairs(payloads[0]):
            a_ref, b_ref = payloads[0][ka], payloads[0][kb]
            a = torch.zeros(top, a_ref.shape[1], dtype=torch.float64)
            b = torch.zeros(b_ref.shape[0], top, dtype=torch.float64)
            for p, r, w in zip(payloads, ranks, weights, strict=True):
                a[:r] += w * p[ka].double()
                b[:, :r] += w * p[kb].double()
            out[ka] = (a / held[:, None]).to(a_ref.dtype)
            out[kb] = (b / held[None, :]).to(b_ref.dtype)
        return out


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

    Every device restarts each round from fresh adapters (A drawn like peft's init from the
    caller's generator, B = 0, so the model starts exactly at the merged weights) and the
    averaged head. The merged weights belong to adapted layers, all at or above the split,
    so the cached hidden states below the split stay valid.

    Parameters
    ----------
    scale : float
        The LoRA scaling s (alpha / r, fixed across ranks): the merged weight change of an
        adapted matrix is s sum_i w_i B_i A_i.
    n_devices : int
        Devices of the run (one pending rank each).
    """

    name = "stack"

    def __init__(self, scale: float = 2.0, n_devices: int = 1) -> None:
        super().__init__(scale, n_devices)
        # The rank of the merged updates each device has not downloaded yet.
        self.pending_rank = np.zeros(self.n_devices)

    def download_params(
        self, d: int, k: int, matrices_per_layer: int, layers: NDArray[np.float64]
    ) -> NDArray[np.float64] | None:
        """The stacked factors of the merges a device has not received, r (d + k) per
        adapted matrix, or the dense d x k change if smaller. Its fresh adapters are drawn
        on the device from the round's seed."""
        per_matrix = np.minimum(self.pending_rank * (d + k), d * k)
        return np.asarray(per_matrix * matrices_per_layer * layers, dtype=np.float64)

    def download_bytes(
        self, payload: State, device: int, params: NDArray[np.float64] | None
    ) -> int:
        """The head plus the merged updates it has not received (fp32)."""
        assert params is not None
        return nbytes({k: payload[k] for k in other_keys(payload)}) + 4 * int(params[device])

    def after_aggregate(self, selected: list[int], ranks: list[int]) -> None:
        """The devices that took part downloaded everything at the round's start; every
        device now misses this round's merge."""
        self.pending_rank[selected] = 0.0
        self.pending_rank += sum(ranks)

    def state(self) -> dict[str, Any]:
        """The pending ranks."""
        return {"pending_rank": self.pending_rank.tolist()}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore the pending ranks."""
        if "pending_rank" in state:
            self.pending_rank = np.asarray(state["pending_rank"], dtype=np.float64)

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
