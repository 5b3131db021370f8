"""`fsl-opt plan`: the planner of `fsl-opt train` alone, same decisions for the same settings;
the budget policy in a real run, resumed exactly."""

import json
import subprocess
import sys

import numpy as np
import pytest

from fsl_opt.errors import ConfigError
from fsl_opt.federation.loop import run
from fsl_opt.federation.plan_run import plan

#: Columns decided by the planner (what `plan` and `train` must share).
PLANNED = (
    "ranks",
    "frequencies_hz",
    "bandwidth_hz",
    "energy_j",
    "latency_s",
    "energy_left_j",
    "energy_queue_j",
    "policy_v",
    "status",
)


def _budgeted(tiny_cfg, tmp_path):
    """A battery of 2.2 rounds of E0 per device, spent by the policy; the same as in joules."""
    cfg = tiny_cfg.replace(
        rounds=4,
        energy_total_rounds=2.2,
        policy="drift_plus_penalty",
        objective="sum",
        min_devices=1,
        aggregation="zero_pad",
    )
    e0 = plan(tiny_cfg.replace(out=str(tmp_path / "probe")), progress=False)[0]["energy_budget_j"]
    joules = plan(
        cfg.replace(energy_total_rounds=None, energy_total_j=2.2 * e0[0], out=str(tmp_path / "j")),
        progress=False,
    )
    rounds = plan(cfg.replace(out=str(tmp_path / "r")), progress=False)
    assert [r["ranks"] for r in joules] == [r["ranks"] for r in rounds]
    assert [r.get("energy_left_j") for r in joules] == [r.get("energy_left_j") for r in rounds]
    return cfg


