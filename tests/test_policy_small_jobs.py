"""The spotshift policy on jobs far smaller than their deadline window, as live users submit them: a
job of minutes with hours of slack does not idle most of its window waiting for a longer-lived zone,
and a tiny checkpoint is not worth waiting an hour for capacity in its own region."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from spotshift.lifecycle.plans import Wait, plan_place
from spotshift.lifecycle.state import JobFacts, Stint, job_state
from spotshift.models import EndReason, InterruptionRisk, Market, MarketSnapshot, Offer
from spotshift.policy.outlook import MarketHistory, ZoneObservation, outlook_from_history

NOW = datetime(2026, 3, 2, tzinfo=UTC)
H = timedelta(hours=1)
ZONES = ("us-east-1a", "us-east-2a", "us-west-2a")


def offer(zone: str, price: float, market: Market = Market.SPOT) -> Offer:
    return Offer(instance_type="p3.2xlarge", gpu="V100", gpu_count=1, gpu_memory_gib=16, vcpus=8, memory_gib=61,
                 region=zone[:-1], zone=zone, market=market, usd_per_hour=price, interruption=InterruptionRisk(),
                 observed_at=NOW, source="test")


def outlook(down: tuple[str, ...] = ()):
    seen = [ZoneObservation(z, NOW - 24 * H, True, 1.0) for z in ZONES]
    seen += [ZoneObservation(z, NOW - 0.1 * H, False) for z in down]
    return outlook_from_history(MarketHistory.from_observations(seen), NOW)


def snapshot(*zones: str) -> MarketSnapshot:
    return MarketSnapshot(taken_at=NOW, offers=[offer(z, 1.0 + i / 10) for i, z in enumerate(zones)]
                          + [offer("us-east-1a", 3.06, Market.ON_DEMAND)])


def test_a_job_of_minutes_with_a_day_of_slack_launches_on_spot_now():
    state = job_state(JobFacts(job_id="j", deadline=NOW + 24 * H, started_at=NOW, remaining_work=0.05,
                               changeover_hours=0.2, total_work=0.05, outlook=outlook()), [])
    plan = plan_place(state, snapshot(*ZONES), NOW, frozenset(), "spotshift")
    assert not isinstance(plan, Wait) and plan.offer.market is Market.SPOT


def test_a_tiny_checkpoint_is_carried_to_another_region_rather_than_waited_for():
    preempted = Stint(offer("us-east-1a", 1.0), NOW - 2 * H, NOW - 0.1 * H, EndReason.PREEMPTED)
    facts = dict(job_id="j", deadline=NOW + 48 * H, started_at=NOW - 2 * H, remaining_work=1.0,
                 changeover_hours=0.2, total_work=2.0, outlook=outlook(down=("us-east-1a",)),
                 checkpoint_region="us-east-1")
    tiny = plan_place(job_state(JobFacts(**facts, checkpoint_gb=0.001), [preempted]), snapshot(*ZONES[1:]), NOW,
                      frozenset(), "spotshift")
    assert not isinstance(tiny, Wait) and tiny.offer.zone == "us-east-2a"
    big = plan_place(job_state(JobFacts(**facts, checkpoint_gb=200.0), [preempted]), snapshot(*ZONES[1:]), NOW,
                     frozenset(), "spotshift")
    assert isinstance(big, Wait) and "checkpoint" in big.reason  # $4 of transfer is worth an hour's wait
