"""ReplayMarket: the virtual clock over the real V100 traces and the offers it yields."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from spotshift.market.query import OfferQuery
from spotshift.market.replay import ReplayMarket
from spotshift.market.source import MarketSource
from spotshift.market.traces import find_prices_file, load_traces
from spotshift.models import Market

WALL_START = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def v100_dir(traces_dir):
    return traces_dir / "skynomad-artifact" / "data" / "real" / "availability" / "2023-02-15" / "processed"


@pytest.fixture(scope="module")
def traces(v100_dir):
    return load_traces(v100_dir)


@pytest.fixture(scope="module")
def prices(v100_dir):
    return json.loads(find_prices_file(v100_dir, "v100").read_text())


def test_virtual_clock_maps_wall_time_to_trace_time(traces):
    market = ReplayMarket(traces, start=WALL_START, speedup=600, trace_offset_ticks=100)
    # 1 wall minute at 600x = 10 trace hours after tick 100
    assert market.trace_time(WALL_START + timedelta(minutes=1)) == traces.time_of(100) + timedelta(hours=10)
    # the whole 45.5-day trace replays in about 110 wall minutes, then wraps around
    wrapped = WALL_START + (traces.duration - (traces.time_of(100) - traces.start)) / 600
    assert abs(market.trace_time(wrapped) - traces.start) < timedelta(milliseconds=1)
    assert market.tick(wrapped) == 0


def test_availability_and_price_follow_the_trace(traces, prices):
    market = ReplayMarket(traces, start=WALL_START, speedup=3600)
    for zone, name in (("us-east-1a", "us-east-1a_v100_1"), ("us-west-2b", "us-west-2b_v100_1")):
        i = traces.zone_index(zone)
        seen = {market.available(zone, WALL_START + timedelta(seconds=s)) for s in range(0, 1200, 10)}
        assert seen == {True, False}, "20 wall minutes = 50 trace days: both states must show up"
        now = WALL_START + timedelta(seconds=333)
        tick = market.tick(now)
        assert market.available(zone, now) == bool(traces.available[i, tick])
        assert market.spot_price(zone, now) == prices[name][tick]


def test_snapshot_offers_spot_only_where_available_and_ranks_cheapest_first(traces, prices):
    market = ReplayMarket(traces, start=WALL_START, trace_offset_ticks=5000)
    assert isinstance(market, MarketSource)
    query = OfferQuery(regions=("us-east-1", "us-east-2", "us-west-2"))
    snap = market.snapshot(query, WALL_START)
    up = {z for i, z in enumerate(traces.zones) if traces.available[i, 5000]}
    spot = [o for o in snap.offers if o.market is Market.SPOT]
    assert {o.zone for o in spot} == up and 0 < len(up) < 9
    assert {o.zone: o.usd_per_hour for o in spot} == {z: prices[f"{z}_v100_1"][5000] for z in up}
    assert len([o for o in snap.offers if o.market is Market.ON_DEMAND]) == 9
    assert [o.usd_per_hour for o in snap.offers] == sorted(o.usd_per_hour for o in snap.offers)
    assert snap.offers[-1].usd_per_hour == 3.06 and snap.source == "replay"
    assert all(o.instance_type == "p3.2xlarge" and o.observed_at == WALL_START for o in snap.offers)


def test_snapshot_respects_the_query(traces):
    market = ReplayMarket(traces, start=WALL_START)
    west_spot = OfferQuery(regions=("us-west-2",), markets=(Market.SPOT,))
    assert {o.region for o in market.snapshot(west_spot, WALL_START).offers} <= {"us-west-2"}
    too_big = OfferQuery(regions=("us-west-2",), min_total_gpu_memory_gib=32)
    assert market.snapshot(too_big, WALL_START).offers == []
    other_gpu = OfferQuery(regions=("us-west-2",), gpus=("A100",))
    assert market.snapshot(other_gpu, WALL_START).offers == []


def test_bad_arguments_are_named(traces):
    with pytest.raises(ValueError, match="speedup must be a positive number"):
        ReplayMarket(traces, start=WALL_START, speedup=0)
    with pytest.raises(ValueError, match="instance_type 'p9.huge' is unknown. Choose between"):
        ReplayMarket(traces, start=WALL_START, instance_type="p9.huge")
    with pytest.raises(KeyError, match="zone 'eu-west-1a' is not in this trace"):
        ReplayMarket(traces, start=WALL_START).available("eu-west-1a", WALL_START)
