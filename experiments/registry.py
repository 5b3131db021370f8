"""Every experiment and benchmark by name: the one list ``fsl-opt experiment``,
``fsl-opt bench``, ``make experiments`` and the docs read.

A new experiment or benchmark is one module with a ``main(out, ...)`` and one
:func:`register` line below. Its options are the keyword parameters of ``main``; an option
given on the command line that ``main`` does not take is refused before any folder is
made, and a module may check its options' values the same way with a
``check_options(**options)`` function (a declared :class:`~experiments.common.Experiment`
has one: what its runs would refuse once started, refused before the folder is made).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from fsl_opt.errors import ConfigError

Kind = Literal["experiment", "bench"]


@dataclass(frozen=True)
class Entry:
    """A registered experiment or benchmark.

    Attributes
    ----------
    kind : {"experiment", "bench"}
        The command that runs it (``fsl-opt experiment`` or ``fsl-opt bench``).
    name, module, summary : str
        Its name on the command line, its module, one line of help.
    in_all : bool
        Part of ``fsl-opt experiment --all`` (what ``make experiments`` remakes).
    """

    kind: Kind
    name: str
    module: str
    summary: str
    in_all: bool = False

    def _function(self, attr: str) -> Callable[..., Any] | None:
        fn: Callable[..., Any] | None = getattr(importlib.import_module(self.module), attr, None)
        return fn

    def check(self, options: dict[str, Any]) -> dict[str, Any]:
        """The options given (None: not given), checked against ``main``'s parameters and
        the module's own ``check_options``; raises :class:`ConfigError`."""
        given = {k: v for k, v in options.items() if v is not None}
        main = self._function("main")
        assert main is not None, f"{self.module} has no main()"
        takes = set(inspect.signature(main).parameters) - {"out"}
        unknown = sorted(set(given) - takes)
        if unknown:
            flags = ", ".join("--" + k.replace("_", "-") for k in unknown)
            raise ConfigError(
                f"{self.kind} {self.name} takes no {flags} (it takes: "
                f"{', '.join(sorted(takes)) or 'nothing'})"
            )
        check = self._function("check_options")
        if check is None:  # a declared experiment checks what its runs would refuse
            declared = getattr(importlib.import_module(self.module), "EXPERIMENT", None)
            check = getattr(declared, "check_options", None)
        if check is not None:
            check(**given)
        return given

    def run(self, out: Path, options: dict[str, Any]) -> Any:
        """Run it into ``out`` with the given options (check them first with :meth:`check`)."""
        main = self._function("main")
        assert main is not None
        return main(out, **self.check(options))


def check_parts(parts: tuple[str, ...], known: tuple[str, ...]) -> None:
    """Refuse a ``--parts`` entry a benchmark does not have, before any folder is made."""
    unknown = sorted(set(parts) - set(known))
    if unknown:
        raise ConfigError(
            f"--parts {','.join(parts)!r}: unknown {', '.join(unknown)}; "
            f"choose among {', '.join(known)}"
        )


#: Experiments by name, in the order ``--all`` runs them.
EXPERIMENTS: dict[str, Entry] = {}
#: Benchmarks by name.
BENCHMARKS: dict[str, Entry] = {}


def register(kind: Kind, name: str, module: str, summary: str, *, in_all: bool = False) -> None:
    """Name the experiment or benchmark whose ``main`` lives in ``module``."""
    table = EXPERIMENTS if kind == "experiment" else BENCHMARKS
    if name in table:
        raise ValueError(f"{kind} {name!r} is registered twice")
    table[name] = Entry(kind, name, module, summary, in_all)


def entries(kind: Kind) -> dict[str, Entry]:
    """The registered experiments or benchmarks."""
    return EXPERIMENTS if kind == "experiment" else BENCHMARKS


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
    "threads",
    "experiments.bench_threads",
    "one run on 2 threads against two single-threaded runs side by side",
)
