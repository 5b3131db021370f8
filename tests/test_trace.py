"""Device traces: a hand-written trace replayed by the planner (unavailable devices absent
from exactly those rounds, clock caps in the chosen clocks, distances in the gains), bad
traces refused in one line naming file, row and field, and the synthetic generator's
statistics."""

import subprocess
import sys

import numpy as np
import pytest

from channels import RayleighBlockFading, preset_system
from fsl_opt.errors import ConfigError
from fsl_opt.federation.loop import run
from fsl_opt.federation.plan_run import plan
from fsl_opt.federation.planner import RoundPlanner
from fsl_opt.problem.presets import CALIBRATED
from fsl_opt.problem.trace import DeviceTrace, synthesize

CAP_HZ = 0.6e9


def _write(path, text):
    path.write_text(text)
    return str(path)


def _hand_trace(tmp_path):
    """Device 1 offline in rounds 2 and 3; device 0 capped at 0.6 GHz in round 1; device 2
    at 900 m in round 4 (rows out of order, an empty cell, a round past the run)."""
    return _write(
        tmp_path / "trace.csv",
        "device,round,available,clock_cap_hz,distance_m\n"
        "1,3,0,,\n"
        "0,1,1,6e8,\n"
        "1,2,0,,\n"
        "2,4,,,900\n"
        "2,9,1,,\n",
    )


def test_a_hand_written_trace_is_replayed(tmp_path, tiny_cfg):
    """Planned rounds: device 1 is in no record's planned or selected devices in rounds 2
    and 3 and is back in 1 and 4; device 0's clock in round 1 is at most its cap; the
    records say who was unavailable."""
    cfg = tiny_cfg.replace(
        rounds=4, objective="sum", min_devices=1, aggregation="zero_pad", out=str(tmp_path / "p")
    )
    free = plan(cfg, progress=False)
    recs = plan(cfg.replace(trace=_hand_trace(tmp_path), out=str(tmp_path / "t")), progress=False)
    assert [r["unavailable_devices"] for r in recs] == [[], [1], [1], []]
    for r in recs:
        offline = r["round"] in (2, 3)
        assert (1 in r["planned_devices"]) != offline, r
        assert (1 in r["selected_devices"]) != offline, r
        assert r["ranks"][1] == 0 if offline else r["ranks"][1] > 0
        assert r["energy_j"][1] == 0 if offline else r["energy_j"][1] > 0
    # The cap binds: without it device 0 runs faster at a higher rank; under it, slower
    # and at a lower rank (it trains still).
    assert free[0]["frequencies_hz"][0] > CAP_HZ
    assert 0 < recs[0]["ranks"][0] < free[0]["ranks"][0]
    assert recs[0]["frequencies_hz"][0] <= CAP_HZ * (1 + 1e-12)
    assert "unavailable_devices" not in free[0]


def test_a_trace_moves_the_large_scale_gain_and_caps_the_clock():
    """Same channel draws with and without the trace: device 2's gains in round 4 are scaled
    by beta(900 m) / beta(its placement) with the 3GPP law written out here; device 0's
    f_max in round 1 is the cap; nothing else changes."""
    trace = DeviceTrace(
        {
            "available": np.array([[1, 1, 1], [1, 0, 1], [1, 0, 1], [1, 1, np.nan]]),
            "clock_cap_hz": np.array([[CAP_HZ, np.nan, np.nan]] + [[np.nan] * 3] * 3),
            "distance_m": np.array([[np.nan] * 3] * 3 + [[np.nan, np.nan, 900.0]]),
        }
    )
    system = preset_system(CALIBRATED, 3, np.random.default_rng(4))
    distance = np.array([80.0, 120.0, 200.0])
    channel = RayleighBlockFading.from_distances(distance)

    def beta(d):
        return 10.0 ** (-(128.1 + 37.6 * np.log10(d / 1000.0)) / 10.0)

    a = RoundPlanner(system, channel, rng=np.random.default_rng(1), trace=trace)
    b = RoundPlanner(system, channel, rng=np.random.default_rng(1))
    for rnd in range(1, 5):
        pa, pb = a.plan_round(rnd), b.plan_round(rnd)
        scale = np.ones(3)
        if rnd == 4:
            scale[2] = beta(900.0) / beta(distance[2])
        np.testing.assert_allclose(pa.system.gain_ul, pb.system.gain_ul * scale, rtol=1e-12)
        np.testing.assert_allclose(pa.system.gain_dl, pb.system.gain_dl * scale, rtol=1e-12)
        cap = np.full(3, np.inf)
        if rnd == 1:
            cap[0] = CAP_HZ
        np.testing.assert_array_equal(pa.system.f_max_hz, np.minimum(pb.system.f_max_hz, cap))
        assert pa.unavailable == ((1,) if rnd in (2, 3) else ())
        assert pb.unavailable is None


