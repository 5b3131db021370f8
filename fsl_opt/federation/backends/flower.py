"""The Flower backend: the same round loop and local training, over Flower messages.

Nothing here decides or trains anything: the ``ServerApp`` runs the shared round loop
(:func:`fsl_opt.federation.loop.run`: channels, solver, resizing, aggregation, evaluation,
the same records and checkpoints) with a :class:`FlowerBackend`, which only replaces how
devices train: each round it sends the node of every device taking part a ``train`` message
holding that device's payload at its rank (``ArrayRecord``) and its configuration (rank,
round, clock), and
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

Devices and nodes: before each round the server asks every node it has not met yet for its
partition id (a ``query`` message), refuses duplicate or out-of-range ids, and waits (up to
``node_wait_s``) until every device has a node. A device whose node does not answer a
round's ``train`` message within ``reply_timeout_s`` (or answers with an error) is lost for
that round: the round goes on with the devices that answered, the record names the lost
ones, and a node that connects again with that partition id brings the device back in a
later round. A node loads only its own partition (and the model), cached on disk across
the ClientApp processes Flower starts every round.
"""

from __future__ import annotations

import io
import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch

from fsl_opt.errors import ConfigError
from fsl_opt.federation.context import RunContext, local_config
from fsl_opt.federation.loop import run
from fsl_opt.federation.planner import RoundPlan
from fsl_opt.federation.runlog import RunLog
from fsl_opt.federation.settings import FLOWER_ACTIONS, RunConfig, config_from_flower
from fsl_opt.federation.workload import load_device, workload_key
from fsl_opt.learning.local import DeviceData, LocalResult, train
from fsl_opt.learning.lora import state_rank
from fsl_opt.learning.split_model import SplitModel

try:
    from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ConfigError(
        "the Flower backend needs the optional extra: pip install 'fsl-opt[flower]'"
    ) from exc

#: Devices loaded by this process, by (workload settings, device): a simulation actor serves
#: many nodes; a deployment ClientApp process serves one.
_DEVICES: dict[tuple[Any, ...], tuple[SplitModel, DeviceData, torch.device]] = {}


def _config(context: Context, fixed: RunConfig | None) -> RunConfig:
    """The run configuration: given (simulation) or from the app's run config (deployment)."""
    if fixed is not None:
        return fixed
    return config_from_flower(dict(context.run_config))


def _device(cfg: RunConfig, device: int) -> tuple[SplitModel, DeviceData, torch.device]:
    key = (workload_key(cfg), device)
    if key not in _DEVICES:
        if any(k[0] != key[0] for k in _DEVICES):
            _DEVICES.clear()  # another run's settings: one workload per process at a time
        _DEVICES[key] = load_device(cfg, device)
    return _DEVICES[key]


