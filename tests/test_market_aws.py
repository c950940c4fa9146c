"""AwsMarket against a moto server (types, offerings, spot history) and botocore's Stubber for
what moto cannot do (placement scores, throttling, access denied)."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime

import boto3
import pytest
from botocore.stub import Stubber

from deployments.local_aws import client
from spotshift.aws.errors import PermissionDenied, Throttled
from spotshift.market.aws import AwsMarket
from spotshift.market.on_demand_fallback import FALLBACK_SOURCE, fallback_price
from spotshift.market.query import OfferQuery
from spotshift.cost_model import usd_per_work_unit
from spotshift.aws.calls import call_aws
from spotshift.market.source import MarketSource
from spotshift.market.spot_advisor import RiskTable
from spotshift.models import Market

NOW = datetime(2026, 1, 1, tzinfo=UTC)


class FixedRisks:
    """A risk provider with a fixed table (what SpotAdvisor.table returns)."""

    def __init__(self, table: RiskTable):
        self._table = table

    def table(self, now):
        return self._table


@pytest.fixture
def moto_market(moto_endpoint):
    return AwsMarket(lambda service, region: client(service, moto_endpoint, region),
                     placement_scores=False)


def test_moto_offers_are_shaped_and_filtered(moto_market):
    query = OfferQuery(regions=("us-east-1", "eu-west-1"), gpus=("T4", "A10G"), min_total_gpu_memory_gib=20)
    snap = moto_market.snapshot(query, NOW)
    assert isinstance(moto_market, MarketSource)
    assert snap.failed_regions == {} and snap.offers
    assert {o.gpu for o in snap.offers} <= {"T4", "A10G"}
    assert all(o.total_gpu_memory_gib >= 20 for o in snap.offers)
    assert {o.region for o in snap.offers} == {"us-east-1", "eu-west-1"}
    assert all(o.zone.startswith(o.region) and o.observed_at == NOW for o in snap.offers)
    spot = [o for o in snap.offers if o.market is Market.SPOT]
    on_demand = [o for o in snap.offers if o.market is Market.ON_DEMAND]
    assert spot and all(o.source == "ec2:spot-price-history" for o in spot)
    # no pricing client: on-demand comes from the dated table and says so
    assert on_demand and all(o.source == FALLBACK_SOURCE for o in on_demand)
    g5 = next(o for o in on_demand if o.instance_type == "g5.12xlarge" and o.region == "us-east-1")
    assert g5.usd_per_hour == fallback_price("us-east-1", "g5.12xlarge") and g5.vcpus == 48
    ranked = [usd_per_work_unit(o) for o in snap.offers]
    assert ranked == sorted(ranked)
    # each (type, zone) the spot history reports appears once, with the spot market
    assert len({(o.instance_type, o.zone) for o in spot}) == len(spot)


def _counting_clients(endpoint: str, latency_s: float = 0.0):
    """moto clients that record each DescribeInstanceTypes region and the most AWS calls seen in flight at once."""
    lock = threading.Lock()
    seen = {"in_flight": 0, "most_in_flight": 0, "describe_regions": []}

    def started(model, **kw):
        with lock:
            seen["in_flight"] += 1
            seen["most_in_flight"] = max(seen["most_in_flight"], seen["in_flight"])
            if model.name == "DescribeInstanceTypes":
                seen["describe_regions"].append(kw["context"]["client_region"])
        time.sleep(latency_s)

    def finished(**kw):
        with lock:
            seen["in_flight"] -= 1

    def client_for(service, region):
        c = client(service, endpoint, region)
        c.meta.events.register("before-call.ec2", started)
        c.meta.events.register("after-call.ec2", finished)
        c.meta.events.register("after-call-error.ec2", finished)
        return c

    return client_for, seen


def test_types_are_described_once_for_all_regions_and_snapshots(moto_endpoint):
    client_for, seen = _counting_clients(moto_endpoint)
    market = AwsMarket(client_for, placement_scores=False)
    query = OfferQuery(regions=("us-west-2", "eu-west-1"), instance_types=("g4dn.xlarge",))
    first = market.snapshot(query, NOW)
    second = market.snapshot(query, NOW)
    assert len(seen["describe_regions"]) == 1  # a type's description is the same in every region
    assert first.offers == second.offers
    assert {o.region for o in first.offers} == {"us-west-2", "eu-west-1"}
    assert all(o.vcpus == 4 and o.memory_gib == 16 for o in first.offers)


def test_one_call_at_a_time_with_one_worker_and_overlapping_calls_with_more(moto_endpoint):
    query = OfferQuery(regions=("us-east-1", "us-west-2", "eu-west-1"), gpus=("T4",))
    snapshots = {}
    for workers in (1, 8):
        client_for, seen = _counting_clients(moto_endpoint, latency_s=0.05)
        snapshots[workers] = AwsMarket(client_for, placement_scores=False,
                                       max_workers=workers).snapshot(query, NOW)
        if workers == 1:
            assert seen["most_in_flight"] == 1
        else:
            assert 1 < seen["most_in_flight"] <= workers
    assert snapshots[1].offers == snapshots[8].offers and snapshots[1].offers


def _stubbed_ec2(region: str):
    ec2 = boto3.client("ec2", region_name=region, aws_access_key_id="x", aws_secret_access_key="x")
    return ec2, Stubber(ec2)


def test_a_failing_region_is_reported_and_the_others_still_answer(moto_endpoint):
    denied, stub = _stubbed_ec2("eu-west-1")
    stub.add_client_error("describe_instance_type_offerings", "UnauthorizedOperation",
                          "not authorized to DescribeInstanceTypeOfferings")
    stub.add_client_error("describe_spot_price_history", "UnauthorizedOperation",
                          "not authorized to DescribeSpotPriceHistory")
    stub.activate()
    market = AwsMarket(lambda s, r: denied if r == "eu-west-1" else client(s, moto_endpoint, r),
                       placement_scores=False, max_workers=1)  # one call at a time: the Stubber's order
    snap = market.snapshot(OfferQuery(regions=("us-east-1", "eu-west-1"), instance_types=("g4dn.xlarge",)), NOW)
    assert list(snap.failed_regions) == ["eu-west-1"]
    assert "UnauthorizedOperation" in snap.failed_regions["eu-west-1"]
    assert snap.offers and {o.region for o in snap.offers} == {"us-east-1"}


def test_placement_scores_and_risk_with_the_stubber():
    ec2, stub = _stubbed_ec2("us-west-2")
    described = {"InstanceTypes": [{"InstanceType": "g5.xlarge", "VCpuInfo": {"DefaultVCpus": 4},
                                    "MemoryInfo": {"SizeInMiB": 16384}}]}
    # one call at a time, in this order: offerings, spot history, placement scores, then the types
    stub.add_response("describe_instance_type_offerings", {"InstanceTypeOfferings": [
        {"InstanceType": "g5.xlarge", "LocationType": "availability-zone", "Location": z}
        for z in ("us-west-2a", "us-west-2b")]})
    stub.add_response("describe_spot_price_history", {"SpotPriceHistory": [
        {"InstanceType": "g5.xlarge", "AvailabilityZone": "us-west-2a", "SpotPrice": "0.40",
         "Timestamp": datetime(2025, 12, 31, 23, tzinfo=UTC)},
        {"InstanceType": "g5.xlarge", "AvailabilityZone": "us-west-2a", "SpotPrice": "0.35",
         "Timestamp": datetime(2025, 12, 31, 20, tzinfo=UTC)},
        {"InstanceType": "g5.xlarge", "AvailabilityZone": "us-west-2b", "SpotPrice": "0.30",
         "Timestamp": datetime(2025, 12, 31, 22, tzinfo=UTC)}], "NextToken": "page2"})
    stub.add_response("describe_spot_price_history", {"SpotPriceHistory": [
        {"InstanceType": "g5.xlarge", "AvailabilityZone": "us-west-2c", "SpotPrice": "0.10",
         "Timestamp": datetime(2025, 12, 31, 22, tzinfo=UTC)}]})  # 2c does not offer g5.xlarge: dropped
    stub.add_response("get_spot_placement_scores", {"SpotPlacementScores": [
        {"Region": "us-west-2", "AvailabilityZoneId": "usw2-az1", "Score": 9},
        {"Region": "us-west-2", "AvailabilityZoneId": "usw2-az2", "Score": 3}]})
    stub.add_response("describe_availability_zones", {"AvailabilityZones": [
        {"ZoneName": "us-west-2a", "ZoneId": "usw2-az1"}, {"ZoneName": "us-west-2b", "ZoneId": "usw2-az2"}]})
    stub.add_response("describe_instance_types", described, expected_params={"InstanceTypes": ["g5.xlarge"]})
    stub.activate()
    from spotshift.models import InterruptionRisk
    risks = FixedRisks(RiskTable({("us-west-2", "g5.xlarge"): InterruptionRisk(bucket="5-10%", probability=0.075)}))
    market = AwsMarket(lambda s, r: ec2, risks=risks, max_workers=1)
    snap = market.snapshot(OfferQuery(regions=("us-west-2",), instance_types=("g5.xlarge",), markets=(Market.SPOT,)), NOW)
    stub.assert_no_pending_responses()
    assert [(o.zone, o.usd_per_hour, o.placement_score) for o in snap.offers] == [
        ("us-west-2b", 0.30, 3), ("us-west-2a", 0.40, 9)]
    assert all(o.interruption.bucket == "5-10%" and o.interruption.probability == 0.075 for o in snap.offers)


def _one_zone_stubs(stub, region: str, *, describe: bool = True) -> None:
    """offerings and spot history of g4dn.xlarge in one zone (+ its description the first time)."""
    stub.add_response("describe_instance_type_offerings", {"InstanceTypeOfferings": [
        {"InstanceType": "g4dn.xlarge", "LocationType": "availability-zone", "Location": f"{region}a"}]})
    stub.add_response("describe_spot_price_history", {"SpotPriceHistory": [
        {"InstanceType": "g4dn.xlarge", "AvailabilityZone": f"{region}a", "SpotPrice": "0.2",
         "Timestamp": datetime(2025, 12, 31, tzinfo=UTC)}]})


def _scores_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "spotshift.market.aws" and r.levelno == logging.WARNING and "GetSpotPlacementScores" in r.getMessage()]


def _spot_query(region: str) -> OfferQuery:
    return OfferQuery(regions=(region,), markets=(Market.SPOT,), instance_types=("g4dn.xlarge",))


@pytest.mark.parametrize("code", ["UnauthorizedOperation", "AccessDenied"])
def test_placement_scores_not_permitted_leave_the_score_unknown_and_name_the_permission(code, caplog):
    ec2, stub = _stubbed_ec2("us-east-2")
    _one_zone_stubs(stub, "us-east-2")
    stub.add_client_error("get_spot_placement_scores", code, "You are not authorized to perform this operation.")
    stub.add_response("describe_instance_types", {"InstanceTypes": [{"InstanceType": "g4dn.xlarge"}]})
    _one_zone_stubs(stub, "us-east-2")  # the second snapshot does not ask for scores again
    stub.activate()
    market = AwsMarket(lambda s, r: ec2, max_workers=1)
    caplog.set_level(logging.INFO, logger="spotshift.market.aws")
    snaps = [market.snapshot(_spot_query("us-east-2"), NOW) for _ in range(2)]
    stub.assert_no_pending_responses()
    for snap in snaps:
        assert snap.failed_regions == {}
        assert [(o.zone, o.placement_score, o.interruption.known) for o in snap.offers] == [("us-east-2a", None, False)]
    [warning] = _scores_warnings(caplog)
    assert "us-east-2" in warning and "permission ec2:GetSpotPlacementScores is missing" in warning and code in warning


def _unparseable_scores(calls: list[str]):
    """An after-call handler that answers GetSpotPlacementScores as moto does (an HTML 500 page), through
    botocore's own EC2 parser: the very ResponseParserError the moto server produces."""
    from botocore.parsers import create_parser

    def handler(model, **kw):
        calls.append(model.name)
        create_parser("ec2").parse({"status_code": 500, "headers": {}, "body": b"<!doctype html>\n<html lang=en>\n"
                                    b"<title>500 Internal Server Error</title>\n"}, model.output_shape)

    return handler


