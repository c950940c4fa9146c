"""The preflight before a job's first launch in a region: the check rows (cached per region), and
the verdict for one offer -- a zero quota blocks the offers under that quota, an unknown one (not
readable) blocks nothing, anything else the user must fix stops with the fix named. Quotas:
Stubber (moto's Service Quotas has no EC2 codes)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from spotshift.aws.check import (
    CheckConfig,
    CheckRow,
    RegionNotReady,
    RegionPreflight,
    launch_verdict,
    quota_row,
    quota_row_name,
)
from spotshift.aws.errors import CapacityUnavailable, QuotaExceeded
from spotshift.aws.quotas import QuotaReading, blocked_by, gpu_quotas
from spotshift.aws.setup import ensure_security_group
from spotshift.catalog import INSTANCE_TYPES
from spotshift.models import Market, Offer
from tasks.aws_check import check_region_before_launch
from tests.aws_helpers import moto_clients, stubbed_quotas


def offer(name: str = "g5.xlarge", market: Market = Market.SPOT, zone: str = "us-east-1a") -> Offer:
    t = INSTANCE_TYPES[name]
    return Offer(instance_type=t.name, gpu=t.gpu, gpu_count=t.gpu_count, gpu_memory_gib=t.gpu_memory_gib, vcpus=t.vcpus,
                 memory_gib=t.memory_gib, region=zone[:-1], zone=zone, market=market, usd_per_hour=1.0,
                 observed_at=datetime(2026, 11, 1, tzinfo=UTC), source="test")


def rows(*failed: str, unknown: tuple[str, ...] = ()) -> list[CheckRow]:
    """A region's rows: `failed` checks fail (a failed quota row reads 0 vCPUs), `unknown` quotas
    could not be read, every other quota is 64 vCPUs."""
    names = ["image", "security group", "subnets", "run-instances dry run"]
    out = [CheckRow("us-east-1", n, n not in failed, f"{n} detail", f"fix {n}") for n in names]
    for group, market, quota in gpu_quotas():
        name = quota_row_name(group, market)
        vcpus = None if name in unknown else 0.0 if name in failed else 64.0
        out.append(quota_row("us-east-1", QuotaReading(quota, vcpus, reason="" if vcpus is not None else "denied")))
    return out


def test_a_zero_quota_blocks_only_offers_under_it():
    with pytest.raises(QuotaExceeded) as info:
        launch_verdict(offer("g5.xlarge", Market.SPOT), rows("quota G spot"))
    assert info.value.quota_code == "L-3819A6DF" and "L-3819A6DF" in str(info.value)
    launch_verdict(offer("g5.xlarge", Market.ON_DEMAND), rows("quota G spot"))  # another quota: fine
    launch_verdict(offer("p4d.24xlarge", Market.SPOT), rows("quota G spot"))


def test_an_unknown_quota_blocks_nothing():
    launch_verdict(offer("g5.xlarge", Market.SPOT), rows(unknown=("quota G spot",)))
    launch_verdict(offer("p4d.24xlarge", Market.ON_DEMAND), rows(unknown=("quota P on_demand",)))


def test_anything_else_stops_with_each_fix_named():
    with pytest.raises(RegionNotReady, match="image: image detail \\(fix: fix image\\).*dry run"):
        launch_verdict(offer(), rows("image", "run-instances dry run"))


def test_a_quota_error_blocks_the_region_family_and_market():
    offers = [offer("g5.xlarge"), offer("g5.2xlarge", zone="us-east-1b"), offer("g6.xlarge", zone="us-east-1c"),
              offer("g5.xlarge", Market.ON_DEMAND), offer("p4d.24xlarge"), offer("g5.xlarge", zone="us-west-2a")]
    quota = QuotaExceeded("limit 0", quota_code="L-3819A6DF", code="VcpuLimitExceeded")
    assert blocked_by(quota, offers[0], offers) == {o.key for o in offers[:3]}
    capacity = CapacityUnavailable("none", code="InsufficientInstanceCapacity")
    assert blocked_by(capacity, offers[0], offers) == {offers[0].key}


def test_the_task_checks_a_region_once_and_raises_for_a_zero_quota(moto_endpoint):
    group = f"spotshift-{uuid.uuid4().hex[:8]}"
    clients = moto_clients(moto_endpoint, stubs={"service-quotas": stubbed_quotas({"L-3819A6DF": 0})})
    ensure_security_group(clients("ec2", "us-east-1"), group, region="us-east-1")
    clients("iam", "us-east-1").create_instance_profile(InstanceProfileName=group)
    config = CheckConfig(bucket="b", bucket_region="us-east-1", profile=group, security_group=group,
                         regions=("us-east-1",), image_overrides=(("us-east-1", "ami-999844e0"),))
    calls = []
    preflight = RegionPreflight(lambda s, r: calls.append(s) or clients(s, r), config, ttl_s=3600)

    class Backend:
        pass

    backend = Backend()
    backend.preflight = preflight
    on_demand = check_region_before_launch.fn(offer("g5.xlarge", Market.ON_DEMAND), backend)
    assert any(r.check == "run-instances dry run" and r.ok for r in on_demand)
    before = len(calls)
    with pytest.raises(QuotaExceeded, match="L-3819A6DF"):
        check_region_before_launch.fn(offer("g5.xlarge", Market.SPOT), backend)
    assert len(calls) == before  # the second launch in the region used the cached rows
    assert check_region_before_launch.fn(offer(), object()) == []  # the local backend: no preflight


def test_an_access_denied_quota_reads_unknown_and_the_launch_goes_ahead(moto_endpoint):
    group = f"spotshift-{uuid.uuid4().hex[:8]}"
    clients = moto_clients(moto_endpoint, stubs={"service-quotas": stubbed_quotas(
        {}, errors={"L-3819A6DF": "AccessDeniedException"})})
    ensure_security_group(clients("ec2", "us-east-1"), group, region="us-east-1")
    clients("iam", "us-east-1").create_instance_profile(InstanceProfileName=group)
    config = CheckConfig(bucket="b", bucket_region="us-east-1", profile=group, security_group=group,
                         regions=("us-east-1",), image_overrides=(("us-east-1", "ami-999844e0"),))
    backend = type("Backend", (), {"preflight": RegionPreflight(clients, config, ttl_s=3600)})()
    checked = check_region_before_launch.fn(offer("g5.xlarge", Market.SPOT), backend)  # no QuotaExceeded
    g_spot = next(r for r in checked if r.check == "quota G spot")
    assert g_spot.result == "UNKNOWN" and g_spot.ok
    assert "L-3819A6DF): unknown (AccessDeniedException on GetServiceQuota" in g_spot.detail
    assert "allow servicequotas:GetServiceQuota" in g_spot.fix
