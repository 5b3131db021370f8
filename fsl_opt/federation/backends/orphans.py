"""A deployed Flower app process that ends itself once the process that started it ends.

Kept apart from :mod:`fsl_opt.federation.backends.flower` (torch, Flower) so that a
ServerApp or ClientApp can start watching before anything heavy is imported.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time

logger = logging.getLogger(__name__)

#: The Flower processes whose life is one run's (or one message's): each ends itself when
#: the process that started it ends (:func:`end_when_orphaned`).
APP_PROCESSES = ("flwr-serverapp", "flwr-clientapp")
#: How often such a process looks at its parent, and how long after its own graceful exit
#: (Flower's, started by a SIGINT) it ends itself regardless.
ORPHAN_POLL_S = 1.0
ORPHAN_EXIT_S = 20.0
_watching: list[int] = []


def end_when_orphaned(poll_s: float = ORPHAN_POLL_S, exit_s: float = ORPHAN_EXIT_S) -> bool:
    """In a ServerApp or ClientApp process of a deployment, end this process once the
    process that started it (the SuperLink's or a SuperNode's SuperExec) has ended; True if
    it now watches (once per process; never in a simulation, whose apps run inside the
    fsl-opt process).

    Flower's own monitor asks whether the parent's pid still exists, and an ended parent
    that nobody has reaped yet (a zombie: the SuperLink was SIGKILLed and its SuperExec's
    new parent does not reap) still does, so a ServerApp of a dead SuperLink retried the
    SuperLink for ever (579 MB, more than 5 minutes, seen). A process whose parent ends is
    given a new parent at once, so a changed :func:`os.getppid` says it for sure, reaped or
    not. Then: a SIGINT (Flower's graceful exit: it reports what it can and exits), and
    ``exit_s`` later an exit with status 1 if that did not end it.
    """
    if _watching or not any(sys.argv[0].endswith(name) for name in APP_PROCESSES):
        return bool(_watching)
    parent = os.getppid()
    _watching.append(parent)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        logger.warning(
            "fsl-opt: %s: the process that started it (pid %s) has ended; ending this one",
            os.path.basename(sys.argv[0]),
            parent,
        )
        signal.raise_signal(signal.SIGINT)
        time.sleep(exit_s)
        os._exit(1)

    threading.Thread(target=watch, name="fsl-opt-orphan-watch", daemon=True).start()
    return True
