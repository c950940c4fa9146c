"""Checkpoint transfers between regions: the simulator charges them, on-demand stays in the checkpoint's
region, and an idle loose job waits for capacity there rather than carry a big checkpoint away."""

from __future__ import annotations

import numpy as np
import pytest

from spotshift.models import Market
from spotshift.policy import Move, SpotOutlook, Stay, decide, get_policy, transfer_cost_usd
from spotshift.policy.view import make_view
from spotshift.sim import TickJob, simulate
from tests.test_policy import NOW, offer, snap, state
from tests.test_sim import TICK_S, market

D = 0.2
GB = 50.0
WEST = offer("us-west-2a", 0.95)  # the only spot offer up: another region than the checkpoint's
WEST_OD = offer("us-west-2a", 3.06, Market.ON_DEMAND)


def idle_after_preemption(hours_left: float, work: float = 10.0, gb: float = GB, back_in: float = 0.5):
    """Preempted in us-east-1b (the checkpoint is in us-east-1), which is expected back in `back_in` h."""
    outlook = SpotOutlook(uptime=0.9, run_hours={"us-west-2a": 6.0}, gap_hours={"us-east-1b": back_in})
    return state(hours_left, work=work, was_preempted=True, checkpoint_region="us-east-1",
                 checkpoint_gb=gb, outlook=outlook)


def test_an_idle_loose_job_waits_for_its_checkpoint_region_instead_of_paying_the_transfer():
    d = decide(idle_after_preemption(hours_left=20.0), snap(WEST), NOW)
    assert isinstance(d, Stay) and "checkpoint" in d.reason
    assert d.until is not None and (d.until - NOW).total_seconds() == pytest.approx(0.5 * 3600)


@pytest.mark.parametrize("why, kw", [
    ("no checkpoint to carry", dict(gb=0.0)),
    ("tight slack", dict(hours_left=11.0)),
    ("its region is not expected back soon", dict(back_in=30.0)),
])
def test_it_carries_the_checkpoint_away_when_waiting_does_not_pay(why, kw):
    args = dict(hours_left=20.0) | kw
    d = decide(idle_after_preemption(**args), snap(WEST), NOW)
    assert isinstance(d, Move) and d.target.zone == "us-west-2a", why


def test_on_demand_is_taken_in_the_checkpoint_region_among_equal_prices():
    s = snap(WEST_OD)  # on-demand in us-east-1a (snap's own) and us-west-2a at the same price
    west_first = make_view(state(20.0, checkpoint_region="us-west-2"), s, NOW)
    east_first = make_view(state(20.0, checkpoint_region="us-east-1"), s, NOW)
    assert west_first.best_od.region == "us-west-2" and east_first.best_od.region == "us-east-1"
    assert {o.key for o in west_first.on_demand} == {o.key for o in east_first.on_demand}
    # a cheaper on-demand offer elsewhere still comes first
    cheaper = offer("us-west-2a", 2.5, Market.ON_DEMAND)
    assert make_view(state(20.0, checkpoint_region="us-east-1"), snap(cheaper), NOW).best_od.key == cheaper.key


def test_the_simulator_charges_each_launch_in_another_region():
    # us-east-1a up first, then only us-west-2a: the job must carry its checkpoint west once
    available = np.zeros((3, 300), dtype=bool)
    available[0, :40] = True
    available[2, 30:] = True
    j = TickJob.from_hours(10.0, 30.0, D, TICK_S)
    m = market(available)
    free = simulate(get_policy("greedy_multi"), m, 0, j)
    paid = simulate(get_policy("greedy_multi"), m, 0, j, checkpoint_gb=GB)
    assert free.egress_usd == 0.0 and free.finished and paid.finished
    assert free.cross_region_moves == paid.cross_region_moves == 1
    carry = transfer_cost_usd("us-east-1", "us-west-2", GB)
    assert carry > 0 and paid.egress_usd == pytest.approx(carry)
    assert paid.cost_usd == pytest.approx(free.cost_usd + paid.egress_usd)


def test_outlook_gives_the_expected_rest_of_an_outage_from_past_outages():
    available = np.ones((2, 200), dtype=bool)
    available[0, 20:50] = False  # a past outage of 30 ticks (5 h)
    available[0, 90:] = False  # the current one, from tick 90
    seen = market(available).outlook(90)
    assert "us-east-1a" not in seen.run_hours and "us-east-1b" in seen.run_hours
    # at age 0: the mean of the one past outage (5 h) and the 1 h prior
    assert seen.gap_hours == {"us-east-1a": pytest.approx((5.0 + 1.0) / 2)}
