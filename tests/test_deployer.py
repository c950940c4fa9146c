"""The Deployer agent's tasks, called through .fn (no Prefect server), on the moto server's EC2."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import boto3
import pytest
from botocore.stub import Stubber
from prefect.states import Failed

from spotshift.aws.ec2_backend import Ec2Backend
from deployments.local_aws import client
from spotshift.aws.ec2 import LaunchRequest
from spotshift.instances import JOB_TAG
from spotshift.aws.errors import CapacityUnavailable, PermissionDenied, Throttled
from spotshift.models import Market, Offer
from tasks.retries import retry_when_aws_gave_up
from tasks.deployer import (
    start_instance,
    stop_instance,
    stop_job_instances,
)

NOW = datetime(2026, 11, 1, tzinfo=UTC)


def launch_request(job_id: str, zone: str = "us-east-1a") -> LaunchRequest:
    offer = Offer(instance_type="g6.xlarge", gpu="L4", gpu_count=1, gpu_memory_gib=24, vcpus=4, memory_gib=16,
                  region=zone[:-1], zone=zone, market=Market.SPOT, usd_per_hour=0.3, observed_at=NOW, source="test")
    return LaunchRequest(job_id=job_id, workload_id=f"wl-{uuid.uuid4().hex[:12]}", flow_run_id="fr-1", offer=offer,
                         spec_uri=f"s3://b/jobs/{job_id}/spec.json", image_id="ami-999844e0", instance_profile=None)


@pytest.fixture
def backend(moto_endpoint) -> Ec2Backend:
    return Ec2Backend(lambda region: client("ec2", moto_endpoint, region), regions=["us-east-1"], wait_poll_s=0.05)


def job() -> str:
    return f"job-{uuid.uuid4().hex[:8]}"


def test_start_instance_returns_the_running_tagged_instance_and_stop_instance_ends_it(backend, moto_endpoint):
    req = launch_request(job())
    launched = start_instance.fn(req, backend)
    raw = client("ec2", moto_endpoint).describe_instances(InstanceIds=[launched.instance_id])
    instance = raw["Reservations"][0]["Instances"][0]
    assert instance["State"]["Name"] == "running"
    assert {t["Key"]: t["Value"] for t in instance["Tags"]}[JOB_TAG] == req.job_id
    stop_instance.fn(launched.instance_id, "job done", backend)
    assert backend.state(launched.instance_id) == "terminated"


def test_no_capacity_is_raised_typed_for_the_flow_to_blocklist_the_offer():
    ec2 = boto3.client("ec2", region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
    stub = Stubber(ec2)  # only real EC2 runs out of capacity
    stub.add_response("describe_instances", {"Reservations": []})
    stub.add_client_error("run_instances", "InsufficientInstanceCapacity", "We currently do not have capacity")
    with stub, pytest.raises(CapacityUnavailable) as info:
        start_instance.fn(launch_request(job()), Ec2Backend(lambda region: ec2))
    assert info.value.code == "InsufficientInstanceCapacity" and info.value.region == "us-east-1"


def test_the_task_retries_only_what_botocore_could_not_cure():
    def failed(exc: Exception):
        return Failed(data=exc)  # what Prefect's engine hands the retry condition for a raised exception

    # botocore retried each call already; the task retries the step once more only when that did not cure it
    assert retry_when_aws_gave_up(start_instance, None, failed(Throttled("slow down", code="RequestLimitExceeded")))
    assert not retry_when_aws_gave_up(start_instance, None,
                                      failed(CapacityUnavailable("none", code="InsufficientInstanceCapacity")))
    assert not retry_when_aws_gave_up(start_instance, None, failed(PermissionDenied("no", code="UnauthorizedOperation")))
    assert not retry_when_aws_gave_up(start_instance, None, failed(RuntimeError("bug")))
    assert start_instance.retry_condition_fn is retry_when_aws_gave_up and start_instance.retries == 1


def test_stop_job_instances_ends_every_instance_of_that_job_only(backend):
    doomed, other = job(), job()
    ids = [start_instance.fn(launch_request(doomed, z), backend).instance_id for z in ("us-east-1a", "us-east-1b")]
    survivor = start_instance.fn(launch_request(other), backend).instance_id
    assert sorted(stop_job_instances.fn(doomed, "flow crashed", backend)) == sorted(ids)
    assert [backend.state(i) for i in ids] == ["terminated", "terminated"]
    assert backend.state(survivor) == "running"
    backend.stop(survivor, "test cleanup")
