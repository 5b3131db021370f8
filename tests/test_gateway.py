"""The devices' gateway: on the lab's address only the Fleet API; the owner keeps control.

Two loopback addresses stand for the two networks: the SuperLink listens on 127.0.0.1 (the
server's own host, its owner's), nginx with ``fsl-opt gateway``'s configuration on
127.0.0.2 (the lab, where the devices are). From the lab's address `flwr supernode
register`, `unregister`, `flwr ls` and `flwr run` are refused; a SuperNode whose key the
owner registered joins through it and trains, and the run's records equal the in-process
run's. The live test needs nginx (Debian's package; `.ci/run` installs it).
"""

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from fsl_opt.errors import ConfigError
from fsl_opt.federation.gateway import FLEET_PREFIX, gateway_config, write_gateway
from tests.helpers import free_port

LAB = "127.0.0.2"


def _creds(folder: Path, hosts: list[str]) -> Path:
    from fsl_opt.federation.credentials import write_credentials

    write_credentials(folder, hosts, 1)
    return folder


def test_the_configuration_passes_the_fleet_api_alone(tmp_path):
    creds = _creds(tmp_path / "creds", [LAB, "127.0.0.1", "localhost"])
    text = gateway_config(tmp_path / "gw", creds, f"{LAB}:9443", "127.0.0.1:8000")
    locations = [
        line.split()[1] for line in text.splitlines() if line.strip().startswith("location")
    ]
    assert locations == [FLEET_PREFIX, "/"]
    assert f"listen {LAB}:9443 ssl;" in text
    assert "proxy_pass https://127.0.0.1:8000;" in text and "proxy_ssl_verify on;" in text
    assert 'return 403 "fsl-opt gateway' in text


@pytest.mark.parametrize(
    ("hosts", "listen", "superlink", "message"),
    [
        (
            [LAB, "localhost"],
            f"{LAB}:9443",
            "192.168.1.10:8000",
            "must listen on the server.s loopback",
        ),
        ([LAB], f"{LAB}:9443", "127.0.0.1:8000", "not localhost"),
        (["localhost"], f"{LAB}:9443", "127.0.0.1:8000", "not 127.0.0.2"),
        ([LAB, "localhost"], "9443", "127.0.0.1:8000", "expected HOST:PORT"),
        ([LAB, "localhost"], f"{LAB}:70000", "127.0.0.1:8000", "expected HOST:PORT"),
        ([LAB, "localhost"], "x;}-:9443", "127.0.0.1:8000", "neither an address nor a name"),
        ([LAB, "localhost"], "::1:9443", "127.0.0.1:8000", "IPv6 address in brackets"),
    ],
)
def test_what_the_gateway_refuses(tmp_path, hosts, listen, superlink, message):
    creds = _creds(tmp_path / "creds", hosts)
    with pytest.raises(ConfigError, match=message):
        write_gateway(tmp_path / "gw", creds, listen, superlink)
    assert not (tmp_path / "gw").exists()


def _refused(federation, *args: str) -> str:
    """A `flwr` command from the lab's address: it must fail with 403; its message."""
    answer = federation.flwr(*args, connection="devices", check=False)
    assert answer.get("success") is False, (args, answer)
    assert "403 Forbidden" in answer.get("error-message", ""), (args, answer)
    return str(answer["error-message"])


@pytest.mark.skipif(
    shutil.which("nginx") is None, reason="needs nginx (apt-get install nginx-light)"
)
def test_the_lab_address_serves_devices_and_refuses_control(tmp_path, tiny_cfg, monkeypatch):
    from fsl_opt.federation.loop import run
    from tests.test_deployment import TINY, Federation, records, wait_for_round

    started = time.perf_counter()
    federation = Federation(tmp_path / "flwr", nodes=2, hosts=(LAB,))
    gateway = None
    try:
        federation.start_link()
        port = free_port()
        folder = tmp_path / "gateway"
        write_gateway(
            folder, federation.creds, f"{LAB}:{port}", f"127.0.0.1:{federation.link_port}"
        )
        gateway = subprocess.Popen(
            ["nginx", "-p", str(folder), "-c", "nginx.conf", "-g", "daemon off;"],
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        import socket

        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex((LAB, port)) == 0:
                    break
            assert gateway.poll() is None, gateway.stderr.read() if gateway.stderr else ""
            time.sleep(0.2)
        federation.add_connection("devices", f"{LAB}:{port}")

        # The owner registers node 0; from the lab nobody registers, unregisters or lists.
        node = federation.register(0)
        _refused(federation, "supernode", "register", str(federation.creds / "node-1.pub"))
        _refused(federation, "supernode", "unregister", str(node))
        _refused(federation, "ls")
        _refused(federation, "supernode", "ls")
        submitted = federation.flwr_run({"rounds": "1"}, connection="devices")
        assert submitted.wait(timeout=120) != 0
        assert "403 Forbidden" in (federation.home / "flwr-run.log").read_text()
        assert federation.flwr("ls")["runs"] == []  # nothing was submitted

        # The device joins through the gateway and trains; the records are the in-process run's.
        federation.device_address = f"{LAB}:{port}"
        federation.start_node(0, 1)
        out = tmp_path / "deployed"
        proc = federation.flwr_run(
            {**TINY, "devices": "1", "rounds": "1", "method": "'bnb'", "out": f"'{out}'"}
        )
        wait_for_round(out, 1, proc, timeout=300)
        assert proc.wait(timeout=120) == 0
        streamed = (federation.home / "flwr-run.log").read_text()
        assert "fsl-opt: round 0/1" in streamed and "fsl-opt: round 1/1, rank" in streamed
        nodes = federation.flwr("supernode", "ls")["nodes"]
        assert [int(n["node-id"]) for n in nodes] == [node]  # still registered, by the owner
    finally:
        federation.stop()
        if gateway is not None:
            gateway.terminate()
            gateway.wait(timeout=15)
    monkeypatch.setenv("FSL_OPT_CACHE", str(tmp_path / "cache"))
    local = run(
        tiny_cfg.replace(devices=1, rounds=1, method="bnb", out=str(tmp_path / "local")),
        progress=False,
    )
    deployed = records(out)
    assert [r["round"] for r in deployed] == [0, 1]
    assert deployed[1]["rank"] == local[1]["rank"]
    assert deployed[1]["test_accuracy"] == local[1]["test_accuracy"]
    assert deployed[1]["test_loss"] == pytest.approx(local[1]["test_loss"], rel=1e-5)
    access = (folder / "access.log").read_text()
    assert f"POST {FLEET_PREFIX}" in access  # the device's calls went through the gateway
    print(f"gateway test: {time.perf_counter() - started:.1f} s")
