"""Device traces: each device's availability, clock cap and distance, round by round.

A trace is what a simulator replays instead of assuming every device is there, at full
clock and at its placement's distance, every round. It is a CSV file with a header:

``device``
    The device, 0..I-1 (required).
``round``
    The round, numbered as in the records: 1 is the first training round (required).
``available``
    1: the device can take part in the round; 0: it is offline and is left out before the
    solver runs, so the allocation is made for the others.
``clock_cap_hz``
    A cap on the device's CPU clock for the round [Hz] (thermal throttling, a power-saving
    mode): its f_max is the lesser of the two.
``distance_m``
    The device's distance to the server for the round [m]: its large-scale gain follows
    the path-loss law instead of its placement's (fading is drawn on top, as always).
``gain``
    The device's large-scale power gain for the round (linear), in place of
    ``distance_m`` for a trace that measured gains.

Every column but ``device`` and ``round`` may be absent, and a cell may be empty; a device
or round that is not listed, or a field left empty, keeps its default (available, no cap,
the placement's channel). ``distance_m`` and ``gain`` exclude each other. A bad trace is
refused in one line that names the file, the row (the file's line number) and the field.

:func:`synthesize` draws a trace offline: on/off Markov availability, random-waypoint
mobility in a round cell around the server, and clock caps drawn per device and round.
:func:`read_fedscale` maps FedScale's client behaviour and device capacity traces onto the
same fields.
"""

from __future__ import annotations

import csv
import math
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fsl_opt.errors import ConfigError, file_boundary

#: The columns a trace may have, the first two required.
KEYS = ("device", "round")
FIELDS = ("available", "clock_cap_hz", "distance_m", "gain")


@dataclass(frozen=True)
class RoundView:
    """What a trace says about every device in one round (defaults where it is silent).

    Attributes
    ----------
    available : (I,) bool array
        False for a device the trace marks offline.
    clock_cap_hz : (I,) array
        The clock cap (inf: none).
    distance_m, gain : (I,) arrays
        The distance or large-scale gain for the round (nan: the placement's).
    """

    available: NDArray[np.bool_]
    clock_cap_hz: NDArray[np.float64]
    distance_m: NDArray[np.float64]
    gain: NDArray[np.float64]


#: The largest run a trace (or a run setting) may describe: rounds, devices, and
#: round-device cells of one field's table (8 bytes each: 800 MB), so that a file naming
#: round 10**9 is refused before its tables are allocated.
MAX_ROUNDS = MAX_DEVICES = 10**6
MAX_CELLS = 10**8
#: The largest cell a synthetic trace draws positions in (metres; far beyond any radio's).
MAX_CELL_RADIUS_M = 1e7


def check_extent(rounds: int, devices: int, source: str) -> None:
    """Refuse a trace of more rounds, devices or cells than :data:`MAX_ROUNDS`,
    :data:`MAX_DEVICES` and :data:`MAX_CELLS` (``source`` names where they came from)."""
    if rounds > MAX_ROUNDS or devices > MAX_DEVICES or rounds * devices > MAX_CELLS:
        raise ConfigError(
            f"{source}: {rounds} rounds x {devices} devices is beyond what a trace may hold "
            f"(at most {MAX_ROUNDS} rounds, {MAX_DEVICES} devices, {MAX_CELLS:.0e} "
            "round-device cells)"
        )


