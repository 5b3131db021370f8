"""The multiple-choice knapsack at scale: an LP-hull price, a Lagrangian bound, an exact core.

The problem: options j = (device, cost c_j >= 0, gain g_j > 0); choose at most one option per
device, at least ``m`` devices, costs summing to at most ``room``; maximize the gain. (The
pooled ``sum`` / ``log`` problems: an option is a rank, its cost the least bandwidth for it,
its gain w_i u(r).)

1. **Price.** Each device's options with "none" (0, 0) have an upper concave hull; the LP
   relaxation takes hull segments in order of slope (gain per unit cost) until the room is
   full, the last one fractional. Its slope is the price lambda.
2. **Bound.** For any lambda >= 0, L(lambda) = lambda room + sum_i max(0, max_j g_j -
   lambda c_j) is an upper bound on the optimum (Lagrangian relaxation of the room; the
   count constraint only lowers the optimum). It is computed from the options themselves,
   so it holds whether or not the hull is right.
3. **Incumbent.** The LP's whole segments (the fractional device at its lower hull point),
   then the best single change of one device that fits what is left.
4. **Reduced-cost fixing.** For any choice worth at least the incumbent LB, the deviations
   d_j = max(0, p_i*) - (g_j - lambda c_j) of its options (and of "none" where a device is
   out) sum to at most L - LB. So an option with d_j > L - LB is in no better answer; a
   device with one option left (its Lagrangian choice) is fixed there; the rest, the
   *core*, are solved exactly by HiGHS with the room and count that the fixed devices
   leave. With a good price and incumbent the core is the few devices near the price.
5. **Certificate.** An incumbent within 1e-12 of L is optimal as it is (with equal
   weights and ``sum`` every gain is a multiple of the weight, so L rounds down to one
   first). Otherwise HiGHS proves the core optimal: the answer is optimal. If it stops at
   its time limit, or the core has more than ``core_limit`` options (many near-ties at the
   price: log utilities on thousands of alike devices): the better incumbent, and the bound
   min(L, fixed gain + HiGHS's dual bound), as a ``limit`` answer with its gap.

The gains HiGHS sees are scaled so that the largest gain per unit of utility is 1 (HiGHS
stops at an absolute gap of 1e-6 in those units, far below one rank on any device).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from solvers._common import knapsack_solve

#: Relative slack on the fixing threshold L - LB (rounding in the sums; keeping more options
#: is always safe).
FIX_SLACK = 1e-9
#: Most options of a core sent to HiGHS (a larger one ends the search: a ``limit`` answer).
CORE_LIMIT = 200_000
#: Segments sorted outright once the undecided ones are this few (the price's selection).
SORT_BELOW = 1 << 14
#: An incumbent within this relative distance of the bound is optimal (the bound's own
#: rounding: sums of up to 10^8 terms).
PROVEN = 1e-12


@dataclass(frozen=True)
class Answer:
    """``chosen``: option indices taken (one per device taking part); ``proven``: optimal
    (or, with ``feasible`` False, proven infeasible); ``bound``: an upper bound on the
    optimum; ``value``: the gain of ``chosen``; ``core``: options HiGHS saw; ``price``: the
    LP price lambda; ``feasible``: a choice was found (False and not ``proven``: none was
    found before a limit, nothing is known)."""

    chosen: NDArray[np.int64]
    proven: bool
    bound: float
    value: float
    core: int
    price: float
    feasible: bool = True


def solve_mckp(
    dev: NDArray[np.int64],
    cost: NDArray[np.float64],
    gain: NDArray[np.float64],
    n: int,
    m: int,
    room: float,
    time_limit_s: float,
    unit: float = 1.0,
    quantum: float | None = None,
    core_limit: int = CORE_LIMIT,
) -> Answer:
    """Solve the knapsack above. Options must come device by device (``dev`` non-decreasing),
    each device's in increasing cost, with finite costs and positive gains. ``unit``: the
    gain of one unit of utility on the heaviest device (scales what HiGHS sees);
    ``quantum``: where every gain is an integer multiple of it (equal weights, ``sum``),
    bounds round down to a multiple (an incumbent there is proven). ``core_limit``: the most
    options sent to HiGHS; a larger core ends the search there (a ``limit`` answer)."""
    k = dev.size
    if k == 0 or m > _count(dev):
        return Answer(np.zeros(0, np.int64), True, 0.0, 0.0, 0, 0.0, feasible=m <= 0)
    hull = _hull(dev, cost, gain)
    price, chosen = _price_and_prefix(dev, cost, gain, hull, n, room)
    filled = _greedy_fill(dev, cost, gain, hull, n, chosen, room)
    if math.fsum(cost[filled]) <= room:  # (its running account rounds; judged exactly here)
        chosen = filled
    chosen = _one_better_change(dev, cost, gain, n, chosen, room)
    value = math.fsum(gain[chosen])
    red, device_best = _reduced(dev, cost, gain, n, price)
    bound = price * room + math.fsum(device_best)
    if quantum is not None:
        # Every answer's gain is a multiple of the quantum: the bound rounds down to one.
        bound = min(bound, math.floor(bound / quantum * (1 + 1e-12) + 1e-9) * quantum)
    if chosen.size >= m and bound - value <= PROVEN * (abs(bound) + 1.0):
        return Answer(chosen, True, bound, value, 0, price)
    if chosen.size < m:
        # The count binds (the room is tight for m devices): no incumbent to fix against,
        # so every option goes to HiGHS.
        keep = np.ones(k, dtype=bool)
        fixed: NDArray[np.int64] = np.zeros(0, np.int64)
        value, chosen = -math.inf, np.zeros(0, np.int64)
    else:
        keep, fixed = _fix(dev, red, device_best, n, bound - value + FIX_SLACK * (abs(bound) + 1))
    fixed_gain = math.fsum(gain[fixed])
    core_room = room - math.fsum(cost[fixed])
    core_m = max(m - fixed.size, 0)
    is_fixed = np.zeros(n, dtype=bool)
    is_fixed[dev[fixed]] = True
    core = np.flatnonzero(keep & ~is_fixed[dev])
    if core.size == 0:
        return Answer(fixed, True, fixed_gain, fixed_gain, 0, price)
    if core.size > core_limit:
        # Too many near-ties at the price for an exact search: the incumbent, the bound.
        return Answer(
            chosen, False, bound, max(value, 0.0), core.size, price, feasible=value > -math.inf
        )
    # Devices renumbered 0..c-1 for HiGHS.
    core_dev, local = np.unique(dev[core], return_inverse=True)
    sol = knapsack_solve(
        local.astype(np.int64),
        cost[core],
        gain[core] / unit,
        core_dev.size,
        core_m,
        core_room,
        time_limit_s,
    )
    if sol.chosen is None and not sol.stopped:  # HiGHS: no choice in the core at all
        if value > -math.inf:  # (the incumbent's core part is one: numerical trouble)
            return Answer(chosen, False, bound, value, core.size, price)
        return Answer(np.zeros(0, np.int64), True, 0.0, 0.0, core.size, price, feasible=False)
    found = np.concatenate([fixed, core[sol.chosen]]) if sol.chosen is not None else None
    found_value = math.fsum(gain[found]) if found is not None else -math.inf
    core_bound = fixed_gain + sol.bound * unit
    if sol.proven and found is not None:
        return Answer(found, True, found_value, found_value, core.size, price)
    best, best_value = (found, found_value) if found_value >= value else (chosen, value)
    return Answer(
        best if best is not None else np.zeros(0, np.int64),
        False,
        min(bound, core_bound),
        max(best_value, 0.0),
        core.size,
        price,
        feasible=best_value > -math.inf,
    )


def _hull(
    dev: NDArray[np.int64], cost: NDArray[np.float64], gain: NDArray[np.float64]
) -> NDArray[np.bool_]:
    """Which options are vertices of their device's upper concave hull (with "none" at the
    origin): points below the chord of their neighbours are removed, pass after pass."""
    on = np.ones(dev.size, dtype=bool)
    idx: NDArray[np.int64] | None = None  # the options still on (None: all of them)
    while True:
        dc, dg, first = _steps(dev, cost, gain, idx)
        # A point whose gain does not rise: off the hull. Else one whose slope in is at most
        # its slope out (cross-multiplied), i.e. on or below its neighbours' chord; a
        # device's last point has no slope out (the next point is another device's first).
        bad = dg <= 0
        chord = dg[:-1] * dc[1:] <= dg[1:] * dc[:-1]
        chord &= ~first[1:]
        bad[:-1] |= chord
        if not bad.any():
            return on
        on[bad if idx is None else idx[bad]] = False
        idx = np.flatnonzero(on)


def _steps(
    dev: NDArray[np.int64],
    cost: NDArray[np.float64],
    gain: NDArray[np.float64],
    idx: NDArray[np.int64] | None,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_]]:
    """Cost and gain of each option in ``idx`` (sorted; None: every option) over the one
    before it in ``idx`` of its device (over "none" for a device's first), and which are
    first. Every option is read in place, without a gathered copy."""
    whole = idx is None or idx.size == dev.size
    d, c, g = (dev, cost, gain) if whole else (dev[idx], cost[idx], gain[idx])
    first = np.empty(d.size, dtype=bool)
    first[0] = True
    np.not_equal(d[1:], d[:-1], out=first[1:])
    dc = np.empty_like(c)
    dg = np.empty_like(g)
    dc[0], dg[0] = c[0], g[0]
    np.subtract(c[1:], c[:-1], out=dc[1:])
    np.subtract(g[1:], g[:-1], out=dg[1:])
    np.copyto(dc, c, where=first)
    np.copyto(dg, g, where=first)
    return dc, dg, first


def _count(dev: NDArray[np.int64]) -> int:
    """Devices among options listed device by device."""
    return int(np.count_nonzero(dev[1:] != dev[:-1])) + 1 if dev.size else 0


def _price_and_prefix(
    dev: NDArray[np.int64],
    cost: NDArray[np.float64],
    gain: NDArray[np.float64],
    hull: NDArray[np.bool_],
    n: int,
    room: float,
) -> tuple[float, NDArray[np.int64]]:
    """The LP price (slope of the segment the room ends in; 0 if every segment fits) and the
    option each device reaches with the whole segments before it."""
    idx = np.flatnonzero(hull)
    dc, dg, _ = _steps(dev, cost, gain, idx)
    slope = dg / np.where(dc > 0, dc, np.finfo(float).tiny)
    # The segments in order of slope until the room is spent, without sorting them all:
    # split the undecided ones at their median slope; the half above either fits whole (all
    # taken) or holds the crossing (the rest are out); sort what is left when it is small.
    room = room * (1.0 - 1e-12)  # sums of segment costs round differently from option costs
    spent, taken_parts = 0.0, []
    cand = np.arange(slope.size)
    while cand.size > SORT_BELOW:
        s = slope[cand]
        pivot = float(np.partition(s, s.size // 2)[s.size // 2])
        up = s > pivot
        if not up.any() or up.all():
            break
        above = dc[cand[up]].sum()
        if spent + above <= room:
            spent += above
            taken_parts.append(cand[up])
            cand = cand[~up]
        else:
            cand = cand[up]
    order = cand[np.lexsort((cand, -slope[cand]))]
    run = spent + np.cumsum(dc[order])
    whole = int(np.searchsorted(run, room, side="right"))
    price = float(slope[order[whole]]) if whole < order.size else 0.0
    taken = idx[np.concatenate([*taken_parts, order[:whole]])]
    # Within a device slopes fall, so the segments taken are its first ones: its option is
    # the last of them (the largest index).
    best = np.full(n, -1, dtype=np.int64)
    np.maximum.at(best, dev[taken], taken)
    return price, best[best >= 0]


def _greedy_fill(
    dev: NDArray[np.int64],
    cost: NDArray[np.float64],
    gain: NDArray[np.float64],
    hull: NDArray[np.bool_],
    n: int,
    chosen: NDArray[np.int64],
    room: float,
    rounds: int = 8,
) -> NDArray[np.int64]:
    """``chosen`` moved up the devices' hulls with the room the LP prefix left: each round
    offers every device its next hull point, in order of slope, and takes the longest run
    that fits; the first offer that does not fit is withdrawn (that device stays) and the
    next round goes on."""
    at = np.full(n, -1, dtype=np.int64)
    at[dev[chosen]] = chosen
    # The next hull point of each device after position j (hull points in option order).
    hull_idx = np.flatnonzero(hull)
    blocked = np.zeros(n, dtype=bool)
    left = room - math.fsum(cost[chosen])
    for _ in range(rounds):
        # Each device's next hull point: the first hull option past its current one.
        pos = np.searchsorted(hull_idx, at, side="right")
        nxt = np.where(pos < hull_idx.size, hull_idx[np.minimum(pos, hull_idx.size - 1)], -1)
        ok = (nxt >= 0) & ~blocked
        ok[ok] &= dev[nxt[ok]] == np.flatnonzero(ok)
        devices = np.flatnonzero(ok)
        if devices.size == 0:
            break
        j = nxt[devices]
        cur = at[devices]
        dc = cost[j] - np.where(cur >= 0, cost[np.maximum(cur, 0)], 0.0)
        dg = gain[j] - np.where(cur >= 0, gain[np.maximum(cur, 0)], 0.0)
        order = np.argsort(-(dg / np.where(dc > 0, dc, np.finfo(float).tiny)), kind="stable")
        spent = np.cumsum(dc[order])
        take = int(np.searchsorted(spent, left, side="right"))
        if take:
            at[devices[order[:take]]] = j[order[:take]]
            left -= float(spent[take - 1])
        if take == order.size:
            continue
        blocked[devices[order[take]]] = True
    return np.sort(at[at >= 0])


def _one_better_change(
    dev: NDArray[np.int64],
    cost: NDArray[np.float64],
    gain: NDArray[np.float64],
    n: int,
    chosen: NDArray[np.int64],
    room: float,
) -> NDArray[np.int64]:
    """``chosen`` with the one device change (to any of its options) that gains most within
    the room left, if any gains."""
    cur_c = np.zeros(n)
    cur_g = np.zeros(n)
    cur_c[dev[chosen]] = cost[chosen]
    cur_g[dev[chosen]] = gain[chosen]
    left = room - math.fsum(cost[chosen])
    extra = cost - cur_c[dev]
    better = gain - cur_g[dev]
    ok = (extra <= left) & (better > 0)
    if not ok.any():
        return chosen
    j = int(np.flatnonzero(ok)[np.argmax(better[ok])])
    return np.sort(np.r_[chosen[dev[chosen] != dev[j]], j])


def _reduced(
    dev: NDArray[np.int64],
    cost: NDArray[np.float64],
    gain: NDArray[np.float64],
    n: int,
    price: float,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Each option's reduced gain g - price c, and each device's best (0: none)."""
    red = gain - price * cost
    best = np.zeros(n)
    np.maximum.at(best, dev, red)
    return red, best


def _fix(
    dev: NDArray[np.int64],
    red: NDArray[np.float64],
    best: NDArray[np.float64],
    n: int,
    gap: float,
) -> tuple[NDArray[np.bool_], NDArray[np.int64]]:
    """Options that may be in an answer at least as good as the incumbent (deviation from
    the device's best reduced gain ``best`` <= gap, ``red`` the options' reduced gains), and
    the options of the devices fixed (one alternative left, an option: "none" fixes a
    device out, which needs no entry)."""
    keep = best[dev] - red <= gap
    alternatives = np.bincount(dev[keep], minlength=n) + (best <= gap)
    single = alternatives == 1
    fixed = np.flatnonzero(keep & single[dev])
    return keep, fixed
