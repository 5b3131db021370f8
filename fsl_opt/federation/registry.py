"""The backend registry: every backend by name, imported only when a run asks for it.

A backend is a class in its own module under ``fsl_opt/federation/backends/`` (it follows
:class:`~fsl_opt.federation.backends.base.Backend`), named here with one
:func:`register_backend` line. It is imported when a run uses it, so a backend whose
library is an optional extra (Flower) costs nothing to a run that does not, and checking a
run's settings loads no backend. The run setting ``backend`` offers every name.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from fsl_opt.errors import ConfigError

if TYPE_CHECKING:
    from fsl_opt.federation.backends.base import Backend

#: Every backend by name: ``module:Class``, imported when a run asks for it.
BACKENDS: dict[str, str] = {}


def register_backend(name: str, target: str) -> None:
    """Name the backend class at ``target`` (``package.module:Class``)."""
    if name in BACKENDS:
        raise ValueError(f"backend {name!r} is registered twice")
    BACKENDS[name] = target


def backend_class(name: str) -> type[Backend]:
    """The class registered as ``name`` (imported now)."""
    try:
        module, _, attr = BACKENDS[name].partition(":")
    except KeyError:
        raise ConfigError(f"backend = {name!r}: expected one of {', '.join(BACKENDS)}") from None
    cls: type[Backend] = getattr(importlib.import_module(module), attr)
    return cls


register_backend("inprocess", "fsl_opt.federation.backends.inprocess:InProcessBackend")
register_backend("flower", "fsl_opt.federation.backends.flower:FlowerBackend")
