"""tasks.scout: the task body over a ReplayMarket, its cache key and its retry condition."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import numpy as np
from spotshift.aws.errors import Throttled
from spotshift.market.query import OfferQuery
from spotshift.market.replay import ReplayMarket
from spotshift.market.traces import TraceSet
from spotshift.models import Market
from tasks.retries import retry_when_aws_gave_up
from tasks.scout import _task_cache_key, offers_table, scout, scout_cache_key

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def two_zone_market(speedup: float = 1.0) -> ReplayMarket:
    traces = TraceSet(
        names=("us-east-1a_v100_1", "us-west-2b_v100_1"), zones=("us-east-1a", "us-west-2b"),
        regions=("us-east-1", "us-west-2"), gpu="v100", start=datetime(2023, 1, 1, tzinfo=UTC), tick_seconds=600,
        available=np.array([[True, False, True], [True, True, False]]),
        spot_price=np.array([[1.2, 1.3, 1.1], [0.95, 0.9, 0.92]]),
    )
    return ReplayMarket(traces, start=T0, speedup=speedup)


def test_scout_returns_fitting_offers_cheapest_first():
    query = OfferQuery(regions=("us-east-1", "us-west-2"))
    snap = scout.fn(two_zone_market(), query, now=T0 + timedelta(minutes=10))  # tick 1
    assert [(o.zone, str(o.market), o.usd_per_hour) for o in snap.offers] == [
        ("us-west-2b", "spot", 0.9), ("us-east-1a", "on_demand", 3.06), ("us-west-2b", "on_demand", 3.06)]
    rows = offers_table(snap, top=2)
    assert [r["rank"] for r in rows] == [1, 2]
    assert rows[0] == {"rank": 1, "instance": "p3.2xlarge", "gpus": "1x V100", "zone": "us-west-2b", "market": "spot",
                       "usd_per_hour": 0.9, "usd_per_v100_hour": 0.9, "risk": "unknown", "source": "replay",
                       "observed_at": snap.offers[0].observed_at.isoformat()}


def test_cache_key_depends_on_query_market_and_time_window_not_on_clients():
    q = OfferQuery(regions=("us-east-1",), markets=(Market.SPOT,))
    key = scout_cache_key(q, "aws", T0, 300)
    assert scout_cache_key(q, "aws", T0 + timedelta(seconds=299), 300) == key
    assert scout_cache_key(q, "aws", T0 + timedelta(seconds=300), 300) != key
    assert scout_cache_key(q, "replay:x", T0, 300) != key
    assert scout_cache_key(OfferQuery(regions=("us-east-1",)), "aws", T0, 300) != key
    a, b = two_zone_market(), two_zone_market()  # two market objects over the same data
    assert _task_cache_key(None, {"market": a, "query": q, "now": T0}) == _task_cache_key(None, {"market": b, "query": q, "now": T0})


class _FailedState:
    """A failed Prefect state carrying `exc` (the error path only a failing AWS call produces)."""

    def __init__(self, exc: Exception):
        self.exc = exc

    def result(self):
        raise self.exc


def test_the_scout_task_retries_only_what_botocore_could_not_cure():
    assert retry_when_aws_gave_up(scout, None, _FailedState(Throttled("slow down", code="RequestLimitExceeded")))
    assert not retry_when_aws_gave_up(scout, None, _FailedState(ValueError("bad query")))
    assert scout.retry_condition_fn is retry_when_aws_gave_up



def test_scout_on_an_endpoint_without_placement_scores_keeps_its_offers_with_the_score_unknown(moto_endpoint, caplog):
    """moto has no GetSpotPlacementScores (it answers an HTML 500 page that botocore cannot parse): the
    scout still returns the region's offers, their placement score unknown, and warns once."""
    from deployments.local_aws import client
    from spotshift.market.aws import AwsMarket

    market = AwsMarket(lambda service, region: client(service, moto_endpoint, region))  # placement scores asked
    query = OfferQuery(regions=("us-east-1",), instance_types=("g4dn.xlarge",))
    caplog.set_level(logging.INFO, logger="spotshift.market.aws")
    snaps = [scout.fn(market, query, now=T0 + timedelta(minutes=i)) for i in range(2)]  # two polls, one market
    for snap in snaps:
        assert snap.failed_regions == {}
        spot = [o for o in snap.offers if o.market is Market.SPOT]
        assert spot and {o.region for o in snap.offers} == {"us-east-1"}
        assert all(o.placement_score is None for o in snap.offers)
        assert all(row["risk"] == "unknown" for row in offers_table(snap))
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and "GetSpotPlacementScores" in r.getMessage()]
    assert len(warnings) == 1
    assert "us-east-1" in warnings[0] and "does not implement it" in warnings[0]
