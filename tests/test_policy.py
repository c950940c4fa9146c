"""The policy registry, placement and stay/move decisions on hand-made snapshots."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from spotshift.catalog import work_units_per_hour
from spotshift.models import Market, MarketSnapshot, MigrationReason, Offer
from spotshift.policy import (
    DEFAULT_POLICY, POLICIES, JobState, Move, NoFeasiblePlacement, Stay, decide, get_policy, transfer_cost_usd,
)
from spotshift.lifecycle.plans import plan_place


def choose_placement(job: JobState, snapshot: MarketSnapshot, now: datetime, blocked=frozenset()):
    return plan_place(job, snapshot, now, blocked, DEFAULT_POLICY)

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


def offer(zone: str, price: float, market: Market = Market.SPOT, itype: str = "p3.2xlarge") -> Offer:
    return Offer(instance_type=itype, gpu="V100", gpu_count=1, gpu_memory_gib=16, vcpus=8, memory_gib=61,
                 region=zone[:-1], zone=zone, market=market, usd_per_hour=price, observed_at=NOW, source="test")


OD = offer("us-east-1a", 3.06, Market.ON_DEMAND)


def snap(*offers: Offer) -> MarketSnapshot:
    return MarketSnapshot(taken_at=NOW, offers=list(offers) + [OD])


def state(hours_left: float, work: float = 10.0, **kw) -> JobState:
    return JobState(job_id="j1", remaining_work=work, deadline=NOW + timedelta(hours=hours_left), **kw)


def test_registry_names_and_unknown_name():
    assert DEFAULT_POLICY == "spotshift"
    assert set(POLICIES) == {"spotshift", "on_demand", "greedy", "greedy_multi", "uniform_progress",
                             "uniform_progress_multi", "skypilot_eager_next_region"}
    with pytest.raises(ValueError, match="Choose between spotshift, on_demand"):
        get_policy("cheapest")
    for p in POLICIES.values():
        assert "->" in type(p).__doc__  # each tells its behaviour as an event trace


def test_placement_takes_the_cheapest_work_unit_with_alternatives():
    a100 = offer("us-west-2a", 2.0, itype="p4d.24xlarge")  # 8 x A100: $2 for ~18.6 V100-hours per hour
    plan = choose_placement(state(40), snap(offer("us-east-1b", 1.2), a100, offer("us-east-2a", 0.9)), NOW)
    assert plan.offer == a100
    assert [o.zone for o in plan.alternatives][:2] == ["us-east-2a", "us-east-1b"]
    assert plan.expected_hours == pytest.approx(10 / work_units_per_hour("p4d.24xlarge") + 0.2)
    assert plan.deadline_slack_hours == pytest.approx(40 - plan.expected_hours)


def test_placement_falls_back_to_on_demand_when_slack_is_short():
    plan = choose_placement(state(10.3), snap(offer("us-east-2a", 0.9)), NOW)
    assert plan.offer.market is Market.ON_DEMAND


def test_placement_errors_name_why():
    s = snap(offer("us-east-2a", 0.9))
    with pytest.raises(NoFeasiblePlacement, match="every offer is blocked"):
        choose_placement(state(40), s, NOW, blocked=frozenset(o.key for o in s.offers))
    with pytest.raises(NoFeasiblePlacement, match="before the deadline"):
        choose_placement(state(5), s, NOW)


def test_moves_to_cheaper_spot_only_when_it_pays_back():
    cur = offer("us-east-1b", 1.5)
    running = state(40, current=cur, placed_at=NOW - timedelta(hours=1), checkpoint_region="us-east-1")
    move = decide(running, snap(cur, offer("us-east-2a", 0.9)), NOW)
    assert isinstance(move, Move) and move.reason is MigrationReason.CHEAPER and move.expected_saving_usd > 0
    assert isinstance(decide(running, snap(cur, offer("us-east-1c", 1.45)), NOW), Stay)
    heavy = state(40, current=cur, checkpoint_region="us-east-1", checkpoint_gb=400)  # $8 of egress
    assert isinstance(decide(heavy, snap(cur, offer("us-west-2a", 0.9)), NOW), Stay)


def test_safety_net_moves_to_on_demand():
    cur = offer("us-east-1b", 1.0)
    # 10 h of work, 0.2 h changeover: 0.01 h to spare on on-demand is below every policy's margin
    d = decide(state(10.21, current=cur), snap(cur), NOW)
    assert isinstance(d, Move) and d.target.market is Market.ON_DEMAND and d.reason is MigrationReason.DEADLINE
    assert isinstance(decide(state(10.21, current=cur), snap(cur), NOW, policy="greedy_multi"), Move)


def test_after_preemption_takes_the_cheapest_available_zone():
    d = decide(state(30, was_preempted=True), snap(offer("us-east-1c", 1.3), offer("us-west-2a", 0.95)), NOW)
    assert isinstance(d, Move) and d.target.zone == "us-west-2a" and d.reason is MigrationReason.PREEMPTED


def test_egress_table():
    assert transfer_cost_usd("us-east-1", "us-east-2", 50) == pytest.approx(0.5)
    assert transfer_cost_usd("us-east-1", "us-east-1", 50) == 0
    assert transfer_cost_usd(None, "us-west-2", 50) == 0


def test_job_state_rejects_bad_input():
    with pytest.raises(ValueError, match="remaining_work"):
        state(10, work=-1)


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_every_policy_runs_a_spot_only_job_on_spot_and_waits_without_capacity(name):
    """markets=["spot"]: no on-demand offer, so no Safety Net. greedy and uniform_progress used to
    wait "until now" forever (their on-demand slack is -inf) and uniform_progress raised a TypeError."""
    from spotshift.models import MarketSnapshot

    policy = get_policy(name)
    spot = offer("us-east-1b", 1.2)
    launched = policy.decide(state(30.0), MarketSnapshot(taken_at=NOW, offers=[spot]), NOW)
    if name == "on_demand":
        assert isinstance(launched, Stay)  # it never runs on spot
        return
    assert isinstance(launched, Move) and launched.target == spot
    waiting = policy.decide(state(30.0), MarketSnapshot(taken_at=NOW, offers=[]), NOW)
    assert isinstance(waiting, Stay) and (waiting.until is None or waiting.until > NOW)