def test_an_endpoint_that_answers_placement_scores_unparseably_leaves_the_score_unknown(caplog):
    from botocore.parsers import ResponseParserError

    ec2, stub = _stubbed_ec2("eu-west-1")
    _one_zone_stubs(stub, "eu-west-1")
    stub.add_response("get_spot_placement_scores", {})  # its answer is then parsed as moto's: see the handler
    stub.add_response("describe_instance_types", {"InstanceTypes": [{"InstanceType": "g4dn.xlarge"}]})
    _one_zone_stubs(stub, "eu-west-1")
    stub.add_response("get_spot_placement_scores", {})  # for the plain boto3 call at the end
    stub.activate()
    calls: list[str] = []
    ec2.meta.events.register("after-call.ec2.GetSpotPlacementScores", _unparseable_scores(calls))
    market = AwsMarket(lambda s, r: ec2, max_workers=1)
    caplog.set_level(logging.INFO, logger="spotshift.market.aws")
    snaps = [market.snapshot(_spot_query("eu-west-1"), NOW) for _ in range(2)]
    assert calls == ["GetSpotPlacementScores"]  # asked once: this market knows the endpoint lacks it
    with pytest.raises(ResponseParserError):  # what boto3 itself raises for it (the adapter types it)
        ec2.get_spot_placement_scores(TargetCapacity=1)
    stub.assert_no_pending_responses()
    for snap in snaps:
        assert snap.failed_regions == {}
        assert [(o.zone, o.placement_score) for o in snap.offers] == [("eu-west-1a", None)]
    [warning] = _scores_warnings(caplog)
    assert "eu-west-1" in warning and "does not implement it" in warning and "UnparseableResponse" in warning


