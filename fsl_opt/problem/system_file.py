"""Reading a system from TOML (the ``SYSTEM.toml`` schema of the README).

Three tables; a scalar in ``[devices]`` applies to every device::

    [model]    d, k, matrices_per_layer, layers, bits_per_param, upload_model, max_rank,
               cycles_per_op (optional)
    [round]    latency_s, noise_w, server_power_w; objective, bandwidth_total_hz,
               noise_psd_w_per_hz, min_devices, power_control (optional)
    [devices]  samples, omega, f_max_hz, energy_budget_j, circuit_energy_j, tx_power_w,
               bandwidth_hz, gain_ul, gain_dl; base_cycles, round_base_cycles (optional)

With a pool (``bandwidth_total_hz`` and ``noise_psd_w_per_hz``) a device's ``bandwidth_hz``
is an optional upper limit on its share (default: the whole pool) and ``noise_w`` is not
needed (the noise on a share is the density times its width).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from fsl_opt.errors import ConfigError
from fsl_opt.problem.system import System

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SCHEMA: dict[str, tuple[set[str], set[str]]] = {
    # table: (required keys, optional keys)
    "model": (
        {"d", "k", "matrices_per_layer", "layers", "bits_per_param", "upload_model", "max_rank"},
        {"cycles_per_op"},
    ),
    "round": (
        {"latency_s", "noise_w", "server_power_w"},
        {"objective", "bandwidth_total_hz", "noise_psd_w_per_hz", "min_devices", "power_control"},
    ),
    "devices": (
        {
            "samples",
            "omega",
            "f_max_hz",
            "energy_budget_j",
            "circuit_energy_j",
            "tx_power_w",
            "bandwidth_hz",
            "gain_ul",
            "gain_dl",
        },
        {"base_cycles", "round_base_cycles"},
    ),
}


#: Keys that a pool makes optional: (table, key), each with what it defaults to there.
POOL_OPTIONAL = {("round", "noise_w"), ("devices", "bandwidth_hz")}


def _has_pool(doc: dict[str, Any]) -> bool:
    body = doc.get("round")
    return isinstance(body, dict) and "bandwidth_total_hz" in body


def system_from_dict(doc: dict[str, Any], source: str = "config") -> System:
    """Build a :class:`System` from the parsed TOML tables, checking names and types."""
    unknown = set(doc) - set(SCHEMA)
    if unknown:
        raise ConfigError(
            f"{source}: unknown table [{sorted(unknown)[0]}]; expected "
            f"{', '.join(f'[{t}]' for t in SCHEMA)}"
        )
    fields: dict[str, Any] = {}
    pool = _has_pool(doc)
    for table, (required, optional) in SCHEMA.items():
        body = doc.get(table)
        if not isinstance(body, dict):
            raise ConfigError(f"{source}: missing table [{table}]")
        if pool:
            relaxed = {key for t, key in POOL_OPTIONAL if t == table}
            required, optional = required - relaxed, optional | relaxed
        missing = sorted(required - set(body))
        if missing:
            raise ConfigError(f"{source}: [{table}] is missing {', '.join(missing)}")
        extra = sorted(set(body) - required - optional)
        if extra:
            raise ConfigError(f"{source}: [{table}] has unknown key {extra[0]!r}")
        for key, value in body.items():
            if table == "devices" or key == "layers":
                if isinstance(value, list) and not all(
                    isinstance(x, (int, float)) and not isinstance(x, bool) for x in value
                ):
                    raise ConfigError(f"{source}: [{table}] {key} must be a list of numbers")
                if isinstance(value, (str, bool, dict)):
                    raise ConfigError(
                        f"{source}: [{table}] {key} = {value!r}: expected a number "
                        "or a list of numbers"
                    )
                try:
                    value = np.asarray(value, dtype=np.float64)
                except (TypeError, ValueError):
                    raise ConfigError(
                        f"{source}: [{table}] {key} = {value!r}: expected a number "
                        "or a list of numbers"
                    ) from None
            fields[key] = value
    if pool:
        _pool_defaults(fields)
    return System(**fields)


def _pool_defaults(fields: dict[str, Any]) -> None:
    """With a pool: a device may take the whole pool unless limited, and the noise on a band
    follows from the density (any reference width gives the same rates)."""
    total, psd = fields.get("bandwidth_total_hz"), fields.get("noise_psd_w_per_hz")
    if "bandwidth_hz" not in fields:
        fields["bandwidth_hz"] = total
    if (
        "noise_w" not in fields
        and isinstance(psd, (int, float))
        and isinstance(total, (int, float))
    ):
        fields["noise_w"] = float(psd) * float(total)
    if "noise_w" not in fields:  # System names the missing or bad pool key
        fields["noise_w"] = 1.0


def load_system(path: str | Path) -> System:
    """Read and validate a ``SYSTEM.toml`` file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text (a SYSTEM.toml is UTF-8)") from None
    try:
        doc = tomllib.loads(text.removeprefix("\ufeff"))  # a BOM is no statement
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: malformed TOML: {exc}") from None
    try:
        return system_from_dict(doc, str(path))
    except ConfigError as exc:
        msg = str(exc)
        raise ConfigError(msg if msg.startswith(str(path)) else f"{path}: {msg}") from None
