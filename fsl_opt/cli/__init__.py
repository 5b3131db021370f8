"""The ``fsl-opt`` command line: ``solve``, ``bench``, ``train``, ``plan``, ``experiment``,
``evaluate``, ``plot``, ``trace``, ``calibrate``, ``adopt``, ``credentials``,
``fit-accuracy``.

Bad input ends with one line on stderr naming the problem and exit status 2, never a
traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fsl_opt.cli import fit_accuracy
from fsl_opt.errors import ConfigError
from fsl_opt.files import new_file, write_atomic

#: Exit status of ``fsl-opt solve`` by result status (2 is bad input).
EXIT_CODES = {"optimal": 0, "error": 1, "infeasible": 3, "limit": 4}


def _seed(text: str) -> int:
    """A seed: an integer >= 0 (numpy's generators take no negative seed)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected an integer >= 0") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value}: expected an integer >= 0")
    return value


def _devices(text: str) -> int:
    """A device count: an integer from 1 to the largest run a setting may describe."""
    from fsl_opt.problem.trace import MAX_DEVICES

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected an integer >= 1") from None
    if not 1 <= value <= MAX_DEVICES:
        raise argparse.ArgumentTypeError(f"{value}: expected an integer >= 1 and <= {MAX_DEVICES}")
    return value


def _add_solve(sub: argparse._SubParsersAction) -> None:
    from channels import CHANNEL_MODELS
    from fsl_opt.problem.system import OBJECTIVES
    from solvers import METHODS

    p = sub.add_parser(
        "solve",
        help="solve one round's rank and frequencies",
        description="Solve the LoRA rank and CPU frequencies of one round.",
    )
    p.add_argument("system", nargs="?", help="SYSTEM.toml (see README); or use --preset")
    p.add_argument("--preset", help="paper or calibrated: draw a system instead of reading one")
    p.add_argument(
        "--method",
        default="auto",
        help="auto (bisection for the paper's problem, per_device for the extended one) "
        f"or one of: {', '.join(METHODS[1:])}",
    )
    p.add_argument("--T0", type=float, dest="latency_s", help="per-round deadline [s]")
    p.add_argument("--E0", type=float, dest="energy_budget_j", help="energy budget per device [J]")
    p.add_argument("--devices", type=_devices, default=3, help="devices to draw with --preset")
    p.add_argument(
        "--channel",
        default="rayleigh",
        choices=CHANNEL_MODELS,
        help="with --preset: the fading model of the drawn round",
    )
    p.add_argument(
        "--seed", type=_seed, default=0, help="seed of the device and channel draws (>= 0)"
    )
    p.add_argument(
        "--objective",
        choices=OBJECTIVES,
        help="what to maximize: one shared rank, the weighted sum of the devices' ranks "
        "or of log(1 + rank) (per-device ranks), or the predicted accuracy gain of the "
        "round (accuracy: needs --accuracy-model)",
    )
    p.add_argument(
        "--accuracy-model",
        metavar="FILE",
        help="an accuracy model (fsl-opt fit-accuracy): objective accuracy values each "
        "device's round by it, at the start of a run (no round trained yet), each device "
        "bringing its samples once",
    )
    p.add_argument(
        "--bandwidth-total-hz",
        type=float,
        help="a bandwidth pool shared by the devices [Hz]; each device's own band becomes the "
        "most it may take",
    )
    p.add_argument(
        "--noise-psd-w-per-hz",
        type=float,
        help="with a pool: the noise per Hz (default: the system's noise over its per-device "
        "band, where every device has the same band)",
    )
    p.add_argument("--min-devices", type=int, help="how many devices must take part (default: all)")
    p.add_argument(
        "--power-control",
        action="store_true",
        help="each device chooses its uplink power (up to its tx_power_w) with its clock "
        "(per_device; no pool)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="solver option, e.g. --option levels=32 --option reallocate=false "
        "(milp) or --option solver=SCS (bnb); values are TOML",
    )
    p.set_defaults(run=_run_solve)


def _solver_options(items: list[str]) -> dict[str, Any]:
    from fsl_opt.problem.system_file import tomllib

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--option {item!r}: expected KEY=VALUE")
        try:
            out[key.strip()] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = value  # a bare word: a string
    return out


def _run_solve(args: argparse.Namespace) -> int:
    from solvers import solve

    rng = np.random.default_rng(args.seed)
    if args.system is not None and args.preset is not None:
        raise ConfigError("give either a SYSTEM.toml path or --preset NAME, not both")
    if args.system is None and args.preset is None:
        raise ConfigError("give a SYSTEM.toml path or --preset NAME (e.g. --preset paper)")
    placement: dict[str, Any] | None = None
    if args.preset is not None:
        from channels import preset_round
        from fsl_opt.problem.presets import get_preset

        system, refs = preset_round(
            get_preset(args.preset),
            args.devices,
            rng,
            channel=args.channel,
            latency_s=args.latency_s,
            energy_budget_j=args.energy_budget_j,
        )
        placement = refs.to_dict()
    else:
        from fsl_opt.problem.system_file import load_system

        system = load_system(args.system)
        if args.latency_s is not None:
            system = system.replace(latency_s=args.latency_s)
        if args.energy_budget_j is not None:
            system = system.replace(energy_budget_j=np.full(system.n_devices, args.energy_budget_j))
    system = _extend(system, args)
    with np.errstate(all="ignore"):  # degenerate inputs (a zero rate) are judged, not warned
        result = solve(system, args.method, rng=rng, **_solver_options(args.option))
    if args.json:
        out = result.to_dict()
        if placement is not None:
            out["placement"] = placement
        print(json.dumps(out, default=_json_default))
    else:
        from fsl_opt.cli.report import result_table

        print(result_table(system, result))
        if placement is not None:
            print(
                f"references of this placement at its mean channel, rank "
                f"{placement['reference_rank']}: T_ref = {placement['t_ref_s']:.4g} s, "
                f"E_ref = {placement['e_ref_j']:.4g} J"
            )
    return EXIT_CODES[result.status]


def _extend(system: Any, args: argparse.Namespace) -> Any:
    """The system with the extended problem's flags applied (objective, pool, selection)."""
    changes: dict[str, Any] = {}
    if args.objective is not None:
        changes["objective"] = args.objective
    if (args.objective == "accuracy") != (args.accuracy_model is not None):
        raise ConfigError(
            "--objective accuracy needs --accuracy-model FILE"
            if args.accuracy_model is None
            else "--accuracy-model is used by --objective accuracy only: give both"
        )
    if args.accuracy_model is not None:
        from fsl_opt.problem.accuracy import AccuracyModel, Progress

        model = AccuracyModel.load(args.accuracy_model)
        changes["device_value"] = Progress(model, system.samples).values()
        changes["rank_half"] = model.rank_half
    if args.min_devices is not None:
        if not 1 <= args.min_devices <= system.n_devices:
            raise ConfigError(
                f"--min-devices {args.min_devices}: expected 1..{system.n_devices} (the devices)"
            )
        changes["min_devices"] = args.min_devices
    if args.noise_psd_w_per_hz is not None and args.bandwidth_total_hz is None:
        if system.bandwidth_total_hz is None:
            raise ConfigError("--noise-psd-w-per-hz needs a pool: give --bandwidth-total-hz too")
        changes["noise_psd_w_per_hz"] = args.noise_psd_w_per_hz
    if args.power_control:
        changes["power_control"] = True
    system = system.replace(**changes) if changes else system
    if args.bandwidth_total_hz is not None:
        from fsl_opt.problem.pool import with_pool

        system = with_pool(system, args.bandwidth_total_hz, args.noise_psd_w_per_hz)
    return system


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def _add_bench(sub: argparse._SubParsersAction) -> None:
    from experiments import registry

    benches = registry.entries("bench")
    p = sub.add_parser(
        "bench",
        help=f"benchmarks: {', '.join(benches)}",
        description="; ".join(f"{n}: {e.summary}" for n, e in benches.items()),
    )
    p.add_argument("what", choices=list(benches), help="which benchmark")
    _add_output(p, "runs/bench/WHAT")
    p.add_argument("--quick", action="store_true", help="small sizes, few instances (seconds)")
    p.add_argument("--seed", type=_seed, help="solvers: the instances' seed (default 0; >= 0)")
    p.add_argument(
        "--parts",
        help="training: comma-separated parts among round,speed,memory,masks,evaluation,ops; "
        "per-device: among scaling,policies,knapsack,milp,pool-scale (default: all)",
    )
    p.add_argument(
        "--torch-device",
        dest="torch_device",
        help="training: where the round profile runs (cpu, cuda, auto; default cpu)",
    )
    p.add_argument(
        "--model",
        dest="model_name",
        help="training: the round profile's encoder (default minilm; e.g. "
        "random:roberta-base, offline)",
    )
    p.set_defaults(run=_run_bench)


def _add_output(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--out", help=f"output folder (default {default})")
    p.add_argument(
        "--publish",
        action="store_true",
        help="write into the committed results, experiments/results/NAME (the only way "
        "to write there besides naming it with --out)",
    )


def _output(args: argparse.Namespace, name: str, default: str, kind: str = "experiment") -> Path:
    """Where a benchmark or experiment writes: claimed as a ``kind`` folder first."""
    from fsl_opt.federation import runfolder

    if args.out and args.publish:
        raise ConfigError("give --out or --publish, not both")
    out = Path(args.out or (f"experiments/results/{name}" if args.publish else default))
    runfolder.prepare(out, kind, name=name)
    return out


def _run_bench(args: argparse.Namespace) -> int:
    from experiments import registry

    entry = registry.entries("bench")[args.what]
    if args.torch_device is not None:
        from fsl_opt.federation.settings import check_torch_device

        check_torch_device(args.torch_device, "--torch-device")
    options = {
        "quick": args.quick or None,
        "seed": args.seed,
        "parts": tuple(args.parts.split(",")) if args.parts else None,
        "torch_device": args.torch_device,
        "model_name": args.model_name,
    }
    entry.check(options)  # before the output folder is made
    out = _output(args, args.what, f"runs/bench/{args.what}", kind="benchmark")
    entry.run(out, options)
    print(f"results: {out}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line, like every other error of fsl-opt."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def _add_run_flags(p: argparse.ArgumentParser, drawn: str) -> None:
    """The flags ``train`` and ``plan`` share beside the run settings."""
    p.add_argument("--config", help="run configuration (TOML); flags override it")
    p.add_argument(
        "--overwrite", action="store_true", help="delete --out first (only a fsl-opt run folder)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--no-plot", action="store_true", help=f"do not draw {drawn}")


def _add_train(sub: argparse._SubParsersAction) -> None:
    from fsl_opt.federation.settings import add_arguments

    p = sub.add_parser(
        "train",
        help="federated LoRA fine-tuning driven by the solver",
        description="Run federated LoRA rounds; the solver picks rank and "
        "frequencies each round. Settings: the defaults, then --config FILE, then flags "
        "(every flag is a run setting; 'none' unsets an optional one).",
    )
    _add_run_flags(p, "run.png at the end of the run")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    add_arguments(p)
    p.set_defaults(run=_run_train)


def _add_plan(sub: argparse._SubParsersAction) -> None:
    from fsl_opt.federation.settings import PLANNER_SETTINGS, add_arguments

    p = sub.add_parser(
        "plan",
        help="the planner alone: each round's ranks, clocks and modeled costs, no training",
        description="Plan every round of a run as fsl-opt train would (same population, "
        "channels, budgets and policy for the same settings and seed) without training: "
        "writes config.toml, log.jsonl and log.csv (ranks, clocks, bandwidths, modeled "
        "latency and energy per device, energy and time left, the policy's queues) into "
        "--out, and plan.png. The flags are fsl-opt train's that concern the planner.",
    )
    _add_run_flags(p, "plan.png")
    p.add_argument(
        "--resume",
        action="store_true",
        help="refused with the reason: a plan is made again whole (use --overwrite)",
    )
    add_arguments(p, only=PLANNER_SETTINGS)
    p.set_defaults(run=_run_plan)


def _run_plan(args: argparse.Namespace) -> int:
    import time

    from fsl_opt.federation.plan_run import plan
    from fsl_opt.federation.settings import load_config, overrides_from_args

    if args.resume:
        raise ConfigError(
            "plan --resume: a plan is not resumed; it trains nothing and is made again whole "
            "in seconds to minutes (pass --overwrite to plan into the same folder)"
        )
    base, given = load_config(args.config), overrides_from_args(args)
    if (
        given.get("objective", base.objective) != "shared"
        and "aggregation" not in given
        and base.aggregation == "fedavg"
    ):
        # A plan aggregates nothing; it models what each device downloads, and FedAvg (one
        # rank) cannot hold different ranks: the per-device default, said.
        given["aggregation"] = "zero_pad"
        print("aggregation: zero_pad (per-device ranks; give --aggregation to model another)")
    cfg = base.replace(**given)
    started = time.perf_counter()
    records = plan(cfg, overwrite=args.overwrite, progress=not args.quiet)
    took = time.perf_counter() - started
    trained = [r for r in records if r.get("selected_devices")]
    energy = sum(r.get("total_energy_j") or 0.0 for r in records)
    latency = sum(r.get("round_latency_s") or 0.0 for r in records)
    print(
        f"planned {len(records)} rounds for {cfg.devices} devices in {took:.2f} s: "
        f"{len(trained)} trained, modeled time {latency:.6g} s, energy {energy:.6g} J "
        "(all devices)"
    )
    if records and records[-1].get("stop"):
        print(f"stopped at round {records[-1]['round']}: {records[-1]['stop']}")
    print(f"log: {cfg.out}/log.csv, {cfg.out}/log.jsonl")
    _warn_extrapolation(cfg, records)
    if not args.no_plot and records:
        from fsl_opt.federation.plot import draw_runs

        print(f"plot: {draw_runs([Path(cfg.out)], Path(cfg.out) / 'plan.png')}")
    return 0


def _warn_extrapolation(cfg: Any, records: list[dict[str, Any]]) -> None:
    """One line on stderr where a plan's predictions go beyond the accuracy model's runs."""
    from fsl_opt.federation.pilot import extrapolation

    beyond = extrapolation(cfg, records)
    if beyond:
        print(
            "fsl-opt: warning: the predicted accuracy extrapolates the accuracy model beyond "
            f"its runs: {'; '.join(beyond)}",
            file=sys.stderr,
        )


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="reload a run's exported adapters through peft and report accuracy",
        description="Load RUN/adapter into a fresh base model with peft "
        "(PeftModel.from_pretrained) and the head beside it, run every layer on the run's "
        "test split (or --data) and print accuracy and loss.",
    )
    p.add_argument("run_dir", help="a run folder (holds config.toml and adapter/)")
    p.add_argument("--data", help="evaluate on this dataset's whole test split instead")
    p.add_argument("--adapter", help="another adapter folder (default RUN/adapter)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(run=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    from fsl_opt.federation.evaluation import evaluate_run

    res = evaluate_run(Path(args.run_dir), args.data, Path(args.adapter) if args.adapter else None)
    if args.json:
        print(json.dumps(res))
    else:
        print(
            f"{res['adapter']} on {res['data']} ({res['samples']} test samples): "
            f"accuracy {res['accuracy']:.4f}, loss {res['loss']:.4f}"
        )
    return 0


def _add_plot(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plot",
        help="draw runs: accuracy against round, modeled latency and energy; ranks",
        description="One line per run folder, from its log: accuracy against the round, the "
        "cumulative modeled latency and the cumulative modeled energy, and the rank per "
        "round (per device where ranks differ).",
    )
    p.add_argument("run_dirs", nargs="+", help="run folders")
    p.add_argument(
        "--out",
        help="PNG to write (default: RUN/run.png for one run, replaced there; runs.png); "
        "an existing file is replaced only with --overwrite",
    )
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--title", help="figure title")
    p.set_defaults(run=_run_plot)


def _run_plot(args: argparse.Namespace) -> int:
    from fsl_opt.federation.plot import draw_runs
    from fsl_opt.federation.runfolder import kind_of

    folders = [Path(f) for f in args.run_dirs]
    own = None if args.out or len(folders) != 1 else folders[0] / "run.png"
    # A run's own run.png is fsl-opt's to redraw; any other file is the user's.
    replace = args.overwrite or (own is not None and kind_of(folders[0]) == "run")
    out = new_file(args.out or own or "runs.png", overwrite=replace, suffix=".png")
    print(f"plot: {draw_runs(folders, out, args.title)}")
    return 0


def _run_train(args: argparse.Namespace) -> int:
    from fsl_opt.federation.settings import load_config, overrides_from_args

    cfg = load_config(args.config).replace(**overrides_from_args(args))
    from fsl_opt.federation.loop import run
    from fsl_opt.federation.runlog import summary_table

    records = run(cfg, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet)
    print(summary_table(records))
    if records and records[-1].get("stop"):
        print(f"stopped at round {records[-1]['round']}: {records[-1]['stop']}")
    print(f"log: {cfg.out}/log.csv, {cfg.out}/log.jsonl; checkpoint: {cfg.out}/checkpoint")
    if cfg.export_adapter != "no" and (Path(cfg.out) / "adapter").is_dir():
        print(f"adapter (peft format, with the head): {cfg.out}/adapter")
    _warn_extrapolation(cfg, records)
    if not args.no_plot:
        from fsl_opt.federation.plot import draw_runs

        print(f"plot: {draw_runs([Path(cfg.out)], Path(cfg.out) / 'run.png')}")
    return 0


def _add_experiment(sub: argparse._SubParsersAction) -> None:
    from experiments import registry

    experiments = registry.entries("experiment")
    p = sub.add_parser(
        "experiment",
        help="reproduce one of the paper's figures, or another registered experiment",
        description="Run an experiment: CSV, then PNG from the CSV, and summary.md. "
        "Interrupted runs resume where they stopped. "
        + "; ".join(f"{n}: {e.summary}" for n, e in experiments.items()),
    )
    p.add_argument("name", nargs="?", choices=list(experiments), help="which experiment")
    p.add_argument(
        "--all",
        action="store_true",
        help="every experiment that `make experiments` remakes, one after another: "
        + ", ".join(n for n, e in experiments.items() if e.in_all),
    )
    p.add_argument("--quick", action="store_true", help="tiny data, two rounds (< 1 minute)")
    _add_output(p, "runs/experiments/NAME, or runs/quick/NAME with --quick")
    p.add_argument("--seeds", help="comma-separated seeds (default depends on the figure)")
    p.add_argument("--model", help="e.g. roberta-base (the paper's model; needs the hub)")
    p.add_argument("--data", help="e.g. ag_news (the paper's data; needs the hub or a folder)")
    p.add_argument("--torch-device", dest="torch_device", help="cpu, cuda or auto")
    p.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        help="products of the adapted layers (default: the experiment's own, see its summary)",
    )
    p.set_defaults(run=_run_experiment)


def _run_experiment(args: argparse.Namespace) -> int:
    from experiments import registry

    experiments = registry.entries("experiment")
    if args.all == (args.name is not None):
        raise ConfigError("give one experiment NAME or --all (not both)")
    if args.all and args.out:
        raise ConfigError(
            "--all writes each experiment to its own folder: use --publish, not --out"
        )
    names = [n for n, e in experiments.items() if e.in_all] if args.all else [args.name]
    overrides = {
        k: getattr(args, k)
        for k in ("model", "data", "torch_device", "precision")
        if getattr(args, k)
    }
    try:
        seeds = [int(x) for x in args.seeds.split(",")] if args.seeds else None
    except ValueError:
        raise ConfigError(f"--seeds {args.seeds!r}: expected integers like 0,1,2") from None
    if seeds is not None and len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {args.seeds}: a seed named twice (each seed runs once)")
    options = {"quick": args.quick or None, "seeds": seeds, "overrides": overrides or None}
    for name in names:  # every one checked before the first folder is made
        experiments[name].check(options)
    for name in names:
        default = f"runs/quick/{name}" if args.quick else f"runs/experiments/{name}"
        out = _output(args, name, default)
        notes = experiments[name].run(out, options)
        for line in notes if isinstance(notes, list) else []:
            print(line)
        print(f"results: {out}")
    return 0


def _pair(text: str) -> tuple[float, float]:
    """LOW,HIGH: two numbers."""
    try:
        low, high = (float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected LOW,HIGH such as 0.5,1.0") from None
    return low, high


def _add_trace(sub: argparse._SubParsersAction) -> None:
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
    s.add_argument("--seed", type=_seed, default=0, help="the trace's own seed (default 0)")
    s.add_argument("--availability", type=float, default=0.7, help="default 0.7")
    s.add_argument("--mean-on-rounds", type=float, default=5.0, help="default 5")
    s.add_argument("--cell-radius-m", type=float, default=250.0, help="default 250")
    s.add_argument("--min-distance-m", type=float, default=50.0, help="default 50")
    s.add_argument("--speed-m", type=float, default=20.0, help="metres a round, default 20")
    s.add_argument("--clock-cap-ghz", type=_pair, help="LOW,HIGH in GHz (default: no cap)")
    _add_trace_out(s)
    s.set_defaults(run=_run_trace_synth)
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
        type=_seed,
        help="choose the clients at random with this seed (default: the lowest client ids)",
    )
    _add_trace_out(f)
    f.set_defaults(run=_run_trace_fedscale)


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


def _run_trace_fedscale(args: argparse.Namespace) -> int:
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


def _run_trace_synth(args: argparse.Namespace) -> int:
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


def _add_calibrate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate",
        help="fit the compute model to local training timed on this machine",
        description="Time one device's local round of the model at several ranks, sample "
        "counts and sequence lengths (alone, after a warm-up, the fastest of --repeats), "
        "fit eq. (2)'s compute constants and write OUT/preset.toml (load it with --preset "
        "PATH), OUT/cases.csv (modeled and measured per case, held-out cases apart) and "
        "OUT/calibration.png. Run it with nothing else on the machine.",
    )
    _add_output(p, "runs/calibrate")
    p.add_argument("--model", default="minilm", help="the encoder to time (default minilm)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per case (default 5)")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--clock-ghz", type=float, help="this machine's clock (default: /proc/cpuinfo)")
    p.add_argument(
        "--base",
        default="calibrated",
        help="the preset whose devices, radios and channel the file keeps (default calibrated)",
    )
    p.add_argument("--quick", action="store_true", help="a tiny model and small cases (seconds)")
    p.set_defaults(run=_run_calibrate)


def _run_calibrate(args: argparse.Namespace) -> int:
    from experiments.calibrate import check_options
    from experiments.calibrate import main as calibrate

    check_options(args.repeats, args.base)  # before the output folder is made
    out = _output(args, "calibrate", "runs/calibrate")
    notes = calibrate(
        out,
        model=args.model,
        repeats=args.repeats,
        precision=args.precision,
        clock_ghz=args.clock_ghz,
        base=args.base,
        quick=args.quick,
    )
    for line in notes:
        print(line)
    print(f"results: {out}")
    return 0


def _add_adopt(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "adopt",
        help="mark a run made before fsl-opt marked its folders as fsl-opt's (once)",
        description="fsl-opt writes into, resumes and deletes only folders it marked when it "
        "created them. A run folder made by an older version (config.toml and log.jsonl, no "
        ".fsl-opt marker) is adopted once with this command; nothing in it changes but the "
        "marker.",
    )
    p.add_argument("folder", help="the old run's folder")
    p.set_defaults(run=_run_adopt)


def _run_adopt(args: argparse.Namespace) -> int:
    from fsl_opt.federation import runfolder

    runfolder.adopt(Path(args.folder))
    print(f"adopted {args.folder} as a fsl-opt run folder")
    return 0


def _add_credentials(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "credentials",
        help="TLS certificates and SuperNode keys for a Flower deployment",
        description="Write into OUT a certificate authority (ca.crt, ca.key), the "
        "SuperLink's TLS certificate for the --host names (superlink.crt, superlink.key) "
        "and one authentication key pair per SuperNode (node-I.key, node-I.pub), as "
        "flower-superlink, flower-supernode and `flwr supernode register` read them "
        "(docs/flower.md). Nothing is overwritten.",
    )
    p.add_argument("--out", required=True, help="the folder to write (made if missing)")
    p.add_argument(
        "--host",
        action="append",
        required=True,
        help="an address or name the SuperLink is reached at (repeat for more)",
    )
    p.add_argument("--nodes", type=int, required=True, help="SuperNode key pairs to make")
    p.set_defaults(run=_run_credentials)


def _run_credentials(args: argparse.Namespace) -> int:
    from fsl_opt.federation.credentials import write_credentials

    written = write_credentials(args.out, args.host, args.nodes)
    print(f"credentials: {len(written)} files in {args.out} (keep ca.key off the devices)")
    return 0


def _add_gateway(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "gateway",
        help="the devices' gateway: an nginx configuration that passes the Fleet API alone",
        description="Write OUT/nginx.conf: nginx listening on --listen (the address the "
        "devices dial) with the SuperLink's certificate, passing the Fleet API (/v1/fleet/, "
        "what a SuperNode calls) to the SuperLink at --superlink (its loopback address) and "
        "refusing everything else, so that registering or unregistering node keys and "
        "starting, stopping or listing runs stay with the server's owner (docs/flower.md). "
        "Start it with nginx -p OUT -c nginx.conf.",
    )
    p.add_argument("--creds", required=True, help="the folder fsl-opt credentials wrote")
    p.add_argument("--listen", required=True, help="HOST:PORT the devices dial")
    p.add_argument("--superlink", required=True, help="the SuperLink's loopback HOST:PORT")
    p.add_argument("--out", required=True, help="the folder to write nginx.conf into")
    p.add_argument("--overwrite", action="store_true", help="replace OUT/nginx.conf")
    p.set_defaults(run=_run_gateway)


def _run_gateway(args: argparse.Namespace) -> int:
    from fsl_opt.federation.gateway import write_gateway

    path = write_gateway(args.out, args.creds, args.listen, args.superlink, args.overwrite)
    print(f"gateway: {path}; start it with: nginx -p {Path(args.out).resolve()} -c nginx.conf")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``fsl-opt``."""
    parser = _Parser(
        prog="fsl-opt",
        description="Optimizer and simulator for federated split learning with LoRA.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_solve(sub)
    _add_bench(sub)
    _add_train(sub)
    _add_plan(sub)
    _add_experiment(sub)
    _add_evaluate(sub)
    _add_plot(sub)
    _add_trace(sub)
    _add_calibrate(sub)
    _add_adopt(sub)
    _add_credentials(sub)
    _add_gateway(sub)
    fit_accuracy.add(sub)
    return parser


def one_line(message: str) -> str:
    """The message on one line: a line break or control character quoted from a user's
    file (a header with a stray quote) is shown escaped, never printed as it is."""
    return "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape").decode() for ch in message
    )


#: Seconds from a Ctrl-C to the end of the process, whatever it is waiting on.
INTERRUPT_DEADLINE_S = 15.0
INTERRUPTED = "fsl-opt: interrupted"
TERMINATED = "fsl-opt: terminated"
#: Set (to anything but empty or 0) to see the traceback of an internal error.
DEBUG_VARIABLE = "FSL_OPT_DEBUG"


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled as a Ctrl-C is (every cleanup that a KeyboardInterrupt runs runs),
    but ending with status 143 (128 + SIGTERM) and its own last line."""


@contextlib.contextmanager
def interrupt_deadline(seconds: float | None = None) -> Iterator[None]:
    """Within the block, a Ctrl-C raises KeyboardInterrupt as usual and also starts a
    deadline: if the process has not ended ``seconds`` later (default
    :data:`INTERRUPT_DEADLINE_S`), it prints :data:`INTERRUPTED` and ends with status 130.

    A KeyboardInterrupt can be held up: Flower's simulation engine, interrupted inside its
    ``with ThreadPoolExecutor`` block, waits in the executor's shutdown for worker threads
    blocked on Ray results that never come (seen in the suite, with faulthandler stacks),
    so no ``except`` ever runs. The run folder is safe at any instant (every record is
    written before its checkpoint), so ending there is what a kill would do. Outside the
    main thread, or where SIGINT is not Python's default (ignored by a shell's background
    job, or someone else's handler), nothing changes."""
    limit = INTERRUPT_DEADLINE_S if seconds is None else seconds
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return

    def expire(line: str, status: int) -> None:
        time.sleep(limit)
        print(line, file=sys.stderr, flush=True)
        os._exit(status)

    def on_interrupt(signum: int, frame: Any) -> None:
        term = signum == signal.SIGTERM
        args = (TERMINATED, 143) if term else (INTERRUPTED, 130)
        threading.Thread(
            target=expire, args=args, name="fsl-opt-interrupt-deadline", daemon=True
        ).start()
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C: as usual
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends it at once
        raise Terminated if term else KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_interrupt)
    previous_term = (
        signal.signal(signal.SIGTERM, on_interrupt)
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        else None
    )
    try:
        yield
    finally:  # whoever replaced it meanwhile (an engine), the caller's handler comes back
        signal.signal(signal.SIGINT, previous)
        if previous_term is not None:
            signal.signal(signal.SIGTERM, previous_term)