def test_a_round_nobody_can_join_is_skipped_not_the_end(tmp_path, tiny_cfg, monkeypatch):
    """Every device offline in round 2: it trains nobody (the model and its accuracy stay
    as they were, nothing moves), the run goes on, and round 3 trains every device."""
    monkeypatch.setenv("FSL_OPT_CACHE", str(tmp_path / "cache"))
    trace = _write(tmp_path / "all.csv", "device,round,available\n0,2,0\n1,2,0\n2,2,0\n")
    recs = run(tiny_cfg.replace(rounds=3, trace=trace, out=str(tmp_path / "run")), progress=False)
    assert [r.get("selected_devices") for r in recs[1:]] == [[0, 1, 2], [], [0, 1, 2]]
    assert recs[2]["unavailable_devices"] == [0, 1, 2] and "stop" not in recs[2]
    assert recs[2]["test_accuracy"] == recs[1]["test_accuracy"]
    assert "uploaded_bytes" not in recs[2]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r"empty; expected a header"),
        ("device,round,avail\n", r"row 1: unknown column 'avail'"),
        ("device,available\n", r"row 1: the header lacks round"),
        ("device,round,distance_m,gain\n", r"row 1: give distance_m or gain, not both"),
        ("device,round,available\n0,1,1\n0,1,2\n", r"row 3: available = '2': expected 0 or 1"),
        (
            "device,round,available\n0,1,1\n0,1,0\n",
            r"row 3: device 0, round 1 is already given in row 2",
        ),
        ("device,round,clock_cap_hz\n0,1,-5\n", r"row 2: clock_cap_hz = '-5': expected a finite"),
        ("device,round,distance_m\n0,1,nan\n", r"row 2: distance_m = 'nan'"),
        ("device,round\n0,0\n", r"row 2: round = 0: expected >= 1"),
        ("device,round\nx,1\n", r"row 2: device = 'x': expected an integer"),
        ("device,round\n0,1,3\n", r"row 2: 3 cells, the header has 2"),
    ],
)
def test_bad_traces_are_refused_naming_file_row_and_field(tmp_path, text, message):
    path = _write(tmp_path / "bad.csv", text)
    with pytest.raises(ConfigError, match=message) as err:
        DeviceTrace.read_csv(path)
    assert str(err.value).startswith(path)


def test_a_trace_naming_a_device_the_run_lacks_fails_before_anything_loads(tmp_path, tiny_cfg):
    path = _write(tmp_path / "five.csv", "device,round,available\n0,1,1\n4,2,0\n")
    cfg = tiny_cfg.replace(trace=path, model="no-such-model-anywhere")
    with pytest.raises(ConfigError, match=r"five.csv: row 3: device = 4: the run has devices 0..2"):
        run(cfg, progress=False)
    assert not (tmp_path / "run").exists()
    missing = tiny_cfg.replace(trace=str(tmp_path / "none.csv"))
    with pytest.raises(ConfigError, match=r"none.csv: cannot read the device trace"):
        run(missing, progress=False)


