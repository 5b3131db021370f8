"""Human-readable tables of solver results."""

from __future__ import annotations

from fsl_opt.problem.result import SolveResult
from fsl_opt.problem.system import System

#: Devices shown in a table; the rest are summarized.
MAX_ROWS = 20


def result_table(system: System, result: SolveResult) -> str:
    """A fixed-width table: the headline, then one row per device (first ``MAX_ROWS``)."""
    lines = [
        f"method {result.method}: {result.status}, rank {result.rank}  "
        f"({result.iterations} iterations, {result.wall_time_s * 1e3:.2f} ms)",
        f"T0 = {system.latency_s:.6g} s, {system.n_devices} devices, {result.message}",
    ]
    if result.cost is None:
        lines += [f"  {v}" for v in result.violations[1:]]
        return "\n".join(lines)
    c = result.cost
    head = (
        f"{'dev':>4} {'rank':>5} {'B [kHz]':>9} {'f [GHz]':>9} {'T_cmp':>10} {'T_ul':>9} "
        f"{'T_dl':>9} {'T [s]':>10} {'E_cmp':>10} {'E_ul':>9} {'E [J]':>10} {'E0 [J]':>10}  binding"
    )
    lines.append(head)
    names = result.binding_names()
    ranks = result.rank_per_device(system.n_devices)
    band = result.bandwidth_hz if result.bandwidth_hz is not None else system.bandwidth_hz
    if result.objective != "shared" or system.bandwidth_total_hz is not None:
        what = f"objective {result.objective} = {result.objective_value:.10g}"
        if result.bound is not None:
            what += f", bound {result.bound:.10g} (gap {result.gap:.3g})"
        lines.insert(1, what)
    elif result.status == "limit" and result.bound is not None:
        lines.insert(1, f"bound on the rank {result.bound:.6g} (gap {result.gap:.3g})")
    for i in range(min(system.n_devices, MAX_ROWS)):
        if ranks[i] == 0:
            lines.append(f"{i:>4} {0:>5} {0:>9}  left out of the round")
            continue
        lines.append(
            f"{i:>4} {int(ranks[i]):>5} {band[i] / 1e3:>9.4g} "
            f"{result.frequencies_hz[i] / 1e9:>9.4f} {c.compute_time_s[i]:>10.4g} "
            f"{c.upload_time_s[i]:>9.4g} {c.download_time_s[i]:>9.4g} {c.latency_s[i]:>10.4g} "
            f"{c.compute_energy_j[i]:>10.4g} {c.upload_energy_j[i]:>9.4g} {c.energy_j[i]:>10.4g} "
            f"{system.energy_budget_j[i]:>10.4g}  {names[i]}"
        )
    if system.n_devices > MAX_ROWS:
        lines.append(
            f"... {system.n_devices - MAX_ROWS} more devices; max T = "
            f"{c.latency_s.max():.4g} s, max E/E0 = "
            f"{(c.energy_j / system.energy_budget_j).max():.4f}"
        )
    return "\n".join(lines)
