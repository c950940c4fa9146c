from datetime import UTC, datetime, timedelta

from deployments.demo_market import DemoTimeline, demo_market, demo_traces, write_trace_folder
from spotshift.market.query import OfferQuery
from spotshift.market.replay import ReplayMarket
from spotshift.market.traces import load_traces
from spotshift.models import Market

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def cheapest_spot(market, minute):
    q = OfferQuery(regions=("us-east-1", "us-east-2", "us-west-2"), markets=(Market.SPOT,))
    return market.snapshot(q, T0 + timedelta(minutes=minute)).offers[0].zone


def test_the_demo_market_loses_its_cheapest_zone_then_offers_a_cheaper_one():
    t = DemoTimeline(lost_minute=30, cheap_minute=60)
    market = demo_market(T0, t)
    assert cheapest_spot(market, 0) == "us-east-1a"
    assert market.available("us-east-1a", T0 + timedelta(minutes=29))
    assert not market.available("us-east-1a", T0 + timedelta(minutes=30))
    assert cheapest_spot(market, 45) == "us-east-2a"
    assert cheapest_spot(market, 60) == "us-west-2a"


def test_the_demo_trace_round_trips_through_the_real_trace_format(tmp_path):
    traces = demo_traces(T0, DemoTimeline(hours=2))
    write_trace_folder(traces, tmp_path)
    loaded = load_traces(tmp_path)
    assert loaded.zones == traces.zones and loaded.tick_seconds == 60
    assert (loaded.available == traces.available).all() and (loaded.spot_price == traces.spot_price).all()
