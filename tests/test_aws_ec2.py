"""spotshift.aws.ec2 against the moto server (real ids, tags, states) and botocore's Stubber
for the errors moto cannot produce."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime

import boto3
import pytest
from botocore.stub import Stubber
from pydantic import ValidationError

from deployments.local_aws import client
from spotshift.aws.ec2 import (
    JOB_TAG,
    WORKLOAD_TAG,
    LaunchRequest,
    client_token,
    find_instances,
    instance_state,
    launch,
    plan_run_instances,
    terminate,
    wait_running,
)
from spotshift.aws.errors import CapacityUnavailable, InvalidRequest, NotFound, Throttled, WaitTimeout
from spotshift.models import Market, Offer

MOTO_IMAGE_ID = "ami-999844e0"  # in moto's default image catalogue, every region
PROFILE = "spotshift-trainer-test"


def offer(market: Market = Market.SPOT, zone: str = "us-east-1b") -> Offer:
    return Offer(
        instance_type="g5.xlarge", gpu="A10G", gpu_count=1, gpu_memory_gib=24, vcpus=4, memory_gib=16,
        region=zone[:-1], zone=zone, market=market, usd_per_hour=0.45,
        observed_at=datetime(2026, 11, 1, tzinfo=UTC), source="test",
    )


def request(*, market: Market = Market.SPOT, zone: str = "us-east-1b", job_id: str | None = None,
            workload_id: str | None = None, **kw) -> LaunchRequest:
    fields = {
        "job_id": job_id or f"job-{uuid.uuid4().hex[:8]}",
        "workload_id": workload_id or f"wl-{uuid.uuid4().hex[:12]}",
        "flow_run_id": "flow-run-1",
        "offer": offer(market, zone),
        "spec_uri": "s3://bucket/jobs/j/spec.json",
        "user_data": "#!/bin/bash\npython -m training --spec s3://bucket/jobs/j/spec.json\n",
        "image_id": MOTO_IMAGE_ID,
        "instance_profile": PROFILE,
    }
    return LaunchRequest(**{**fields, **kw})


@pytest.fixture
def ec2(moto_endpoint):
    iam = client("iam", moto_endpoint)
    if PROFILE not in {p["InstanceProfileName"] for p in iam.list_instance_profiles()["InstanceProfiles"]}:
        iam.create_instance_profile(InstanceProfileName=PROFILE)
    return client("ec2", moto_endpoint, "us-east-1")


def stubbed_ec2():
    """An EC2 client that never leaves the process: for error codes moto cannot produce."""
    ec2 = boto3.client("ec2", region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
    return ec2, Stubber(ec2)


# --- the plan (pure) ---------------------------------------------------------------------------


def test_a_spot_plan_is_one_time_terminate_on_interruption_with_every_tag():
    req = request(job_id="job-a", workload_id="wl-1", extra_tags={"team": "nlp"})
    kwargs = plan_run_instances(req)
    assert kwargs["InstanceMarketOptions"] == {
        "MarketType": "spot",
        "SpotOptions": {"SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"},
    }
    assert (kwargs["ImageId"], kwargs["InstanceType"], kwargs["MinCount"], kwargs["MaxCount"]) == (
        MOTO_IMAGE_ID, "g5.xlarge", 1, 1)
    assert kwargs["Placement"] == {"AvailabilityZone": "us-east-1b"}
    assert kwargs["IamInstanceProfile"] == {"Name": PROFILE}
    assert kwargs["UserData"] == req.user_data
    instance_tags = {t["Key"]: t["Value"] for t in kwargs["TagSpecifications"][0]["Tags"]}
    assert instance_tags == {"Name": "spotshift-job-a", "spotshift:job-id": "job-a",
                             "spotshift:flow-run-id": "flow-run-1", "spotshift:workload-id": "wl-1", "team": "nlp"}


def test_an_on_demand_plan_has_no_market_options():
    assert "InstanceMarketOptions" not in plan_run_instances(request(market=Market.ON_DEMAND))


def test_the_client_token_follows_the_workload_only():
    a = plan_run_instances(request(workload_id="wl-1"))["ClientToken"]
    b = plan_run_instances(request(workload_id="wl-1", zone="us-east-1c"))["ClientToken"]
    c = plan_run_instances(request(workload_id="wl-2"))["ClientToken"]
    assert a == b == client_token("wl-1") != c
    assert len(a) <= 64  # EC2's limit


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("extra_tags", {"spotshift:job-id": "x"}, "reserved"),
        ("extra_tags", {"Name": "x"}, "reserved"),
        ("user_data", "x" * (16 * 1024 + 1), "at most 16384"),
        ("image_id", "ubuntu-latest", "image_id"),
    ],
)
def test_bad_launch_requests_name_the_field(field, value, message):
    with pytest.raises(ValidationError) as info:
        request(**{field: value})
    assert field in str(info.value) and message in str(info.value)


# --- against the moto server -------------------------------------------------------------------


def test_launch_starts_a_tagged_spot_instance_in_the_zone(ec2):
    req = request(zone="us-east-1c")
    launched = launch(ec2, req)
    raw = ec2.describe_instances(InstanceIds=[launched.instance_id])["Reservations"][0]["Instances"][0]
    assert raw["Placement"]["AvailabilityZone"] == "us-east-1c" == launched.zone
    assert raw["InstanceLifecycle"] == "spot"
    tags = {t["Key"]: t["Value"] for t in raw["Tags"]}
    assert tags[JOB_TAG] == req.job_id and tags[WORKLOAD_TAG] == req.workload_id
    user_data = ec2.describe_instance_attribute(InstanceId=launched.instance_id, Attribute="userData")
    assert base64.b64decode(user_data["UserData"]["Value"]).decode() == req.user_data


def test_a_retried_launch_of_one_workload_starts_one_instance(ec2):
    # moto ignores ClientToken (two run_instances calls with one token start two instances), so
    # launch looks the workload up by tag first; real EC2 also de-duplicates by the token.
    req = request()
    first, second = launch(ec2, req), launch(ec2, req)
    assert first.instance_id == second.instance_id
    assert [i.instance_id for i in find_instances(ec2, job_id=req.job_id)] == [first.instance_id]


def test_wait_running_then_terminate(ec2):
    launched = launch(ec2, request(market=Market.ON_DEMAND))
    assert wait_running(ec2, launched.instance_id, timeout_s=10, poll_s=0.05).state == "running"
    assert terminate(ec2, [launched.instance_id]) == [launched.instance_id]
    assert instance_state(ec2, launched.instance_id) == "terminated"


def test_find_instances_keeps_jobs_apart_and_skips_terminated_ones(ec2):
    a1, a2 = launch(ec2, request(job_id="job-find-a")), launch(ec2, request(job_id="job-find-a"))
    b = launch(ec2, request(job_id="job-find-b"))
    terminate(ec2, [a2.instance_id])
    assert {i.instance_id for i in find_instances(ec2, job_id="job-find-a")} == {a1.instance_id}
    everything = {i.instance_id for i in find_instances(ec2)}
    assert {a1.instance_id, b.instance_id} <= everything and a2.instance_id not in everything
    gone = find_instances(ec2, job_id="job-find-a", states=("terminated",))
    assert [i.instance_id for i in gone] == [a2.instance_id]
    terminate(ec2, [a1.instance_id, b.instance_id])


def test_an_instance_that_dies_before_running_is_a_capacity_error(ec2):
    launched = launch(ec2, request())
    terminate(ec2, [launched.instance_id])
    with pytest.raises(CapacityUnavailable, match=launched.instance_id):
        wait_running(ec2, launched.instance_id, timeout_s=5, poll_s=0.05)


def test_unknown_instances_and_profiles_are_not_found(ec2):
    with pytest.raises(NotFound) as info:
        instance_state(ec2, "i-0123456789abcdef0")
    assert info.value.code == "InvalidInstanceID.NotFound"
    with pytest.raises(NotFound, match="NoSuchEntity"):
        launch(ec2, request(instance_profile="no-such-profile"))


def test_an_unknown_zone_is_an_invalid_request(ec2):
    with pytest.raises(InvalidRequest) as info:
        launch(ec2, request(zone="us-east-1z"))
    assert info.value.region == "us-east-1" and "us-east-1z" in str(info.value)


# --- error paths only real EC2 produces (Stubber) ----------------------------------------------


@pytest.mark.parametrize(
    ("code", "expected"),
    [("InsufficientInstanceCapacity", CapacityUnavailable), ("SpotMaxPriceTooLow", CapacityUnavailable),
     ("MaxSpotInstanceCountExceeded", CapacityUnavailable), ("RequestLimitExceeded", Throttled)],
)
def test_launch_raises_typed_errors_for_capacity_and_throttling(code, expected):
    ec2, stub = stubbed_ec2()
    stub.add_response("describe_instances", {"Reservations": []})
    stub.add_client_error("run_instances", service_error_code=code, service_message="no luck")
    with stub, pytest.raises(expected) as info:
        launch(ec2, request(zone="us-east-1d"))
    assert info.value.code == code and info.value.operation == "RunInstances"
    assert "us-east-1d" in str(info.value)


def test_wait_running_gives_up_after_the_timeout_on_a_stuck_pending_instance():
    ec2, stub = stubbed_ec2()
    pending = {"Reservations": [{"Instances": [{"InstanceId": "i-0abc", "State": {"Name": "pending", "Code": 0},
                                                "Placement": {"AvailabilityZone": "us-east-1a"}}]}]}
    for _ in range(3):
        stub.add_response("describe_instances", pending)
    clock = iter([0.0, 5.0, 10.0, 20.0])
    with stub, pytest.raises(WaitTimeout, match="still pending"):
        wait_running(ec2, "i-0abc", timeout_s=15, poll_s=1, sleep=lambda s: None, monotonic=lambda: next(clock))


@pytest.mark.parametrize("code", ["VcpuLimitExceeded", "MaxSpotInstanceCountExceeded"])
def test_a_quota_refusal_names_the_quota_of_the_offers_family_and_market(code):
    from spotshift.aws.errors import QuotaExceeded

    ec2, stub = stubbed_ec2()
    stub.add_response("describe_instances", {"Reservations": []})
    stub.add_client_error("run_instances", service_error_code=code, service_message="You have requested more vCPU "
                          "capacity than your current vCPU limit of 0 allows")
    with stub, pytest.raises(QuotaExceeded) as info:
        launch(ec2, request(zone="us-east-1d"))  # g5.xlarge spot
    assert info.value.quota_code == "L-3819A6DF" and info.value.is_quota
    assert "quota All G and VT Spot Instance Requests (L-3819A6DF)" in str(info.value)


def test_an_image_missing_in_the_region_blocks_the_offer_not_the_flow():
    from spotshift.aws.errors import ImageUnavailable

    ec2, stub = stubbed_ec2()
    stub.add_response("describe_instances", {"Reservations": []})
    stub.add_client_error("run_instances", service_error_code="InvalidAMIID.NotFound", service_message="no image")
    with stub, pytest.raises(ImageUnavailable) as info:
        launch(ec2, request())
    assert isinstance(info.value, CapacityUnavailable)  # the flow blocklists it and takes the next offer


def test_not_found_right_after_the_launch_counts_as_pending():
    ec2, stub = stubbed_ec2()
    running = {"Reservations": [{"Instances": [{"InstanceId": "i-0abc", "State": {"Name": "running", "Code": 16},
                                                "Placement": {"AvailabilityZone": "us-east-1a"}}]}]}
    stub.add_client_error("describe_instances", service_error_code="InvalidInstanceID.NotFound", service_message="?")
    stub.add_client_error("describe_instances", service_error_code="InvalidInstanceID.NotFound", service_message="?")
    stub.add_response("describe_instances", running)
    clock = iter([0.0, 10.0, 30.0, 40.0])
    with stub:
        info = wait_running(ec2, "i-0abc", timeout_s=600, poll_s=1, sleep=lambda s: None, monotonic=lambda: next(clock))
    assert info.state == "running"


def test_not_found_after_the_grace_period_is_not_found():
    ec2, stub = stubbed_ec2()
    for _ in range(2):
        stub.add_client_error("describe_instances", service_error_code="InvalidInstanceID.NotFound", service_message="?")
    clock = iter([0.0, 30.0, 61.0])
    with stub, pytest.raises(NotFound):
        wait_running(ec2, "i-0abc", timeout_s=600, poll_s=1, sleep=lambda s: None, monotonic=lambda: next(clock))


def test_the_launch_plan_puts_the_instance_in_the_subnet_with_the_group_and_a_public_ip():
    plan = plan_run_instances(request(subnet_id="subnet-1", security_group_ids=("sg-1",)))
    assert plan["NetworkInterfaces"] == [{"DeviceIndex": 0, "SubnetId": "subnet-1", "Groups": ["sg-1"],
                                          "AssociatePublicIpAddress": True, "DeleteOnTermination": True}]
    private = plan_run_instances(request(subnet_id="subnet-1", security_group_ids=("sg-1",), public_ip=False))
    assert private["NetworkInterfaces"][0]["AssociatePublicIpAddress"] is False
    with pytest.raises(ValueError, match="image_id is unresolved"):
        plan_run_instances(request(image_id=None))
