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

A plug-in with settings of its own declares them here, beside its registration line, as a
:class:`~fsl_opt.federation.fields.PluginOptions` dataclass with the checks only it knows
(here and not in the plug-in's module, so that checking a run's settings imports neither
Flower nor torch); :class:`~fsl_opt.federation.settings.RunConfig` composes every options
class named in :data:`PLUGIN_OPTIONS`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fsl_opt.errors import ConfigError
from fsl_opt.federation.fields import PluginOptions, Range, setting
from fsl_opt.registry import Registry

if TYPE_CHECKING:
    from fsl_opt.federation.backends.base import Backend

#: Every backend by name: ``module:Class``, imported when a run asks for it.
BACKENDS: Registry[type[Backend]] = Registry("backend")

#: Every whole-run policy by name. ``myopic`` is the run's solver alone (no policy object);
#: capability ``needs_budgets``: it spends whole-run budgets and refuses a run without one;
#: ``needs_accuracy``: it buys predicted accuracy (objective accuracy).
POLICIES: Registry[Any] = Registry("policy", capabilities=("needs_budgets", "needs_accuracy"))


def register_backend(
    name: str, target: str, summary: str, options: type[PluginOptions] | None = None
) -> None:
    """Name the backend class at ``target`` (``package.module:Class``) and its ``options``."""
    BACKENDS.register(name, target, summary, options=options)


def register_policy(
    name: str,
    target: str | None,
    summary: str,
    options: type[PluginOptions] | None = None,
    **capabilities: bool,
) -> None:
    """Name the policy class at ``target`` (None: the run's solver decides each round alone)
    and its ``options``."""
    POLICIES.register(name, target, summary, options=options, **capabilities)


def backend_class(name: str) -> type[Backend]:
    """The class registered as ``name`` (imported now)."""
    return BACKENDS.load(name)


@dataclass(frozen=True)
class FlowerOptions(PluginOptions, plugin=("backend", "flower")):
    """The Flower backend's settings (``backend = "flower"``)."""

    reply_timeout_s: float = setting(
        600.0,
        "Flower backend: how long a round waits for the devices' replies; a device that has "
        "not answered by then is lost for that round",
        within=Range(0, 1e6),
        section="backend",
    )
    node_wait_s: float = setting(
        120.0,
        "Flower backend: how long to wait before round 1 for a node for every device (a "
        "resumed run then goes on with the nodes that are there)",
        within=Range(0, 1e6),
        section="backend",
    )
    ray_address: str = setting(
        "",
        "Flower simulation: attach to this running Ray cluster (e.g. 127.0.0.1:6379, or "
        "auto) instead of starting one; empty starts a private Ray instance that listens "
        "on 127.0.0.1 only",
        resumes_with_another=True,
        section="backend",
    )

    def check_options(self) -> None:
        """A Ray address is ``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``, the forms Ray
        attaches to (anything else would reach Ray only when the simulation starts, after
        the run's folder is made)."""
        address = self.ray_address
        if address and not re.fullmatch(r"auto|(ray://)?\S+:\d+", address):
            raise ConfigError(
                f"ray_address = {address!r}: expected auto, HOST:PORT (e.g. 127.0.0.1:6379) "
                "or ray://HOST:PORT, or empty for a private Ray instance"
            )


@dataclass(frozen=True)
class DriftPlusPenaltyOptions(PluginOptions, plugin=("policy", "drift_plus_penalty")):
    """The drift-plus-penalty policy's settings (``policy = "drift_plus_penalty"``)."""

    policy_v: float | None = setting(
        None,
        "drift_plus_penalty: the weight V of the utility against the queues (none: "
        "automatic, the V at which one round's share of backlog on every budget makes a "
        "full-rank round worth nothing)",
        within=Range(0, 1e15),
        plans=True,
        section="whole_run",
    )


@dataclass(frozen=True)
class EnergyPricedOptions(PluginOptions, plugin=("policy", "energy_priced")):
    """The energy-priced policy's settings (``policy = "energy_priced"``)."""

    energy_price: float | None = setting(
        None,
        "energy_priced: accuracy per joule a round's energy is priced at (each round "
        "maximizes its predicted accuracy gain less energy_price x its energy; fsl-opt "
        "train/plan --target-accuracy find the least-energy price to a target)",
        within=Range(0, 1e15, low_open=False),
        plans=True,
        needed=True,
        section="whole_run",
    )


#: Every plug-in's options class, in the order their settings follow the run's own;
#: :class:`~fsl_opt.federation.settings.RunConfig` composes them (a test checks that every
#: registered plug-in's options are among them).
PLUGIN_OPTIONS: tuple[type[PluginOptions], ...] = (
    FlowerOptions,
    DriftPlusPenaltyOptions,
    EnergyPricedOptions,
)


register_backend(
    "inprocess",
    "fsl_opt.federation.backends.inprocess:InProcessBackend",
    "every device trained in this process, one after another",
)
register_backend(
    "flower",
    "fsl_opt.federation.backends.flower:FlowerBackend",
    "a Flower simulation (a ClientApp per device) or deployment (pip install 'fsl-opt[flower]')",
    FlowerOptions,
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
    DriftPlusPenaltyOptions,
    needs_budgets=True,
)
register_policy(
    "energy_priced",
    "fsl_opt.federation.priced:EnergyPriced",
    "each round buys predicted accuracy at energy_price per joule (needs objective accuracy)",
    EnergyPricedOptions,
    needs_accuracy=True,
)
