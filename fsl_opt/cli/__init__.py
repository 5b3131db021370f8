"""The ``fsl-opt`` command line: one module per command (``fsl_opt/cli/solve.py`` holds
``fsl-opt solve``, ...), each with ``add(subparsers)`` and ``run(args)``; this package puts
them together and holds the one boundary every command passes through (:func:`main`).

Bad input ends with one line on stderr naming the problem and exit status 2, never a
traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from fsl_opt.cli import (
    adopt,
    bench,
    calibrate,
    credentials,
    evaluate,
    experiment,
    fit_accuracy,
    gateway,
    plan,
    plot,
    solve,
    trace,
    train,
)
from fsl_opt.errors import ConfigError

#: Every command's module, in the order ``fsl-opt --help`` lists them.
COMMANDS = (
    solve,
    bench,
    train,
    plan,
    experiment,
    evaluate,
    plot,
    trace,
    calibrate,
    adopt,
    credentials,
    gateway,
    fit_accuracy,
)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line, like every other error of fsl-opt."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``fsl-opt``."""
    parser = _Parser(
        prog="fsl-opt",
        description="Optimizer and simulator for federated split learning with LoRA.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add(sub)
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
