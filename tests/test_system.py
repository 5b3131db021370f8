"""System model: broadcasting, immutability and validation messages."""

import numpy as np
import pytest

from fsl_opt.errors import ConfigError
from fsl_opt.problem.system import System


def make(**changes):
    fields = dict(
        samples=[100.0, 200.0, 300.0],
        omega=1e-27,
        f_max_hz=2e9,
        energy_budget_j=10.0,
        circuit_energy_j=0.1,
        tx_power_w=0.1,
        bandwidth_hz=1e6,
        gain_ul=1e-3,
        gain_dl=1e-3,
        latency_s=5.0,
        noise_w=1e-10,
        server_power_w=1.0,
    )
    fields.update(changes)
    return System(**fields)


def test_scalars_broadcast_to_every_device():
    """A scalar per-device field is repeated for every device."""
    s = make()
    assert s.n_devices == 3
    np.testing.assert_array_equal(s.tx_power_w, [0.1, 0.1, 0.1])
    np.testing.assert_array_equal(s.layers, [3, 3, 3])


def test_arrays_are_read_only():
    """Arrays cannot be changed behind the validation's back."""
    s = make()
    with pytest.raises(ValueError, match="read-only"):
        s.omega[0] = 1.0


def test_replace_revalidates():
    """replace() builds a new validated object."""
    s = make()
    assert s.replace(latency_s=7.0).latency_s == 7.0
    with pytest.raises(ConfigError, match=r"latency_s = -1\.0"):
        s.replace(latency_s=-1.0)


@pytest.mark.parametrize(
    ("changes", "pattern"),
    [
        (
            {"omega": [1e-27, np.nan, 1e-27]},
            r"omega\[device 1\] = nan: expected a finite number > 0",
        ),
        ({"tx_power_w": [0.1, 0.1, -0.2]}, r"tx_power_w\[device 2\] = -0.2"),
        (
            {"bandwidth_hz": 0.0},
            r"bandwidth_hz\[device 0\] = 0.0: expected a finite number > 0 \(and 2 more",
        ),
        (
            {"gain_ul": [1e-3, 1e-3]},
            r"per-device lists differ in length: samples has 3, gain_ul has 2",
        ),
        (
            {"circuit_energy_j": -1.0},
            r"circuit_energy_j\[device 0\] = -1.0: expected a finite number >= 0",
        ),
        ({"upload_model": "dense"}, r"upload_model = 'dense': expected 'lora' or 'paper'"),
        ({"max_rank": 1000}, r"max_rank = 1000: a LoRA rank cannot exceed min\(d, k\) = 768"),
        ({"d": 0}, r"d = 0: expected an integer >= 1"),
        ({"noise_w": float("inf")}, r"noise_w = inf"),
        ({"layers": 2.5}, r"layers: expected whole numbers"),
        ({"samples": [[1.0, 2.0]]}, r"samples: expected a scalar or a 1-D array"),
    ],
)
def test_bad_values_name_field_device_and_value(changes, pattern):
    """Each bad value raises a ConfigError naming the field (and device)."""
    with pytest.raises(ConfigError, match=pattern):
        make(**changes)


def test_subset_keeps_devices():
    """subset() keeps the chosen devices' values."""
    s = make()
    sub = s.subset([2, 0])
    np.testing.assert_array_equal(sub.samples, [300.0, 100.0])
