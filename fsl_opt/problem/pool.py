"""The one rule for turning fixed sub-bands into a shared bandwidth pool.

Every front end that pools bandwidth (``fsl-opt solve --bandwidth-total-hz``, the
``bandwidth_total_hz`` run setting of ``train`` and ``plan``, a ``SYSTEM.toml`` with a
pool) builds the round's system by this rule, so the same population with the same pool is
the same problem whichever command asks:

- **Noise.** A device on B_i Hz of the pool sees noise N0 B_i. The density N0 is the one
  given; else the system's own (already pooled); else the noise on the devices' common
  sub-band divided by its width, so a device given its usual band sees its usual SNR. Devices
  with different sub-bands have no common density: it must be given.
- **Caps.** A device may take any share of the pool: its limit is the whole pool, unless it
  already has a smaller limit of its own in a pooled system (a ``SYSTEM.toml`` may limit a
  device's share).
"""

from __future__ import annotations

import numpy as np

from fsl_opt.errors import ConfigError
from fsl_opt.problem.system import System


def fixed_band_density(system: System) -> float:
    """N0 [W/Hz]: the noise on the devices' common sub-band over its width."""
    bands = np.asarray(system.bandwidth_hz, dtype=np.float64)
    if not np.all(bands == bands[0]):
        raise ConfigError(
            "a bandwidth pool on devices with different sub-bands (from "
            f"{bands.min():.6g} to {bands.max():.6g} Hz) has no common noise density: give "
            "noise_psd_w_per_hz (the noise per Hz of the pool)"
        )
    return float(system.noise_w) / float(bands[0])


def with_pool(system: System, total_hz: float, noise_psd_w_per_hz: float | None = None) -> System:
    """``system`` with a pool of ``total_hz`` shared by its devices (the rule above)."""
    if not (isinstance(total_hz, (int, float)) and np.isfinite(total_hz) and total_hz >= 1.0):
        raise ConfigError(f"bandwidth_total_hz = {total_hz!r}: expected a pool >= 1 Hz")
    psd = noise_psd_w_per_hz
    if psd is not None and not (np.isfinite(psd) and psd > 0):
        raise ConfigError(f"noise_psd_w_per_hz = {psd!r}: expected a density > 0 W/Hz")
    if psd is None:
        psd = system.noise_psd_w_per_hz
    if psd is None:
        psd = fixed_band_density(system)
    # The rate's noise is psd x the band: it must stay a normal number, or the rate is infinite.
    if not psd * min(float(total_hz), 1.0) > np.finfo(float).tiny:
        raise ConfigError(
            f"noise_psd_w_per_hz = {psd!r} with bandwidth_total_hz = {total_hz!r}: the noise "
            "underflows to zero (infinite rates); give a density that is not that small"
        )
    if system.bandwidth_total_hz is None:
        caps = np.full(system.n_devices, float(total_hz))
    else:  # limits of its own stay; those at the old pool follow the new one
        old = float(system.bandwidth_total_hz)
        caps = np.where(system.bandwidth_hz >= old, float(total_hz), system.bandwidth_hz)
    return system.replace(
        bandwidth_total_hz=float(total_hz), noise_psd_w_per_hz=psd, bandwidth_hz=caps
    )
