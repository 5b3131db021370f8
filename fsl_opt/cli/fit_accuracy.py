"""``fsl-opt fit-accuracy RUN... --out accuracy.json``: an accuracy model from finished runs.

Every form of :mod:`fsl_opt.problem.accuracy` is fitted, each validated by leaving one
experiment out at a time (the runs of one results folder, or of one RUN argument given as
a folder of runs); the separable form that predicts held-out runs best is refitted on every
run and written. ``train``, ``plan`` and ``solve`` take the file as ``--accuracy-model``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fsl_opt.errors import ConfigError
from fsl_opt.files import new_file


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fit-accuracy",
        help="fit the accuracy model (predicted accuracy of a plan) to finished runs",
        description="Fit the accuracy model to finished run folders (config.toml and "
        "log.jsonl, as fsl-opt train and every experiment write them), print each form's "
        "fit and its leave-one-experiment-out errors, and write the best separable form "
        "to --out. A RUN may be a run folder, or a folder holding runs (an experiment's "
        "results, whose runs/ are read): the runs of one such folder are one experiment "
        "for the validation. Every run must share the model, data and learning settings.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders or experiment folders")
    p.add_argument("--out", help="the model file to write (JSON; not with --check)")
    p.add_argument(
        "--check",
        metavar="MODEL",
        help="fit nothing: how well the model file MODEL (a pilot's, say) predicts the "
        "runs RUN..., per run and per experiment (points of accuracy)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument(
        "--leave-out",
        choices=("experiment", "run"),
        default="experiment",
        help="what the validation holds out at a time: an experiment's runs (default), or "
        "each run alone (a pilot's runs, one folder)",
    )
    p.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="TEXT",
        help="leave out runs whose folder path contains TEXT (repeat for more)",
    )
    p.set_defaults(run=run)


def collect(paths: list[str], exclude: list[str]) -> list[tuple[Path, str | None]]:
    """Every run folder named or held by ``paths``, with the experiment it belongs to; of an
    experiment's results folder, the runs its table lists (those still in progress are left
    out, and said so)."""
    from experiments.tables import finished_runs

    found: list[tuple[Path, str | None]] = []
    for text in paths:
        path = Path(text)
        if not path.is_dir():
            raise ConfigError(f"{text}: no such folder")
        if (path / "log.jsonl").is_file():
            found.append((path, None))  # read_run names its experiment
            continue
        holder = path / "runs" if (path / "runs").is_dir() else path
        runs = sorted(q for q in holder.iterdir() if (q / "log.jsonl").is_file())
        if not runs:
            raise ConfigError(f"{text}: neither a run folder nor a folder of runs")
        finished = finished_runs(path)  # an experiment's table lists the runs that finished
        if finished is not None:
            going = [q.name for q in runs if q.name not in finished]
            if going:
                print(
                    f"{text}: left out {len(going)} run(s) in progress (no row in its table "
                    f"yet): {', '.join(going)}"
                )
            runs = [q for q in runs if q.name in finished]
            if not runs:
                raise ConfigError(f"{text}: no finished run yet (its table lists none)")
        found.extend((q, path.name) for q in runs)
    kept = [(p, g) for p, g in found if not any(x in str(p) for x in exclude)]
    if not kept:
        raise ConfigError("every run was excluded: nothing to fit")
    return kept


def check(args: argparse.Namespace) -> int:
    """``--check MODEL``: the model's errors on the runs (none of them fitted)."""
    from fsl_opt.federation.pilot import read_run
    from fsl_opt.problem.accuracy import AccuracyModel, HeldOut, errors

    if args.out is not None:
        raise ConfigError("--check writes nothing: leave --out out")
    model = AccuracyModel.load(args.check)
    histories = [read_run(p, g) for p, g in collect(args.runs, args.exclude)]
    for h in histories:
        model.check_scope(h.scope, h.label)
    groups = sorted({h.group for h in histories})
    scored = HeldOut(
        model.form, {g: errors(model, [h for h in histories if h.group == g]) for g in groups}
    )
    print(f"{args.check} ({model.form}) on {len(histories)} runs (|predicted - measured|, points):")
    print(
        f"  {'experiment':24} {'runs':>4} {'final mean':>10} {'final worst':>11} "
        f"{'every round':>11}"
    )
    rows = [
        *scored.groups.items(),
        ("all", (scored.final_mean, scored.final_worst, scored.round_mean, len(histories))),
    ]
    for name, (mean, worst, rounds, n) in rows:
        print(f"  {name:24} {n:>4} {100 * mean:>10.2f} {100 * worst:>11.2f} {100 * rounds:>11.2f}")
    return 0


def run(args: argparse.Namespace) -> int:
    from fsl_opt.federation.pilot import read_run, same_scope
    from fsl_opt.problem.accuracy import fit

    if args.check is not None:
        return check(args)
    if args.out is None:
        raise ConfigError("give --out FILE (the model to write), or --check MODEL")

    out = new_file(args.out, overwrite=args.overwrite)
    found = collect(args.runs, args.exclude)
    histories = [read_run(p, p.name if args.leave_out == "run" else g) for p, g in found]
    scope = same_scope(histories)
    groups = sorted({h.group for h in histories})
    what = "experiments" if args.leave_out == "experiment" else "runs held out one by one"
    print(f"fitting {len(histories)} runs ({len(groups)} {what}): {', '.join(groups)}")
    model, scores = fit(histories, scope=scope)
    if scores:
        print(f"held out one {args.leave_out} at a time (|predicted - measured| accuracy, points):")
        print(f"  {'form':16} {'final mean':>10} {'final worst':>11} {'every round':>11}")
        for s in sorted(scores, key=lambda s: s.final_mean):
            kept = " <- kept" if s.form == model.form else ""
            note = " (not separable)" if s.form.endswith("-average") else ""
            print(
                f"  {s.form:16} {100 * s.final_mean:10.2f} {100 * s.final_worst:11.2f} "
                f"{100 * s.round_mean:11.2f}{kept}{note}"
            )
        best = next(s for s in scores if s.form == model.form)
        for g, (mean, worst, rounds, n) in sorted(best.groups.items()):
            print(
                f"    {g}: {n} runs, final {100 * mean:.2f} mean / {100 * worst:.2f} worst, "
                f"every round {100 * rounds:.2f}"
            )
    else:
        print(
            "one experiment only: no held-out errors (give runs of two or more, or --leave-out run)"
        )
    print(
        f"kept {model.form}: A_max {model.ceiling:.4f}, k {model.rate:.4g} per 1000 samples, "
        f"rank half-point c {model.rank_half:.3g}, participation beta {model.participation:.3g}"
        + (f", shape {model.shape:.3g}" if model.curve == "power" else "")
        + f", untuned {model.untuned:.4f}; fit RMSE {100 * model.fit['rmse']:.2f} points"
    )
    model.save(out)
    print(f"accuracy model: {out}")
    return 0
