"""spotshift.aws.ec2_backend on the moto server's EC2, and on botocore's Stubber for what moto cannot do."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import boto3
import pytest
from botocore.stub import Stubber

from spotshift.aws.compute import ComputeBackend, make_backend
from spotshift.aws.ec2_backend import Ec2Backend
from deployments.local_aws import client
from spotshift.aws.ec2 import LaunchRequest
from spotshift.aws.errors import CapacityUnavailable, NotFound
from spotshift.models import Market, Offer

NOW = datetime(2026, 11, 1, tzinfo=UTC)


def launch_request(zone: str = "us-east-1a", market: Market = Market.SPOT, job_id: str | None = None) -> LaunchRequest:
    offer = Offer(instance_type="g5.xlarge", gpu="A10G", gpu_count=1, gpu_memory_gib=24, vcpus=4, memory_gib=16,
                  region=zone[:-1], zone=zone, market=market, usd_per_hour=0.4, observed_at=NOW, source="test")
    return LaunchRequest(job_id=job_id or f"job-{uuid.uuid4().hex[:8]}", workload_id=f"wl-{uuid.uuid4().hex[:12]}",
                         offer=offer, spec_uri="s3://b/jobs/j/spec.json", image_id="ami-999844e0",
                         instance_profile=None)


@pytest.fixture
def backend(moto_endpoint) -> Ec2Backend:
    return Ec2Backend(lambda region: client("ec2", moto_endpoint, region), regions=["us-east-1"],
                      wait_poll_s=0.05, clock=lambda: NOW)


def test_make_backend_builds_the_ec2_backend_from_a_client_factory(moto_endpoint):
    backend = make_backend("ec2", clients=lambda region: client("ec2", moto_endpoint, region))
    assert isinstance(backend, Ec2Backend) and isinstance(backend, ComputeBackend)


def test_start_returns_a_running_instance_in_the_offers_region_and_stop_terminates_it(backend):
    req = launch_request(zone="us-west-2b")
    launched = backend.start(req)
    assert (launched.state, launched.region, launched.zone, launched.market) == (
        "running", "us-west-2", "us-west-2b", Market.SPOT)
    # the region it started in is listed from now on, though it was not configured
    assert [i.instance_id for i in backend.list(req.job_id)] == [launched.instance_id]
    backend.stop(launched.instance_id, "test")
    assert backend.state(launched.instance_id) == "terminated"
    assert backend.list(req.job_id) == []


def test_poll_reports_an_instance_that_went_away(backend, moto_endpoint):
    launched = backend.start(launch_request())
    assert backend.poll() == []
    client("ec2", moto_endpoint, "us-east-1").terminate_instances(InstanceIds=[launched.instance_id])
    events = backend.poll()
    assert [(e.kind, e.instance_id, e.job_id, e.at) for e in events] == [
        ("exited", launched.instance_id, launched.job_id, NOW)]
    assert backend.poll() == []  # reported once


def test_an_instance_it_did_not_start_is_found_by_searching_the_regions(moto_endpoint, backend):
    launched = backend.start(launch_request())
    fresh = Ec2Backend(lambda region: client("ec2", moto_endpoint, region), regions=["us-east-2", "us-east-1"])
    assert fresh.state(launched.instance_id) == "running"
    fresh.stop(launched.instance_id, "reaped")
    assert backend.state(launched.instance_id) == "terminated"
    with pytest.raises(NotFound, match="us-east-2, us-east-1"):
        fresh.state("i-0123456789abcdef0")


def test_a_spot_instance_reclaimed_before_running_is_terminated_and_reported_as_no_capacity():
    # Only real EC2 takes a spot instance back between run_instances and running: Stubber.
    ec2 = boto3.client("ec2", region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
    stub = Stubber(ec2)
    instance = {"InstanceId": "i-0abc", "InstanceType": "g5.xlarge", "Placement": {"AvailabilityZone": "us-east-1a"},
                "InstanceLifecycle": "spot", "LaunchTime": NOW}
    stub.add_response("describe_instances", {"Reservations": []})
    stub.add_response("run_instances", {"Instances": [{**instance, "State": {"Name": "pending", "Code": 0}}]})
    stub.add_response("describe_instances", {"Reservations": [{"Instances": [{
        **instance, "State": {"Name": "terminated", "Code": 48},
        "StateReason": {"Code": "Server.SpotInstanceTermination", "Message": "capacity"}}]}]})
    stub.add_response("terminate_instances", {"TerminatingInstances": [{"InstanceId": "i-0abc"}]},
                      expected_params={"InstanceIds": ["i-0abc"]})
    backend = Ec2Backend(lambda region: ec2, wait_poll_s=0)
    with stub, pytest.raises(CapacityUnavailable) as info:
        backend.start(launch_request())
    assert info.value.code == "Server.SpotInstanceTermination"
    stub.assert_no_pending_responses()  # the terminate_instances call was made


def test_poll_tells_a_reclaimed_spot_instance_from_one_that_ended_or_vanished():
    # Spot reclaims and EC2 forgetting old instances only happen on real EC2: Stubber.
    ec2 = boto3.client("ec2", region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
    stub = Stubber(ec2)
    backend = Ec2Backend(lambda region: ec2, wait_poll_s=0, clock=lambda: NOW)
    started = []
    for instance_id in ("i-0aaa", "i-0bbb"):
        instance = {"InstanceId": instance_id, "InstanceType": "g5.xlarge", "LaunchTime": NOW,
                    "Placement": {"AvailabilityZone": "us-east-1a"}, "State": {"Name": "running", "Code": 16}}
        stub.add_response("describe_instances", {"Reservations": []})
        stub.add_response("run_instances", {"Instances": [instance]})
        stub.add_response("describe_instances", {"Reservations": [{"Instances": [instance]}]})
        started.append(instance)
    stub.add_response("describe_instances", {"Reservations": [{"Instances": [{
        **started[0], "State": {"Name": "shutting-down", "Code": 32},
        "StateReason": {"Code": "Server.SpotInstanceTermination", "Message": "reclaimed"}}]}]})
    stub.add_client_error("describe_instances", "InvalidInstanceID.NotFound", "gone")
    with stub:
        backend.start(launch_request())
        backend.start(launch_request())
        events = backend.poll()
    assert [(e.instance_id, e.kind) for e in events] == [("i-0aaa", "preempted"), ("i-0bbb", "exited")]
