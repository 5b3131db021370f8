"""How the devices of a round train: one backend per file, behind :class:`Backend`.

``inprocess`` (every device in this process, on one shared frozen model) and ``flower``
(Flower's simulation or deployment engine). The round loop hands a backend the round's
global adapters and plan and gets one :class:`~fsl_opt.learning.local.LocalResult` per
device back; whatever a device keeps between rounds (its optimizer moments) belongs to the
backend, which saves and restores it itself: the server's checkpoint holds server state
only.
"""

from fsl_opt.federation.backends.base import (
    BACKENDS,
    Backend,
    Drive,
    backend_class,
    register_backend,
)

register_backend("inprocess", "fsl_opt.federation.backends.inprocess:InProcessBackend")
register_backend("flower", "fsl_opt.federation.backends.flower:FlowerBackend")

__all__ = ["BACKENDS", "Backend", "Drive", "backend_class", "register_backend"]