class DeviceTrace:
    """A device trace held as one (rounds, devices) table per field (nan: not given).

    Build one with :meth:`read_csv` or :func:`synthesize`; :meth:`at` gives a round's view.
    """

    def __init__(
        self,
        tables: dict[str, NDArray[np.float64]],
        source: str = "trace",
        first_row: dict[int, int] | None = None,
    ) -> None:
        unknown = set(tables) - set(FIELDS)
        if unknown:
            raise ConfigError(f"{source}: unknown fields {sorted(unknown)}")
        shapes = {t.shape for t in tables.values()}
        if len(shapes) > 1:
            raise ConfigError(f"{source}: the fields' tables differ in shape ({shapes})")
        self.tables = tables
        self.source = source
        #: For each device, the line of its first row in the file (for error messages).
        self.first_row = first_row or {}
        self.rounds, self.devices = next(iter(shapes)) if shapes else (0, 0)

    @property
    def fields(self) -> tuple[str, ...]:
        """The fields this trace gives, in :data:`FIELDS` order."""
        return tuple(f for f in FIELDS if f in self.tables)

    def check_devices(self, n_devices: int) -> None:
        """Refuse a trace that names a device the run does not have (naming its row)."""
        if self.devices > n_devices:
            device = self.devices - 1
            row = self.first_row.get(device)
            where = f"row {row}: " if row is not None else ""
            raise ConfigError(
                f"{self.source}: {where}device = {device}: the run has devices "
                f"0..{n_devices - 1} (devices = {n_devices})"
            )

    def at(self, rnd: int, n_devices: int) -> RoundView:
        """Round ``rnd``'s view of ``n_devices`` devices."""
        self.check_devices(n_devices)

        def column(field: str) -> NDArray[np.float64]:
            out = np.full(n_devices, np.nan)
            table = self.tables.get(field)
            if table is not None and 1 <= rnd <= self.rounds:
                out[: self.devices] = table[rnd - 1]
            return out

        available = column("available")
        cap = column("clock_cap_hz")
        return RoundView(
            available=~(available == 0.0),
            clock_cap_hz=np.where(np.isnan(cap), np.inf, cap),
            distance_m=column("distance_m"),
            gain=column("gain"),
        )

    @classmethod
    def read_csv(cls, path: str | Path) -> DeviceTrace:
        """Read a trace file (format in this module's docstring)."""
        path = Path(path)
        with file_boundary(path, "read the device trace"):
            text = path.read_text(encoding="utf-8-sig")
        reader = csv.reader(text.splitlines())
        header = next(reader, None)
        if header is None:
            raise ConfigError(f"{path}: empty; expected a header with device and round")
        names = [h.strip() for h in header]
        for name in names:
            if name not in KEYS + FIELDS:
                raise ConfigError(
                    f"{path}: row 1: unknown column {name!r}: expected device, round and any "
                    f"of {', '.join(FIELDS)}"
                )
        missing = [k for k in KEYS if k not in names]
        if missing:
            raise ConfigError(f"{path}: row 1: the header lacks {' and '.join(missing)}")
        if len(set(names)) != len(names):
            raise ConfigError(f"{path}: row 1: a column is named twice")
        if "distance_m" in names and "gain" in names:
            raise ConfigError(f"{path}: row 1: give distance_m or gain, not both")
        fields = [n for n in FIELDS if n in names]
        cells: dict[tuple[int, int], tuple[int, dict[str, float]]] = {}
        first_row: dict[int, int] = {}
        for line, row in enumerate(reader, start=2):
            if not any(c.strip() for c in row):
                continue
            if len(row) != len(names):
                raise ConfigError(
                    f"{path}: row {line}: {len(row)} cells, the header has {len(names)}"
                )
            values = dict(zip(names, (c.strip() for c in row), strict=True))
            device = _integer(path, line, "device", values["device"], 0)
            rnd = _integer(path, line, "round", values["round"], 1)
            parsed = {f: _field(path, line, f, values[f]) for f in fields if values[f] != ""}
            if (device, rnd) in cells:
                raise ConfigError(
                    f"{path}: row {line}: device {device}, round {rnd} is already given in "
                    f"row {cells[device, rnd][0]}"
                )
            cells[device, rnd] = (line, parsed)
            first_row.setdefault(device, line)
        if not cells:
            return cls({f: np.full((0, 0), np.nan) for f in fields}, str(path))
        rounds = max(r for _, r in cells)
        devices = max(d for d, _ in cells) + 1
        check_extent(rounds, devices, str(path))
        tables = {f: np.full((rounds, devices), np.nan) for f in fields}
        for (device, rnd), (_, parsed) in cells.items():
            for f, v in parsed.items():
                tables[f][rnd - 1, device] = v
        return cls(tables, str(path), first_row)

    def to_csv(self, path: str | Path) -> None:
        """Write the trace in the format :meth:`read_csv` reads (every device and round)."""
        fields = self.fields
        lines = [",".join(KEYS + fields)]
        for rnd in range(1, self.rounds + 1):
            for device in range(self.devices):
                cells = [str(device), str(rnd)]
                for f in fields:
                    v = float(self.tables[f][rnd - 1, device])
                    cells.append("" if math.isnan(v) else _number(f, v))
                lines.append(",".join(cells))
        Path(path).write_text("\n".join(lines) + "\n")


