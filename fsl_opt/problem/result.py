"""The one result type every solver returns (like scipy's ``OptimizeResult``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from fsl_opt.problem.cost import BINDING_NAMES, RoundCost

#: One meaning each. ``optimal``: the largest feasible rank and its allocation.
#: ``infeasible``: no allocation exists, not even at rank 1 (``violations`` says why).
#: ``error``: the method failed; nothing is known of feasibility. ``fixed``: the rank was
#: given, not optimized, and every device meets T0 and E0 there. ``over_budget``: the rank
#: was given and some devices miss T0 or E0 there (``violations`` lists them). ``limit``: the
#: method stopped at a limit (time, nodes) before proving optimality; the allocation is the
#: best it found, re-checked feasible, and ``bound`` caps the optimum (``gap``: how far).
Status = Literal["optimal", "infeasible", "error", "fixed", "over_budget", "limit"]


@dataclass(frozen=True)
class Violation:
    """A device that cannot meet a constraint at a rank (1 unless said), and by how much."""

    device: int
    constraint: Literal["latency", "energy"]
    needed: float
    limit: float
    rank: int = 1

    @property
    def excess(self) -> float:
        """How far over the limit (seconds or joules)."""
        return self.needed - self.limit

    def __str__(self) -> str:
        unit = "s" if self.constraint == "latency" else "J"
        what = "the deadline T0" if self.constraint == "latency" else "the energy budget E0"
        return (
            f"device {self.device} cannot meet {what} at rank {self.rank}: "
            f"needs {self.needed:.6g} {unit}, "
            f"limit {self.limit:.6g} {unit} (over by {self.excess:.6g} {unit})"
        )


@dataclass(frozen=True)
class SolveResult:
    """Outcome of one solver call.

    Attributes
    ----------
    status : {"optimal", "infeasible", "error", "fixed", "over_budget", "limit"}
        See :data:`Status`; ``infeasible`` is a status, not an exception.
    rank : int
        The shared LoRA rank r (0 when infeasible or on error).
    frequencies_hz : (I,) array
        f_i; for the optimized methods the least-energy feasible frequency f_lo(r).
    cost : RoundCost or None
        Per-device delay and energy at (rank, frequencies_hz), split by phase.
    binding : (I,) int8 array
        :class:`~fsl_opt.problem.cost.Binding` code of the constraint that stops each device from
        taking rank + 1 (``none`` for devices with slack).
    device_ranks : (I,) array or None
        Each device's own largest feasible rank, where the method computes it.
    violations : tuple of Violation
        ``infeasible``: which device misses which constraint at rank 1; ``over_budget``:
        which device misses which constraint at the given rank.
    iterations : int
        Method-specific count (vectorized evaluations, B&B nodes, ...).
    extra : mapping
        Method-specific outputs (read-only), e.g. ``milp``'s resource blocks and bandwidth,
        which its reported costs depend on; included in :meth:`to_dict`.
    ranks : (I,) int array or None
        Each device's rank (0: left out of the round); ``rank`` everywhere for P1.
    bandwidth_hz : (I,) array or None
        Each device's bandwidth (0 when left out): its sub-band, or its share of the pool.
    objective, objective_value
        What was maximized (``shared``, ``sum``, ``log``) and its value.
    bound : float or None
        An upper bound on the optimal objective, where the method certifies one: the value
        itself when ``optimal`` by a bounding method, above it when ``limit``.
    """

    status: Status
    rank: int
    frequencies_hz: NDArray[np.float64]
    cost: RoundCost | None
    binding: NDArray[np.int8]
    method: str
    iterations: int
    wall_time_s: float
    message: str
    device_ranks: NDArray[np.int64] | None = None
    violations: tuple[Violation, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    ranks: NDArray[np.int64] | None = None
    bandwidth_hz: NDArray[np.float64] | None = None
    objective: str = "shared"
    objective_value: float = 0.0
    bound: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "extra", MappingProxyType(dict(self.extra)))

    @classmethod
    def without_allocation(
        cls,
        n_devices: int,
        status: Status,
        method: str,
        message: str,
        iterations: int = 0,
        wall_time_s: float = 0.0,
    ) -> SolveResult:
        """A result in which no device takes part (an error, a round not trained)."""
        return cls(
            status=status,
            rank=0,
            frequencies_hz=np.full(n_devices, np.nan),
            cost=None,
            binding=np.zeros(n_devices, dtype=np.int8),
            method=method,
            iterations=iterations,
            wall_time_s=wall_time_s,
            message=message,
        )

    def rank_per_device(self, n_devices: int) -> NDArray[np.int64]:
        """Each of ``n_devices`` devices' rank: ``ranks`` (0 for a device left out), or the
        shared ``rank`` for every device where a solver gives only that (P1's)."""
        if self.ranks is not None:
            return np.asarray(self.ranks, dtype=np.int64)
        return np.full(n_devices, self.rank, dtype=np.int64)

    @property
    def success(self) -> bool:
        """True when an optimal allocation was found."""
        return self.status == "optimal"

    @property
    def meets_constraints(self) -> bool:
        """True when every device meets T0 and E0 at the reported allocation."""
        return self.status in ("optimal", "fixed", "limit")

    @property
    def gap(self) -> float | None:
        """(bound - objective) / max(|bound|, 1e-12): how far from optimal the answer may be
        (None without a bound)."""
        if self.bound is None:
            return None
        return max(self.bound - self.objective_value, 0.0) / max(abs(self.bound), 1e-12)

    @property
    def latency_s(self) -> NDArray[np.float64]:
        """T_i per device [s], eq. (11) (nan when there is no allocation)."""
        return self.cost.latency_s if self.cost is not None else self._nan()

    @property
    def energy_j(self) -> NDArray[np.float64]:
        """E_i per device [J], eq. (12) (nan when there is no allocation)."""
        return self.cost.energy_j if self.cost is not None else self._nan()

    def _nan(self) -> NDArray[np.float64]:
        return np.full(self.frequencies_hz.shape, np.nan)

    def binding_names(self) -> list[str]:
        """The binding constraint of each device, as words."""
        return [BINDING_NAMES[int(c)] for c in self.binding]

    def to_dict(self, per_device: bool = True) -> dict[str, Any]:
        """JSON-ready view; ``per_device=False`` leaves out the (I,) arrays."""

        def clean(a: NDArray[Any]) -> list[Any]:
            """The values as a list, a non-finite float as None (JSON has no nan)."""
            values = a.tolist()
            if a.dtype.kind != "f" or np.isfinite(a).all():
                return values  # nothing to replace: no pass over the list in Python
            bad = np.flatnonzero(~np.isfinite(a))
            for i in bad.tolist():
                values[i] = None
            return values

        out: dict[str, Any] = {
            "status": self.status,
            "rank": self.rank,
            "method": self.method,
            "iterations": self.iterations,
            "wall_time_s": self.wall_time_s,
            "message": self.message,
            "n_devices": int(self.frequencies_hz.shape[0]),
            "violations": [
                {
                    "device": v.device,
                    "constraint": v.constraint,
                    "needed": v.needed,
                    "limit": v.limit,
                    "excess": v.excess,
                    "rank": v.rank,
                }
                for v in self.violations
            ],
            "extra": {k: _plain(v, per_device) for k, v in self.extra.items()},
            "objective": self.objective,
            "objective_value": self.objective_value,
            "bound": self.bound,
            "gap": self.gap,
        }
        if per_device:
            out["frequencies_hz"] = clean(self.frequencies_hz)
            out["latency_s"] = clean(self.latency_s)
            out["energy_j"] = clean(self.energy_j)
            out["binding"] = self.binding_names()
            if self.cost is not None:
                out.update({k: clean(v) for k, v in self.cost.as_dict().items()})
            if self.device_ranks is not None:
                out["device_ranks"] = self.device_ranks.tolist()
            if self.ranks is not None:
                out["ranks"] = self.ranks.tolist()
            if self.bandwidth_hz is not None:
                out["bandwidth_hz"] = clean(self.bandwidth_hz)
        return out


def _plain(value: Any, per_device: bool) -> Any:
    """A JSON-ready copy of an ``extra`` value (arrays as lists, or left out)."""
    if isinstance(value, np.ndarray):
        if value.ndim and not per_device:
            return None
        value = value.tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, list):
        return [None if isinstance(x, float) and not np.isfinite(x) else x for x in value]
    return value
