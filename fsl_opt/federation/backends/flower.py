"""The Flower backend: the same round loop and local training, over Flower messages.

Nothing here decides or trains anything: the ``ServerApp`` runs the shared round loop
(:func:`fsl_opt.federation.loop.run`: channels, solver, resizing, aggregation, evaluation,
the same records and checkpoints, handed in by the loop as ``drive``; this module never
imports it) with a :class:`FlowerBackend`, which only replaces how devices train: each
round it sends the node of every device taking part a ``train`` message holding that
device's payload at its rank (``ArrayRecord``) and its configuration (rank, round, clock),
and each ``ClientApp`` calls :func:`fsl_opt.learning.local.train` on its own partition and
replies with its adapters, example count and loss.

A device's AdamW moments stay on the device: its ClientApp writes them to its node's disk
after each round it trains (:class:`DeviceMoments`: ``STATE/<run key>/device-<i>/
round-<k>.pt``, STATE the node config's ``state-dir``, else the run folder's
``device-state`` in simulation and the fsl-opt cache's in deployment), and the server, which
never sees them, tells it each round which round's moments to start from: the last round
whose reply from that device it aggregated. That record (and the run key) is the
backend's part of the server's checkpoint, so a resumed run, and a SuperNode restarted on
the same disk, continue every device's moments exactly as a run that never stopped
(:attr:`FlowerBackend.restart_note`); a reply that was lost does not count, on the server
or on the device.

- Simulation engine: :meth:`FlowerBackend.launch` (``fsl-opt train --backend flower``).
- Deployment engine: ``server_app`` and ``client_app`` in
  :mod:`fsl_opt.federation.flower_app` are the app components; each SuperNode is started
  with ``--node-config "partition-id=I num-partitions=N"`` and every run setting is
  declared in ``[tool.flwr.app.config]`` (overridable with ``flwr run --run-config``).

Devices and nodes: before each round the server asks every node it has not met yet for its
partition id (a ``query`` message), refuses duplicate or out-of-range ids (a second node for
a device replaces the first if the first no longer answers: a restarted node), and waits
(up to ``node_wait_s``) until every device has a node. A device whose node does not answer
a round's ``train`` message within ``reply_timeout_s`` (or answers with an error) is lost
for that round: the round goes on with the devices that answered, the record names the
lost ones, and a node that connects again with that partition id brings the device back in
a later round. With a device trace (``scheduled``) the server knows who should be there: it
waits up to ``node_wait_s`` before every round for the nodes of the devices the round
plans. A device whose node the SuperLink reports gone is sent its payload again if another
node serves it by then (a restarted node; with a trace, within ``node_wait_s``). A node
loads only its own partition (and the model), cached on disk across the ClientApp
processes Flower starts every round.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from fsl_opt.errors import ConfigError
from fsl_opt.federation.backends.base import MEASURED_COMPUTE, Drive, RoundReplies
from fsl_opt.federation.backends.orphans import end_when_orphaned
from fsl_opt.federation.context import RunContext, local_config
from fsl_opt.federation.planner import RoundPlan
from fsl_opt.federation.runlog import RunLog
from fsl_opt.federation.settings import RunConfig, config_from_flower
from fsl_opt.federation.workload import load_device, workload_key
from fsl_opt.learning.local import DeviceData, LocalResult, train
from fsl_opt.learning.lora import MERGED_PREFIX, state_rank
from fsl_opt.learning.split_model import SplitModel

try:
    from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.common.constant import ErrorCode
    from flwr.serverapp import Grid, ServerApp
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ConfigError(
        "the Flower backend needs the optional extra: pip install 'fsl-opt[flower]'"
    ) from exc

logger = logging.getLogger(__name__)

# The messages' record and key names, written once: server and ClientApp read them here.
#: Message types: a node's partition query, a device's round of training.
QUERY, TRAIN = "query", "train"
#: Records of a message: the payload's arrays, the round's config, the reply's metrics, the
#: node's partition answer.
ARRAYS, CONFIG, METRICS, NODE = "arrays", "config", "metrics", "node"
#: Keys of the node's answer (and of Flower's ``--node-config``).
PARTITION_ID, NUM_PARTITIONS = "partition-id", "num-partitions"
#: Keys of a round's config record.
RANK, ROUND, FREQUENCY = "rank", "round", "frequency_hz"
#: Keys of a reply's metrics record.
NUM_EXAMPLES, DEVICE, TRAIN_LOSS = "num-examples", "device", "train_loss"
#: Keys of a train message's config: the run's key for the devices' saved state, and the
#: round whose optimizer moments the device starts from (0: fresh).
RUN_KEY, MOMENTS_FROM = "run_key", "moments_from"
#: Key of the node config naming the folder of the devices' saved state.
STATE_DIR = "state-dir"
#: The backend's file in the server's checkpoint: the run key, and each device's last round.
DEVICES_FILE = "flower_devices.json"
#: Seconds between the server's looks for replies. Flower's deployed grid looks every 3 s
#: in its own ``send_and_receive``; each exchange waited 1.5 s on average for nothing.
POLL_S = 0.2
#: Error codes of a reply that its node sent after taking the message: the payload reached
#: the device (the SuperLink's own errors, such as a node whose heartbeats stopped, do not
#: say so).
RAN_ON_NODE = frozenset(
    {
        ErrorCode.LOAD_CLIENT_APP_EXCEPTION,
        ErrorCode.CLIENT_APP_RAISED_EXCEPTION,
        ErrorCode.CLIENT_APP_CRASHED,
        ErrorCode.MOD_FAILED_PRECONDITION,
    }
)

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
    if PARTITION_ID not in conf:
        raise ConfigError(
            f'this SuperNode has no {PARTITION_ID}: start it with --node-config "{PARTITION_ID}=I '
            f'{NUM_PARTITIONS}=N"'
        )
    total = conf.get(NUM_PARTITIONS)
    return int(conf[PARTITION_ID]), None if total is None else int(total)


def _int(value: Any) -> int:
    """A record value known to be a number (records are typed as unions of many kinds)."""
    return int(value)


def _pack(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


#: Where the devices keep their state by default: this folder of the run folder (simulation:
#: the nodes share the server's machine), of the fsl-opt cache (deployment).
DEVICE_STATE = "device-state"


def _partition_query(node: int) -> Message:
    """The message asking ``node`` for its partition id."""
    return Message(RecordDict(), dst_node_id=node, message_type=QUERY, group_id="partitions")


def _state_dir(context: Context, default: Path | None) -> Path:
    """Where this node keeps its devices' state: its ``state-dir``, else ``default`` (the
    simulation engine's: in the run folder), else the fsl-opt cache's (deployment)."""
    from fsl_opt.learning.data import default_cache_dir

    given = context.node_config.get(STATE_DIR)
    if given:
        return Path(str(given))
    return default if default is not None else default_cache_dir() / DEVICE_STATE


class DeviceMoments:
    """One device's AdamW moments on its node's disk, one file per round it trained.

    The server names the round to start from (:data:`MOMENTS_FROM`); a round's file is
    written whole (a temporary file renamed) before the reply leaves, and files older than
    the round started from are removed, since the server never names an older one again
    (its checkpoint moves only forward). A missing file (another disk, a cleared cache) is
    a fresh start, with a warning."""

    def __init__(self, root: Path, run_key: str, device: int) -> None:
        if not re.fullmatch(r"[0-9a-f]{32}", run_key):
            raise ConfigError(f"{RUN_KEY} = {run_key!r}: expected 32 hex digits")
        self.folder = root / run_key / f"device-{device}"
        self.device = device

    def path(self, rnd: int) -> Path:
        return self.folder / f"round-{rnd}.pt"

    def load(self, rnd: int) -> dict[str, Any] | None:
        """The moments saved after round ``rnd`` (None for 0, or if they are gone)."""
        if rnd <= 0:
            return None
        try:
            blob = self.path(rnd).read_bytes()
        except FileNotFoundError:
            logger.warning(
                "fsl-opt: device %s: no optimizer moments of round %s in %s; starting them fresh",
                self.device,
                rnd,
                self.folder,
            )
            return None
        return dict(torch.load(io.BytesIO(blob), weights_only=False))

    def save(self, rnd: int, moments: dict[str, Any] | None, keep_from: int) -> None:
        """Write round ``rnd``'s moments; remove this device's files older than
        ``keep_from``."""
        if moments is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".round-{rnd}.pt.{os.getpid()}.tmp"
        tmp.write_bytes(_pack(moments))
        os.replace(tmp, self.path(rnd))
        for old in self.folder.glob("round-*.pt"):
            number = old.stem.removeprefix("round-")
            if number.isdigit() and int(number) < keep_from:
                old.unlink(missing_ok=True)


def make_client_app(fixed: RunConfig | None = None, state_dir: Path | None = None) -> ClientApp:
    """A ``ClientApp`` that trains its own partition with :func:`fsl_opt.learning.local.train`
    (``fixed``: the run's settings, else Flower's run config; ``state_dir``: where devices
    keep their state unless the node config says, else the fsl-opt cache)."""
    app = ClientApp()

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        end_when_orphaned()
        device, total = _partition(context)
        info: dict[str, int | float | list[int] | list[float]] = {
            PARTITION_ID: device,
            NUM_PARTITIONS: -1 if total is None else total,
        }
        return Message(RecordDict({NODE: MetricRecord(info)}), reply_to=msg)

    @app.train()
    def fit(msg: Message, context: Context) -> Message:
        end_when_orphaned()
        cfg = _config(context, fixed)
        device, total = _partition(context)
        if total is not None and total != cfg.devices:
            raise ConfigError(
                f"{NUM_PARTITIONS} = {total} on this node, but the run has devices = {cfg.devices}"
            )
        model, data, dev = _device(cfg, device)
        conf = msg.content.config_records[CONFIG]
        state = dict(msg.content.array_records[ARRAYS].to_torch_state_dict())
        rnd = _int(conf[ROUND])
        moments = DeviceMoments(_state_dir(context, state_dir), str(conf[RUN_KEY]), device)
        opt_state = moments.load(_int(conf[MOMENTS_FROM]))
        local = local_config(cfg, _int(conf[RANK]), rnd, device)
        started = time.perf_counter()
        res = train(model, state, data, local, opt_state, dev)
        took = time.perf_counter() - started
        moments.save(rnd, res.optimizer_state, keep_from=_int(conf[MOMENTS_FROM]))
        metrics = MetricRecord(
            {
                NUM_EXAMPLES: res.n_examples,
                DEVICE: device,
                TRAIN_LOSS: res.metrics["train_loss"],
                MEASURED_COMPUTE: took,
            }
        )
        reply = RecordDict(
            {ARRAYS: ArrayRecord(torch_state_dict=res.adapter_state), METRICS: metrics}
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
        How long to wait for a node for every device before round 1 (then an error), and,
        when ``scheduled``, for the nodes of the devices each round plans (then they are
        lost for the round).
    scheduled : bool
        A device trace says which devices are there each round (the ``trace`` setting): a
        device it plans is expected, so its node is waited for.
    """

    name = "flower"
    restart_note = (
        "each device keeps its optimizer moments on its node's disk (state-dir; by default "
        "the run folder in simulation, the fsl-opt cache in deployment) and the checkpoint "
        "says which round's to start from: a resume, and a node restarted on the same disk, "
        "continue them exactly"
    )

    def __init__(
        self,
        grid: Grid,
        n_devices: int,
        reply_timeout_s: float = 600.0,
        node_wait_s: float = 120.0,
        scheduled: bool = False,
    ) -> None:
        self.grid = grid
        self.n_devices = n_devices
        self.reply_timeout_s = reply_timeout_s
        self.node_wait_s = node_wait_s
        self.scheduled = scheduled
        self.partition_of: dict[int, int] = {}  # node id -> partition id
        self.silent: set[int] = set()  # nodes that did not answer the last round
        #: Nodes the SuperLink reported gone this round (not asked again in it, even while
        #: listed; a node that comes back under the same id, as an authenticated one does,
        #: is met again next round).
        self.dead: set[int] = set()
        self.started = False
        #: The key of this run's device state on the nodes (kept across resumes), and each
        #: device's last round whose reply was aggregated (its moments start from there).
        self.run_key = uuid.uuid4().hex
        self.trained: dict[int, int] = {}

    @classmethod
    def for_run(cls, grid: Grid, cfg: RunConfig) -> FlowerBackend:
        """The backend of run ``cfg`` on ``grid`` (its devices, waits and trace)."""
        return cls(
            grid,
            cfg.devices,
            reply_timeout_s=cfg.reply_timeout_s,
            node_wait_s=cfg.node_wait_s,
            scheduled=bool(cfg.trace),
        )

    def _learn_partitions(self) -> None:
        """Ask every node not met yet for its partition id; check range and duplicates."""
        connected = set(self.grid.get_node_ids())
        for node in set(self.partition_of) - connected:
            del self.partition_of[node]  # gone: its device is free for a node that returns
        new = sorted(connected - set(self.partition_of) - self.dead)
        if not new:
            return
        ask = [_partition_query(node) for node in new]
        for reply in self._exchange(ask, timeout=min(60.0, self.reply_timeout_s)):
            if reply.has_error():
                continue  # it will be asked again next round
            node = reply.metadata.src_node_id
            info = reply.content.metric_records.get(NODE)
            if info is None or not {PARTITION_ID, NUM_PARTITIONS} <= set(info):
                logger.warning(
                    "fsl-opt: node %s answered the partition query without %s and "
                    "%s; asked again next round",
                    node,
                    PARTITION_ID,
                    NUM_PARTITIONS,
                )
                continue
            device, total = _int(info[PARTITION_ID]), _int(info[NUM_PARTITIONS])
            if not 0 <= device < self.n_devices:
                raise ConfigError(
                    f"a SuperNode has {PARTITION_ID} = {device}: expected 0..{self.n_devices - 1} "
                    f"(devices = {self.n_devices})"
                )
            if total not in (-1, self.n_devices):
                raise ConfigError(
                    f"a SuperNode has {NUM_PARTITIONS} = {total}, but the run has devices = "
                    f"{self.n_devices}"
                )
            holder = next((n for n, d in self.partition_of.items() if d == device), None)
            if holder is not None and holder not in self.silent and self._answers(holder):
                raise ConfigError(
                    f"two SuperNodes ({holder} and {node}) both have {PARTITION_ID} = {device}"
                )
            if holder is not None:  # the device's node went away and came back as `node`
                del self.partition_of[holder]
            self.partition_of[node] = device

    def _exchange(self, messages: list[Message], timeout: float) -> list[Message]:
        """Push ``messages``, then the replies that come within ``timeout`` seconds, looked
        for every :data:`POLL_S` (the grid's own ``send_and_receive``, but not its 3-s
        wait between looks). Pushing gives each message its id."""
        waiting = set(self.grid.push_messages(messages))
        end = time.monotonic() + timeout
        replies: list[Message] = []
        while waiting:
            got = list(self.grid.pull_messages(waiting))
            replies += got
            waiting -= {r.metadata.reply_to_message_id for r in got}
            left = end - time.monotonic()
            if not waiting or left <= 0:
                break
            time.sleep(min(POLL_S, left))
        return replies

    def _answers(self, node: int) -> bool:
        """Whether ``node`` answers a partition query now: a node the SuperLink lists may
        be a killed one whose heartbeats it has not missed yet, whose device a restarted
        node now serves (asked only when two nodes claim one device)."""
        ask = _partition_query(node)
        replies = self._exchange([ask], timeout=min(30.0, self.reply_timeout_s))
        return any(not r.has_error() for r in replies)

    def _wait_for(self, devices: set[int], deadline: float) -> list[int]:
        """Meet the nodes that connect until each of ``devices`` has one or ``deadline``
        (``time.monotonic``) passes; the devices still without one."""
        while True:
            self._learn_partitions()
            missing = devices - set(self.partition_of.values())
            if not missing or time.monotonic() > deadline:
                return sorted(missing)
            time.sleep(1.0)

    def _wait_for_devices(self, resumed: bool = False) -> None:
        """Before this process's first round: a node for every device, within
        ``node_wait_s``. A run that starts without one is refused; a ``resumed`` run goes on
        with the devices whose nodes are there (the others are lost for the round, as when
        a node goes away mid-run: a resume after a crash in the middle of churn must not
        need every node back)."""
        missing = self._wait_for(set(range(self.n_devices)), time.monotonic() + self.node_wait_s)
        if not missing:
            return
        if resumed:
            logger.warning(
                "fsl-opt: resumed with no SuperNode for partition-id %s after %.0f s; "
                "those devices are lost until their nodes return",
                ", ".join(map(str, missing)),
                self.node_wait_s,
            )
            return
        raise ConfigError(
            f"after {self.node_wait_s:.0f} s no SuperNode serves partition-id "
            f"{', '.join(map(str, missing))} of the {self.n_devices} devices: start one "
            'per device with --node-config "partition-id=I num-partitions=N"'
        )

    def _wait_for_planned(self, devices: set[int], deadline: float) -> None:
        """Until ``deadline`` for a node for each of ``devices`` (a scheduled round's): a
        node restarted for this round may still be connecting. Those still without one are
        lost for the round."""
        missing = self._wait_for(devices, deadline)
        if missing:
            logger.warning(
                "fsl-opt: no SuperNode for scheduled partition-id %s after %.0f s; "
                "lost for this round",
                ", ".join(map(str, missing)),
                self.node_wait_s,
            )

    def save_devices(self, folder: Path) -> None:
        """The run key and each device's last aggregated round (the devices' moments stay
        on their nodes)."""
        record = {"run_key": self.run_key, "trained": {str(d): r for d, r in self.trained.items()}}
        (folder / DEVICES_FILE).write_text(json.dumps(record))

    def restore_devices(self, folder: Path) -> None:
        """What :meth:`save_devices` wrote; a checkpoint without it (written before the
        devices' moments were kept on disk) starts them fresh under a new key."""
        path = folder / DEVICES_FILE
        if not path.exists():
            return
        try:
            record = json.loads(path.read_text())
            run_key = str(record["run_key"])
            trained = {int(d): int(r) for d, r in record["trained"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(
                f"--resume: {path} is not the Flower devices' record ({exc})"
            ) from None
        self.run_key, self.trained = run_key, trained

    def train_round(
        self, ctx: RunContext, payloads: dict[int, dict[str, torch.Tensor]], plan: RoundPlan
    ) -> RoundReplies:
        """Send each device taking part its own payload and rank; the replies that come back
        in time (a device left out of the round gets no message). A device is known to have
        received its payload when it answered or when its ClientApp ran and failed; a
        device whose node was gone (no node serves it, or the SuperLink answered that the
        node stopped its heartbeats) or that stayed silent is not. A device whose node the
        SuperLink reports gone is sent its payload again if another node serves it by then
        (a restarted node, while the SuperLink still listed the killed one); with a trace
        (``scheduled``), the server waits for one until ``node_wait_s`` after the round's
        start."""
        deadline = time.monotonic() + self.node_wait_s
        self.dead.clear()
        if self.scheduled and (self.started or plan.round > 1):
            self._wait_for_planned(set(payloads), deadline)  # resumed too: the trace says
        elif not self.started:
            self._wait_for_devices(resumed=plan.round > 1)
        else:
            self._learn_partitions()
        self.started = True
        out: dict[int, LocalResult] = {}
        received: set[int] = set()
        todo = set(payloads)
        while todo:
            # Each pass forgets the nodes reported gone, so the passes end.
            gone = self._send(payloads, todo, plan, out, received)
            if self.scheduled:
                self._wait_for_planned(gone, deadline)
            elif gone:
                self._learn_partitions()  # a node that has come back meanwhile: no waiting
            todo = gone & set(self.partition_of.values())
        for device in out:
            self.trained[device] = plan.round
        return RoundReplies(out, frozenset(received & set(payloads)))

    def _send(
        self,
        payloads: dict[int, dict[str, torch.Tensor]],
        devices: set[int],
        plan: RoundPlan,
        out: dict[int, LocalResult],
        received: set[int],
    ) -> set[int]:
        """One exchange with ``devices``' nodes: results into ``out``, devices known to
        have their payload into ``received``; the devices whose node the SuperLink reports
        gone (their nodes forgotten, so that another may serve them)."""
        node_of = {d: n for n, d in self.partition_of.items()}
        messages, addressed = [], []
        for device in sorted(devices):
            if device not in node_of:
                continue  # no node serves it now: lost for this round
            config = ConfigRecord(
                {
                    RANK: state_rank(payloads[device]),
                    ROUND: plan.round,
                    FREQUENCY: float(plan.result.frequencies_hz[device]),
                    RUN_KEY: self.run_key,
                    MOMENTS_FROM: self.trained.get(device, 0),
                }
            )
            record = {ARRAYS: ArrayRecord(torch_state_dict=payloads[device]), CONFIG: config}
            messages.append(
                Message(
                    RecordDict(record),
                    dst_node_id=node_of[device],
                    message_type=TRAIN,
                    group_id=str(plan.round),
                )
            )
            addressed.append(device)
        replies = self._exchange(messages, timeout=self.reply_timeout_s)
        # Sending gave each message its id. An error the SuperLink writes itself (a node
        # whose heartbeats stopped) comes from the SuperLink, not the node: only the id of
        # the message it answers says whose it is.
        sent = {
            m.metadata.message_id: (device, m.metadata.dst_node_id)
            for m, device in zip(messages, addressed, strict=True)
        }
        answered = {r.metadata.src_node_id for r in replies if not r.has_error()}
        asked = {m.metadata.dst_node_id for m in messages}
        self.silent = (self.silent - asked) | (asked - answered)
        gone: set[int] = set()
        for reply in replies:
            if reply.has_error():
                failed, node = sent.get(reply.metadata.reply_to_message_id, (None, None))
                logger.warning(
                    "fsl-opt: round %s: device %s failed: %s", plan.round, failed, reply.error
                )
                if failed is None or node is None:
                    continue
                if reply.error.code in RAN_ON_NODE:
                    received.add(failed)  # its node took the message and failed
                if reply.error.code == ErrorCode.NODE_UNAVAILABLE:
                    gone.add(failed)
                    self.dead.add(node)
                    self.partition_of.pop(node, None)
                continue
            node_device = self.partition_of.get(reply.metadata.src_node_id)
            result = _check_reply(reply, node_device, payloads)
            if isinstance(result, str):
                logger.warning(
                    "fsl-opt: round %s: device %s's reply is left out: %s",
                    plan.round,
                    node_device,
                    result,
                )
                continue
            out[result[0]] = result[1]
        return gone

    @classmethod
    def launch(cls, cfg: RunConfig, drive: Drive) -> list[dict[str, Any]]:
        """Run ``cfg`` on Flower's simulation engine (one virtual SuperNode per device): its
        ServerApp hands ``drive`` a :class:`FlowerBackend` on the engine's grid."""
        return run_simulation_engine(cfg, drive)


def _check_reply(
    reply: Message, device: int | None, payloads: dict[int, dict[str, torch.Tensor]]
) -> tuple[int, LocalResult] | str:
    """The reply as (device, result), or what is wrong with it: it must come from the node
    serving a device that was sent a payload, name that device, count its examples, and
    hold the adapter entries it was sent at the rank it was sent."""
    content = reply.content
    if device is None or device not in payloads:
        return f"node {reply.metadata.src_node_id} serves no device of this round"
    metrics = content.metric_records.get(METRICS)
    if ARRAYS not in content.array_records or metrics is None:
        return f"expected the records {ARRAYS!r} and {METRICS!r}"
    missing = {NUM_EXAMPLES, DEVICE, TRAIN_LOSS} - set(metrics)
    if missing:
        return f"its metrics lack {', '.join(sorted(missing))}"
    if _int(metrics[DEVICE]) != device:
        return f"it names device {metrics[DEVICE]}, but its node serves device {device}"
    n_examples = _int(metrics[NUM_EXAMPLES])
    if n_examples < 1:
        return f"{NUM_EXAMPLES} = {n_examples}: expected at least 1"
    state = dict(content.array_records[ARRAYS].to_torch_state_dict())
    # A device trains what it was sent but the merged weights (``stack``), which it keeps.
    sent = {k: v for k, v in payloads[device].items() if not k.startswith(MERGED_PREFIX)}
    if set(state) != set(sent):
        return f"its adapter entries differ from those sent ({len(state)} vs {len(sent)})"
    bad = [k for k in sent if state[k].shape != sent[k].shape]
    if bad:
        return f"{bad[0]} has shape {tuple(state[bad[0]].shape)}, sent {tuple(sent[bad[0]].shape)}"
    loss = float(metrics[TRAIN_LOSS])
    measured = (
        {MEASURED_COMPUTE: float(metrics[MEASURED_COMPUTE])} if MEASURED_COMPUTE in metrics else {}
    )
    return device, LocalResult(state, n_examples, {"train_loss": loss, **measured})


def make_server_app(serve: Callable[[Grid, Context], None]) -> ServerApp:
    """A ``ServerApp`` whose main is ``serve``; a :class:`ConfigError` ends the run with
    its one line as Flower's status details (``flwr ls``), streamed as well
    (``flwr run --stream``, ``flwr log``)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        end_when_orphaned()
        try:
            serve(grid, context)
        except ConfigError as exc:
            from flwr.common.logger import log

            log(logging.ERROR, "fsl-opt: error: %s", exc)
            raise ConfigError(str(exc)) from None

    return app


#: A private Ray instance: a new one whatever ``RAY_ADDRESS`` or the last ``ray start`` on
#: this machine says (``address=None`` would attach to that cluster, or fail if it has
#: gone), node address loopback, no dashboard.
RAY_INIT_ARGS: dict[str, str | bool] = {
    "address": "local",
    "_node_ip_address": "127.0.0.1",
    "include_dashboard": False,
}

#: Ray turns a loopback node address back into the machine's routable one
#: (``services.resolve_ip_for_localhost``) unless its cluster switch is off: this variable,
#: read when ``ray`` is imported (in this process and in the agents its raylet starts).
RAY_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@contextlib.contextmanager
def ray_instance(ray_address: str) -> Iterator[dict[str, Any]]:
    """Ray's ``init`` arguments for one simulation, with the loopback switch held while it
    runs. With ``ray_address`` empty: a private instance whose GCS, raylet, workers and
    agents listen on 127.0.0.1 only. Otherwise the run attaches to that cluster (whose own
    settings decide what it exposes); a loopback address keeps the switch too, or Ray would
    look for the cluster at the machine's routable address (:func:`_ray_switch`)."""
    host = ray_address.rpartition(":")[0].strip("[]")
    init_args: dict[str, Any] = {"address": ray_address} if ray_address else dict(RAY_INIT_ARGS)
    if ray_address and host not in ("127.0.0.1", "localhost", "::1"):
        yield init_args
        return
    with _ray_switch(RAY_LOOPBACK_ENV, "0", "ENABLE_RAY_CLUSTER", False):
        yield init_args


@contextlib.contextmanager
def _ray_switch(env: str, env_value: str, constant: str, value: Any) -> Iterator[None]:
    """Within the block, Ray's switch ``env`` is ``env_value`` in this process's
    environment (inherited by Ray's processes) and ``ray_constants.<constant>``, which Ray
    reads from it at import, is ``value`` (should ``ray`` be imported already); both as they
    were after it."""
    import ray._private.ray_constants as ray_constants

    old_env, old_value = os.environ.get(env), getattr(ray_constants, constant)
    os.environ[env] = env_value
    setattr(ray_constants, constant, value)
    try:
        yield
    finally:
        setattr(ray_constants, constant, old_value)
        if old_env is None:
            os.environ.pop(env, None)
        else:
            os.environ[env] = old_env


#: Seconds a Ctrl-C waits for Ray to shut down before the process ends without it.
RAY_SHUTDOWN_S = 10.0
#: Ray's C++ core installs absl's failure-signal handler for SIGTERM in the driver: a
#: SIGTERM then dumps Ray's "SIGTERM received" stack and ends the process with SIGABRT
#: before Python's handler can run. This switch keeps it out of a run's driver.
RAY_SIGNAL_ENV = "RAY_DISABLE_FAILURE_SIGNAL_HANDLER"


@contextlib.contextmanager
def python_handles_signals() -> Iterator[None]:
    """Within the block, a SIGTERM reaches the handler this process already has (fsl-opt's:
    a Ctrl-C with status 143, the run folder consistent, a bounded end): Ray's
    failure-signal handler is off (environment and ``ray_constants``, should ``ray`` be
    imported already), and ``ray.init``, which would replace a Python SIGTERM handler with
    ``sys.exit`` (a SystemExit that Flower's engine threads then outwait), leaves it be.
    Where the process has no Python handler for SIGTERM, Ray's ``sys.exit`` stays."""
    import signal

    import ray._private.utils as ray_utils

    old_setter = ray_utils.set_sigterm_handler
    with _ray_switch(RAY_SIGNAL_ENV, "1", "RAY_DISABLE_FAILURE_SIGNAL_HANDLER", True):
        if callable(signal.getsignal(signal.SIGTERM)):
            ray_utils.set_sigterm_handler = lambda handler: None
        try:
            yield
        finally:
            ray_utils.set_sigterm_handler = old_setter


def run_simulation_engine(
    cfg: RunConfig, drive: Drive, num_cpus: float = 1.0
) -> list[dict[str, Any]]:
    """``drive`` on Flower's simulation engine, one virtual SuperNode per device; the run's
    log records once it has ended."""
    from flwr.simulation import run_simulation

    def serve(grid: Grid, context: Context) -> None:
        drive(FlowerBackend.for_run(grid, cfg))

    try:
        with python_handles_signals(), ray_instance(cfg.ray_address) as init_args:
            run_simulation(
                server_app=make_server_app(serve),
                client_app=make_client_app(cfg, Path(cfg.out).resolve() / DEVICE_STATE),
                num_supernodes=cfg.devices,
                backend_config={
                    "client_resources": {"num_cpus": num_cpus, "num_gpus": 0.0},
                    "init_args": init_args,
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