def test_plan_decides_what_train_decides(tiny_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("FSL_OPT_CACHE", str(tmp_path / "cache"))
    cfg = _budgeted(tiny_cfg, tmp_path)
    planned = plan(cfg.replace(out=str(tmp_path / "plan")), progress=False)
    trained = run(cfg.replace(out=str(tmp_path / "train")), progress=False)[1:]
    assert len(planned) == len(trained)
    for p, t in zip(planned, trained, strict=True):
        for key in PLANNED:
            assert p.get(key) == t.get(key), (p["round"], key)
    # The budget binds: some round leaves a device out or is skipped, none overdraws.
    ranks = np.array([r["ranks"] for r in planned])
    assert (ranks == 0).any()
    spent = np.sum([r.get("energy_j", [0.0] * cfg.devices) for r in planned], axis=0)
    battery = json.loads((tmp_path / "plan" / "placement.json").read_text())["energy_total_j"]
    assert np.all(spent <= np.array(battery))
    assert all(
        "energy_queue_j" in r and "round_length_s" in r for r in planned if not r.get("stop")
    )


def test_the_policy_resumes_exactly(tiny_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("FSL_OPT_CACHE", str(tmp_path / "cache"))
    cfg = _budgeted(tiny_cfg, tmp_path).replace(time_total_s=None)
    straight = run(cfg.replace(out=str(tmp_path / "a")), progress=False)
    run(cfg.replace(out=str(tmp_path / "b")), progress=False, stop_after=2)
    resumed = run(cfg.replace(out=str(tmp_path / "b")), resume=True, progress=False)
    for a, b in zip(straight, resumed, strict=True):
        for key in (*PLANNED, "test_accuracy"):
            assert a.get(key) == b.get(key), (a["round"], key)


def test_plan_command_writes_a_run_folder_and_refuses_to_clobber(tmp_path):
    out = tmp_path / "p"
    base = [sys.executable, "-m", "fsl_opt.cli", "plan", "--model", "tiny", "--devices", "4"]
    args = [*base, "--rounds", "3", "--samples-per-device", "8", "--out", str(out), "--quiet"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "planned 3 rounds for 4 devices" in proc.stdout
    recs = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["round"] for r in recs] == [1, 2, 3]
    assert "test_accuracy" not in recs[0] and len(recs[0]["ranks"]) == 4
    assert (out / "log.csv").is_file() and (out / "plan.png").stat().st_size > 0
    again = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    # train's flags that are not the planner's are not plan's
    bad = subprocess.run([*base, "--lr", "0.1"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--lr" in bad.stderr


def test_policy_settings_are_checked(tiny_cfg):
    with pytest.raises(ConfigError, match="energy_total_j, time_total_s or both"):
        tiny_cfg.replace(policy="drift_plus_penalty")
    with pytest.raises(ConfigError, match="leave out rank"):
        tiny_cfg.replace(policy="drift_plus_penalty", time_total_s=100.0, rank=2)
    with pytest.raises(ConfigError, match=r"policy_v = 2\.0"):
        tiny_cfg.replace(policy_v=2.0)
    with pytest.raises(ConfigError, match="policy_v"):
        tiny_cfg.replace(policy="drift_plus_penalty", time_total_s=100.0, policy_v=-1.0)


def test_a_battery_per_device(tiny_cfg, tmp_path, monkeypatch):
    """energy_total_j per device: the device with the smallest battery is left out first,
    none spends more than its own."""
    monkeypatch.setenv("FSL_OPT_CACHE", str(tmp_path / "cache"))
    e0 = plan(tiny_cfg.replace(out=str(tmp_path / "probe")), progress=False)[0]["energy_budget_j"][
        0
    ]
    batteries = (0.5 * e0, 3.0 * e0, 3.0 * e0)
    cfg = tiny_cfg.replace(
        rounds=4, energy_total_j=batteries, objective="sum", min_devices=1, aggregation="zero_pad"
    )
    recs = plan(cfg.replace(out=str(tmp_path / "p")), progress=False)
    ranks = np.array([r["ranks"] for r in recs if not r.get("stop")])
    assert (ranks[:, 0] == 0).all() and (ranks[0, 1:] > 0).all()
    spent = np.sum([r.get("energy_j", [0.0] * 3) for r in recs], axis=0)
    assert np.all(spent <= np.array(batteries))


def test_plan_takes_what_planning_needs(tmp_path, capsys):
    """Per-device ranks without an aggregation named (a plan aggregates nothing: zero_pad
    models the downloads, said), the budgets in rounds, the test split's size."""
    from fsl_opt.cli import main

    args = ["plan", "--model", "tiny", "--devices", "3", "--rounds", "2", "--quiet", "--no-plot"]
    args += ["--objective", "sum", "--min-devices", "1", "--energy-total-rounds", "1.5"]
    args += ["--policy", "drift_plus_penalty", "--test-samples", "10"]
    assert main([*args, "--out", str(tmp_path / "p")]) == 0
    assert "aggregation: zero_pad" in capsys.readouterr().out
    saved = (tmp_path / "p" / "config.toml").read_text()
    assert 'aggregation = "zero_pad"' in saved and "energy_total_rounds = 1.5" in saved


def test_many_runs_get_one_color_each_and_a_legend_panel(tiny_cfg, tmp_path):
    """Twenty-one runs in one figure repeated the ten-color cycle and their legend covered
    the first panel and ran off the figure: past six runs the legend has a panel of its own
    (the PNG one panel wider) and each run a color of twenty."""
    import shutil
    import struct

    from fsl_opt.federation.plot import MAX_LEGEND_INSIDE, draw_runs

    first = tmp_path / "p0"
    plan(tiny_cfg.replace(rounds=2, out=str(first)), progress=False)
    folders = [first]
    for i in range(1, MAX_LEGEND_INSIDE + 1):
        folders.append(tmp_path / f"p{i}")
        shutil.copytree(first, folders[-1])

    def width(png):
        return struct.unpack(">I", png.read_bytes()[16:20])[0]  # the IHDR chunk

    few = draw_runs(folders[:MAX_LEGEND_INSIDE], tmp_path / "few.png")
    many = draw_runs(folders, tmp_path / "many.png")
    assert width(many) - width(few) == pytest.approx(width(few) / 4, rel=0.02)