@pytest.mark.parametrize("code", ["InvalidAction", "UnsupportedOperation"])
def test_an_api_the_endpoint_refuses_to_know_leaves_the_score_unknown(code, caplog):
    ec2, stub = _stubbed_ec2("us-west-1")
    _one_zone_stubs(stub, "us-west-1")
    stub.add_client_error("get_spot_placement_scores", code, "The action GetSpotPlacementScores is not valid for this web service.")
    stub.add_response("describe_instance_types", {"InstanceTypes": [{"InstanceType": "g4dn.xlarge"}]})
    stub.activate()
    caplog.set_level(logging.INFO, logger="spotshift.market.aws")
    snap = AwsMarket(lambda s, r: ec2, max_workers=1).snapshot(_spot_query("us-west-1"), NOW)
    stub.assert_no_pending_responses()
    assert [(o.zone, o.placement_score) for o in snap.offers] == [("us-west-1a", None)]
    [warning] = _scores_warnings(caplog)
    assert "us-west-1" in warning and "does not implement it" in warning


def test_throttled_placement_scores_are_asked_again_by_the_next_snapshot(caplog):
    ec2, stub = _stubbed_ec2("us-east-2")  # the Stubber skips botocore's retries: this is after they gave up
    _one_zone_stubs(stub, "us-east-2")
    stub.add_client_error("get_spot_placement_scores", "RequestLimitExceeded", "Request limit exceeded.")
    stub.add_response("describe_instance_types", {"InstanceTypes": [{"InstanceType": "g4dn.xlarge"}]})
    _one_zone_stubs(stub, "us-east-2")
    stub.add_response("get_spot_placement_scores", {"SpotPlacementScores": [
        {"Region": "us-east-2", "AvailabilityZoneId": "use2-az1", "Score": 7}]})
    stub.add_response("describe_availability_zones", {"AvailabilityZones": [
        {"ZoneName": "us-east-2a", "ZoneId": "use2-az1"}]})
    stub.activate()
    market = AwsMarket(lambda s, r: ec2, max_workers=1)
    caplog.set_level(logging.INFO, logger="spotshift.market.aws")
    first, second = (market.snapshot(_spot_query("us-east-2"), NOW) for _ in range(2))
    stub.assert_no_pending_responses()
    assert [o.placement_score for o in first.offers] == [None]
    assert [o.placement_score for o in second.offers] == [7]
    assert _scores_warnings(caplog) == []


