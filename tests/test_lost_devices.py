"""A device lost in a round (it did not answer) did not take part: the record leaves it out
of the round's devices, charges it no modeled energy or time, counts only the bytes that
moved, and the whole-run budgets and the policy's queues are charged without it."""

import numpy as np
import pytest

from fsl_opt.federation.backends import RoundReplies
from fsl_opt.federation.backends.inprocess import InProcessBackend
from fsl_opt.federation.loop import run
from fsl_opt.federation.planner import RoundPlanner
from fsl_opt.problem.budgets import RunBudgets
from tests.test_budgets import _planner


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("FSL_OPT_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


class Losing(InProcessBackend):
    """The in-process backend, whose device ``lost`` never answers: in round 1 its training
    began and failed (it received its payload), later its node is gone (nothing reached it)."""

    def __init__(self, lost):
        super().__init__()
        self.lost = lost

    def train_round(self, ctx, payloads, plan):
        kept = {i: p for i, p in payloads.items() if i != self.lost}
        results = super().train_round(ctx, kept, plan).results
        received = {self.lost} if plan.round == 1 and self.lost in payloads else set()
        return RoundReplies(results, frozenset(received))


@pytest.mark.parametrize("policy", ["myopic", "drift_plus_penalty"])
def test_a_lost_device_takes_no_part_in_the_record_or_the_budgets(tmp_path, tiny_cfg, policy):
    """Device 1 never answers. Each record: 1 in ``planned_devices`` and ``lost_devices``,
    not in ``selected_devices``; rank 0, no clock, no modeled time or energy, no bytes up;
    bytes down in round 1 only (the payload reached it then). Its battery stays whole; the
    others' energy left is their battery less the energy their records charge them, and the
    time left is the budget less the rounds' recorded delays."""
    battery, total_time = 50.0, 1e4
    cfg = tiny_cfg.replace(
        rounds=3,
        energy_total_j=battery,
        time_total_s=total_time,
        policy=policy,
        out=str(tmp_path / policy),
    )
    clean = run(cfg.replace(out=str(tmp_path / "clean")), progress=False)
    recs = run(cfg, progress=False, backend=Losing(lost=1))
    assert len(recs) == cfg.rounds + 1
    charged = np.zeros(cfg.devices)
    elapsed = 0.0
    for rnd, r in enumerate(recs[1:], 1):
        assert r["planned_devices"] == [0, 1, 2], r["planned_devices"]
        assert r["lost_devices"] == [1] and r["selected_devices"] == [0, 2]
        assert r["ranks"][1] == 0 and r["ranks"][0] > 0 and r["ranks"][2] > 0
        assert r["frequencies_hz"][1] is None and r["bandwidth_hz"][1] == 0
        for key in ("energy_j", "latency_s", "compute_time_s", "upload_energy_j"):
            assert r[key][1] == 0, key
        assert r["uploaded_bytes"][1] == 0 and r["modeled_download_bytes"][1] == 0
        assert (r["downloaded_bytes"][1] > 0) == (rnd == 1), r["downloaded_bytes"]
        assert r["downloaded_bytes"][0] == r["downloaded_bytes"][2] > 0
        assert r["round_latency_s"] == max(r["latency_s"])
        assert r["total_energy_j"] == pytest.approx(sum(r["energy_j"]), rel=1e-12)
        charged += np.asarray(r["energy_j"])
        elapsed += r["round_latency_s"]
        assert r["energy_left_j"][1] == battery  # nothing charged to the lost device
        np.testing.assert_allclose(r["energy_left_j"], battery - charged, rtol=1e-12)
        assert r["time_left_s"] == pytest.approx(total_time - elapsed, rel=1e-12)
        if policy == "drift_plus_penalty":  # its queue only drains: it spent nothing
            assert r["energy_queue_j"][1] == 0.0
    # Round 1 is planned on the same draws as the clean run (losing happens after).
    assert recs[1]["planned_devices"] == clean[1]["selected_devices"]
    assert recs[1]["ranks"][0] == clean[1]["ranks"][0]


def test_an_unsettled_round_blocks_the_next_plan_and_the_checkpoint():
    """A round planned to be settled later must be settled: planning again or saving the
    planner's state before then is an error, not a round that is never charged."""
    p = _planner(0, 3, energy_total=5.0)
    plan = p.plan_round(1, settle=False)
    with pytest.raises(RuntimeError, match="round 1 was planned with settle=False"):
        p.plan_round(2)
    with pytest.raises(RuntimeError, match="round 1 is planned but not settled"):
        p.state()
    settled = p.settle(plan, {0, 2})
    assert settled.lost == (1,) and settled.selected == [0, 2]
    assert p.budgets.spent_j[1] == 0.0 and p.budgets.spent_j[0] > 0.0
    with pytest.raises(RuntimeError, match="round 1 is not waiting to be settled"):
        p.settle(plan, {0, 2})
    assert plan.ranks[1] > 0  # the plan as solved is untouched
    p.plan_round(2)
    p.state()


def test_settling_with_everyone_charges_what_the_plan_says():
    """``plan_round`` (settled at once) and ``plan_round(settle=False)`` then ``settle`` with
    every planned device charge the same, round after round."""
    a = _planner(5, 4, energy_total=3.0, time_total=6.0)
    b = _planner(5, 4, energy_total=3.0, time_total=6.0)
    assert isinstance(a, RoundPlanner) and isinstance(a.budgets, RunBudgets)
    for rnd in range(1, 5):
        x = a.plan_round(rnd)
        y = b.plan_round(rnd, settle=False)
        if not y.stop:
            y = b.settle(y, set(y.planned))
        assert x.energy_left_j == y.energy_left_j and x.time_left_s == y.time_left_s
        assert x.ranks.tolist() == y.ranks.tolist() and x.lost == y.lost == ()
