"""Per-device ranks, a bandwidth pool and selection: the structured solver against enumeration.

The oracle enumerates every rank vector in {0..R}^I of small instances, with its own
feasibility test written from the model by hand (rates, clock, energy) and its own
bisection for each device's least bandwidth; the solver must reach the same objective and
return an allocation the oracle accepts.
"""

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fsl_opt.errors import ConfigError
from fsl_opt.problem import cost
from fsl_opt.problem.system import System
from solvers import solve
from solvers.instances import random_system

seeds = st.integers(min_value=0, max_value=2**32 - 1)


def device_ok(s: System, i: int, r: int, band: float | None) -> bool:
    """Device i at rank r on `band` Hz (its own sub-band if None), written out by hand."""
    if r == 0:
        return True
    b = s.bandwidth_hz[i] if band is None else band
    noise = s.noise_w if band is None else s.noise_psd_w_per_hz * b
    if b <= 0:
        return False
    s_ul = b * math.log2(1 + s.gain_ul[i] * s.tx_power_w[i] / noise)
    s_dl = b * math.log2(1 + s.gain_dl[i] * s.server_power_w / noise)
    if s_ul <= 0 or s_dl <= 0:
        return False
    per = r * (s.d + s.k) if s.upload_model == "lora" else (r + s.k) * s.d
    m = per * s.matrices_per_layer * s.layers[i]
    ops = (2 * r - 1) * s.d * s.k * s.matrices_per_layer * s.layers[i]
    cycles = (s.cycles_per_op * ops + s.base_cycles[i]) * s.samples[i] + s.round_base_cycles[i]
    comm = m * s.bits_per_param / s_ul + m * s.bits_per_param / s_dl
    if comm >= s.latency_s:
        return False
    f = cycles / (s.latency_s - comm)
    if f > s.f_max_hz[i] * (1 + 1e-9):
        return False
    energy = s.omega[i] * cycles * f**2 + s.tx_power_w[i] * m * s.bits_per_param / s_ul
    return energy + s.circuit_energy_j[i] <= s.energy_budget_j[i] * (1 + 1e-7)


def oracle_bandwidth(s: System, i: int, r: int) -> float:
    """Least pool bandwidth for device i at rank r (inf if its limit is not enough)."""
    if r == 0:
        return 0.0
    hi = min(s.bandwidth_hz[i], s.bandwidth_total_hz)
    if not device_ok(s, i, r, hi):
        return math.inf
    lo = 0.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if device_ok(s, i, r, mid):
            hi = mid
        else:
            lo = mid
    return hi


def oracle(s: System) -> float | None:
    """Best objective over every rank vector (None: no feasible selection)."""
    n, rmax = s.n_devices, s.max_rank
    if s.bandwidth_total_hz is None:
        ok = [[device_ok(s, i, r, None) for r in range(rmax + 1)] for i in range(n)]
        return enumerate_best(s, lambda i, r: ok[i][r])
    need = [[oracle_bandwidth(s, i, r) for r in range(rmax + 1)] for i in range(n)]
    return enumerate_best(s, lambda i, r: need[i][r])


def enumerate_best(s: System, allowed) -> float | None:
    """Best objective over every rank vector in {0..R}^I (None: no feasible selection):
    without a pool ``allowed(i, r)`` says whether device i may take rank r; with one it is
    device i's band for rank r, and the bands of the devices taking part must fit the pool."""
    n, m = s.n_devices, s.required_devices
    w = s.samples / s.samples.sum()
    best = None
    for ranks in itertools.product(range(s.max_rank + 1), repeat=n):
        taking = [r for r in ranks if r > 0]
        if len(taking) < m or not taking:
            continue
        if s.objective == "shared" and len(set(taking)) > 1:
            continue
        if s.bandwidth_total_hz is None:
            if not all(allowed(i, r) for i, r in enumerate(ranks) if r > 0):
                continue
        elif sum(allowed(i, r) for i, r in enumerate(ranks) if r > 0) > s.bandwidth_total_hz:
            continue
        if s.objective == "shared":
            value = float(taking[0])
        elif s.objective == "sum":
            value = float(sum(w[i] * r for i, r in enumerate(ranks)))
        else:
            value = float(sum(w[i] * math.log1p(r) for i, r in enumerate(ranks)))
        best = value if best is None else max(best, value)
    return best


