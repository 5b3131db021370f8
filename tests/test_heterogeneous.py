"""Federated runs with a rank per device, device selection and each aggregator (tiny model)."""

import pytest

from fsl_opt.errors import ConfigError
from fsl_opt.federation.backends.inprocess import InProcessBackend
from fsl_opt.federation.loop import run
from fsl_opt.federation.settings import RunConfig


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("FSL_OPT_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


class Recording(InProcessBackend):
    """The in-process backend, remembering which devices were asked to train each round."""

    def __init__(self):
        super().__init__()
        self.asked = []

    def train_round(self, ctx, payloads, plan):
        self.asked.append(sorted(payloads))
        return super().train_round(ctx, payloads, plan)


@pytest.mark.parametrize("aggregation", ["zero_pad", "svd", "stack"])
def test_left_out_device_does_nothing_and_costs_nothing(tmp_path, tiny_cfg, aggregation):
    """A device too slow to meet T0 (a hundredth of its clock) is left out: never asked to
    train, no optimizer state, zero modeled delay and energy, no bytes; the others train at
    their own ranks."""
    cfg = tiny_cfg.replace(
        objective="sum",
        min_devices=2,
        aggregation=aggregation,
        weak_devices=1,
        weak_clock=0.01,
        latency_factor=3.0,  # room for stack's downloads of the merged updates
        out=str(tmp_path / aggregation),
    )
    backend = Recording()
    recs = run(cfg, progress=False, backend=backend)
    trained = [r for r in recs[1:] if r["selected_devices"]]
    assert trained, "no round trained"
    for r in trained:
        assert r["ranks"][0] == 0 and r["selected_devices"] == [1, 2]
        assert r["energy_j"][0] == 0 and r["latency_s"][0] == 0
        assert r["uploaded_bytes"][0] == 0 and r["downloaded_bytes"][0] == 0
        assert r["frequencies_hz"][0] is None and r["bandwidth_hz"][0] == 0
        assert all(b > 0 for b in r["uploaded_bytes"][1:])
    assert all(asked == [1, 2] for asked in backend.asked)
    assert 0 not in backend.optimizer_states and {1, 2} <= set(backend.optimizer_states)


def test_stack_charges_the_merged_download(tmp_path, tiny_cfg):
    """Under stack a device downloads the merged updates it has not received: nothing in
    round 1 (fresh adapters are drawn on the device), then r (d + k) per adapted matrix with
    r the ranks merged last round, as the cost model charges."""
    cfg = tiny_cfg.replace(aggregation="stack", latency_factor=3.0, rounds=2)
    recs = run(cfg, progress=False)
    one, two = recs[1], recs[2]
    assert one["modeled_download_bytes"] == [0.0, 0.0, 0.0]
    merged_rank = sum(one["ranks"])
    per_matrix = min(merged_rank * (32 + 32), 32 * 32)
    want = per_matrix * 2 * 3 * 4  # 2 matrices x 3 layers (last3 of 4), 4 bytes a parameter
    assert two["modeled_download_bytes"] == [want] * 3
    head = 4 * (32 * 4 + 4)
    assert two["downloaded_bytes"] == [want + head] * 3


def test_contradicting_settings_fail_before_loading(tiny_cfg):
    """Each refused combination names the setting and what to change."""
    with pytest.raises(
        ConfigError, match=r"cannot aggregate.*zero_pad, rank_normalized, svd, stack"
    ):
        tiny_cfg.replace(objective="sum")
    with pytest.raises(ConfigError, match="rank = 3: a fixed rank"):
        tiny_cfg.replace(rank=3, min_devices=2)
    with pytest.raises(ConfigError, match="method = 'bnb' solves the paper's problem only"):
        tiny_cfg.replace(method="bnb", min_devices=2)
    with pytest.raises(ConfigError, match="min_devices = 4: above devices = 3"):
        tiny_cfg.replace(min_devices=4)
    with pytest.raises(ConfigError, match="weak_devices = 5"):
        RunConfig(weak_devices=5)
    with pytest.raises(ConfigError, match="aggregation = 'svdx'"):
        tiny_cfg.replace(aggregation="svdx")
