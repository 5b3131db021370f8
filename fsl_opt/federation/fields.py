"""How one run setting is declared: :func:`setting`, the :class:`Range` a number may take,
the :data:`SECTIONS` of a run, and :class:`PluginOptions`, the base of a plug-in's own
settings.

A plug-in (a backend, a whole-run policy) that has settings of its own declares them as a
:class:`PluginOptions` dataclass beside its registration line in
:mod:`fsl_opt.federation.registry` (light: checking a configuration imports neither Flower
nor torch), with the checks only it knows. :class:`~fsl_opt.federation.settings.RunConfig`
composes every such class with the settings every run has, so the run TOML, the flags, the
Flower run config and the records stay one flat table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fsl_opt.registry import Registry


@dataclass(frozen=True)
class Range:
    """The values a number setting may take: above ``low`` (at least ``low`` where
    ``low_open`` is false), at most ``high``; NaN never. The upper bounds keep every size
    within what memory, disk and the random generators can hold (a seed is drawn into
    torch's 64-bit generators; a pool's noise must stay a representable number)."""

    low: float
    high: float
    low_open: bool = True

    def holds(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        return bool(above and value <= self.high)

    def __str__(self) -> str:
        def shown(x: float) -> str:
            if x == 2**63 - 1:
                return "2**63 - 1"
            return f"{int(x)}" if float(x).is_integer() and abs(x) < 1e7 else f"{x:g}"

        return f"{'>' if self.low_open else '>='} {shown(self.low)} and <= {shown(self.high)}"


#: The parts of a run, in the order ``--help`` shows them: each setting names its own.
SECTIONS = {
    "data": "data: what is trained and tested on, and how it is split over the devices",
    "model": "model: the encoder, its adapted layers and their arithmetic",
    "training": "training: rounds, local training and aggregation",
    "population": "population: the devices and their channels",
    "round": "round: what each round's solver maximizes, under which per-round budgets",
    "whole_run": "whole run: budgets for the whole training, and the policy that spends them",
    "backend": "backend: where the devices train",
    "output": "output: what a run writes besides its records",
}


def setting(
    default: Any,
    help: str,
    *,
    choices: Iterable[str] | Callable[[], Iterable[str]] | None = None,
    flags: tuple[str, ...] = (),
    or_file: str | None = None,
    within: Range | None = None,
    plans: bool = False,
    solves: bool = False,
    resumes_with_another: bool = False,
    described_by: Callable[[], Registry[Any]] | None = None,
    needed: bool = False,
    deprecated: tuple[str, ...] = (),
    workload: bool = False,
    reads_file: bool = False,
    section: str,
) -> Any:
    """A run setting (a dataclass field) with its help text, choices, extra flag spellings
    (``or_file``: a path ending so is allowed beside the choices) and, for a number, the
    range it must lie in (``within``: checked when the configuration is made, shown in
    ``--help``); ``plans``: ``fsl-opt plan`` takes it (the planner reads it); ``solves``:
    ``fsl-opt solve`` takes it too (one round's system reads it); ``resumes_with_another``:
    a resumed run may change it; ``described_by``: a registry whose names and summaries the
    help text lists (as ``choices`` from a registry do) where the value is more than a name
    (``data = "csv:PATH"``); ``needed``: a plug-in's option that must be given when the
    plug-in is chosen; ``deprecated``: old flag spellings still taken for one release, each
    use noted on stderr; ``workload``: the shared model and each device's cached data depend
    on it (runs that agree on every such setting share one workload); ``reads_file``: its
    value names a file of the user's that the run reads (with ``or_file``: when it ends so);
    ``section``: the part of a run it belongs to, a key of :data:`SECTIONS` (``--help`` lists
    the settings by section)."""
    if section not in SECTIONS:
        raise ValueError(f"section {section!r}: expected one of {', '.join(SECTIONS)}")
    return field(
        default=default,
        metadata={
            "help": help,
            "choices": choices,
            "flags": flags,
            "or_file": or_file,
            "within": within,
            "plans": plans,
            "solves": solves,
            "resumes_with_another": resumes_with_another,
            "described_by": described_by,
            "needed": needed,
            "deprecated": deprecated,
            "workload": workload,
            "reads_file": reads_file,
            "section": section,
        },
    )


@dataclass(frozen=True)
class PluginOptions:
    """The settings of one plug-in: subclass it as a frozen dataclass of :func:`setting`
    fields, naming the plug-in as (the setting that chooses it, its name) in the class
    statement: ``class FlowerOptions(PluginOptions, plugin=("backend", "flower"))``.

    Its options are shown under the plug-in in ``--help``; while another plug-in is chosen
    they are refused if given (they would be ignored), unless the choosing setting may change
    on resume (a backend); one declared ``needed`` is asked for when the plug-in is chosen.
    :meth:`check_options` runs, when the plug-in is chosen, after every field alone was
    checked; ``self`` is then the whole run configuration. The plug-in a class declares is
    :func:`plugin_of` it (kept off the class, so that a configuration composing several
    options classes does not inherit one of their names).
    """

    def __init_subclass__(cls, plugin: tuple[str, str] | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if plugin is not None:
            _PLUGIN_OF[cls] = plugin

    def check_options(self) -> None:
        """What only this plug-in knows about its options (nothing by default); raise
        :class:`~fsl_opt.errors.ConfigError` naming the setting."""


_PLUGIN_OF: dict[type, tuple[str, str]] = {}


def plugin_of(options: type) -> tuple[str, str] | None:
    """The (setting, name) of the plug-in whose options class ``options`` is (None: a class
    that declares none, such as a configuration composing several)."""
    return _PLUGIN_OF.get(options)
