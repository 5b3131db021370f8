"""The Flower backend: the same round loop and local training, over Flower messages.

Nothing here decides or trains anything: the ``ServerApp`` runs the shared round loop
(:func:`fsl_opt.federation.loop.run`: channels, solver, resizing, aggregation, evaluation,
the same records and checkpoints) with a :class:`FlowerBackend`, which only replaces how
devices train: each round it sends every SuperNode a ``train`` message holding the global
adapters (``ArrayRecord``) and the round's configuration (rank, round, frequencies), and
each ``ClientApp`` calls :func:`fsl_opt.learning.local.train` on its own partition and
replies with its adapters, example count and loss.

A device's AdamW moments stay on the device, in its ``context.state``: the server never
sees them and its checkpoint does not hold them. What survives a restart
(:attr:`FlowerBackend.restart_note`): in the simulation engine the node contexts live as
long as the simulation, so a stopped and resumed run starts every device with fresh
optimizer moments (the adapters, the planner's draws and the log continue exactly); in
deployment a SuperNode keeps them in memory while it runs, and a restarted SuperNode
starts fresh.

- Simulation engine: :func:`run_flower_simulation` (``fsl-opt train --backend flower``).
- Deployment engine: ``server_app`` and ``client_app`` below are the app components; each
  SuperNode is started with ``--node-config "partition-id=I num-partitions=N"`` and every
  run setting is declared in ``[tool.flwr.app.config]`` (overridable with
  ``flwr run --run-config``).
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import torch

from fsl_opt.errors import ConfigError
from fsl_opt.federation.context import RunContext, local_config
from fsl_opt.federation.loop import run
from fsl_opt.federation.planner import RoundPlan
from fsl_opt.federation.runlog import RunLog
from fsl_opt.federation.settings import RunConfig, config_from_flower
from fsl_opt.federation.workload import Workload, load_workload, workload_key
from fsl_opt.learning.local import LocalResult, train

try:
    from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ConfigError(
        "the Flower backend needs the optional extra: pip install 'fsl-opt[flower]'"
    ) from exc

#: Workloads loaded by this process, by key: a simulation actor serves many nodes.
_WORKLOADS: dict[tuple[Any, ...], Workload] = {}


def _config(context: Context, fixed: RunConfig | None) -> RunConfig:
    """The run configuration: given (simulation) or from the app's run config (deployment)."""
    if fixed is not None:
        return fixed
    return config_from_flower(dict(context.run_config))


def _workload(cfg: RunConfig) -> Workload:

    key = workload_key(cfg)
    if key not in _WORKLOADS:
        _WORKLOADS.clear()  # one workload per process at a time
        _WORKLOADS[key] = load_workload(cfg)
    return _WORKLOADS[key]


def _int(value: Any) -> int:
    """A record value known to be a number (records are typed as unions of many kinds)."""
    return int(value)


