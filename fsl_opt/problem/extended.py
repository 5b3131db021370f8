"""A round's system with the extended problem's choices applied: the objective (and the
accuracy model behind ``accuracy``), selection, a bandwidth pool (by the one pool rule,
:func:`fsl_opt.problem.pool.with_pool`) and power control.

``fsl-opt solve`` extends a SYSTEM.toml or a drawn preset with this; a run's settings build
the same system through :func:`fsl_opt.federation.workload.build_system`.
"""

from __future__ import annotations

from typing import Any

from fsl_opt.errors import ConfigError
from fsl_opt.problem.pool import with_pool
from fsl_opt.problem.system import System


def extend(
    system: System,
    *,
    objective: str | None = None,
    accuracy_model: str | None = None,
    min_devices: int | None = None,
    bandwidth_total_hz: float | None = None,
    noise_psd_w_per_hz: float | None = None,
    power_control: bool = False,
) -> System:
    """``system`` with each given choice applied (None or False: as it is).

    ``accuracy_model`` (a file written by ``fsl-opt fit-accuracy``) values each device's
    round at the start of a run, each device bringing its samples once; it goes with
    ``objective = "accuracy"`` and with nothing else.
    """
    changes: dict[str, Any] = {}
    if objective is not None:
        changes["objective"] = objective
    if (objective == "accuracy") != (accuracy_model is not None):
        raise ConfigError(
            "objective = 'accuracy' needs accuracy_model = FILE"
            if accuracy_model is None
            else "accuracy_model is used by objective = 'accuracy' only: give both"
        )
    if accuracy_model is not None:
        from fsl_opt.problem.accuracy import AccuracyModel, Progress

        model = AccuracyModel.load(accuracy_model)
        changes["device_value"] = Progress(model, system.samples).values()
        changes["rank_half"] = model.rank_half
    if min_devices is not None:
        if not 1 <= min_devices <= system.n_devices:
            raise ConfigError(
                f"min_devices = {min_devices}: expected 1..{system.n_devices} (the devices)"
            )
        changes["min_devices"] = min_devices
    if noise_psd_w_per_hz is not None and bandwidth_total_hz is None:
        if system.bandwidth_total_hz is None:
            raise ConfigError("noise_psd_w_per_hz needs a pool: give bandwidth_total_hz too")
        changes["noise_psd_w_per_hz"] = noise_psd_w_per_hz
    if power_control:
        changes["power_control"] = True
    system = system.replace(**changes) if changes else system
    if bandwidth_total_hz is not None:
        system = with_pool(system, bandwidth_total_hz, noise_psd_w_per_hz)
    return system
