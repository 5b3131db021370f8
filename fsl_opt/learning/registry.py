"""The aggregator registry: every aggregation by name, without importing torch.

An aggregator is a class in its own module (a subclass of
:class:`fsl_opt.learning.aggregators.Aggregator`), named here with one
:func:`register_aggregator` line; it is imported only when a run builds it, so checking a
run's settings (``fsl-opt train`` with a typo) never loads torch. The run setting
``aggregation``, ``fsl-opt train --help``, the Flower run config and the docs read the
names from :data:`AGGREGATORS`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fsl_opt.errors import ConfigError

if TYPE_CHECKING:
    from fsl_opt.learning.aggregators import Aggregator


@dataclass(frozen=True)
class AggregatorEntry:
    """Where an aggregator lives and what a run's settings must know of it.

    Attributes
    ----------
    target : str
        ``package.module:Class``.
    summary : str
        One line for ``--help`` and the docs.
    one_rank : bool
        It can only aggregate payloads of one rank (so the run's objective must be the
        paper's shared rank).
    """

    target: str
    summary: str
    one_rank: bool = False


#: Every aggregator by name, in registration order.
AGGREGATORS: dict[str, AggregatorEntry] = {}


def register_aggregator(name: str, target: str, summary: str, *, one_rank: bool = False) -> None:
    """Name the aggregator class at ``target`` (``package.module:Class``)."""
    if name in AGGREGATORS:
        raise ValueError(f"aggregator {name!r} is registered twice")
    AGGREGATORS[name] = AggregatorEntry(target, summary, one_rank)


def make_aggregator(name: str, scale: float, n_devices: int) -> Aggregator:
    """A fresh aggregator ``name`` for a run of ``n_devices`` (``scale``: the LoRA s)."""
    try:
        entry = AGGREGATORS[name]
    except KeyError:
        raise ConfigError(
            f"aggregation = {name!r}: expected one of {', '.join(AGGREGATORS)}"
        ) from None
    module, _, attr = entry.target.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    aggregator: Aggregator = cls(scale=scale, n_devices=n_devices)
    return aggregator


_HERE = "fsl_opt.learning.aggregators"
register_aggregator(
    "fedavg", f"{_HERE}:FedAvg", "A and B averaged apart (the paper, FedIT)", one_rank=True
)
register_aggregator("zero_pad", f"{_HERE}:ZeroPad", "zero-padded to the largest rank (HetLoRA)")
register_aggregator("svd", f"{_HERE}:SVD", "weighted sum of updates, truncated SVD (FlexLoRA)")
register_aggregator("stack", f"{_HERE}:Stack", "stacked updates merged into the weights (FLoRA)")
