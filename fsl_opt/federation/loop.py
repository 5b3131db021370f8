"""The round loop every backend shares: plan, train, aggregate, evaluate, record, checkpoint.

Each round: draw channels and solve for each device's rank and clock (:class:`~fsl_opt.
federation.planner.RoundPlanner`; rank 0 leaves a device out), give every device taking part
its payload at its rank, let the backend train them (:class:`~fsl_opt.federation.backends.
Backend`), aggregate, evaluate, then append the
round's record to ``log.jsonl`` / ``log.csv`` (flushed to disk) and only then commit the
checkpoint (adapters in safetensors, the planner's RNG state; the backend writes its
devices' state beside it). A kill at any instant therefore leaves a log that is a prefix
of the uninterrupted run's and a checkpoint no newer than the log; ``resume=True`` drops
any record past the checkpoint and continues, ending where an uninterrupted run with the
same seed ends.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fsl_opt.errors import ConfigError, file_boundary
from fsl_opt.federation import runfolder
from fsl_opt.federation.backends import MEASURED_COMPUTE, Backend
from fsl_opt.federation.context import RunContext, build_context
from fsl_opt.federation.registry import backend_class
from fsl_opt.federation.runlog import (
    CHECKPOINT,
    CONFIG_FILE,
    DATA_FILE,
    LOG_JSONL,
    PLACEMENT_FILE,
    RunLog,
    check_room,
    has_checkpoint,
    load_checkpoint,
    note_provenance,
    round_record,
    save_checkpoint,
    write_json,
)
from fsl_opt.federation.settings import (
    MAY_CHANGE_ON_RESUME,
    RunConfig,
    differences,
    dump_toml,
    load_config,
)
from fsl_opt.federation.target import resolve_target
from fsl_opt.federation.workload import Workload, base_model_id, maybe_tqdm, torch_device
from fsl_opt.learning.export import save_adapter
from fsl_opt.learning.local import check_precision, evaluate
from fsl_opt.learning.lora import nbytes, state_rank


def check_runnable(cfg: RunConfig) -> None:
    """What can be refused before any engine starts, any folder is made or any model loads:
    a precision this machine cannot run, a bad trace or preset file (each a
    :class:`ConfigError`)."""
    check_precision(cfg.precision, torch_device(cfg.torch_device))
    cfg.check_input_files()


def run(
    cfg: RunConfig,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
    workload: Workload | None = None,
    backend: Backend | None = None,
    on_record: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run (or continue) a federated LoRA run; returns every record of its log.

    Parameters
    ----------
    resume : bool
        Continue the run in ``cfg.out`` from its checkpoint (its settings must match,
        except ``rounds``, which may grow).
    overwrite : bool
        Delete ``cfg.out`` first; only a folder this tool created as a run is deleted.
    stop_after : int, optional
        Stop after this round as if interrupted (tests of resume).
    workload : Workload, optional
        Reuse an already loaded workload (experiments run many seeds on one).
    backend : Backend, optional
        How devices train; default: the ``backend`` setting's, started by its
        :meth:`~fsl_opt.federation.backends.Backend.launch` (Flower's simulation engine
        for ``flower``), which drives this loop with it.
    on_record : callable, optional
        Called with each round's record once it is logged (a deployed ServerApp logs a
        line per round with it).
    """
    if resume and overwrite:
        raise ConfigError(
            "--resume continues the run in --out and --overwrite deletes it: give one of them"
        )
    if resume:
        _resumable(Path(cfg.out))  # before any engine starts or any folder is made
    check_runnable(cfg)
    # A target accuracy: its price and rounds (once: a resolved config resolves to itself).
    cfg = resolve_target(cfg, progress)
    if backend is None:
        return backend_class(cfg.backend).launch(
            cfg,
            lambda b: run(
                cfg,
                resume,
                overwrite,
                progress,
                stop_after,
                workload,
                backend=b,
                on_record=on_record,
            ),
        )
    out = Path(cfg.out)
    check_room(cfg.rounds, cfg.devices, out)
    existing = runfolder.prepare(out, "run", overwrite=overwrite, reads=cfg.input_files())
    with runfolder.lock(out):
        start = _check_existing(out, cfg, existing, resume)
        return _rounds(cfg, out, start, progress, stop_after, workload, backend, on_record)


