"""The aggregator registry: every aggregation by name, without importing torch.

An aggregator is a class in its own module (a subclass of
:class:`fsl_opt.learning.aggregators.Aggregator`), named here with one
:func:`register_aggregator` line; it is imported only when a run builds it, so checking a
run's settings (``fsl-opt train`` with a typo) never loads torch. The run setting
``aggregation``, ``fsl-opt train --help``, the Flower run config and the docs read the
names from :data:`AGGREGATORS`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fsl_opt.errors import ConfigError
from fsl_opt.registry import Registry

if TYPE_CHECKING:
    from fsl_opt.learning.aggregators import Aggregator

#: Every aggregator by name, in registration order (a :class:`~fsl_opt.registry.Registry`).
#: Capability ``one_rank``: it can only aggregate payloads of one rank (so the run's
#: objective must be the paper's shared rank).
AGGREGATORS: Registry[type[Aggregator]] = Registry(
    "aggregator", setting="aggregation", capabilities=("one_rank",)
)


def register_aggregator(name: str, target: str, summary: str, *, one_rank: bool = False) -> None:
    """Name the aggregator class at ``target`` (``package.module:Class``)."""
    AGGREGATORS.register(name, target, summary, one_rank=one_rank)


def make_aggregator(name: str, scale: float, n_devices: int) -> Aggregator:
    """A fresh aggregator ``name`` for a run of ``n_devices`` (``scale``: the LoRA s)."""
    return AGGREGATORS.load(name)(scale=scale, n_devices=n_devices)


_HERE = "fsl_opt.learning.aggregators"
register_aggregator(
    "fedavg", f"{_HERE}:FedAvg", "A and B averaged apart (the paper, FedIT)", one_rank=True
)
register_aggregator("zero_pad", f"{_HERE}:ZeroPad", "zero-padded to the largest rank (HetLoRA)")
register_aggregator(
    "rank_normalized",
    f"{_HERE}:RankNormalized",
    "zero-padded, each rank component averaged over the devices holding it",
)
register_aggregator("svd", f"{_HERE}:SVD", "weighted sum of updates, truncated SVD (FlexLoRA)")
register_aggregator("stack", f"{_HERE}:Stack", "stacked updates merged into the weights (FLoRA)")

#: Every data set by name (``NAME[:ARG]`` in the run setting ``data``): an opener
#: ``(ARG, columns) -> TextDataset`` in :mod:`fsl_opt.learning.data`. Capabilities:
#: ``argument``: takes ``:ARG``; ``needs_argument``: cannot go without one;
#: ``path_argument``: the argument is a file or folder of the user's (a run never writes
#: over it); ``offline``: shipped with the wheels, no hub.
DATASETS: Registry[Any] = Registry(
    "data set",
    setting="data",
    capabilities=("argument", "needs_argument", "path_argument", "offline"),
)


def register_dataset(name: str, target: str, summary: str, **capabilities: bool) -> None:
    """Name the opener at ``target`` (``package.module:function``)."""
    DATASETS.register(name, target, summary, **capabilities)


def check_data(spec: str) -> tuple[str, str]:
    """``spec`` (``NAME[:ARG]``) as its registered name and argument; a name not registered,
    an argument where the data set takes none, or none where it needs one is refused."""
    name, colon, arg = spec.partition(":")
    if name not in DATASETS:
        takes = ", ".join(f"{n}:ARG" for n in DATASETS.with_capability("argument"))
        raise ConfigError(
            f"data = {spec!r}: expected one of {', '.join(DATASETS)} (or {takes}; "
            "fsl-opt train --help describes each)"
        )
    entry = DATASETS[name]
    if colon and not entry.has("argument"):
        raise ConfigError(f"data = {spec!r}: {name} takes no ':' argument; write data = {name!r}")
    if entry.has("needs_argument") and not arg.strip():
        raise ConfigError(f"data = {spec!r}: give a path or an id, e.g. csv:reviews.csv or hf:imdb")
    return name, arg


_DATA = "fsl_opt.learning.data"
register_dataset(
    "news4", f"{_DATA}:open_news4", "20 Newsgroups in 4 classes, shipped (default)", offline=True
)
register_dataset(
    "reuters8", f"{_DATA}:open_reuters8", "Reuters in 8 imbalanced classes, shipped", offline=True
)
register_dataset(
    "ag_news",
    f"{_DATA}:open_ag_news",
    "AG News from the hub, or ag_news:/folder for a local copy",
    argument=True,
    path_argument=True,
)
register_dataset(
    "csv",
    f"{_DATA}:open_csv",
    "csv:PATH, your CSV: a file, or a folder with train.csv and test.csv",
    argument=True,
    needs_argument=True,
    path_argument=True,
)
register_dataset(
    "hf",
    f"{_DATA}:open_hf",
    "hf:NAME[:CONFIG], any Hugging Face dataset",
    argument=True,
    needs_argument=True,
)
