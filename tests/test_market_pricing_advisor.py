"""Pricing API adapter (Stubber, recorded payload) and Spot Advisor risk (the real snapshot, read in place)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import boto3
from botocore.stub import Stubber

from spotshift.market.on_demand_fallback import FALLBACK_SOURCE, fallback_price
from spotshift.market.pricing import PRICING_SOURCE, OnDemandPrices, parse_price_list, price_filters
from spotshift.market.spot_advisor import SpotAdvisor, parse_spot_advisor

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def product(instance_type: str, usd: str) -> str:
    """One PriceList entry as get_products returns it (trimmed to the fields read)."""
    return json.dumps({
        "product": {"attributes": {"instanceType": instance_type, "regionCode": "us-east-1"}},
        "terms": {"OnDemand": {"T1": {"priceDimensions": {"D1": {"unit": "Hrs", "pricePerUnit": {"USD": usd}}}}}},
    })


def pricing_stub():
    pricing = boto3.client("pricing", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    return pricing, Stubber(pricing)


def test_pricing_api_prices_win_and_missing_types_fall_back():
    pricing, stub = pricing_stub()
    expected = {"ServiceCode": "AmazonEC2", "Filters": price_filters("us-east-1"), "FormatVersion": "aws_v1"}
    stub.add_response("get_products", {"PriceList": [product("g5.xlarge", "1.0060000000")], "NextToken": "t"}, expected)
    stub.add_response("get_products", {"PriceList": [product("p3.2xlarge", "3.0600000000")]}, {**expected, "NextToken": "t"})
    stub.activate()
    prices = OnDemandPrices(pricing).prices("us-east-1", ["g5.xlarge", "p3.2xlarge", "g6.xlarge"])
    stub.assert_no_pending_responses()
    assert prices == {"g5.xlarge": (1.006, PRICING_SOURCE), "p3.2xlarge": (3.06, PRICING_SOURCE),
                      "g6.xlarge": (fallback_price("us-east-1", "g6.xlarge"), FALLBACK_SOURCE)}


def test_pricing_api_denied_falls_back_to_the_dated_table_and_says_so(caplog):
    pricing, stub = pricing_stub()
    stub.add_client_error("get_products", "AccessDeniedException", "not authorized to perform: pricing:GetProducts")
    stub.activate()
    prices = OnDemandPrices(pricing).prices("eu-west-1", ["p4d.24xlarge"])
    assert prices == {"p4d.24xlarge": (fallback_price("eu-west-1", "p4d.24xlarge"), FALLBACK_SOURCE)}
    assert prices["p4d.24xlarge"][0] > fallback_price("us-east-1", "p4d.24xlarge")
    assert "fall back to fallback-table:" in caplog.text and "AccessDeniedException" in caplog.text


def test_parse_price_list_ignores_non_hourly_and_zero_prices():
    upfront = json.dumps({"product": {"attributes": {"instanceType": "g5.xlarge"}},
                          "terms": {"OnDemand": {"T": {"priceDimensions": {"D": {"unit": "Quantity", "pricePerUnit": {"USD": "9"}}}}}}})
    assert parse_price_list([upfront, product("g4dn.xlarge", "0.0000000000")]) == {}


def test_real_advisor_snapshot_gives_the_documented_buckets(traces_dir):
    payload = json.loads((traces_dir / "aws-spot-advisor" / "data" / "spot-advisor-data.json").read_text())
    risks = parse_spot_advisor(payload)
    # SOURCES.md: p3.2xlarge us-east-1 r=4, g5.xlarge us-east-1 r=1, p5.48xlarge us-west-2 r=0
    assert risks[("us-east-1", "p3.2xlarge")].bucket == ">20%"
    assert risks[("us-east-1", "g5.xlarge")].model_dump() == {"bucket": "5-10%", "probability": 0.075}
    assert risks[("us-west-2", "p5.48xlarge")].bucket == "<5%"
    assert len({region for region, _ in risks}) == 29


RECORDED = {"spot_advisor": {"us-east-1": {"Linux": {"g5.xlarge": {"s": 47, "r": 1}},
                                           "Windows": {"g5.xlarge": {"s": 40, "r": 3}}}}}


def test_advisor_fetches_once_then_caches_on_disk(tmp_path):
    fetches: list[int] = []

    def fetch() -> bytes:
        fetches.append(1)
        return json.dumps(RECORDED).encode()

    cache = tmp_path / "advisor.json"
    table = SpotAdvisor(fetch, cache).table(NOW)
    assert table.risk("us-east-1", "g5.xlarge").bucket == "5-10%" and "fetched" in table.note
    # a new process within max_age reads the disk cache, not the network
    again = SpotAdvisor(fetch, cache).table(NOW + timedelta(hours=1))
    assert again.risk("us-east-1", "g5.xlarge").probability == 0.075 and fetches == [1]


def test_advisor_offline_is_unknown_or_the_stale_cache(tmp_path):
    def offline() -> bytes:
        raise OSError("Network is unreachable")

    table = SpotAdvisor(offline, tmp_path / "none.json").table(NOW)
    assert not table.risk("us-east-1", "g5.xlarge").known
    assert "unreachable (OSError: Network is unreachable); interruption risk unknown" in table.note
    cache = tmp_path / "old.json"
    cache.write_text(json.dumps({"fetched_at": (NOW - timedelta(days=3)).isoformat(), "payload": RECORDED}))
    stale = SpotAdvisor(offline, cache).table(NOW)
    assert stale.risk("us-east-1", "g5.xlarge").bucket == "5-10%" and "stale cache" in stale.note
