"""The federation's plug-ins by name: backends and whole-run policies, imported only when a
run asks for one.

A backend is a class in its own module under ``fsl_opt/federation/backends/`` (it follows
:class:`~fsl_opt.federation.backends.base.Backend`); a whole-run policy is a class with a
``from_run(cfg, system, energy_total_j, time_total_s)`` constructor that follows the
planner's :class:`~fsl_opt.federation.planner.Policy`. Each is named here with one
registration line (a :class:`~fsl_opt.registry.Registry`, the shape every plug-in kind
shares). Targets are imported when a run uses them, so a backend whose library is an
optional extra (Flower) costs nothing to a run that does not, and checking a run's settings
loads neither. The run settings ``backend`` and ``policy`` offer every name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fsl_opt.registry import Registry

if TYPE_CHECKING:
    from fsl_opt.federation.backends.base import Backend

#: Every backend by name: ``module:Class``, imported when a run asks for it.
BACKENDS: Registry[type[Backend]] = Registry("backend")

#: Every whole-run policy by name. ``myopic`` is the run's solver alone (no policy object);
#: capability ``needs_budgets``: it spends whole-run budgets and refuses a run without one;
#: ``needs_accuracy``: it buys predicted accuracy (objective accuracy).
POLICIES: Registry[Any] = Registry("policy", capabilities=("needs_budgets", "needs_accuracy"))


def register_backend(name: str, target: str, summary: str) -> None:
    """Name the backend class at ``target`` (``package.module:Class``)."""
    BACKENDS.register(name, target, summary)


def register_policy(name: str, target: str | None, summary: str, **capabilities: bool) -> None:
    """Name the policy class at ``target`` (None: the run's solver decides each round alone)."""
    POLICIES.register(name, target, summary, **capabilities)


def backend_class(name: str) -> type[Backend]:
    """The class registered as ``name`` (imported now)."""
    return BACKENDS.load(name)


register_backend(
    "inprocess",
    "fsl_opt.federation.backends.inprocess:InProcessBackend",
    "every device trained in this process, one after another",
)
register_backend(
    "flower",
    "fsl_opt.federation.backends.flower:FlowerBackend",
    "a Flower simulation (a ClientApp per device) or deployment (pip install 'fsl-opt[flower]')",
)
register_policy(
    "myopic",
    None,
    "each round takes the most its budgets allow, until they are spent",
)
register_policy(
    "drift_plus_penalty",
    "fsl_opt.federation.drift_plus_penalty:DriftPlusPenalty",
    "a virtual queue per budget prices each round's energy and time against its per-round "
    "share, so rounds with good channels get more (needs energy_total_j or time_total_s)",
    needs_budgets=True,
)
register_policy(
    "energy_priced",
    "fsl_opt.federation.priced:EnergyPriced",
    "each round buys predicted accuracy at energy_price per joule (needs objective accuracy)",
    needs_accuracy=True,
)
