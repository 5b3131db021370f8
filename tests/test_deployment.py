"""Flower's deployment engine on loopback, run the way the README says.

A SuperLink over TLS with SuperNode authentication and two registered SuperNodes on
127.0.0.1 with free ports (credentials from ``fsl-opt credentials``' code), `flwr run`
with a named connection and `--run-config`; round 1's record matches the in-process run
with the same seed, then one SuperNode is killed mid-run: the run finishes every round, the
record names the lost device, and the node restarted after that round brings it back;
meanwhile an unregistered SuperNode and one that trusts another CA are refused, and last a
run with a bad setting fails with the setting named (one federation for every check: each
round starts a ClientApp process per node, the suite's most expensive step). Every process
started here is stopped. The slow churn test runs ten rounds of scheduled kills and
restarts, and a ServerApp kill and resume, on the insecure lab shortcut.
"""

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch

from tests.helpers import free_port, wait_for_port

pytest.importorskip("flwr")

ROOT = Path(__file__).resolve().parents[1]
#: What a copy of the app leaves out: `flwr run` and `flwr build` walk (and resolve) every
#: file under the app folder before they filter, 6 s with a venv inside it.
NOT_APP = shutil.ignore_patterns(
    ".git", ".venv", "__pycache__", "*_cache", ".hypothesis", ".cache", "runs", "site"
)


def app_copy(folder: Path) -> Path:
    """The app's files (the repository without its venv, caches and git folder) in
    ``folder``: the same bundle as `flwr run .` in the repository."""
    return Path(shutil.copytree(ROOT, folder, ignore=NOT_APP))


BIN = Path(sys.executable).parent
TINY = {
    "model": "'tiny'",
    "samples_per_device": "24",
    "test_samples": "48",
    "max_length": "32",
    "batch_size": "8",
    "lr": "0.005",
    "max_rank": "8",
    "reference_rank": "4",
}
#: Devices (SuperNodes) of the main deployment test: each round starts a ClientApp process
#: per node on 2 cores.
DEVICES = 2

#: `flower-supernode` with its node heartbeat every 10 s (Flower's least interval; 30 s by
#: default), so that the SuperLink counts a killed node lost after 20 s rather than 60 (two
#: missed beats), a wait this test learns nothing from. Only the node's beat to the
#: SuperLink changes: its ClientApp processes and its task leases keep Flower's 30 s (a
#: shorter lease than the ClientApps' beat lost every device of a round under load). An
#: idle node also looks for messages every IDLE_POLL_S rather than Flower's fixed 3 s.
HEARTBEAT_S = 10
IDLE_POLL_S = 0.5
SUPERNODE = [
    sys.executable,
    "-c",
    "import sys, time, types; from flwr.supernode.cli import flower_supernode; "
    "import flwr.supernode.fleet_http_connection as f, flwr.supercore.heartbeat as h; "
    "import flwr.supernode.start_client_internal as s; "
    f"f.HEARTBEAT_DEFAULT_INTERVAL = h.HEARTBEAT_DEFAULT_INTERVAL = {HEARTBEAT_S}; "
    "s.time = types.SimpleNamespace(**vars(time)); "
    f"s.time.sleep = lambda t: time.sleep(min(t, {IDLE_POLL_S})); "
    "sys.argv[0] = 'flower-supernode'; sys.exit(flower_supernode())",
]