def small_instance(seed: int) -> System:
    """3 devices or fewer, ranks up to 5, every combination of objective, pool, selection."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 4))
    base = random_system(rng, n).replace(max_rank=int(rng.integers(1, 6)))
    target = int(rng.integers(1, base.max_rank + 1))
    f = base.f_max_hz * rng.uniform(0.3, 1.0, n)
    t0 = float(cost.latency(base, target, f).max() * rng.uniform(0.6, 1.4))
    e0 = cost.energy(base.replace(latency_s=t0), target, f) * rng.uniform(0.4, 1.6, n)
    changes: dict = {
        "latency_s": t0,
        "energy_budget_j": e0,
        "objective": str(rng.choice(["shared", "sum", "log"])),
        "min_devices": None if rng.random() < 0.3 else int(rng.integers(1, n + 1)),
    }
    if rng.random() < 0.6:
        changes["noise_psd_w_per_hz"] = base.noise_w / float(base.bandwidth_hz.mean())
        changes["bandwidth_total_hz"] = float(base.bandwidth_hz.sum() * rng.uniform(0.2, 1.5))
        changes["bandwidth_hz"] = base.bandwidth_hz * rng.uniform(1.0, 3.0, n)
    return base.replace(**changes)


def check_allocation(s: System, res) -> None:
    """The oracle's own test accepts every device taking part, and the pool holds."""
    ranks, band = res.ranks, res.bandwidth_hz
    taking = ranks > 0
    assert taking.sum() >= s.required_devices
    if s.objective == "shared":
        assert len(set(ranks[taking].tolist())) == 1
    for i in np.flatnonzero(taking):
        b = None if s.bandwidth_total_hz is None else band[i] * (1 + 1e-9)
        assert device_ok(s, int(i), int(ranks[i]), b), (i, ranks[i], band[i])
    # Exactly as the cost model computes it, as a user would re-check it: no tolerance.
    alloc = (
        s
        if s.bandwidth_total_hz is None
        else cost.at_bandwidth(s, np.where(taking, band, cost.bandwidth_limit(s)))
    )
    r = np.maximum(ranks, 1)
    f = res.frequencies_hz
    assert np.all(f[taking] <= s.f_max_hz[taking])
    assert np.all(cost.latency(alloc, r, f)[taking] <= s.latency_s)
    assert np.all(cost.energy(alloc, r, f)[taking] <= s.energy_budget_j[taking])
    if s.bandwidth_total_hz is not None:
        chosen = band[taking]
        pool = s.bandwidth_total_hz
        assert chosen.sum() <= pool and sum(chosen.tolist()) <= pool
        assert sum(sorted(chosen.tolist(), reverse=True)) <= pool
        assert math.fsum(chosen.tolist()) <= pool
        assert np.all(band[taking] <= s.bandwidth_hz[taking] * (1 + 1e-9))
        assert np.all(band[~taking] == 0)


@settings(max_examples=1000)
@given(seeds)
def test_per_device_equals_enumeration(seed):
    """Same objective as full enumeration on 1000 instances; every allocation re-checks."""
    s = small_instance(seed)
    best = oracle(s)
    res = solve(s, "per_device")
    if best is None:
        assert res.status == "infeasible", res.message
        return
    assert res.status == "optimal", res.message
    assert res.objective_value == pytest.approx(best, rel=1e-9, abs=1e-12)
    check_allocation(s, res)


def test_the_instances_cover_every_case():
    """The random instances mix objectives, pools, selection, infeasible and binding cases."""
    kinds = set()
    infeasible = pool_binds = 0
    for seed in range(300):
        s = small_instance(seed)
        kinds.add((s.objective, s.bandwidth_total_hz is not None, s.min_devices is not None))
        res = solve(s, "per_device")
        infeasible += res.status == "infeasible"
        if res.status == "optimal" and s.bandwidth_total_hz is not None:
            pool_binds += res.bandwidth_hz.sum() > 0.5 * s.bandwidth_total_hz
    assert len(kinds) == 12
    assert 20 < infeasible < 250 and pool_binds > 20


