"""How the devices of a round train: one backend per file, behind :class:`Backend`.

``inprocess`` (every device in this process, on one shared frozen model) and ``flower``
(Flower's simulation or deployment engine). The round loop hands a backend the round's
global adapters and plan and gets back a :class:`RoundReplies`: one
:class:`~fsl_opt.learning.local.LocalResult` per device that answered, and which devices
received their payload. Whatever a device keeps between rounds (its optimizer moments)
belongs to the backend, which saves and restores it itself: the server's checkpoint holds
server state only. The names are registered in :mod:`fsl_opt.federation.registry`.
"""

from fsl_opt.federation.backends.base import MEASURED_COMPUTE, Backend, Drive, RoundReplies

__all__ = ["MEASURED_COMPUTE", "Backend", "Drive", "RoundReplies"]