class Federation:
    """A SuperLink and SuperNodes on loopback, over TLS with SuperNode authentication unless
    ``tls`` is off (the lab shortcut); `stop()` ends every process it started."""

    def __init__(
        self, home: Path, tls: bool = True, nodes: int = 3, hosts: tuple[str, ...] = ()
    ) -> None:
        from fsl_opt.federation.credentials import write_credentials

        self.home = home
        self.tls = tls
        self.link_port = free_port()
        #: Where the SuperNodes dial (the SuperLink itself, or a gateway in front of it).
        self.device_address = f"127.0.0.1:{self.link_port}"
        self.procs: dict[str, subprocess.Popen] = {}
        self.node_ports: list[int] = []  # every node's ClientApp API port, for the stop
        home.mkdir(parents=True, exist_ok=True)
        self.app = app_copy(home / "app")
        self.creds = home / "creds"
        if tls:
            write_credentials(self.creds, ["127.0.0.1", "localhost", *hosts], nodes)
        security = (
            f'root-certificates = "{self.creds / "ca.crt"}"\n' if tls else "insecure = true\n"
        )
        (home / "config.toml").write_text(
            '[superlink]\ndefault = "lab"\n\n[superlink.lab]\n'
            f'address = "127.0.0.1:{self.link_port}"\n{security}'
        )
        self.env = {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "FLWR_HOME": str(home),
            "FSL_OPT_CACHE": str(home / "cache"),
        }

    def _start(self, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        log = (self.home / f"{name}.log").open("a")  # a restarted process appends
        self.procs[name] = subprocess.Popen(
            args, cwd=self.home, env=env or self.env, stdout=log, stderr=subprocess.STDOUT
        )

    def start_link(self) -> None:
        c = self.creds
        security = (
            [
                f"--ssl-ca-certfile={c / 'ca.crt'}",
                f"--ssl-certfile={c / 'superlink.crt'}",
                f"--ssl-keyfile={c / 'superlink.key'}",
                "--enable-supernode-auth",
                f"--database={self.home / 'state.db'}",
            ]
            if self.tls
            else ["--insecure"]
        )
        self._start(
            "superlink",
            [
                str(BIN / "flower-superlink"),
                *security,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.link_port),
                "--disable-runtime-dependency-installation",
            ],
        )
        wait_for_port(self.link_port)

    def add_connection(self, name: str, address: str) -> None:
        """Another named SuperLink connection in the federation's Flower config."""
        with (self.home / "config.toml").open("a") as fh:
            fh.write(
                f'\n[superlink.{name}]\naddress = "{address}"\n'
                f'root-certificates = "{self.creds / "ca.crt"}"\n'
            )

    def flwr(self, *args: str, connection: str = "lab", check: bool = True) -> dict:
        """A `flwr` command against a named connection (the lab's: the SuperLink's own
        address), its JSON answer."""
        done = subprocess.run(
            [str(BIN / "flwr"), *args, connection, "--format", "json"],
            cwd=self.home,
            env=self.env,
            check=check,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return json.loads(done.stdout[done.stdout.index("{") :])

    def register(self, i: int) -> int:
        """`flwr supernode register` node i's public key with the SuperLink; its node id."""
        return int(self.flwr("supernode", "register", str(self.creds / f"node-{i}.pub"))["node-id"])

    def status(self, node_id: int) -> str:
        """The SuperLink's status of a node (`flwr supernode ls`)."""
        nodes = self.flwr("supernode", "ls")["nodes"]
        return next((n["status"] for n in nodes if int(n["node-id"]) == node_id), "unknown")

    def wait_for_status(self, node_id: int, status: str, timeout: float) -> float:
        """Seconds until the SuperLink reports ``status`` for the node."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.status(node_id) == status:
                return time.monotonic() - started
            time.sleep(1)
        raise TimeoutError(f"node {node_id} not {status} within {timeout} s")

    def start_node(
        self,
        i: int,
        n: int,
        key: int | None = None,
        ca: Path | None = None,
        wait: bool = True,
        name: str | None = None,
    ) -> None:
        """SuperNode ``name`` (default node<i>) for partition i of n, authenticating with
        node ``key``'s private key (default i) and trusting ``ca`` (default the
        federation's)."""
        port = free_port()
        self.node_ports.append(port)
        c = self.creds
        security = (
            [
                f"--root-certificates={ca or c / 'ca.crt'}",
                f"--auth-supernode-private-key={c / f'node-{i if key is None else key}.key'}",
            ]
            if self.tls
            else ["--insecure"]
        )
        # How often the node's SuperExec asks it for a ClientApp to start (Flower: 1 s; a
        # round waits that long for each device's process). The SuperLink's own SuperExec,
        # which starts a ServerApp once a run, keeps Flower's 1 s: each of its looks costs
        # the SuperLink a few queries of its database (at 0.1 s, a fifth of a core).
        env = {**self.env, "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.1"}
        self._start(
            name or f"node{i}",
            [
                *SUPERNODE,
                *security,
                "--superlink",
                self.device_address,
                "--port",
                str(port),
                "--node-config",
                f"partition-id={i} num-partitions={n}",
            ],
            env,
        )
        if wait:
            wait_for_port(port)

    def kill_node(self, i: int) -> None:
        proc = self.procs.pop(f"node{i}")
        proc.kill()
        proc.wait()

    def flwr_run(
        self, settings: dict[str, str], timeout: float = 400, connection: str = "lab"
    ) -> subprocess.Popen:
        config = " ".join(f"{k}={v}" for k, v in settings.items())
        log = (self.home / "flwr-run.log").open("a")  # a resumed run appends
        return subprocess.Popen(
            [
                str(BIN / "flwr"),
                "run",
                str(self.app),
                connection,
                "--stream",
                "--run-config",
                config,
            ],
            cwd=self.home,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        # SuperNodes start their ClientApp processes themselves, and a ClientApp started
        # for a run whose ServerApp was killed outlives its node (PPID 1): end any left, by
        # the SuperLink's and the nodes' addresses on their command lines.
        for port in [self.link_port, *self.node_ports]:
            subprocess.run(["pkill", "-f", f"127.0.0.1:{port}"], check=False)

    def kill_server_app(self) -> int:
        """SIGKILL the running ServerApp process (below the SuperLink); its pid."""
        link = psutil.Process(self.procs["superlink"].pid)
        app = next(
            p for p in link.children(recursive=True) if "flwr-serverapp" in " ".join(p.cmdline())
        )
        app.kill()
        return app.pid


def records(folder: Path) -> list[dict]:
    path = folder / "log.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_for_round(folder: Path, rnd: int, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        recs = records(folder)
        if recs and recs[-1]["round"] >= rnd:
            return
        if proc.poll() is not None:
            raise AssertionError(f"flwr run ended early (exit {proc.returncode})")
        time.sleep(0.5)
    raise TimeoutError(f"round {rnd} was not logged within {timeout} s")


@pytest.fixture
def federation(tmp_path):
    fed = Federation(tmp_path / "flwr", nodes=DEVICES + 1)  # the last key is never registered
    try:
        yield fed
    finally:
        fed.stop()


@pytest.fixture
def lab_shortcut(tmp_path):
    fed = Federation(tmp_path / "flwr-insecure", tls=False)
    try:
        yield fed
    finally:
        fed.stop()


def test_deployment_matches_in_process_and_survives_a_lost_node(
    tmp_path, federation, tiny_cfg, monkeypatch
):
    """The guide's deployment commands (TLS, registered node keys) on loopback, one
    federation for every check: a node with an unregistered key and one trusting another
    CA are refused and exit; round 1's ranks, accuracy and loss equal the in-process run's
    with the same seed; then device 1's node is killed, round 2 names it lost, the run
    finishes, and the node restarted after that round (once the SuperLink has marked its key
    offline: a key still online refuses a second activation) brings device 1 back by round
    4. Last, a run with a bad setting (`rounds=1.5`) is marked failed with the setting
    named, and makes no folder."""
    from fsl_opt.federation.credentials import write_credentials
    from fsl_opt.federation.loop import run

    started = time.perf_counter()
    federation.start_link()
    ids = []
    for i in range(DEVICES):
        ids.append(federation.register(i))
        federation.start_node(i, DEVICES)
    out = tmp_path / "deployed"
    # Each round a SuperNode starts a fresh ClientApp process (torch and transformers
    # imports, model load: about 7 s of CPU), so a lost node is declared after 90 s: one
    # fresh-clone run beside the suite's other workers lost two healthy nodes at 40 s. The
    # SuperLink itself answers for a killed node once it has missed two heartbeats
    # (HEARTBEAT_S here: 8-20 s after the kill), so round 2 lasts that long. The node is
    # restarted only after round 2: restarted during it, it may get its payload sent again
    # and train, which is right, but then nothing here is lost.
    settings = {
        **TINY,
        "devices": str(DEVICES),
        "rounds": "4",
        "method": "'bnb'",
        "reply_timeout_s": "90.0",
        "out": f"'{out}'",
    }
    proc = federation.flwr_run(settings)
    # Meanwhile two nodes the SuperLink must refuse: one whose key was never registered,
    # one that trusts another CA (with node 0's key).
    other = write_credentials(tmp_path / "other", ["127.0.0.1"], 1)[0]
    federation.start_node(0, DEVICES, key=DEVICES, wait=False, name="unregistered")
    federation.start_node(0, DEVICES, key=0, ca=other, wait=False, name="foreign-ca")
    refused = ("unregistered", "foreign-ca")
    codes = [federation.procs.pop(name).wait(timeout=120) for name in refused]
    assert codes[0] != 0 and codes[1] != 0, codes
    logs = [(federation.home / f"{name}.log").read_text() for name in refused]
    assert "Failed to activate SuperNode" in logs[0], logs[0][-2000:]
    assert "CERTIFICATE_VERIFY_FAILED" in logs[1], logs[1][-2000:]
    nodes = federation.flwr("supernode", "ls")["nodes"]
    assert sorted(int(n["node-id"]) for n in nodes) == sorted(ids), nodes  # the registered
    wait_for_round(out, 1, proc, timeout=400)
    federation.kill_node(1)
    killed = time.monotonic()
    wait_for_round(out, 2, proc, timeout=200)
    federation.wait_for_status(ids[1], "offline", timeout=90)
    print(f"node 1 offline {time.monotonic() - killed:.0f} s after the kill, restarted")
    federation.start_node(1, DEVICES)
    proc.wait(timeout=600)
    elapsed = time.perf_counter() - started
    monkeypatch.setenv("FSL_OPT_CACHE", str(tmp_path / "cache"))
    local = run(
        tiny_cfg.replace(devices=DEVICES, rounds=1, method="bnb", out=str(tmp_path / "local")),
        progress=False,
    )
    deployed = records(out)
    assert [r["round"] for r in deployed] == [0, 1, 2, 3, 4]
    assert [r.get("rank") for r in deployed[:2]] == [r.get("rank") for r in local]
    assert [r.get("method") for r in deployed[1:]] == ["bnb"] * 4  # --run-config honoured
    assert deployed[1]["lost_devices"] == []
    assert deployed[1]["test_accuracy"] == local[1]["test_accuracy"]
    assert deployed[1]["test_loss"] == pytest.approx(local[1]["test_loss"], rel=1e-5)
    lost = [r["lost_devices"] for r in deployed[1:]]
    print("lost:", lost, "wall:", [round(r["wall_time_s"], 1) for r in deployed])
    assert lost[1] == [1], lost
    # The lost device took no part in round 2: not selected, nothing charged, nothing sent
    # (its node had stopped; the SuperLink answered for it).
    two = deployed[2]
    assert 1 in two["planned_devices"] and 1 not in two["selected_devices"]
    assert two["ranks"][1] == 0 and two["energy_j"][1] == 0 and two["latency_s"][1] == 0
    assert two["downloaded_bytes"][1] == 0 and two["uploaded_bytes"][1] == 0
    # Back by round 4: device 1 answers (it trained and was not lost).
    assert 1 in deployed[4]["selected_devices"] and lost[3] == [], lost
    assert 0 <= deployed[-1]["test_accuracy"] <= 1
    print(f"deployment run: {elapsed:.1f} s")

    # A bad setting fails the run with the setting named (the same federation).
    proc = federation.flwr_run({"rounds": "1.5", "out": f"'{tmp_path / 'bad'}'"})
    proc.wait(timeout=120)
    deadline = time.monotonic() + 90
    failed: list[dict] = []
    while time.monotonic() < deadline and not failed:
        runs = federation.flwr("ls")["runs"]
        failed = [r for r in runs if r["status"] == "finished:failed"]
        time.sleep(0.5)
    assert len(failed) == 1, runs
    assert failed[0]["status-details"].endswith("rounds = 1.5: expected int")
    assert not (tmp_path / "bad").exists()
    assert sum(r["status"] == "finished:completed" for r in runs) == 1, runs
    shutil.rmtree(federation.home / "cache", ignore_errors=True)


def test_the_app_bundle_carries_the_code_not_the_results(tmp_path):
    """`flwr build` (what `flwr run` ships to every node, unpacked for each ClientApp
    process) holds the app's code and none of the committed results, docs or tests."""
    import zipfile

    app = app_copy(tmp_path / "app")
    subprocess.run([str(BIN / "flwr"), "build", "--app", str(app)], cwd=tmp_path, check=True)
    (fab,) = tmp_path.glob("*.fab")
    names = zipfile.ZipFile(fab).namelist()
    assert "fsl_opt/federation/flower_app.py" in names and "solvers/registry.py" in names
    assert not [n for n in names if n.startswith(("experiments/results/", "docs/", "tests/"))]
    assert fab.stat().st_size < 2e6, fab.stat().st_size


#: Seconds within which the apps of a run whose SuperLink was killed end themselves.
ORPHANS_GONE_S = 30.0


def _app_processes(fed: Federation) -> list[psutil.Process]:
    """The federation's ServerApp and ClientApp processes still running (not zombies)."""
    ports = [str(p) for p in (fed.link_port, *fed.node_ports)]
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        line = " ".join(p.info["cmdline"] or [])
        if p.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if ("flwr-serverapp" in line or "flwr-clientapp" in line) and any(
            f":{port}" in line for port in ports
        ):
            found.append(p)
    return found


def _training(fed: Federation, devices: int) -> bool:
    """Whether ``devices`` ClientApps run fsl-opt's training: torch is loaded in them (a
    ClientApp loads it in fsl-opt's handler, once Flower has fetched its message)."""
    clients = [p for p in _app_processes(fed) if "flwr-clientapp" in " ".join(p.cmdline())]
    loaded = 0
    for p in clients:
        with contextlib.suppress(OSError, psutil.Error):
            loaded += "libtorch" in Path(f"/proc/{p.pid}/maps").read_text()
    return loaded >= devices


@pytest.mark.slow  # 45-90 s of processes: `pytest -m slow tests/test_deployment.py`
def test_a_stopped_run_and_a_killed_superlink_leave_no_app_running(tmp_path, lab_shortcut):
    """`flwr stop RUN lab` while round 1's ClientApps train: the run is
    `finished:stopped` and its ServerApp and ClientApps end within 30 s. Then SIGKILL the
    SuperLink while the next run's ClientApps train: within 30 s its ServerApp (which
    Flower's own monitor keeps alive while the dead SuperLink's SuperExec is not reaped)
    and every ClientApp have ended; `flwr run --stream` exits 1. The SuperNodes stay,
    waiting for a SuperLink to come back, as Flower means them to. (A ClientApp whose
    message's arrays had not reached its node yet waits in Flower's own pull, before any
    code of fsl-opt runs, up to Flower's PULL_MAX_TIME: docs/flower.md says so; this test
    acts once both ClientApps are in fsl-opt's code.)"""
    # This process adopts every orphan below it and never reaps it (a child subreaper, as
    # an init that does not reap): a dead SuperLink's SuperExec then stays a zombie, whose
    # pid Flower's own parent check still finds. Only fsl-opt's watch ends the apps then.
    import ctypes

    assert ctypes.CDLL(None).prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    fed = lab_shortcut
    fed.start_link()
    for i in range(2):
        fed.start_node(i, 2)
    stopped = fed.flwr_run({**TINY, "devices": "2", "rounds": "5", "out": f"'{tmp_path / 's'}'"})
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not _training(fed, 2):
        time.sleep(0.2)
    assert _training(fed, 2), _app_processes(fed)
    (run,) = fed.flwr("ls")["runs"]
    fed.flwr("stop", str(run["run-id"]))
    asked = time.monotonic()
    while _app_processes(fed) and time.monotonic() - asked < ORPHANS_GONE_S:
        time.sleep(0.5)
    left = [(p.pid, " ".join(p.cmdline())[:120]) for p in _app_processes(fed)]
    assert not left, f"{time.monotonic() - asked:.0f} s after flwr stop: {left}"
    assert fed.flwr("ls")["runs"][0]["status"] == "finished:stopped"
    stopped.wait(timeout=60)
    out = tmp_path / "killed"
    proc = fed.flwr_run({**TINY, "devices": "2", "rounds": "5", "out": f"'{out}'"})
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not _training(fed, 2):
        time.sleep(0.2)
    apps = _app_processes(fed)
    assert _training(fed, 2), apps
    assert any("flwr-serverapp" in " ".join(p.cmdline()) for p in apps), apps
    link = fed.procs.pop("superlink")
    link.kill()
    link.wait()  # reaped, as a shell reaps it: its SuperExec's end is the one that matters
    killed = time.monotonic()
    while _app_processes(fed) and time.monotonic() - killed < ORPHANS_GONE_S:
        time.sleep(0.5)
    left = [(p.pid, " ".join(p.cmdline())[:120]) for p in _app_processes(fed)]
    assert not left, f"{time.monotonic() - killed:.0f} s after the SuperLink's kill: {left}"
    assert proc.wait(timeout=120) == 1
    assert all(fed.procs[f"node{i}"].poll() is None for i in range(2))


def churn_schedule(seed: int, rounds: int = 10, devices: int = 3) -> list[set[int]]:
    """Seeded availability, round by round (index 0 = round 1): every device each round
    with probability 0.6, redrawn until round 1 has every device, every round has one,
    some round has only one (two of three gone), and every device is away at least once."""
    rng = np.random.default_rng(seed)
    while True:
        on = rng.random((rounds, devices)) < 0.6
        on[0] = True
        if on.any(axis=1).all() and (on.sum(axis=1) == 1).any() and (~on).any(axis=0).all():
            return [set(np.flatnonzero(row).tolist()) for row in on]


@pytest.mark.slow
def test_churn_with_a_server_kill_ends_on_the_records_of_a_run_that_never_stopped(
    tmp_path, lab_shortcut, tiny_cfg, monkeypatch
):
    """Ten rounds on the lab shortcut while SuperNodes are killed and restarted on a seeded
    schedule (a device trace says which devices are there each round, so the server plans
    without the others and waits for those it plans), and the ServerApp SIGKILLed after
    round 6 and resumed: every record says who took part, no device is lost, and the
    records and adapters are those of the same run in process, which never stopped (the
    devices' optimizer moments continue on their nodes' disk across the restarts)."""
    from safetensors.torch import load_file

    from fsl_opt.federation.loop import run

    fed = lab_shortcut
    schedule = churn_schedule(seed=0)
    trace = tmp_path / "churn.csv"
    trace.write_text(
        "device,round,available\n"
        + "".join(
            f"{d},{k + 1},{int(d in on)}\n" for k, on in enumerate(schedule) for d in range(3)
        )
    )
    print("schedule:", [sorted(on) for on in schedule])
    out = tmp_path / "deployed"
    settings = {
        **TINY,
        "rounds": "10",
        "trace": f"'{trace}'",
        "reply_timeout_s": "90.0",
        "node_wait_s": "90.0",
        "out": f"'{out}'",
    }
    started = time.perf_counter()
    fed.start_link()
    for i in range(3):
        fed.start_node(i, 3)
    proc = fed.flwr_run(settings)
    up, events = {0, 1, 2}, []
    for done in range(1, 10):
        wait_for_round(out, done, proc, timeout=400)
        if done == 6:
            events.append((done, "kill ServerApp", fed.kill_server_app()))
            proc.wait(timeout=120)
        nxt = schedule[done]  # round done + 1
        for i in sorted(up - nxt):
            fed.kill_node(i)
            up.discard(i)
            events.append((done, "kill", i))
        for i in sorted(nxt - up):
            fed.start_node(i, 3, wait=False)
            up.add(i)
            events.append((done, "start", i))
        if done == 6:
            proc = fed.flwr_run({**settings, "resume": "true"})
    proc.wait(timeout=600)
    elapsed = time.perf_counter() - started
    print("events:", events)
    monkeypatch.setenv("FSL_OPT_CACHE", str(tmp_path / "cache"))
    cfg = tiny_cfg.replace(rounds=10, trace=str(trace), out=str(tmp_path / "local"))
    local = run(cfg, progress=False)
    deployed = records(out)
    assert [r["round"] for r in deployed] == list(range(11))
    for r, want, on in zip(deployed[1:], local[1:], schedule, strict=True):
        print(r["round"], "selected", r["selected_devices"], "away", r["unavailable_devices"])
        assert r["unavailable_devices"] == sorted({0, 1, 2} - on), r
        assert set(r["selected_devices"]) <= on and r["lost_devices"] == [], r
        for key in ("selected_devices", "ranks", "uploaded_bytes", "downloaded_bytes"):
            assert r[key] == want[key], (r["round"], key, r[key], want[key])
        assert r["energy_j"] == pytest.approx(want["energy_j"], rel=1e-9)
        assert r["test_loss"] == pytest.approx(want["test_loss"], rel=1e-4)
    assert any(len(on) == 1 for on in schedule) and any(e[1] == "kill" for e in events)
    a = load_file(str(out / "checkpoint" / "adapters.safetensors"))
    b = load_file(str(tmp_path / "local" / "checkpoint" / "adapters.safetensors"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
    print(f"churn run: {elapsed:.1f} s")
