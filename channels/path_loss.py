"""Distance-based large-scale gain, an option in place of the paper's fixed 1e-3."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fsl_opt.errors import ConfigError


def log_distance_gain(
    distance_m: ArrayLike, pl_ref_db: float = 128.1, exponent: float = 3.76, ref_m: float = 1000.0
) -> NDArray[np.float64]:
    """Large-scale power gain 10^(-PL/10), PL = pl_ref_db + 10 exponent log10(d / ref_m).

    The defaults are the 3GPP TR 36.814 urban macro model, PL = 128.1 + 37.6 log10(d / km).
    """
    d = np.asarray(distance_m, dtype=np.float64)
    if not (np.isfinite(d) & (d > 0)).all():
        raise ConfigError(f"distance_m: expected finite distances > 0, got {d!r}")
    pl_db = pl_ref_db + 10.0 * exponent * np.log10(d / ref_m)
    return np.asarray(10.0 ** (-pl_db / 10.0), dtype=np.float64)
