"""One pool rule: `solve --bandwidth-total-hz`, the `bandwidth_total_hz` run setting of
`train` / `plan` and a SYSTEM.toml pool build the same round system from the same devices.

Oracle: the rule written out by hand (density = noise on the common sub-band over its width,
every device may take the whole pool)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tomllib

from channels import preset_system
from fsl_opt.cli import build_parser
from fsl_opt.errors import ConfigError
from fsl_opt.federation.settings import RunConfig
from fsl_opt.federation.workload import _round_shape
from fsl_opt.problem.extended import extend
from fsl_opt.problem.pool import with_pool
from fsl_opt.problem.presets import CALIBRATED
from fsl_opt.problem.system_file import system_from_dict

POOL = 2.5e6
ROOT = Path(__file__).resolve().parents[1]


def base(n: int = 5):
    return preset_system(CALIBRATED, n, np.random.default_rng(3))


def pool_fields(s):
    return (s.bandwidth_total_hz, s.noise_psd_w_per_hz, s.bandwidth_hz.tolist(), s.noise_w)


def test_the_rule_by_hand():
    s = base()
    p = with_pool(s, POOL)
    assert p.bandwidth_total_hz == POOL
    assert p.noise_psd_w_per_hz == s.noise_w / s.bandwidth_hz[0]
    assert p.bandwidth_hz.tolist() == [POOL] * s.n_devices
    # a device given its usual band sees its usual SNR
    assert p.noise_psd_w_per_hz * s.bandwidth_hz[0] == pytest.approx(s.noise_w, rel=1e-15)


def test_solve_train_and_plan_build_the_same_pool():
    s = base()
    args = build_parser().parse_args(
        ["solve", "--preset", "calibrated", "--bandwidth-total-hz", str(POOL)]
    )
    from_solve = extend(s, bandwidth_total_hz=args.bandwidth_total_hz)
    from_run = _round_shape(RunConfig(devices=s.n_devices, bandwidth_total_hz=POOL), s)
    assert pool_fields(from_solve) == pool_fields(from_run) == pool_fields(with_pool(s, POOL))


def test_a_system_file_pool_follows_the_rule():
    """The example SYSTEM.toml with a pool and no per-device band: the rule's caps."""
    doc = tomllib.loads((ROOT / "examples" / "system.toml").read_text())
    psd = doc["round"]["noise_w"] / doc["devices"].pop("bandwidth_hz")
    doc["round"].update(bandwidth_total_hz=POOL, noise_psd_w_per_hz=psd)
    from_file = system_from_dict(doc)
    fixed = system_from_dict(tomllib.loads((ROOT / "examples" / "system.toml").read_text()))
    ruled = with_pool(fixed, POOL)
    assert pool_fields(from_file)[:3] == pool_fields(ruled)[:3]
    assert from_file.bandwidth_hz.tolist() == [POOL] * from_file.n_devices


def test_a_limit_of_its_own_stays_and_different_bands_need_a_density():
    s = base(3)
    limited = with_pool(s, POOL).replace(bandwidth_hz=[POOL, 1e5, POOL])
    grown = with_pool(limited, 2 * POOL)
    assert grown.bandwidth_hz.tolist() == [2 * POOL, 1e5, 2 * POOL]
    uneven = s.replace(bandwidth_hz=[1e5, 2e5, 1e5])
    with pytest.raises(ConfigError, match="noise_psd_w_per_hz"):
        with_pool(uneven, POOL)
    assert with_pool(uneven, POOL, 1e-17).noise_psd_w_per_hz == 1e-17
