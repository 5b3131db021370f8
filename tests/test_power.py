"""Transmit power as a decision: the least-energy (clock, power) against a fine grid over the
power written out by hand, never above the fixed-power energy, and the ranks it buys."""

import json
import math

import numpy as np

from fsl_opt.problem import cost
from fsl_opt.problem.power import least_energy
from solvers import solve
from solvers.instances import random_system
from solvers.per_device import power_controlled_ranks


def grid_energy(s, i, r, points=200_001):
    """Least energy of device i at rank r over a log grid of powers in [1e-20 P_i, P_i], each
    at its slowest on-time clock (none where no clock is on time), from the model by hand."""
    per = r * (s.d + s.k) if s.upload_model == "lora" else (r + s.k) * s.d
    bits = per * s.matrices_per_layer * s.layers[i] * s.bits_per_param
    ops = (2 * r - 1) * s.d * s.k * s.matrices_per_layer * s.layers[i]
    x = (s.cycles_per_op * ops + s.base_cycles[i]) * s.samples[i] + s.round_base_cycles[i]
    b = s.bandwidth_hz[i]
    t_dl = bits / (b * math.log2(1 + s.gain_dl[i] * s.server_power_w / s.noise_w))
    p = s.tx_power_w[i] * np.logspace(-20, 0, points)
    with np.errstate(divide="ignore"):  # powers too small to carry a bit: u = inf
        u = bits / (b * np.log2(1 + s.gain_ul[i] * p / s.noise_w))
    left = s.latency_s - t_dl - u
    ok = (left > 0) & (x / np.where(left > 0, left, 1.0) <= s.f_max_hz[i])
    if not ok.any():
        return math.inf
    f = x / left[ok]
    return float(np.min(s.omega[i] * x * f**2 + p[ok] * u[ok] + s.circuit_energy_j[i]))


def test_least_energy_matches_a_fine_grid_and_never_exceeds_fixed_power():
    """60 random systems x 3 devices at a random rank (half with computing so cheap that the
    clock's limit binds): the energy is never above the grid's least (1e-6) nor below it by
    more than the grid's resolution (1e-3), at most the fixed-power energy, the power within
    (0, P_i] and the clock within f_max."""
    compared, at_clock = 0, 0
    for seed in range(60):
        rng = np.random.default_rng(seed)
        s = random_system(rng, 3)
        if seed % 2:  # cheap computing: the least energy sits at the clock's limit
            s = s.replace(omega=s.omega * 1e-6)
        r = int(rng.integers(1, s.max_rank + 1))
        got = least_energy(s, r)
        fixed_f = np.minimum(cost.least_energy_frequency(s, r), s.f_max_hz)
        fixed_e = cost.energy(s, r, fixed_f)
        for i in range(3):
            ref = grid_energy(s, i, r)
            if not math.isfinite(ref):
                assert not np.isfinite(got.energy_j[i]) or got.upload_time_s[i] > 0
                continue
            e = float(got.energy_j[i])
            assert e <= ref * (1 + 1e-6), (seed, i, e, ref)
            # Below the grid by at most its resolution (adjacent powers 2.3e-4 apart).
            assert e >= ref * (1 - 1e-3), (seed, i, e, ref)
            assert 0 < got.tx_power_w[i] <= s.tx_power_w[i]
            assert got.frequency_hz[i] <= s.f_max_hz[i] * (1 + 1e-12)
            at_clock += bool(got.frequency_hz[i] >= s.f_max_hz[i] * (1 - 1e-9))
            if fixed_f[i] <= s.f_max_hz[i] and math.isfinite(fixed_e[i]):
                assert e <= fixed_e[i] * (1 + 1e-12)
            compared += 1
    assert compared > 60 and at_clock >= 3


def test_power_control_keeps_every_fixed_power_rank():
    """With the power free each device reaches at least its fixed-power rank (the paper's
    choice is one of the options), on 200 random systems; and more somewhere."""
    gained = 0
    for seed in range(200):
        s = random_system(np.random.default_rng(seed), 3)
        fixed = solve(s, "bisection").device_ranks
        free = power_controlled_ranks(s)
        assert fixed is not None and np.all(free >= fixed), seed
        gained += int((free > fixed).any())
    assert gained > 0