def test_call_aws_maps_errors_to_typed_ones():
    ec2, stub = _stubbed_ec2("us-east-1")  # the Stubber skips botocore's retries: one error, one answer
    stub.add_client_error("describe_regions", "RequestLimitExceeded", "Request limit exceeded.")
    stub.add_client_error("describe_regions", "AuthFailure", "AWS was not able to validate the provided credentials")
    stub.activate()
    with pytest.raises(Throttled, match="RequestLimitExceeded on DescribeRegions in us-east-1"):
        call_aws(ec2.describe_regions, region="us-east-1")
    with pytest.raises(PermissionDenied, match="AuthFailure"):
        call_aws(ec2.describe_regions, region="us-east-1")


def test_a_type_whose_description_fails_in_one_region_is_described_in_the_next():
    clients = {}
    for region, describe_fails in (("us-east-1", True), ("us-east-2", False)):
        ec2, stub = _stubbed_ec2(region)
        stub.add_response("describe_instance_type_offerings", {"InstanceTypeOfferings": [
            {"InstanceType": "g4dn.xlarge", "LocationType": "availability-zone", "Location": f"{region}a"}]})
        stub.add_response("describe_spot_price_history", {"SpotPriceHistory": [
            {"InstanceType": "g4dn.xlarge", "AvailabilityZone": f"{region}a", "SpotPrice": "0.2",
             "Timestamp": datetime(2025, 12, 31, tzinfo=UTC)}]})
        if describe_fails:
            stub.add_client_error("describe_instance_types", "UnauthorizedOperation", "no ec2:DescribeInstanceTypes")
        else:
            stub.add_response("describe_instance_types", {"InstanceTypes": [
                {"InstanceType": "g4dn.xlarge", "VCpuInfo": {"DefaultVCpus": 4}}]})
        stub.activate()
        clients[region] = (ec2, stub)
    market = AwsMarket(lambda s, r: clients[r][0], placement_scores=False, max_workers=1)
    snap = market.snapshot(OfferQuery(regions=("us-east-1", "us-east-2"), instance_types=("g4dn.xlarge",),
                                      markets=(Market.SPOT,)), NOW)
    for _, stub in clients.values():
        stub.assert_no_pending_responses()
    assert list(snap.failed_regions) == ["us-east-1"]
    assert "UnauthorizedOperation" in snap.failed_regions["us-east-1"]
    assert [(o.zone, o.vcpus) for o in snap.offers] == [("us-east-2a", 4)]


def test_types_the_regions_image_cannot_boot_are_not_offered(moto_endpoint):
    from spotshift.aws.errors import ImageUnavailable
    from spotshift.aws.images import RegionImage

    def supports(region, instance_type):
        if region == "eu-west-1":
            raise ImageUnavailable("no image", code="ImageNotResolved", region=region)
        return RegionImage(region, "ami-1", "ssm:p").supports(instance_type)

    market = AwsMarket(lambda s, r: client(s, moto_endpoint, r), placement_scores=False, supports=supports)
    snap = market.snapshot(OfferQuery(regions=("us-east-1", "eu-west-1"), gpus=("V100", "A10G")), NOW)
    assert {o.instance_type.split(".")[0] for o in snap.offers} == {"g5"}  # p3 (V100) is not on the DLAMI
    assert "ImageNotResolved" in snap.failed_regions["eu-west-1"]