@settings(max_examples=150)
@given(seeds, st.sampled_from(["latency_s", "energy", "f_max_hz", "pool", "min_devices"]))
def test_optimum_never_falls_when_a_budget_grows(seed, what):
    """More T0, E0, f_max or pool, or fewer required devices: never a worse optimum."""
    s = small_instance(seed)
    if what == "latency_s":
        t = s.replace(latency_s=s.latency_s * 1.3)
    elif what == "energy":
        t = s.replace(energy_budget_j=s.energy_budget_j * 1.3)
    elif what == "f_max_hz":
        t = s.replace(f_max_hz=s.f_max_hz * 1.3)
    elif what == "pool":
        if s.bandwidth_total_hz is None:
            return
        t = s.replace(bandwidth_total_hz=s.bandwidth_total_hz * 1.3)
    else:
        if s.required_devices == 1:
            return
        t = s.replace(min_devices=s.required_devices - 1)
    a, b = solve(s, "per_device"), solve(t, "per_device")
    assert b.objective_value >= a.objective_value - 1e-12
    if a.status == "optimal":
        assert b.status == "optimal"


def test_paper_problem_agrees_with_bisection():
    """With a shared rank, every device and fixed bands, per_device is the paper's P1."""
    for seed in range(200):
        s = random_system(np.random.default_rng(seed))
        a, b = solve(s, "bisection"), solve(s, "per_device")
        assert a.rank == b.rank and a.status == b.status


def test_baselines_never_beat_the_optimum():
    """equal_split and shared_all are feasible allocations, never better than per_device."""
    for seed in range(150):
        s = small_instance(seed)
        best = solve(s, "per_device")
        for method in ("equal_split", "shared_all"):
            res = solve(s, method)
            if res.status == "optimal":
                assert res.objective_value <= best.objective_value + 1e-9
                check_allocation(s if method == "equal_split" else s.replace(min_devices=None), res)


def test_p1_solvers_refuse_the_extended_problem():
    """The paper's solvers say which methods handle objectives, pools and selection."""
    s = small_instance(3).replace(objective="sum")
    with pytest.raises(ConfigError, match="use one of per_device, equal_split, shared_all"):
        solve(s, "bisection")


def test_greedy_is_not_exact_on_this_knapsack():
    """The counterexample in the docs: greedy by gain per hertz takes 6, the optimum 9.8."""
    pool = 10.0
    steps = {"a": [(6.0, 6.0)], "b": [(5.0, 4.9), (5.0, 4.9)]}
    left, value, taken = pool, 0.0, {"a": 0, "b": 0}
    while True:
        options = [
            (gain / c, d)
            for d, s in steps.items()
            if taken[d] < len(s)
            for c, gain in [s[taken[d]]]
            if c <= left
        ]
        if not options:
            break
        _, d = max(options)
        c, gain = steps[d][taken[d]]
        left, value, taken[d] = left - c, value + gain, taken[d] + 1
    assert value == 6.0 and 9.8 > value