def _number(field: str, value: float) -> str:
    if field == "available":
        return str(int(value))
    return repr(value)


def _integer(path: Path, line: int, field: str, cell: str, least: int) -> int:
    try:
        value = int(cell)
    except ValueError:
        raise ConfigError(
            f"{path}: row {line}: {field} = {cell!r}: expected an integer >= {least}"
        ) from None
    if value < least:
        raise ConfigError(f"{path}: row {line}: {field} = {value}: expected >= {least}")
    return value


def _field(path: Path, line: int, field: str, cell: str) -> float:
    if field == "available":
        if cell not in ("0", "1"):
            raise ConfigError(f"{path}: row {line}: available = {cell!r}: expected 0 or 1")
        return float(cell)
    try:
        value = float(cell)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        unit = {"clock_cap_hz": " [Hz]", "distance_m": " [m]", "gain": " (linear)"}[field]
        raise ConfigError(
            f"{path}: row {line}: {field} = {cell!r}: expected a finite number > 0{unit}"
        )
    return value


def synthesize(
    devices: int,
    rounds: int,
    rng: np.random.Generator,
    availability: float = 0.7,
    mean_on_rounds: float = 5.0,
    cell_radius_m: float = 250.0,
    min_distance_m: float = 50.0,
    speed_m: float = 20.0,
    clock_cap_hz: tuple[float, float] | None = None,
) -> DeviceTrace:
    """A synthetic trace: on/off Markov availability, random-waypoint mobility, clock caps.

    Parameters
    ----------
    availability : float
        The long-run share of rounds a device is available (the chain's stationary
        probability of "on"), in (0, 1].
    mean_on_rounds : float
        The mean number of rounds an available device stays available (>= 1): it goes off
        with probability 1 / mean_on_rounds a round, and comes back with the probability
        that keeps ``availability``.
    cell_radius_m, min_distance_m : float
        Devices move in the ring between these distances around the server.
    speed_m : float
        How far a device moves in a round toward its current waypoint (a new uniform
        point of the ring when reached).
    clock_cap_hz : (low, high), optional
        Each device's clock cap each round, uniform in [low, high] Hz (none: no cap).
    """
    if devices < 1 or rounds < 1:
        raise ConfigError(f"devices = {devices}, rounds = {rounds}: expected at least 1 each")
    check_extent(rounds, devices, "trace synth")
    if not 0.0 < availability <= 1.0:
        raise ConfigError(f"availability = {availability}: expected a share in (0, 1]")
    if mean_on_rounds < 1.0:
        raise ConfigError(f"mean_on_rounds = {mean_on_rounds}: expected >= 1")
    # Always available: never off (the chain's mean time on is then unbounded).
    p_off = 0.0 if availability == 1.0 else 1.0 / mean_on_rounds
    p_on = 1.0 if availability == 1.0 else p_off * availability / (1.0 - availability)
    if p_on > 1.0:
        raise ConfigError(
            f"availability = {availability} with mean_on_rounds = {mean_on_rounds}: a device "
            f"would have to come back more than surely; raise mean_on_rounds to at least "
            f"{availability / (1.0 - availability):.3g}"
        )
    if not 0.0 < min_distance_m < cell_radius_m <= MAX_CELL_RADIUS_M:
        raise ConfigError(
            f"min_distance_m = {min_distance_m}, cell_radius_m = {cell_radius_m}: expected "
            f"0 < min_distance_m < cell_radius_m <= {MAX_CELL_RADIUS_M:g}"
        )
    if not 0 <= speed_m <= MAX_CELL_RADIUS_M:
        raise ConfigError(f"speed_m = {speed_m}: expected >= 0 and <= {MAX_CELL_RADIUS_M:g}")
    if clock_cap_hz is not None and not 0.0 < clock_cap_hz[0] <= clock_cap_hz[1]:
        raise ConfigError(f"clock_cap_hz = {clock_cap_hz}: expected 0 < low <= high")
    on = np.empty((rounds, devices), dtype=bool)
    on[0] = rng.random(devices) < availability
    for t in range(1, rounds):
        stay = rng.random(devices)
        on[t] = np.where(on[t - 1], stay >= p_off, stay < p_on)

    def ring_points(n: int) -> NDArray[np.float64]:
        # Uniform over the ring's area: the radius's square is uniform.
        r = np.sqrt(rng.uniform(min_distance_m**2, cell_radius_m**2, n))
        angle = rng.uniform(0.0, 2.0 * np.pi, n)
        return np.stack([r * np.cos(angle), r * np.sin(angle)], axis=1)

    position, waypoint = ring_points(devices), ring_points(devices)
    distance = np.empty((rounds, devices))
    for t in range(rounds):
        distance[t] = np.hypot(position[:, 0], position[:, 1])
        step = waypoint - position
        length = np.hypot(step[:, 0], step[:, 1])
        arrive = length <= speed_m
        move = np.where(arrive, 1.0, speed_m / np.maximum(length, 1e-12))[:, None]
        position = position + step * move
        if arrive.any():
            waypoint[arrive] = ring_points(int(arrive.sum()))
    # A straight path between two ring points may cut inside the inner circle.
    distance = np.maximum(distance, min_distance_m)
    tables = {"available": on.astype(np.float64), "distance_m": distance}
    if clock_cap_hz is not None:
        tables["clock_cap_hz"] = rng.uniform(clock_cap_hz[0], clock_cap_hz[1], (rounds, devices))
    return DeviceTrace(tables, "synthetic trace")