def _partition(context: Context) -> tuple[int, int | None]:
    """This node's (partition-id, num-partitions) from its node config."""
    conf = context.node_config
    if "partition-id" not in conf:
        raise ConfigError(
            'this SuperNode has no partition-id: start it with --node-config "partition-id=I '
            'num-partitions=N"'
        )
    total = conf.get("num-partitions")
    return int(conf["partition-id"]), None if total is None else int(total)


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
    """A ``ClientApp`` that trains its own partition with :func:`fsl_opt.learning.local.train`."""
    app = ClientApp()

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        device, total = _partition(context)
        info: dict[str, int | float | list[int] | list[float]] = {
            "partition-id": device,
            "num-partitions": -1 if total is None else total,
        }
        return Message(RecordDict({"node": MetricRecord(info)}), reply_to=msg)

    @app.train()
    def fit(msg: Message, context: Context) -> Message:
        cfg = _config(context, fixed)
        device, total = _partition(context)
        if total is not None and total != cfg.devices:
            raise ConfigError(
                f"num-partitions = {total} on this node, but the run has devices = {cfg.devices}"
            )
        model, data, dev = _device(cfg, device)
        conf = msg.content.config_records["config"]
        state = dict(msg.content.array_records["arrays"].to_torch_state_dict())
        saved = context.state.config_records.get("fsl")
        opt_state = _unpack(saved["optimizer"]) if saved is not None else None  # type: ignore[arg-type]
        local = local_config(cfg, _int(conf["rank"]), _int(conf["round"]), device)
        res = train(model, state, data, local, opt_state, dev)
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
    """A :class:`~fsl_opt.federation.backends.Backend` that trains through a Flower ``Grid``.

    Parameters
    ----------
    grid : Grid
        The ServerApp's grid.
    n_devices : int
        Devices of the run (partition ids 0..n_devices - 1).
    reply_timeout_s : float
        How long a round waits for the devices' replies; later ones are lost devices.
    node_wait_s : float
        How long to wait for a node for every device before round 1 (then an error).
    """

    name = "flower"
    restart_note = (
        "device optimizer moments live in each SuperNode's context.state and are not "
        "checkpointed: a resumed run restarts them (adapters, draws and log continue exactly)"
    )

    def __init__(
        self,
        grid: Grid,
        n_devices: int,
        reply_timeout_s: float = 600.0,
        node_wait_s: float = 120.0,
    ) -> None:
        self.grid = grid
        self.n_devices = n_devices
        self.reply_timeout_s = reply_timeout_s
        self.node_wait_s = node_wait_s
        self.partition_of: dict[int, int] = {}  # node id -> partition id
        self.silent: set[int] = set()  # nodes that did not answer the last round
        self.started = False

    def _learn_partitions(self) -> None:
        """Ask every node not met yet for its partition id; check range and duplicates."""
        connected = set(self.grid.get_node_ids())
        for node in set(self.partition_of) - connected:
            del self.partition_of[node]  # gone: its device is free for a node that returns
        new = sorted(connected - set(self.partition_of))
        if not new:
            return
        ask = [
            Message(RecordDict(), dst_node_id=node, message_type="query", group_id="partitions")
            for node in new
        ]
        for reply in self.grid.send_and_receive(ask, timeout=min(60.0, self.reply_timeout_s)):
            if reply.has_error():
                continue  # it will be asked again next round
            info = reply.content.metric_records["node"]
            device, total = _int(info["partition-id"]), _int(info["num-partitions"])
            node = reply.metadata.src_node_id
            if not 0 <= device < self.n_devices:
                raise ConfigError(
                    f"a SuperNode has partition-id = {device}: expected 0..{self.n_devices - 1} "
                    f"(devices = {self.n_devices})"
                )
            if total not in (-1, self.n_devices):
                raise ConfigError(
                    f"a SuperNode has num-partitions = {total}, but the run has devices = "
                    f"{self.n_devices}"
                )
            holder = next((n for n, d in self.partition_of.items() if d == device), None)
            if holder is not None and holder not in self.silent:
                raise ConfigError(
                    f"two SuperNodes ({holder} and {node}) both have partition-id = {device}"
                )
            if holder is not None:  # the device's node went silent and came back as `node`
                del self.partition_of[holder]
            self.partition_of[node] = device

    def _wait_for_devices(self) -> None:
        """Before round 1: a node for every device, within ``node_wait_s``."""
        deadline = time.monotonic() + self.node_wait_s
        while True:
            self._learn_partitions()
            have = set(self.partition_of.values())
            if len(have) >= self.n_devices:
                return
            if time.monotonic() > deadline:
                missing = sorted(set(range(self.n_devices)) - have)
                raise ConfigError(
                    f"after {self.node_wait_s:.0f} s no SuperNode serves partition-id "
                    f"{', '.join(map(str, missing))} of the {self.n_devices} devices: start one "
                    'per device with --node-config "partition-id=I num-partitions=N"'
                )
            time.sleep(1.0)

    def save_devices(self, folder: Path) -> None:
        """Nothing: the devices keep their state on their own nodes."""

    def restore_devices(self, folder: Path) -> None:
        """Nothing: see :attr:`restart_note`."""

    def train_round(
        self, ctx: RunContext, payloads: dict[int, dict[str, torch.Tensor]], plan: RoundPlan
    ) -> dict[int, LocalResult]:
        """Send each device taking part its own payload and rank; the replies that come back
        in time (a device left out of the round gets no message)."""
        if not self.started:
            self._wait_for_devices()
            self.started = True
        else:
            self._learn_partitions()
        node_of = {d: n for n, d in self.partition_of.items()}
        messages = []
        for device, payload in sorted(payloads.items()):
            if device not in node_of:
                continue  # no node serves it now: lost for this round
            config = ConfigRecord(
                {
                    "rank": state_rank(payload),
                    "round": plan.round,
                    "frequency_hz": float(plan.result.frequencies_hz[device]),
                }
            )
            messages.append(
                Message(
                    RecordDict({"arrays": ArrayRecord(torch_state_dict=payload), "config": config}),
                    dst_node_id=node_of[device],
                    message_type="train",
                    group_id=str(plan.round),
                )
            )
        replies = list(self.grid.send_and_receive(messages, timeout=self.reply_timeout_s))
        answered = {r.metadata.src_node_id for r in replies if not r.has_error()}
        asked = {m.metadata.dst_node_id for m in messages}
        self.silent = (self.silent - asked) | (asked - answered)
        out: dict[int, LocalResult] = {}
        for reply in replies:
            if reply.has_error():
                print(
                    f"fsl-opt: round {plan.round}: a device failed: {reply.error}", file=sys.stderr
                )
                continue
            m = reply.content.metric_records["metrics"]
            out[_int(m["device"])] = LocalResult(
                adapter_state=dict(reply.content.array_records["arrays"].to_torch_state_dict()),
                n_examples=_int(m["num-examples"]),
                metrics={"train_loss": float(m["train_loss"])},  # type: ignore[arg-type]
            )
        return out