def test_synthetic_availability_mobility_and_caps():
    """200,000 device-rounds: the share available is the asked 0.7 (within 5 standard
    errors of the chain's mean, lag-1 correlation 1/3 counted), runs on last 5 rounds on
    average, every distance lies in the ring and steps at most 20 m a round, caps in range;
    the same seed draws the same trace, and it round-trips through its CSV."""
    t = synthesize(2000, 100, np.random.default_rng(7), clock_cap_hz=(0.5e9, 1.0e9))
    on = t.tables["available"].astype(bool)
    share = on.mean()
    lag = 1.0 - 1.0 / 5.0 - (1.0 / 5.0) * 0.7 / 0.3
    se = np.sqrt(0.7 * 0.3 / on.size * (1 + lag) / (1 - lag))
    assert abs(share - 0.7) < 5 * se, (share, se)
    starts = on[1:] & ~on[:-1]
    ends = ~on[1:] & on[:-1]
    runs = on[:-1].sum() / max(ends.sum(), 1)  # on-rounds per ended run (censoring aside)
    assert 4.5 < runs < 5.5, runs
    assert starts.sum() > 1000
    d = t.tables["distance_m"]
    assert d.min() >= 50.0 and d.max() <= 250.0
    assert np.abs(np.diff(d, axis=0)).max() <= 20.0 + 1e-9
    caps = t.tables["clock_cap_hz"]
    assert caps.min() >= 0.5e9 and caps.max() <= 1.0e9
    again = synthesize(2000, 100, np.random.default_rng(7), clock_cap_hz=(0.5e9, 1.0e9))
    np.testing.assert_array_equal(again.tables["distance_m"], d)


