"""The Flower deployment engine's app components (``flwr run``): ``server_app`` and
``client_app``, named in ``pyproject.toml``'s ``[tool.flwr.app.components]``.

The ServerApp reads the run's settings from Flower's run config (every setting is declared
in ``[tool.flwr.app.config]``; ``resume`` and ``overwrite`` are its actions) and runs the
shared round loop (:func:`fsl_opt.federation.loop.run`) with a
:class:`~fsl_opt.federation.backends.flower.FlowerBackend` on the SuperLink's grid. Each
SuperNode is started with ``--node-config "partition-id=I num-partitions=N"``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fsl_opt.errors import ConfigError
from fsl_opt.federation.backends.flower import (
    Context,
    FlowerBackend,
    Grid,
    make_client_app,
    make_server_app,
)
from fsl_opt.federation.loop import run
from fsl_opt.federation.settings import FLOWER_ACTIONS, config_from_flower

logger = logging.getLogger(__name__)


def serve(grid: Grid, context: Context) -> None:
    """One deployed run: its settings and actions from the run config, then the loop."""
    cfg = config_from_flower(dict(context.run_config))
    actions: dict[str, Any] = {k: context.run_config.get(k, False) for k in FLOWER_ACTIONS}
    for k, v in actions.items():
        if not isinstance(v, bool):
            raise ConfigError(f"{k} = {v!r}: expected true or false")
    out = Path(cfg.out).resolve()
    from flwr.common.logger import log

    log(logging.INFO, "fsl-opt: run folder %s", out)

    def progress(record: dict[str, Any]) -> None:  # what `flwr run --stream` and `flwr log` show
        log(logging.INFO, "fsl-opt: %s", round_line(record, cfg.rounds))

    run(
        cfg.replace(out=str(out)),
        resume=bool(actions["resume"]),
        overwrite=bool(actions["overwrite"]),
        progress=False,
        backend=FlowerBackend.for_run(grid, cfg),
        on_record=progress,
    )


def round_line(record: dict[str, Any], rounds: int) -> str:
    """One round's line: its rank, accuracy, lost devices and time."""
    parts = [f"round {record['round']}/{rounds}"]
    ranks = record.get("ranks")
    if record.get("rank") is not None:
        parts.append(f"rank {record['rank']}")
    elif ranks:
        parts.append(f"ranks {min(ranks)}-{max(ranks)}")
    if record.get("test_accuracy") is not None:
        parts.append(f"accuracy {record['test_accuracy']:.3f}")
    lost = record.get("lost_devices") or []
    if lost:
        parts.append(f"lost devices {', '.join(map(str, lost))}")
    if record.get("stop"):
        parts.append("a whole-run budget is spent: the run ends")
    parts.append(f"{record.get('wall_time_s', 0.0):.1f} s")
    return ", ".join(parts)


server_app = make_server_app(serve)
client_app = make_client_app()
