"""Every experiment and benchmark by name: the one list ``fsl-opt experiment``,
``fsl-opt bench``, ``make experiments`` and the docs read.

A new experiment or benchmark is one module with a ``main(out, ...)`` and one
:func:`register` line below (two :class:`~fsl_opt.registry.Registry` tables, the shape
every plug-in kind shares; an entry's target is its module). Its options are the keyword
parameters of ``main``; an option given on the command line that ``main`` does not take
is refused before any folder is made, and a module may check its options' values the same
way with a ``check_options(**options)`` function (a declared :class:`~experiments.common.Experiment`
has one: what its runs would refuse once started, refused before the folder is made).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from fsl_opt.errors import ConfigError
from fsl_opt.registry import Entry, Registry

Kind = Literal["experiment", "bench"]


#: Experiments by name, in the order ``--all`` runs them (capability ``in_all``: part of
#: ``fsl-opt experiment --all``, what ``make experiments`` remakes). Targets are modules.
EXPERIMENTS: Registry[ModuleType] = Registry(
    "experiment", setting="experiment", capabilities=("in_all",)
)
#: Benchmarks by name.
BENCHMARKS: Registry[ModuleType] = Registry("bench", setting="bench")


def register(kind: Kind, name: str, module: str, summary: str, *, in_all: bool = False) -> None:
    """Name the experiment or benchmark whose ``main`` lives in ``module``."""
    if kind == "experiment":
        EXPERIMENTS.register(name, module, summary, in_all=in_all)
    else:
        BENCHMARKS.register(name, module, summary)


def entries(kind: Kind) -> Registry[ModuleType]:
    """The registered experiments or benchmarks."""
    return EXPERIMENTS if kind == "experiment" else BENCHMARKS


def _function(entry: Entry[ModuleType], attr: str) -> Callable[..., Any] | None:
    fn: Callable[..., Any] | None = getattr(entry.load(), attr, None)
    return fn


def check(kind: Kind, name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The options given (None: not given) to experiment or benchmark ``name``, checked
    against its ``main``'s parameters and its module's own ``check_options``; raises
    :class:`ConfigError`."""
    entry = entries(kind).check(name)
    given = {k: v for k, v in options.items() if v is not None}
    main = _function(entry, "main")
    assert main is not None, f"{entry.target} has no main()"
    takes = set(inspect.signature(main).parameters) - {"out"}
    unknown = sorted(set(given) - takes)
    if unknown:
        flags = ", ".join("--" + k.replace("_", "-") for k in unknown)
        raise ConfigError(
            f"{kind} {name} takes no {flags} (it takes: {', '.join(sorted(takes)) or 'nothing'})"
        )
    check_fn = _function(entry, "check_options")
    if check_fn is None:  # a declared experiment checks what its runs would refuse
        declared = getattr(entry.load(), "EXPERIMENT", None)
        check_fn = getattr(declared, "check_options", None)
    if check_fn is not None:
        check_fn(**given)
    return given


def run(kind: Kind, name: str, out: Path, options: dict[str, Any]) -> Any:
    """Run experiment or benchmark ``name`` into ``out`` with the given options (checked
    first, as :func:`check` does)."""
    main = _function(entries(kind).check(name), "main")
    assert main is not None
    return main(out, **check(kind, name, options))


def check_parts(parts: tuple[str, ...], known: tuple[str, ...]) -> None:
    """Refuse a ``--parts`` entry a benchmark does not have, before any folder is made."""
    unknown = sorted(set(parts) - set(known))
    if unknown:
        raise ConfigError(
            f"--parts {','.join(parts)!r}: unknown {', '.join(unknown)}; "
            f"choose among {', '.join(known)}"
        )


register(
    "experiment",
    "frontier",
    "experiments.frontier",
    "accuracy for the latency, energy and bytes ten allocation policies spend",
    in_all=True,
)
register(
    "experiment",
    "frontier20",
    "experiments.frontier20",
    "the frontier on 20 devices, 5 at half clock, with the budget policy",
    in_all=True,
)
register(
    "experiment",
    "frontier-trace",
    "experiments.frontier_trace",
    "the frontier on a device trace: about 70% availability, mobility",
    in_all=True,
)
register("experiment", "fig4", "experiments.fig4", "Fig. 4: accuracy vs deadline T0", in_all=True)
register(
    "experiment", "fig5", "experiments.fig5", "Fig. 5: accuracy vs energy budget E0", in_all=True
)
register("experiment", "fig3", "experiments.fig3", "Fig. 3: accuracy vs LoRA rank", in_all=True)
register(
    "experiment",
    "fig2",
    "experiments.fig2",
    "Fig. 2: accuracy vs position of the LoRA layers",
    in_all=True,
)
register(
    "experiment", "solvers", "experiments.solvers", "solver times and optimality gaps", in_all=True
)
register(
    "experiment",
    "aggregators",
    "experiments.aggregators",
    "aggregators for different ranks on a heterogeneous population",
)
register(
    "experiment",
    "low-rank",
    "experiments.low_rank",
    "a device at a low rank under zero padding and under rank-normalized averaging",
)
register("experiment", "precision", "experiments.precision", "bf16 against fp32")
register(
    "experiment",
    "target",
    "experiments.target",
    "the cheapest plan to each of three target accuracies, trained, against the frontier",
)
register(
    "experiment",
    "pilot",
    "experiments.pilot",
    "six short runs spread to fit an accuracy model (fsl-opt fit-accuracy) for a model or data",
)
register("bench", "solvers", "experiments.solvers", "seconds per call of each solver")
register("bench", "per-device", "experiments.bench_per_device", "the extended solvers at scale")
register("bench", "training", "experiments.bench_training", "training against its FLOP floor")
register("bench", "aggregation", "experiments.bench_aggregation", "the server's aggregation work")
register("bench", "flower", "experiments.bench_flower", "in-process against Flower's simulation")
register(
    "bench",
    "budget-policy",
    "experiments.budget_policy",
    "whole-run budget policies against the offline optimum; fsl-opt plan at scale",
)
register("bench", "node-load", "experiments.bench_node_load", "what a Flower node loads")
register(
    "bench",
    "remake-cost",
    "experiments.remake_cost",
    "the committed experiments' run time against their FLOP floor (reads results, times nothing)",
)
register(
    "bench",
    "threads",
    "experiments.bench_threads",
    "one run on 2 threads against two single-threaded runs side by side",
)
