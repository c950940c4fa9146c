"""The live market history: what each scout saw per zone is recorded, and the outlook the policy gets
is built from it by the simulator's own function (spotshift.policy.outlook.outlook_from_history)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from spotshift.models import InterruptionRisk, Market, MarketSnapshot, Offer
from spotshift.policy.outlook import MarketHistory, ZoneObservation, outlook_from_history
from spotshift.stores import open_embedded_database
from spotshift.stores.market_history import MarketHistoryStore, observations_from_snapshot

T0 = datetime(2026, 3, 1, tzinfo=UTC)
H = timedelta(hours=1)


def offer(zone: str, price: float, market: Market = Market.SPOT) -> Offer:
    return Offer(instance_type="p3.2xlarge", gpu="V100", gpu_count=1, gpu_memory_gib=16, vcpus=8, memory_gib=61,
                 region=zone[:-1], zone=zone, market=market, usd_per_hour=price, interruption=InterruptionRisk(),
                 observed_at=T0, source="test")


def test_a_snapshot_says_which_known_zones_are_up_and_which_are_not():
    snap = MarketSnapshot(taken_at=T0, offers=[offer("us-east-1a", 0.9), offer("us-east-1a", 0.8),
                                               offer("us-east-1b", 3.0, Market.ON_DEMAND)])
    obs = observations_from_snapshot(snap, {"us-east-1a", "us-east-1b", "eu-west-1a"}, T0, ["us-east-1"])
    assert [(o.zone, o.available, o.price) for o in obs] == [("us-east-1a", True, 0.8), ("us-east-1b", False, None)]


@pytest.fixture
def store(tmp_path):
    db = open_embedded_database(tmp_path, "t")
    return MarketHistoryStore(db.database, write_lock=db.write_lock)


def test_the_recorded_outlook_is_the_simulators_function_of_the_same_history(store):
    # us-east-1a: up 3 h, down 1 h, up again; us-east-1b: up all along; our preemption in 1a recorded too
    history = []
    for hour in range(8):
        at = T0 + hour * H
        history.append(ZoneObservation("us-east-1a", at, available=not 3 <= hour < 4, price=0.9))
        history.append(ZoneObservation("us-east-1b", at, available=True, price=1.0))
    store.record(history, source="scout")
    store.record([ZoneObservation("us-east-1a", T0 + 6.5 * H, available=False)], source="preemption")
    now = T0 + 7 * H
    live = store.outlook(["us-east-1"], now)
    expected = outlook_from_history(MarketHistory.from_observations(
        [*history[:14], ZoneObservation("us-east-1a", T0 + 6.5 * H, available=False), *history[14:]]), now)
    assert live == expected
    assert "us-east-1b" in live.run_hours and live.as_of <= now
    assert store.outlook(["eu-west-1"], now) is None  # nothing recorded there
    assert store.outlook(["us-east-1"], T0 - H) is None  # nothing recorded before then


def test_records_of_another_writer_are_seen_once_the_copy_is_reloaded(tmp_path):
    db = open_embedded_database(tmp_path, "t")
    ticks = [0.0]
    reader = MarketHistoryStore(db.database, write_lock=db.write_lock, reload_s=60, monotonic=lambda: ticks[0])
    writer = MarketHistoryStore(db.database, write_lock=db.write_lock)  # a continuous scout elsewhere
    reader.record([ZoneObservation("us-east-1a", T0, available=True, price=0.9)], source="scout")
    assert reader.zones() == {"us-east-1a"}  # its own record, at once
    writer.record([ZoneObservation("us-west-2a", T0 + H, available=False)], source="preemption")
    assert reader.zones() == {"us-east-1a"}  # its copy is fresh enough for the outlook
    ticks[0] = 61.0
    assert reader.zones() == {"us-east-1a", "us-west-2a"}
    assert [o.zone for o in reader.observations(since=T0 + H)] == ["us-west-2a"]