# --- FedScale's traces ------------------------------------------------------------------------


class _DataOnly(pickle.Unpickler):
    """Unpickles plain data only (dicts, lists, numbers, strings): a pickle that names any
    class or function is refused instead of run (unpickling can run arbitrary code)."""

    def find_class(self, module: str, name: str) -> Any:
        raise ConfigError(f"holds a {module}.{name} object; expected plain dicts and lists")


def _load_pickle(path: Path, what: str) -> dict[Any, Any]:
    try:
        with path.open("rb") as fh:
            data = _DataOnly(fh).load()
    except ConfigError as exc:
        raise ConfigError(f"{path}: {what}: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    except Exception as exc:  # not a pickle, truncated: pickle raises many kinds
        raise ConfigError(f"{path}: not a {what} ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{path}: expected a {what}: a dict by client id, not {type(data)}")
    return data


def _entry(path: Path, client: Any, record: Any, key: str) -> Any:
    if not isinstance(record, dict) or key not in record:
        raise ConfigError(f"{path}: client {client!r}: no {key!r}")
    return record[key]


def _positive(path: Path, client: Any, record: Any, key: str) -> float:
    value = _entry(path, client, record, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{path}: client {client!r}: {key} = {value!r}: expected a number")
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{path}: client {client!r}: {key} = {value!r}: expected > 0")
    return float(value)


def _active_at(path: Path, client: Any, record: Any, times: NDArray[np.float64]) -> NDArray[Any]:
    """Whether a FedScale behaviour record is active at each time: the trace repeats with
    period ``finish_time``; the client is active within [active[j], inactive[j]]."""
    period = _positive(path, client, record, "finish_time")
    starts = np.asarray(_entry(path, client, record, "active"), dtype=np.float64)
    ends = np.asarray(_entry(path, client, record, "inactive"), dtype=np.float64)
    if starts.ndim != 1 or starts.shape != ends.shape or np.any(ends < starts):
        raise ConfigError(
            f"{path}: client {client!r}: 'active' and 'inactive' must be lists of equal "
            "length with each interval's end at or after its start"
        )
    t = np.mod(times, period)[:, None]
    return np.any((starts[None, :] <= t) & (t <= ends[None, :]), axis=1)


def read_fedscale(
    devices: int,
    rounds: int,
    round_s: float,
    behaviour: str | Path | None = None,
    capacity: str | Path | None = None,
    reference_clock_hz: float | None = None,
    link: tuple[float, float, float] | None = None,
    rng: np.random.Generator | None = None,
) -> DeviceTrace:
    """A trace from FedScale's client traces (the pickled dicts its simulator reads).

    Parameters
    ----------
    round_s : float
        Wall-clock seconds a round stands for: round r is at time (r - 1) x round_s of the
        behaviour trace.
    behaviour : path, optional
        FedScale's client behaviour trace (``client_behave_trace``): by client id, a dict
        with ``active`` and ``inactive`` (the start and end times [s] of the client's
        active intervals) and ``finish_time`` (the trace's length [s]; it repeats).
        Gives ``available``: 1 when the round's time falls in an active interval.
    capacity : path, optional
        FedScale's client device capacity (``client_device_capacity``): by client id, a
        dict with ``computation`` (ms per sample of inference) and ``communication``
        (kbit/s).
    reference_clock_hz : float, optional
        With ``capacity``: the clock cap of a device as fast as the chosen clients' median;
        a device k times slower gets reference / k (``clock_cap_hz``).
    link : (bandwidth_hz, tx_power_w, noise_w), optional
        With ``capacity``: the uplink whose Shannon rate B log2(1 + p g / N) equals the
        client's ``communication`` rate gives its large-scale ``gain``
        g = (2^(rate / B) - 1) N / p.
    rng : numpy.random.Generator, optional
        Choose ``devices`` clients at random; default the lowest client ids, in order.
    """
    if behaviour is None and capacity is None:
        raise ConfigError("give a FedScale behaviour trace, a capacity trace, or both")
    check_extent(rounds, devices, "trace fedscale")
    if reference_clock_hz is not None and not (
        math.isfinite(reference_clock_hz) and reference_clock_hz > 0
    ):
        raise ConfigError(
            f"reference clock = {reference_clock_hz / 1e9:g} GHz: expected a clock > 0"
        )
    if not (math.isfinite(round_s) and round_s > 0):
        raise ConfigError(f"round_s = {round_s}: expected seconds > 0")
    files = {}
    if behaviour is not None:
        files["behaviour"] = (Path(behaviour), _load_pickle(Path(behaviour), "behaviour trace"))
    if capacity is not None:
        files["capacity"] = (Path(capacity), _load_pickle(Path(capacity), "capacity trace"))
    ids = sorted(set.intersection(*(set(data) for _, data in files.values())), key=repr)
    if len(ids) < devices:
        raise ConfigError(
            f"{' and '.join(str(p) for p, _ in files.values())}: {len(ids)} clients in "
            f"common, fewer than devices = {devices}"
        )
    if rng is not None:
        ids = [ids[i] for i in sorted(rng.choice(len(ids), devices, replace=False))]
    chosen = ids[:devices]
    tables: dict[str, NDArray[np.float64]] = {}
    if "behaviour" in files:
        path, data = files["behaviour"]
        times = np.arange(rounds, dtype=np.float64) * round_s
        tables["available"] = np.stack(
            [_active_at(path, c, data[c], times) for c in chosen], axis=1
        ).astype(np.float64)
    if "capacity" in files:
        path, data = files["capacity"]
        if reference_clock_hz is not None:
            ms = np.array([_positive(path, c, data[c], "computation") for c in chosen])
            cap = reference_clock_hz * np.median(ms) / ms
            tables["clock_cap_hz"] = np.broadcast_to(cap, (rounds, devices)).copy()
        if link is not None:
            bandwidth, power, noise = link
            kbps = np.array([_positive(path, c, data[c], "communication") for c in chosen])
            gain = np.expm1(kbps * 1e3 / bandwidth * math.log(2.0)) * noise / power
            tables["gain"] = np.broadcast_to(gain, (rounds, devices)).copy()
    if not tables:
        raise ConfigError(
            "a capacity trace alone maps onto nothing: give reference_clock_hz (clock caps), "
            "link (gains), or a behaviour trace"
        )
    source = " and ".join(str(p) for p, _ in files.values())
    return DeviceTrace(tables, f"FedScale trace {source}")