def _bind_inputs(out: Path, cfg: RunConfig, fingerprint: str, resuming: bool) -> str | None:
    """The run's identity, binding its inputs: a fresh run draws an id and records it in
    ``data.json`` with the fingerprint of its texts and labels and the SHA-256 of every
    input file (trace, preset file, accuracy model); a resumed run must find that file and
    the same data and files, or nothing is changed. Returns the run's id (None: a run made
    before runs had one, resumed as it was)."""
    path = out / DATA_FILE
    inputs = {
        key: _sha256(p) for key, p in cfg.input_files().items() if key != "data" and p.is_file()
    }
    if not resuming:
        run_id = uuid.uuid4().hex
        write_json(
            path, {"data": cfg.data, "fingerprint": fingerprint, "run_id": run_id, "inputs": inputs}
        )
        return run_id
    if not path.is_file():
        raise ConfigError(
            f"--resume: {path} is missing, so the data and files the run started with cannot "
            "be checked; nothing was changed (restore it, or start again with --overwrite)"
        )
    with file_boundary(path, "read the fingerprints the run started with"):
        saved = json.loads(path.read_text())
    if not isinstance(saved, dict):
        raise ConfigError(f"--resume: {path} is not a fsl-opt data record; nothing was changed")
    if saved.get("fingerprint") != fingerprint:
        raise ConfigError(
            f"--resume: the data of {cfg.data} changed since the run started (its texts, "
            f"labels or split differ from {path}); a resume would train on other data. "
            "Nothing was changed: restore the data, or start again with --overwrite"
        )
    recorded = saved.get("inputs")
    if isinstance(recorded, dict):
        changed = sorted(
            key for key in set(recorded) | set(inputs) if recorded.get(key) != inputs.get(key)
        )
        if changed:
            shown = ", ".join(f"{key} ({getattr(cfg, key)})" for key in changed)
            raise ConfigError(
                f"--resume: {shown} changed since the run started (its SHA-256 differs from "
                f"{path}); a resume would continue with other inputs. Nothing was changed: "
                "restore the file, or start again with --overwrite"
            )
    kept = saved.get("run_id")
    return kept if isinstance(kept, str) else None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with file_boundary(path, "fingerprint it"), path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _resumable(out: Path) -> None:
    """``--resume`` needs a run to continue: a folder of ours with a log."""
    if not (out / LOG_JSONL).is_file():
        raise ConfigError(
            f"--resume: {out} holds no run to continue (no {LOG_JSONL}); nothing was changed "
            "(start it without --resume)"
        )


def _check_existing(out: Path, cfg: RunConfig, existing: bool, resume: bool) -> int | None:
    """The last checkpointed round of the run in ``out`` to resume (None: start afresh)."""
    log_exists = (out / LOG_JSONL).exists()
    if existing and log_exists and not resume:
        raise ConfigError(
            f"{out} already holds a run: pass --resume to continue it or --overwrite to start again"
        )
    if not (resume and log_exists):
        (out / CONFIG_FILE).write_text(dump_toml(cfg))
        return None
    saved = load_config(out / CONFIG_FILE)
    shown = differences(saved.to_dict(), cfg.to_dict(), ignore=MAY_CHANGE_ON_RESUME)
    if shown:
        raise ConfigError(f"--resume: the settings differ from {out / CONFIG_FILE} in {shown}")
    last = has_checkpoint(out)
    if last is None:
        raise ConfigError(
            f"--resume: {out} has a log but no complete checkpoint to continue from; "
            "nothing was changed (start again with --overwrite)"
        )
    rounds = [r.get("round") for r in RunLog(out).records()]
    whole = rounds == list(range(len(rounds)))
    if not whole or len(rounds) <= last:
        missing = sorted(set(range(last + 1)) - set(rounds))
        raise ConfigError(
            f"--resume: {out / LOG_JSONL} does not hold every round up to the checkpoint's "
            f"(round {last})"
            + (f": rounds {', '.join(map(str, missing[:10]))} are missing" if missing else "")
            + "; a resume would leave a gap in the records. Nothing was changed (restore "
            "the log, or start again with --overwrite)"
        )
    logged = len(rounds) - 1  # the rounds are 0, 1, ..., logged
    if cfg.rounds < min(logged, last):
        raise ConfigError(
            f"--resume --rounds {cfg.rounds}: the run already logged round {logged}; "
            "rounds can grow on resume, not shrink"
        )
    (out / CONFIG_FILE).write_text(dump_toml(cfg))
    return last


def _setup(cfg: RunConfig, ctx: RunContext) -> dict[str, Any]:
    """What a run's provenance line says of how its rounds run here."""
    return {
        "precision": cfg.precision,
        "torch_device": str(ctx.torch_device),
        "backend": cfg.backend,
    }