@pytest.mark.parametrize(
    ("round_extra", "message"),
    [
        ("bandwidth_total_hz = 1e6\n", "needs noise_psd_w_per_hz"),
        ("bandwidth_total_hz = -1.0\nnoise_psd_w_per_hz = 1e-20\n", "expected a finite"),
        ("min_devices = 0\n", "min_devices = 0: expected an integer in 1..3"),
        ("min_devices = 4\n", "min_devices = 4: expected an integer in 1..3"),
        ('objective = "max"\n', "objective = 'max': expected one of shared, sum, log"),
    ],
)
def test_bad_extended_input_is_one_line(tmp_path, capsys, round_extra, message):
    """Bad pool, selection or objective in SYSTEM.toml: exit 2, one line."""
    from pathlib import Path

    from fsl_opt.cli import main

    text = Path("examples/system.toml").read_text()
    path = tmp_path / "s.toml"
    path.write_text(text.replace("[round]\n", "[round]\n" + round_extra))
    assert main(["solve", str(path), "--method", "per_device"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_json_has_ranks_bandwidth_and_objective(tmp_path, capsys):
    """--json adds ranks, bandwidth_hz, objective and objective_value."""
    import json
    from pathlib import Path

    from fsl_opt.cli import main

    text = Path("examples/system.toml").read_text()
    path = tmp_path / "s.toml"
    path.write_text(
        text.replace(
            "[round]\n",
            '[round]\nobjective = "sum"\nmin_devices = 2\nbandwidth_total_hz = 3e6\n'
            "noise_psd_w_per_hz = 1e-16\n",
        )
    )
    code = main(["solve", str(path), "--method", "per_device", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code in (0, 3)
    assert {"ranks", "bandwidth_hz", "objective", "objective_value"} <= set(doc)
    assert doc["objective"] == "sum" and len(doc["ranks"]) == 3


def _toml(s: System, rng: np.random.Generator) -> str:
    """``s`` as a SYSTEM.toml in the documented format: with a pool, no ``noise_w``, and a
    per-device ``bandwidth_hz`` only as an optional upper limit (left out half the time)."""

    def value(x) -> str:
        arr = np.atleast_1d(np.asarray(x, dtype=float))
        if arr.size == 1:
            return repr(float(arr[0]))
        return "[" + ", ".join(map(repr, arr.tolist())) + "]"

    pool = s.bandwidth_total_hz is not None
    lines = ["[model]"]
    for key in ("d", "k", "matrices_per_layer", "max_rank"):
        lines.append(f"{key} = {getattr(s, key)}")
    lines += [f"layers = {value(s.layers)}", f"bits_per_param = {s.bits_per_param!r}"]
    lines += [f'upload_model = "{s.upload_model}"', f"cycles_per_op = {s.cycles_per_op!r}"]
    lines += ["[round]", f"latency_s = {s.latency_s!r}", f"server_power_w = {s.server_power_w!r}"]
    lines.append(f'objective = "{s.objective}"')
    if s.min_devices is not None:
        lines.append(f"min_devices = {s.min_devices}")
    if pool:
        lines.append(f"bandwidth_total_hz = {s.bandwidth_total_hz!r}")
        lines.append(f"noise_psd_w_per_hz = {s.noise_psd_w_per_hz!r}")
    else:
        lines.append(f"noise_w = {s.noise_w!r}")
    lines.append("[devices]")
    keys = ["samples", "omega", "f_max_hz", "energy_budget_j", "circuit_energy_j"]
    keys += ["tx_power_w", "gain_ul", "gain_dl", "base_cycles"]
    if not pool or rng.random() < 0.5:
        keys.append("bandwidth_hz")
    lines += [f"{key} = {np.asarray(getattr(s, key), dtype=float).tolist()!r}" for key in keys]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("seed", range(24))
def test_extended_files_in_the_documented_format_solve_by_default(seed, tmp_path, capsys):
    """24 extended instances written as the docs say (a pool needs neither noise_w nor a
    bandwidth per device): `fsl-opt solve FILE --json` with no --method answers each, equal
    to full enumeration of the system the file describes."""
    import json

    from fsl_opt.cli import main
    from fsl_opt.problem.system_file import load_system

    rng = np.random.default_rng(10_000 + seed)
    s = small_instance(10_000 + seed)
    while s.is_p1:  # the extended problem only
        s = small_instance(int(rng.integers(1 << 30)))
    path = tmp_path / "system.toml"
    path.write_text(_toml(s, rng))
    read = load_system(path)
    code = main(["solve", str(path), "--json"])
    doc = json.loads(capsys.readouterr().out)
    best = oracle(read)
    if best is None:
        assert code == 3 and doc["status"] == "infeasible"
        return
    assert code == 0 and doc["method"] == "per_device"
    assert doc["objective_value"] == pytest.approx(best, rel=1e-9, abs=1e-12)