def test_synth_command_writes_a_trace_plan_replays_and_refuses_to_clobber(tmp_path, tiny_cfg):
    out = tmp_path / "synth.csv"
    cmd = [sys.executable, "-m", "fsl_opt.cli", "trace", "synth", "--devices", "3"]
    cmd += ["--rounds", "4", "--seed", "3", "--clock-cap-ghz", "0.4,0.9", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "3 devices x 4 rounds" in done.stdout
    trace = DeviceTrace.read_csv(out)
    assert trace.fields == ("available", "clock_cap_hz", "distance_m")
    assert trace.rounds == 4 and trace.devices == 3
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "exists: pass --overwrite" in again.stderr
    assert DeviceTrace.read_csv(out).tables.keys() == trace.tables.keys()
    recs = plan(tiny_cfg.replace(rounds=4, trace=str(out), out=str(tmp_path / "p")), progress=False)
    offline = 1.0 - trace.tables["available"]
    assert [r["unavailable_devices"] for r in recs] == [
        [int(i) for i in np.flatnonzero(row)] for row in offline
    ]
    written = tmp_path / "copy.csv"
    trace.to_csv(written)
    for field in trace.fields:
        np.testing.assert_array_equal(
            DeviceTrace.read_csv(written).tables[field], trace.tables[field]
        )


# --- FedScale's traces ------------------------------------------------------------------------


def _fedscale_files(tmp_path):
    """The two pickles as FedScale ships them: by client id, plain dicts."""
    import pickle

    behaviour = {
        1: {"duration": 400, "active": [0, 250], "inactive": [100, 400], "finish_time": 500},
        2: {"duration": 500, "active": [0], "inactive": [500], "finish_time": 500},
        7: {"duration": 0, "active": [], "inactive": [], "finish_time": 500},
        9: {"duration": 10, "active": [5], "inactive": [15], "finish_time": 20},
    }
    capacity = {
        1: {"computation": 10.0, "communication": 1000.0},
        2: {"computation": 20.0, "communication": 250.0},
        7: {"computation": 40.0, "communication": 4000.0},
        8: {"computation": 5.0, "communication": 100.0},
    }
    b, c = tmp_path / "client_behave_trace", tmp_path / "client_device_capacity"
    b.write_bytes(pickle.dumps(behaviour))
    c.write_bytes(pickle.dumps(capacity))
    return b, c


def test_fedscale_traces_map_onto_availability_caps_and_gains(tmp_path):
    """Clients 1, 2, 7 (those in both files, lowest ids first); round r at (r - 1) x 60 s:
    availability by hand from the active intervals (the trace repeats every 500 s); clock
    caps reference x median / computation; gains whose Shannon rate is the client's rate."""
    from fsl_opt.problem.trace import read_fedscale

    b, c = _fedscale_files(tmp_path)
    link = (180e3, 0.2, 1e-13)
    t = read_fedscale(3, 10, 60.0, b, c, reference_clock_hz=2e9, link=link)
    # times 0, 60, ..., 540 s; client 1 is on in [0, 100] and [250, 400]; 540 s is 40 s.
    one = [1, 1, 0, 0, 0, 1, 1, 0, 0, 1]
    np.testing.assert_array_equal(t.tables["available"][:, 0], one)
    np.testing.assert_array_equal(t.tables["available"][:, 1], [1] * 10)
    np.testing.assert_array_equal(t.tables["available"][:, 2], [0] * 10)
    np.testing.assert_allclose(t.tables["clock_cap_hz"][0], [4e9, 2e9, 1e9], rtol=1e-12)
    bandwidth, power, noise = link
    rate = bandwidth * np.log2(1 + power * t.tables["gain"][0] / noise)
    np.testing.assert_allclose(rate, [1e6, 2.5e5, 4e6], rtol=1e-9)
    assert t.tables["gain"].shape == (10, 3) and len({*t.tables["gain"][:, 1]}) == 1
    only = read_fedscale(2, 3, 60.0, behaviour=b, rng=np.random.default_rng(0))
    assert only.fields == ("available",) and only.devices == 2


def test_fedscale_traces_refuse_code_and_bad_records(tmp_path):
    import datetime
    import pickle

    from fsl_opt.problem.trace import read_fedscale

    b, c = _fedscale_files(tmp_path)
    evil = tmp_path / "evil"
    evil.write_bytes(pickle.dumps({1: {"computation": datetime.date(2020, 1, 1)}}))
    with pytest.raises(ConfigError, match=r"evil: capacity trace: holds a datetime.date object"):
        read_fedscale(1, 2, 60.0, capacity=evil, reference_clock_hz=1e9)
    bad = tmp_path / "bad"
    bad.write_bytes(pickle.dumps({1: {"communication": 10.0}}))
    with pytest.raises(ConfigError, match=r"bad: client 1: no 'computation'"):
        read_fedscale(1, 2, 60.0, capacity=bad, reference_clock_hz=1e9)
    with pytest.raises(ConfigError, match=r"3 clients in common, fewer than devices = 4"):
        read_fedscale(4, 2, 60.0, b, c, reference_clock_hz=1e9)
    junk = tmp_path / "junk"
    junk.write_text("device,round\n")
    with pytest.raises(ConfigError, match=r"junk: not a behaviour trace"):
        read_fedscale(1, 2, 60.0, behaviour=junk)


def test_fedscale_command_writes_a_trace_that_plans(tmp_path, tiny_cfg):
    b, c = _fedscale_files(tmp_path)
    out = tmp_path / "fedscale.csv"
    cmd = [sys.executable, "-m", "fsl_opt.cli", "trace", "fedscale", "--devices", "3"]
    cmd += ["--rounds", "4", "--round-s", "120", "--behaviour", str(b), "--capacity", str(c)]
    cmd += ["--reference-clock-ghz", "2.4", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    trace = DeviceTrace.read_csv(out)
    assert trace.fields == ("available", "clock_cap_hz", "gain")
    recs = plan(tiny_cfg.replace(rounds=4, trace=str(out), out=str(tmp_path / "p")), progress=False)
    # Rounds at 0, 120, 240, 360 s: client 7 (device 2) is never active; client 1 (device 0)
    # is active in [0, 100] and [250, 400], so off at 120 and 240 s.
    assert [r["unavailable_devices"] for r in recs] == [[2], [0, 2], [0, 2], [2]]