def _pack(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _unpack(blob: bytes) -> Any:
    return torch.load(io.BytesIO(blob), weights_only=False)


def make_client_app(fixed: RunConfig | None = None) -> ClientApp:
    """A ``ClientApp`` that trains its partition with :func:`fsl_opt.learning.local.train`."""
    app = ClientApp()

    @app.train()
    def fit(msg: Message, context: Context) -> Message:
        cfg = _config(context, fixed)
        device = int(context.node_config["partition-id"])
        wl = _workload(cfg)
        conf = msg.content.config_records["config"]
        state = dict(msg.content.array_records["arrays"].to_torch_state_dict())
        saved = context.state.config_records.get("fsl")
        opt_state = _unpack(saved["optimizer"]) if saved is not None else None  # type: ignore[arg-type]
        local = local_config(cfg, _int(conf["rank"]), _int(conf["round"]), device)
        res = train(wl.model, state, wl.devices[device], local, opt_state, wl.torch_device)
        context.state["fsl"] = ConfigRecord({"optimizer": _pack(res.optimizer_state)})
        metrics = MetricRecord(
            {
                "num-examples": res.n_examples,
                "device": device,
                "train_loss": res.metrics["train_loss"],
            }
        )
        reply = RecordDict(
            {"arrays": ArrayRecord(torch_state_dict=res.adapter_state), "metrics": metrics}
        )
        return Message(reply, reply_to=msg)

    return app


class FlowerBackend:
    """A :class:`~fsl_opt.federation.backends.Backend` that trains through a Flower ``Grid``."""

    name = "flower"
    restart_note = (
        "device optimizer moments live in each SuperNode's context.state and are not "
        "checkpointed: a resumed run restarts them (adapters, draws and log continue exactly)"
    )

    def __init__(self, grid: Grid, n_devices: int, timeout_s: float = 3600.0) -> None:
        self.grid = grid
        self.n_devices = n_devices
        self.timeout_s = timeout_s

    def nodes(self) -> list[int]:
        """The connected SuperNodes, waiting (up to the timeout) until all devices are in."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            ids = list(self.grid.get_node_ids())
            if len(ids) >= self.n_devices:
                return ids
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(ids)} of {self.n_devices} SuperNodes connected")
            time.sleep(1.0)

    def save_devices(self, folder: Path) -> None:
        """Nothing: the devices keep their state on their own nodes."""

    def restore_devices(self, folder: Path) -> None:
        """Nothing: see :attr:`restart_note`."""

    def train_round(
        self, ctx: RunContext, state: dict[str, torch.Tensor], plan: RoundPlan
    ) -> list[LocalResult]:
        """Send each SuperNode its train message; collect one reply per device."""
        config = ConfigRecord(
            {
                "rank": plan.rank,
                "round": plan.round,
                "frequencies_hz": [float(f) for f in plan.result.frequencies_hz],
            }
        )
        arrays = ArrayRecord(torch_state_dict=state)
        messages = [
            Message(
                RecordDict({"arrays": arrays, "config": config}),
                dst_node_id=node,
                message_type="train",
                group_id=str(plan.round),
            )
            for node in self.nodes()
        ]
        replies = list(self.grid.send_and_receive(messages, timeout=self.timeout_s))
        out: dict[int, LocalResult] = {}
        for reply in replies:
            if reply.has_error():
                raise RuntimeError(f"a SuperNode failed in round {plan.round}: {reply.error}")
            m = reply.content.metric_records["metrics"]
            out[_int(m["device"])] = LocalResult(
                adapter_state=dict(reply.content.array_records["arrays"].to_torch_state_dict()),
                n_examples=_int(m["num-examples"]),
                metrics={"train_loss": float(m["train_loss"])},  # type: ignore[arg-type]
            )
        missing = sorted(set(range(self.n_devices)) - set(out))
        if missing:
            raise RuntimeError(f"round {plan.round}: no reply from devices {missing}")
        return [out[i] for i in range(self.n_devices)]  # device order, as in-process


def make_server_app(
    fixed: RunConfig | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = False,
) -> ServerApp:
    """A ``ServerApp`` running :func:`fsl_opt.federation.loop.run` with a :class:`FlowerBackend`."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        cfg = _config(context, fixed)
        run(
            cfg,
            resume=resume,
            overwrite=overwrite,
            progress=progress,
            backend=FlowerBackend(grid, cfg.devices),
        )

    return app


def run_flower_simulation(
    cfg: RunConfig,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    num_cpus: float = 1.0,
) -> list[dict[str, Any]]:
    """Run ``cfg`` on Flower's simulation engine (one virtual SuperNode per device).

    Returns the run's log records, as :func:`fsl_opt.federation.loop.run` does.
    """
    from flwr.simulation import run_simulation

    try:
        run_simulation(
            server_app=make_server_app(cfg, resume, overwrite, progress),
            client_app=make_client_app(cfg),
            num_supernodes=cfg.devices,
            backend_config={"client_resources": {"num_cpus": num_cpus, "num_gpus": 0.0}},
        )
    except KeyboardInterrupt:
        # Flower's engine threads would otherwise keep Ray (and this process) alive.
        import ray

        ray.shutdown()
        raise
    records = RunLog(Path(cfg.out)).records()
    if len(records) < cfg.rounds + 1:
        raise RuntimeError(
            f"the Flower run stopped after {len(records) - 1} of {cfg.rounds} "
            "rounds; see the log above"
        )
    return records


# Deployment-engine components (``flwr run``): the configuration comes from the app config.
server_app = make_server_app()
client_app = make_client_app()
