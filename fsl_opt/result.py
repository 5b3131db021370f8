"""The one result type every solver returns (like scipy's ``OptimizeResult``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from fsl_opt.cost import BINDING_NAMES, RoundCost

Status = Literal["optimal", "infeasible", "error"]


@dataclass(frozen=True)
class Violation:
    """A device that cannot meet a constraint even at rank 1, and by how much."""

    device: int
    constraint: Literal["latency", "energy"]
    needed: float
    limit: float

    @property
    def excess(self) -> float:
        """How far over the limit (seconds or joules)."""
        return self.needed - self.limit

    def __str__(self) -> str:
        unit = "s" if self.constraint == "latency" else "J"
        what = "the deadline T0" if self.constraint == "latency" else "the energy budget E0"
        return (
            f"device {self.device} cannot meet {what} at rank 1: needs {self.needed:.6g} {unit}, "
            f"limit {self.limit:.6g} {unit} (over by {self.excess:.6g} {unit})"
        )


@dataclass(frozen=True)
class SolveResult:
    """Outcome of one solver call.

    Attributes
    ----------
    status : {"optimal", "infeasible", "error"}
        ``infeasible`` is a status, not an exception; ``violations`` says why.
    rank : int
        The shared LoRA rank r (0 when infeasible or on error).
    frequencies_hz : (I,) array
        f_i; for the optimized methods the least-energy feasible frequency f_lo(r).
    cost : RoundCost or None
        Per-device delay and energy at (rank, frequencies_hz), split by phase.
    binding : (I,) int8 array
        :class:`~fsl_opt.cost.Binding` code of the constraint that stops each device from
        taking rank + 1 (``none`` for devices with slack).
    device_ranks : (I,) array or None
        Each device's own largest feasible rank, where the method computes it.
    violations : tuple of Violation
        For an infeasible instance: which device misses which constraint at rank 1.
    iterations : int
        Method-specific count (vectorized evaluations, B&B nodes, ...).
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
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def success(self) -> bool:
        """True when an optimal allocation was found."""
        return self.status == "optimal"

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
            return [None if isinstance(x, float) and not np.isfinite(x) else x for x in a.tolist()]

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
                }
                for v in self.violations
            ],
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
        return out