def test_per_device_with_power_control_reaches_every_fixed_rank_and_rechecks():
    """`power_control = true` (no pool): per_device's ranks are at least the fixed-power
    ones on 100 random systems, each device's reported power is within (0, P_i], and the
    allocation passes the cost model as computed at that power (no tolerance)."""
    for seed in range(100):
        rng = np.random.default_rng(seed)
        s = random_system(rng, 3)
        objective = ["shared", "sum", "log"][seed % 3]
        s = s.replace(objective=objective, min_devices=int(rng.integers(1, 4)))
        fixed = solve(s, "per_device")
        free = solve(s.replace(power_control=True), "auto")
        assert free.method == "per_device"
        if fixed.status == "optimal":
            assert free.status == "optimal", (seed, free.message)
            assert free.objective_value >= fixed.objective_value - 1e-12, seed
        if free.status != "optimal":
            continue
        on = free.ranks > 0
        p = free.extra["tx_power_w"]
        assert np.all((p[on] > 0) & (p[on] <= s.tx_power_w[on]))
        at = s.replace(tx_power_w=np.where(on, p, s.tx_power_w))
        r = np.maximum(free.ranks, 1)
        f = free.frequencies_hz
        assert np.all(cost.latency(at, r, f)[on] <= s.latency_s)
        assert np.all(cost.energy(at, r, f)[on] <= s.energy_budget_j[on])
        assert np.all(free.energy_j[on] == cost.energy(at, r, f)[on])


def test_power_control_is_refused_where_it_is_not_solved(capsys):
    """A fixed-power method with power control is one clear line; per_device answers with
    and without a pool, each device's power in its --json."""
    from fsl_opt.cli import main

    base = ["solve", "--preset", "calibrated", "--devices", "4", "--power-control"]
    assert main([*base, "--method", "bisection"]) == 2
    assert "fixed power; this system has power_control = true" in capsys.readouterr().err
    for pool in ([], ["--bandwidth-total-hz", "1e6", "--objective", "sum"]):
        assert main([*base, *pool, "--json"]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["status"] == "optimal" and len(doc["extra"]["tx_power_w"]) == 4


def test_system_file_takes_power_control(tmp_path):
    """`[round] power_control = true` in SYSTEM.toml; a non-boolean is one clear line."""
    from pathlib import Path

    from fsl_opt.errors import ConfigError
    from fsl_opt.problem.system_file import load_system

    text = (Path(__file__).parent.parent / "examples" / "system.toml").read_text()
    path = tmp_path / "system.toml"
    path.write_text(text.replace("[round]", "[round]\npower_control = true", 1))
    s = load_system(path)
    assert s.power_control and not s.is_p1
    assert solve(s).method == "per_device"
    path.write_text(text.replace("[round]", '[round]\npower_control = "yes"', 1))
    try:
        load_system(path)
    except ConfigError as exc:
        assert "power_control" in str(exc)
    else:
        raise AssertionError("a string power_control was accepted")


def test_a_run_with_power_control_logs_each_devices_power(tmp_path, tiny_cfg, monkeypatch):
    """`power_control = true` in a run: every training round's record holds each device's
    power (None for a device left out) in (0, its preset power], its energy is the cost
    model's at that power and within E0, and no rank falls below the same round's
    fixed-power rank (the channels are drawn alike: same seed)."""
    import pytest

    from fsl_opt.errors import ConfigError
    from fsl_opt.federation.loop import run

    monkeypatch.setenv("FSL_OPT_CACHE", str(tmp_path / "cache"))
    cfg = tiny_cfg.replace(rounds=2, objective="sum", aggregation="svd")
    free = run(cfg.replace(power_control=True, out=str(tmp_path / "p")), progress=False)
    fixed = run(cfg.replace(out=str(tmp_path / "f")), progress=False)
    p_max = np.full(cfg.devices, 0.2)  # the calibrated preset's uplink power
    trained = 0
    for a, b in zip(free[1:], fixed[1:], strict=True):
        assert "tx_power_w" not in b
        for i, p in enumerate(a["tx_power_w"]):
            if a["ranks"][i] == 0:
                assert p is None
                continue
            trained += 1
            assert 0 < p <= p_max[i] * (1 + 1e-12)
            assert a["energy_j"][i] <= a["energy_budget_j"][i] * (1 + 1e-9)
            assert a["latency_s"][i] <= a["latency_budget_s"] * (1 + 1e-9)
            assert a["ranks"][i] >= b["ranks"][i]
    assert trained
    # The same energy or less at the same ranks (a mutation that ignores the setting fails).
    assert sum(sum(r["energy_j"]) for r in free[1:]) < sum(sum(r["energy_j"]) for r in fixed[1:])
    with pytest.raises(ConfigError, match=r"power_control = true with rank = 4"):
        tiny_cfg.replace(power_control=True, rank=4)
    # With a pool and the budget policy: each device's power is chosen and logged too.
    pooled = cfg.replace(
        power_control=True,
        bandwidth_total_hz=1e6,
        policy="drift_plus_penalty",
        energy_total_rounds=2.0,
        out=str(tmp_path / "pool"),
    )
    trained = 0
    for rec in run(pooled, progress=False)[1:]:
        on = [i for i, r in enumerate(rec["ranks"]) if r > 0]
        trained += len(on)
        assert all(0 < rec["tx_power_w"][i] <= p_max[i] * (1 + 1e-12) for i in on)
        assert sum(rec["bandwidth_hz"]) <= 1e6
    assert trained
