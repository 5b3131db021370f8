"""fsl-opt trace: device availability and speed traces (FedScale, synthetic)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from fsl_opt.cli.common import (
    seed_arg,
)
from fsl_opt.files import new_file, write_atomic


def _pair(text: str) -> tuple[float, float]:
    """LOW,HIGH: two numbers."""
    try:
        low, high = (float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected LOW,HIGH such as 0.5,1.0") from None
    return low, high


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "trace",
        help="device traces: draw a synthetic one (availability, mobility, clock caps)",
        description="Device traces replayed by fsl-opt train/plan --trace FILE (format in "
        "docs/traces.md).",
    )
    what = p.add_subparsers(dest="trace_command", required=True)
    s = what.add_parser(
        "synth",
        help="draw a synthetic trace, offline and seeded",
        description="A CSV trace for DEVICES x ROUNDS: on/off Markov availability (long-run "
        "share --availability, mean time on --mean-on-rounds), random-waypoint mobility "
        "in the ring between --min-distance-m and --cell-radius-m around the server "
        "(--speed-m a round), and clock caps uniform in --clock-cap-ghz LOW,HIGH per "
        "device and round (none by default).",
    )
    _add_trace_shape(s)
    s.add_argument("--seed", type=seed_arg, default=0, help="the trace's own seed (default 0)")
    s.add_argument("--availability", type=float, default=0.7, help="default 0.7")
    s.add_argument("--mean-on-rounds", type=float, default=5.0, help="default 5")
    s.add_argument("--cell-radius-m", type=float, default=250.0, help="default 250")
    s.add_argument("--min-distance-m", type=float, default=50.0, help="default 50")
    s.add_argument("--speed-m", type=float, default=20.0, help="metres a round, default 20")
    s.add_argument("--clock-cap-ghz", type=_pair, help="LOW,HIGH in GHz (default: no cap)")
    _add_trace_out(s)
    s.set_defaults(run=_run_synth)
    f = what.add_parser(
        "fedscale",
        help="map FedScale's client behaviour and device capacity traces onto a trace",
        description="A CSV trace from FedScale's pickled client traces (downloaded by you; "
        "only plain data is unpickled). Behaviour: a device is available in round r when "
        "time (r - 1) x --round-s falls in one of its client's active intervals. Capacity: "
        "with --reference-clock-ghz, a device k times slower than the median client gets "
        "a clock cap of that clock / k; its communication rate gives a large-scale gain "
        "through the Shannon rate of the --preset's uplink (bandwidth, power, noise).",
    )
    _add_trace_shape(f)
    f.add_argument("--round-s", type=float, required=True, help="seconds a round stands for")
    f.add_argument("--behaviour", help="FedScale's client_behave_trace (pickle)")
    f.add_argument("--capacity", help="FedScale's client_device_capacity (pickle)")
    f.add_argument("--reference-clock-ghz", type=float, help="the median client's clock cap")
    f.add_argument("--preset", default="calibrated", help="whose uplink maps rates to gains")
    f.add_argument(
        "--sample-seed",
        type=seed_arg,
        help="choose the clients at random with this seed (default: the lowest client ids)",
    )
    _add_trace_out(f)
    f.set_defaults(run=_run_fedscale)


def _add_trace_shape(p: argparse.ArgumentParser) -> None:
    p.add_argument("--devices", type=int, required=True, help="devices of the run")
    p.add_argument("--rounds", type=int, required=True, help="rounds to cover")


def _add_trace_out(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="the CSV file to write (must not exist)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def _trace_out(args: argparse.Namespace) -> Path:
    """The trace file to write: a .csv, not there yet (or --overwrite)."""
    return new_file(args.out, overwrite=args.overwrite, suffix=".csv")


def _write_trace(trace: Any, out: Path, args: argparse.Namespace, details: str) -> None:
    """Write ``trace`` to ``out`` (its folder made) and say what it holds."""
    write_atomic(out, trace.to_csv)
    print(f"trace: {out} ({args.devices} devices x {args.rounds} rounds): {details}")


def _run_fedscale(args: argparse.Namespace) -> int:
    from fsl_opt.problem.presets import get_preset
    from fsl_opt.problem.trace import read_fedscale

    out = _trace_out(args)
    link = None
    if args.capacity:  # the preset's uplink: its first device's band and power, its noise
        preset = get_preset(args.preset)
        one = preset.system(preset.place(1, np.random.default_rng(0)), np.ones(1), np.ones(1))
        link = (float(one.bandwidth_hz[0]), float(one.tx_power_w[0]), float(one.noise_w))
    clock = None if args.reference_clock_ghz is None else args.reference_clock_ghz * 1e9
    trace = read_fedscale(
        args.devices,
        args.rounds,
        args.round_s,
        behaviour=args.behaviour,
        capacity=args.capacity,
        reference_clock_hz=clock,
        link=link,
        rng=None if args.sample_seed is None else np.random.default_rng(args.sample_seed),
    )
    details = f"fields {', '.join(trace.fields)}"
    if "available" in trace.tables:
        details += f", available {trace.tables['available'].mean():.1%} of device-rounds"
    _write_trace(trace, out, args, details)
    return 0


def _run_synth(args: argparse.Namespace) -> int:
    from fsl_opt.problem.trace import synthesize

    out = _trace_out(args)
    cap = None
    if args.clock_cap_ghz is not None:
        cap = (args.clock_cap_ghz[0] * 1e9, args.clock_cap_ghz[1] * 1e9)
    trace = synthesize(
        args.devices,
        args.rounds,
        np.random.default_rng(args.seed),
        availability=args.availability,
        mean_on_rounds=args.mean_on_rounds,
        cell_radius_m=args.cell_radius_m,
        min_distance_m=args.min_distance_m,
        speed_m=args.speed_m,
        clock_cap_hz=cap,
    )
    on, d = trace.tables["available"], trace.tables["distance_m"]
    _write_trace(
        trace,
        out,
        args,
        f"available {on.mean():.1%} of device-rounds, distance {d.min():.0f}-{d.max():.0f} m "
        f"(median {np.median(d):.0f} m)",
    )
    return 0