def make_server_app(
    fixed: RunConfig | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = False,
) -> ServerApp:
    """A ``ServerApp`` running :func:`fsl_opt.federation.loop.run` with a :class:`FlowerBackend`.

    In deployment the run config may also carry ``resume`` and ``overwrite`` (booleans).
    """
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            _serve(grid, context)
        except ConfigError as exc:
            # Flower marks the run finished:failed with this one line as its status details
            # (`flwr ls`), and streams it (`flwr run --stream`, `flwr log`).
            from flwr.common.logger import log

            log(logging.ERROR, "fsl-opt: error: %s", exc)
            raise ConfigError(str(exc)) from None

    def _serve(grid: Grid, context: Context) -> None:
        cfg = _config(context, fixed)
        actions: dict[str, Any] = {k: context.run_config.get(k, False) for k in FLOWER_ACTIONS}
        for k, v in actions.items():
            if not isinstance(v, bool):
                raise ConfigError(f"{k} = {v!r}: expected true or false")
        out = Path(cfg.out).resolve()
        from flwr.common.logger import log

        log(logging.INFO, "fsl-opt: run folder %s", out)
        run(
            cfg.replace(out=str(out)),
            resume=resume or bool(actions["resume"]),
            overwrite=overwrite or bool(actions["overwrite"]),
            progress=progress,
            backend=FlowerBackend(grid, cfg.devices, cfg.reply_timeout_s, cfg.node_wait_s),
        )

    return app


#: Ray listens on loopback only and starts no dashboard: a simulation on one machine serves
#: nothing to the network.
RAY_INIT_ARGS: dict[str, str | bool] = {
    "_node_ip_address": "127.0.0.1",
    "include_dashboard": False,
}


#: Seconds a Ctrl-C waits for Ray to shut down before the process ends without it.
RAY_SHUTDOWN_S = 20.0


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
            backend_config={
                "client_resources": {"num_cpus": num_cpus, "num_gpus": 0.0},
                "init_args": dict(RAY_INIT_ARGS),
            },
        )
    except KeyboardInterrupt:
        # Flower's engine threads would otherwise keep Ray (and this process) alive. Ray's
        # shutdown waits on its own processes; give it a bounded time, so a Ctrl-C always
        # ends the run (the run folder is safe at any instant).
        import threading

        import ray

        stop = threading.Thread(target=ray.shutdown, name="ray-shutdown", daemon=True)
        stop.start()
        stop.join(timeout=RAY_SHUTDOWN_S)
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
