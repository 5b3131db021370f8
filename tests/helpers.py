"""Oracles and checks shared by the tests (kept out of the library: they assert)."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

from fsl_opt.problem import cost
from fsl_opt.problem.result import SolveResult
from fsl_opt.problem.system import System


def brute_force_rank(system: System, f: np.ndarray | None = None) -> int:
    """Largest r in 1..max_rank feasible for every device, trying every r (0 if none).

    Independent of the closed-form f_lo / f_E test the solvers use: with ``f`` free, the
    slowest on-time clock is found by root-finding on ``cost.latency`` alone, and the energy
    is then read from ``cost.energy``. Exact, as the answers are: T <= T0 and E <= E0 as the
    cost model computes them, no tolerance.
    """
    from scipy.optimize import brentq

    def device_ok(i: int, r: int) -> bool:
        sub = system.subset([i])
        if f is not None:
            return bool(cost.feasible_at(sub, r, f[i : i + 1])[0])

        def late(x: float) -> float:
            return float(cost.latency(sub, r, [x])[0]) - sub.latency_s

        fmax = float(sub.f_max_hz[0])
        if late(fmax) > 0:
            return False
        if late(fmax) == 0:
            f_on_time = fmax
        else:
            f_on_time = brentq(late, fmax * 1e-12, fmax, xtol=1e-12 * fmax, rtol=1e-13)
            # The root's neighbourhood in floating point: walk up ulp by ulp (then faster)
            # to the first clock that is on time as the cost model computes it.
            step = 1.0
            while late(f_on_time) > 0 and f_on_time < fmax:
                f_on_time = min(f_on_time * (1 + step * np.finfo(float).eps), fmax)
                step *= 2
            if late(f_on_time) > 0:
                return False
        return bool(cost.energy(sub, r, [f_on_time])[0] <= sub.energy_budget_j[0])

    best = 0
    for r in range(1, system.max_rank + 1):
        if all(device_ok(i, r) for i in range(system.n_devices)):
            best = r
    return best


def assert_allocation_feasible(system: System, result: SolveResult) -> None:
    """Every returned allocation meets every constraint when re-checked with the cost model."""
    if result.status != "optimal":
        return
    f = result.frequencies_hz
    assert 1 <= result.rank <= system.max_rank
    assert np.all(f > 0)
    assert np.all(f <= system.f_max_hz)
    t = cost.latency(system, result.rank, f)
    e = cost.energy(system, result.rank, f)
    # Exactly, as a user would check it: no tolerance.
    assert np.all(t <= system.latency_s), (t, system.latency_s)
    assert np.all(e <= system.energy_budget_j), (e, system.energy_budget_j)
    np.testing.assert_allclose(result.latency_s, t)
    np.testing.assert_allclose(result.energy_j, e)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    """Until something listens on 127.0.0.1:``port``; fails at once if ``proc`` (the process
    meant to listen there) has ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{proc.args[0]} ended (exit {proc.returncode}) before listening")
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


def fresh_sigint() -> None:
    """``preexec_fn`` for a child that a test interrupts: SIGINT at its default and not
    blocked, as a terminal gives it, whatever an earlier test in this worker process left
    (a signal's ignored disposition and the blocked mask are inherited across exec)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


#: What a preloaded command's process has imported before it starts (the package's command
#: line, its training loop and the libraries that cost a fresh process its first seconds).
PRELOAD = [
    "fsl_opt.cli",
    "fsl_opt.federation.loop",
    "fsl_opt.learning.local",
    "transformers.models.bert.modeling_bert",
    "peft",
]


def preloaded_command(args: list[str], env: dict[str, str], log: Path) -> Any:
    """`fsl-opt ARGS` in a new process forked from a server that imported :data:`PRELOAD`
    once (a fresh `python -m fsl_opt.cli` spends some 7 s of CPU on imports, on 2 cores
    beside other tests much longer): the same command, run, killed and resumed the same
    way, in a real process of its own with ``env`` as its environment; its stdout and
    stderr go to ``log``. Returns the started ``multiprocessing`` process (``exitcode``:
    the command's exit status, or -9 after a SIGKILL)."""
    import multiprocessing as mp

    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)  # read when this process's fork server starts
    proc = ctx.Process(target=_command, args=(list(args), dict(env), str(log)))
    proc.start()
    return proc


def _command(args: list[str], env: dict[str, str], log: str) -> None:
    import faulthandler
    import os
    import signal
    import sys

    os.environ.clear()
    os.environ.update(env)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    if env.get("PYTHONFAULTHANDLER"):  # read at an interpreter's start: this one's is past
        faulthandler.enable()
    # Ctrl-C as a terminal gives it: a KeyboardInterrupt, whatever the fork server inherited
    # (a signal's ignored disposition and the blocked mask pass through exec).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    import threading

    from tqdm import tqdm

    # tqdm's default lock is a named semaphore, registered with the resource tracker this
    # process shares with the test's: one made here and SIGKILLed would be reported leaked.
    tqdm.set_lock(threading.RLock())
    from fsl_opt.cli import main

    sys.exit(main(args))