def _rounds(
    cfg: RunConfig,
    out: Path,
    start: int | None,
    progress: bool,
    stop_after: int | None,
    workload: Workload | None,
    backend: Backend,
    on_record: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    ctx = build_context(cfg, progress, workload)
    if on_record is None:
        on_record = lambda record: None  # noqa: E731
    run_id = _bind_inputs(out, cfg, ctx.workload.fingerprint, resuming=start is not None)
    write_json(out / PLACEMENT_FILE, ctx.placement_record())
    log = RunLog(out, tensorboard=cfg.tensorboard)
    state = ctx.initial_state
    if start is not None:
        last, state, planner_state = load_checkpoint(out, run_id)
        backend.restore_devices(out / CHECKPOINT)
        ctx.planner.load_state(planner_state)
        try:
            ctx.model.set_rank(state_rank(state))
            ctx.model.load_adapter_state(state)
        except (RuntimeError, KeyError, ValueError) as exc:
            raise ConfigError(
                f"--resume: the checkpoint in {out} does not fit this run's model "
                f"({type(exc).__name__}: another label count or layers?); nothing was changed"
            ) from None
        log.truncate(last)  # records past the checkpoint are redone
        done = log.records()
        if done and done[-1].get("stop"):
            # A whole-run budget ended the run: it is finished, whatever rounds are asked.
            log.close()
            return done
        first = last + 1
        if first <= cfg.rounds:
            note_provenance(out, first, **_setup(cfg, ctx))
        log.open_tensorboard(first)
    else:
        log.truncate(-1)
        note_provenance(out, 0, **_setup(cfg, ctx))
        log.open_tensorboard(0)
        ctx.model.load_adapter_state(state)
        t = time.perf_counter()
        untuned = ctx.workload.untuned.get((cfg.seed, cfg.precision))
        if untuned is None:
            m = evaluate(ctx.model, ctx.test, device=ctx.torch_device, precision=cfg.precision)
            untuned = {"test_accuracy": m["accuracy"], "test_loss": m["loss"]}
            ctx.workload.untuned[(cfg.seed, cfg.precision)] = untuned
        record = round_record(None, 0, dict(untuned), time.perf_counter() - t)
        log.append(record)
        save_checkpoint(out, 0, state, ctx.planner, backend, run_id)
        on_record(record)
        first = 1
    bar = maybe_tqdm(range(first, cfg.rounds + 1), progress, "rounds")
    for rnd in bar:
        t = time.perf_counter()
        plan = ctx.planner.plan_round(rnd, settle=False)
        if plan.stop:
            # A whole-run budget is spent: one last record says so (the model as it was),
            # and the run ends as a finished one does.
            done = log.records()
            previous = done[-1] if done else {}
            kept: dict[str, Any] = {
                k: previous[k] for k in ("test_accuracy", "test_loss") if k in previous
            }
            record = round_record(plan, rnd, kept, time.perf_counter() - t)
            log.append(record)
            save_checkpoint(out, rnd, state, ctx.planner, backend, run_id)
            on_record(record)
            break
        metrics: dict[str, Any] = {}
        if plan.selected:
            sent = ctx.planner.payloads(state, plan, cfg.seed)
            answer = backend.train_round(ctx, sent, plan)
            replies = answer.results
            # A device that did not answer (a lost Flower node) did not take part: it is
            # left out of the aggregate (the others are weighted among themselves), of the
            # record's devices and of what the budgets are charged.
            plan = ctx.planner.settle(plan, set(replies))
            metrics["lost_devices"] = list(plan.lost)
            metrics["uploaded_bytes"] = [
                nbytes(replies[i].adapter_state) if i in replies else 0 for i in range(cfg.devices)
            ]
            metrics["downloaded_bytes"] = [
                ctx.planner.download_bytes(sent[i], plan, i) if i in answer.received else 0
                for i in range(cfg.devices)
            ]
            measured = [
                replies[i].metrics.get(MEASURED_COMPUTE) if i in replies else None
                for i in range(cfg.devices)
            ]
            if any(m is not None for m in measured):  # beside the modeled compute_time_s
                metrics[MEASURED_COMPUTE] = measured
            if replies:
                state = ctx.planner.aggregate(state, replies, plan, answer.received)
                n = sum(r.n_examples for r in replies.values())
                loss = sum(r.metrics["train_loss"] * r.n_examples for r in replies.values())
                metrics["train_loss"] = loss / n
            ctx.model.set_rank(state_rank(state))
            ctx.model.load_adapter_state(state)
        else:
            plan = ctx.planner.settle(plan, set())
        m = evaluate(ctx.model, ctx.test, device=ctx.torch_device, precision=cfg.precision)
        metrics.update(test_accuracy=m["accuracy"], test_loss=m["loss"])
        # The record first, then the checkpoint: a kill between the two leaves one record
        # past the checkpoint, which resume drops and redoes (never a gap in the log).
        record = round_record(plan, rnd, metrics, time.perf_counter() - t)
        log.append(record)
        save_checkpoint(out, rnd, state, ctx.planner, backend, run_id)
        on_record(record)
        if progress and hasattr(bar, "set_postfix"):
            bar.set_postfix(rank=plan.rank, acc=f"{m['accuracy']:.3f}")
        if cfg.export_adapter == "every_round":
            _export(ctx, state, out / "adapters" / f"round_{rnd}")
        if stop_after is not None and rnd >= stop_after:
            log.close()
            return log.records()
    if cfg.export_adapter != "no":
        _export(ctx, state, out / ADAPTER_DIR)
    log.close()
    return log.records()


#: Where a finished run's adapters are written in peft's format.
ADAPTER_DIR = "adapter"


def _export(ctx: RunContext, state: dict[str, Any], folder: Path) -> None:
    """The global state as a peft adapter folder (the model is reloaded with it after)."""
    cfg = ctx.config
    folder.parent.mkdir(parents=True, exist_ok=True)
    save_adapter(
        ctx.model, state, folder, ctx.workload.label_names, base_model_id(cfg), cfg.max_length
    )
    ctx.model.set_rank(state_rank(state))
    ctx.model.load_adapter_state(state)