@contextlib.contextmanager
def _notes_as_lines() -> Iterator[None]:
    """Print each :class:`DataNote` as one ``fsl-opt: note:`` line (other warnings as
    Python shows them)."""
    import warnings

    from fsl_opt.errors import DataNote

    shown = warnings.showwarning

    def show(message: Any, category: Any, *rest: Any, **kw: Any) -> None:
        if issubclass(category, DataNote):
            print(f"fsl-opt: note: {one_line(str(message))}", file=sys.stderr, flush=True)
        else:
            shown(message, category, *rest, **kw)

    warnings.showwarning = show
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", DataNote)
            yield
    finally:
        warnings.showwarning = shown


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fsl-opt`` console script."""
    words = list(sys.argv[1:] if argv is None else argv)
    for n, word in enumerate(words, 1):
        try:
            word.encode("utf-8")
        except UnicodeEncodeError:
            shown = word.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            print(
                f"fsl-opt: error: argument {n} ({one_line(shown)!r}) is not UTF-8 text; "
                "settings, paths and names must be",
                file=sys.stderr,
            )
            return 2
    parser = build_parser()
    args = parser.parse_args(words)
    out = getattr(args, "out", None)
    if isinstance(out, str) and not out.strip():
        # argparse keeps '' apart from "not given", but `args.out or DEFAULT` would not
        print(f"fsl-opt: error: --out {out!r}: give a path", file=sys.stderr)
        return 2
    try:
        with interrupt_deadline(), _notes_as_lines():
            return int(args.run(args))
    except ConfigError as exc:
        print(f"fsl-opt: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        term = isinstance(exc, Terminated)
        print(TERMINATED if term else INTERRUPTED, file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        others = [t for t in threading.enumerate() if t is not threading.main_thread()]
        if "ray" in sys.modules or any(t.is_alive() and not t.daemon for t in others):
            # A backend's engine thread (Flower's ServerApp) would keep the process alive,
            # and Ray's exit hooks wait on its processes; the run folder is safe at any
            # instant (record before checkpoint, stale locks detected), so end now as a
            # kill would.
            os._exit(143 if term else 130)
        return 143 if term else 130
    except BrokenPipeError:
        # The reader went away (`fsl-opt solve --json | head`): stop quietly, and keep
        # Python from complaining while it flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except OSError as exc:
        # The last boundary: a file the run could not read or write (a full disk, a
        # read-only folder, a name too long) is one line naming it, never a traceback.
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"fsl-opt: error: {one_line(where + str(exc.strerror or exc))}", file=sys.stderr)
        return 1
    except Exception as exc:  # the boundary: a bug is one line, the traceback on request
        if os.environ.get(DEBUG_VARIABLE, "") not in ("", "0"):
            raise
        print(
            f"fsl-opt: internal error: {type(exc).__name__}: {one_line(str(exc))} "
            f"(a bug: please report it; {DEBUG_VARIABLE}=1 shows the traceback)",
            file=sys.stderr,
        )
        return 1
