"""Every Move a policy returns states what it is expected to save (issue 24): a return from
on-demand that said "saving $0.00" went to a human under any approval policy with a minimum saving
above 0. The figure comes from one function (spotshift.policy.view.expected_saving_usd); the
spotshift policy's own voluntary moves carry its finer estimate, which must be positive."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest

from spotshift.models import Market, MarketSnapshot, MigrationReason
from spotshift.policy import POLICIES, Move, SpotOutlook, get_policy
from spotshift.policy.view import expected_saving_usd, make_view
from tests.test_policy import NOW, OD, offer, state

SPOT = offer("us-east-1b", 1.2)
CHEAP_FAR = offer("us-west-2a", 0.4)
OD_FAR = offer("us-west-2a", 3.06, Market.ON_DEMAND)  # the single-zone policies see their home region's on-demand


def snapshot(*offers):
    return MarketSnapshot(taken_at=NOW, offers=list(offers))


def test_the_saving_of_a_return_from_on_demand_is_the_price_gap_over_the_expected_run_net_of_the_changeover():
    job = state(13.0, work=10.0, current=OD, outlook=SpotOutlook(uptime=0.7, run_hours={"us-east-1b": 8.0}))
    # 8 h of spot work at 3.06 - 1.2 $/h, less a 0.2 h changeover at the spot price; same region: no transfer
    assert expected_saving_usd(job, OD, SPOT) == pytest.approx((3.06 - 1.2) * 8.0 - 0.2 * 1.2)
    # no outlook: over all the work left
    assert expected_saving_usd(state(13.0, work=10.0, current=OD), OD, SPOT) == pytest.approx((3.06 - 1.2) * 10 - 0.24)


def test_an_idle_launch_is_weighed_against_finishing_on_on_demand_and_a_deadline_move_costs():
    idle = state(13.0, work=10.0)
    assert expected_saving_usd(idle, OD, OD) == 0.0
    assert expected_saving_usd(idle, OD, SPOT) == pytest.approx((3.06 - 1.2) * 10 - 0.2 * (1.2 - 3.06))
    on_spot = state(10.3, work=10.0, current=SPOT, placed_at=NOW - timedelta(hours=1))
    assert expected_saving_usd(on_spot, SPOT, OD) < 0  # the Safety Net's move to on-demand costs more
    assert expected_saving_usd(idle, None, SPOT) == 0.0  # spot only: nothing to compare with


SCENARIOS = {
    "idle, spot and on-demand": (state(30.0, work=10.0), (SPOT, CHEAP_FAR, OD, OD_FAR)),
    "idle, tight": (state(10.3, work=10.0), (SPOT, OD)),
    "idle, preempted": (state(30.0, work=10.0, was_preempted=True, checkpoint_region="us-east-1"), (SPOT, CHEAP_FAR, OD, OD_FAR)),
    "on spot, far cheaper elsewhere": (state(40.0, work=10.0, current=SPOT, placed_at=NOW - timedelta(hours=3),
                                             outlook=SpotOutlook(uptime=0.95, run_hours={"us-west-2a": 30.0,
                                                                                          "us-east-1b": 30.0})),
                                       (SPOT, CHEAP_FAR, OD, OD_FAR)),
    "on spot, deadline near": (state(10.2, work=10.0, current=SPOT, placed_at=NOW - timedelta(hours=3)), (SPOT, OD)),
    "on on-demand, spot back": (state(40.0, work=10.0, current=OD, placed_at=NOW - timedelta(hours=3),
                                      outlook=SpotOutlook(uptime=0.95, run_hours={"us-east-1b": 20.0})), (SPOT, OD)),
    "spot only, idle": (state(30.0, work=10.0), (SPOT, CHEAP_FAR)),
}


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_every_move_of_every_policy_states_its_saving(name):
    policy = get_policy(name)
    moves = 0
    for scenario, (job, offers) in SCENARIOS.items():
        snap = snapshot(*offers)
        decision = policy.decide(job, snap, NOW)
        if not isinstance(decision, Move):
            continue
        moves += 1
        saving = decision.expected_saving_usd
        assert math.isfinite(saving), scenario
        voluntary = job.current is not None and decision.reason is MigrationReason.CHEAPER
        if name == "spotshift" and voluntary:
            assert saving > 0, scenario  # its own estimate, made only when the move pays
        else:
            view = make_view(job, snap, NOW)
            assert saving == pytest.approx(expected_saving_usd(job, job.current or view.best_od, decision.target)), scenario
        if decision.target.market is Market.SPOT and (job.current is OD or job.current is None) and view_has_od(snap):
            assert saving != 0.0, scenario  # leaving (or avoiding) on-demand for spot saves or costs something
    assert moves, f"{name} made no move in any scenario: the check would be empty"


def view_has_od(snap: MarketSnapshot) -> bool:
    return any(o.market is Market.ON_DEMAND for o in snap.offers)
