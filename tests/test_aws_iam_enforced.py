"""Under a moto server with IAM enforcement (INITIAL_NO_AUTH_ACTION_COUNT) and AMI validation
(MOTO_ENABLE_AMI_VALIDATION) on: `spotshift aws setup` with the credentials of a user holding only
the setup policy (`spotshift aws policy --setup`), then `check`, launches in two regions (each its
own image), the loss of the first instance, a move to the other region and a reaper that scans
every region with a user holding only the runtime policy (`spotshift aws policy`). Then one action
at a time is removed and the step that needs it fails, naming it; the runtime user cannot do what
only setup may (create or change the role, create or delete the bucket).

What moto cannot enforce, and how this file deals with it (tests/test_aws_iam.py checks the rest):
- moto authorizes S3 calls under their operation names (PutPublicAccessBlock, HeadObject,
  ListObjectsV2, ...) where AWS checks another action (s3:PutBucketPublicAccessBlock, s3:GetObject,
  s3:ListBucket, ...): tests/moto_iam.py holds that one table, and `for_moto` grants moto's names
  beside the printed actions (dropping an action drops its moto names too). The printed policy
  never names them (tests/test_moto_iam.py).
- moto evaluates non-S3 actions against Resource "*" only, and any Condition without request
  context denies: `for_moto` keeps every statement's actions and widens its Resource to "*" and
  drops its Condition; the scoping itself is asserted on the policy document.
- Service Quotas (EC2 codes) and spot interruptions do not exist in moto: quotas are a Stubber;
  the loss of an instance is an admin's TerminateInstances.
"""

from __future__ import annotations

import argparse
import io
import json
import uuid
from datetime import UTC, datetime

import boto3
import pytest

from deployments.aws_cli import run_aws
from deployments.local_aws import moto_server_process
from spotshift.aws.calls import retry_config
from spotshift.aws.ec2 import LaunchRequest
from spotshift.aws.ec2_backend import Ec2Backend
from spotshift.aws.errors import SpotshiftAwsError
from spotshift.aws.images import settings_resolver
from spotshift.aws.launch_env import LaunchEnvironment
from spotshift.aws.network import LaunchNetwork
from spotshift.catalog import INSTANCE_TYPES
from spotshift.models import Market, Offer
from spotshift.settings import Settings
from tests.aws_helpers import moto_clients, stubbed_quotas
from tests.moto_iam import for_moto

ADMIN_BOOTSTRAP_CALLS = 3  # create_user, put_user_policy, create_access_key: then IAM is enforced
REGIONS = ["us-east-1", "us-west-2"]
IMAGE_NAME = "Deep Learning OSS Nvidia Driver AMI GPU PyTorch 2.9 (Ubuntu 24.04) 20261101"
pytestmark = pytest.mark.slow


def user_with(admin_iam, policy: dict) -> tuple[str, str]:
    name = f"u-{uuid.uuid4().hex[:8]}"
    admin_iam.create_user(UserName=name)
    admin_iam.put_user_policy(UserName=name, PolicyName="p", PolicyDocument=json.dumps(policy))
    key = admin_iam.create_access_key(UserName=name)["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


@pytest.fixture(scope="module")
def moto_iam():
    env = {"INITIAL_NO_AUTH_ACTION_COUNT": str(ADMIN_BOOTSTRAP_CALLS), "MOTO_ENABLE_AMI_VALIDATION": "true"}
    with moto_server_process(env=env) as endpoint:
        iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="boot",
                           aws_secret_access_key="boot", config=retry_config(1))
        key, secret = user_with(iam, {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "*", "Resource": "*"}]})
        admin = moto_clients(endpoint, key=key, secret=secret)
        images = {r: admin("ec2", r).register_image(Name=IMAGE_NAME, Architecture="x86_64", RootDeviceName="/dev/sda1",
                                                   VirtualizationType="hvm")["ImageId"] for r in REGIONS}
        yield endpoint, admin, images


@pytest.fixture(scope="module")
def names():
    tag = uuid.uuid4().hex[:8]
    return {"bucket": f"spotshift-iam-{tag}", "role": f"spotshift-trainer-{tag}", "group": f"spotshift-{tag}"}


def settings_for(tmp_path, names, **overrides) -> Settings:
    fields = dict(home=tmp_path, bucket=names["bucket"], trainer_role=names["role"], instance_profile=names["role"],
                  security_group=names["group"], regions=REGIONS, image_owners=["self"])
    return Settings(**(fields | overrides))


def aws(action: str, settings: Settings, clients, which: str | None = None) -> tuple[int, str]:
    out = io.StringIO()
    args = argparse.Namespace(aws_action=action, regions=None, bucket=None, delete_bucket=False, which=which)
    return run_aws(args, settings=settings, clients=clients, out=out), out.getvalue()


def printed_policy(settings: Settings, clients, which: str = "runtime") -> dict:
    """What `spotshift aws policy --<which>` prints (runtime, the default, or setup)."""
    return json.loads(aws("policy", settings, clients, which)[1])


def orchestrator(moto_iam, settings, drop: str | None = None, which: str = "runtime"):
    """Clients with the credentials of a user holding only the printed `which` policy (minus `drop`)."""
    endpoint, admin, _ = moto_iam
    policy = printed_policy(settings, admin, which)
    key, secret = user_with(admin("iam", "us-east-1"), for_moto(policy, drop))
    return moto_clients(endpoint, key=key, secret=secret, stubs={"service-quotas": stubbed_quotas({})})


def offer(region: str, zone: str) -> Offer:
    t = INSTANCE_TYPES["g4dn.xlarge"]
    return Offer(instance_type=t.name, gpu=t.gpu, gpu_count=t.gpu_count, gpu_memory_gib=t.gpu_memory_gib,
                 vcpus=t.vcpus, memory_gib=t.memory_gib, region=region, zone=zone, market=Market.SPOT,
                 usd_per_hour=0.2, observed_at=datetime.now(UTC), source="test")


def backend_for(settings: Settings, clients) -> Ec2Backend:
    ec2 = lambda r: clients("ec2", r)  # noqa: E731
    env = LaunchEnvironment(images=settings_resolver(settings, clients),
                            network=LaunchNetwork(ec2, security_group=settings.security_group))
    return Ec2Backend(ec2, regions=settings.regions, wait_poll_s=0.1, launch_env=env)


def request(job_id: str, region: str, zone: str, settings: Settings) -> LaunchRequest:
    """What the flow asks for (flows/steps.launch): the backend completes image, network, user-data."""
    return LaunchRequest(job_id=job_id, workload_id=f"wl-{uuid.uuid4().hex[:8]}", offer=offer(region, zone),
                         spec_uri=f"s3://{settings.bucket}/jobs/{job_id}/spec.json", user_data="#!/bin/bash\ntrue\n",
                         instance_profile=settings.instance_profile)


@pytest.fixture(scope="module")
def set_up(moto_iam, names, tmp_path_factory):
    settings = settings_for(tmp_path_factory.mktemp("iam"), names)
    code, out = aws("setup", settings, orchestrator(moto_iam, settings, which="setup"))
    assert code == 0, out
    assert json.loads(out.split("spotshift aws policy --runtime prints it again):\n", 1)[1]) == \
        printed_policy(settings, moto_iam[1])  # setup ends with the runtime policy to attach
    return settings, orchestrator(moto_iam, settings)


def test_iam_is_enforced_for_unknown_credentials(moto_iam):
    endpoint, _, _ = moto_iam
    with pytest.raises(Exception, match="AuthFailure|InvalidClientTokenId"):
        moto_clients(endpoint)("ec2", "us-east-1").describe_instances()


def test_setup_check_and_a_job_moving_across_regions_with_only_the_printed_policy(moto_iam, set_up):
    _, admin, images = moto_iam
    settings, clients = set_up
    code, out = aws("check", settings, clients)
    assert code == 0, out
    assert out.count("would launch") == 2

    backend = backend_for(settings, clients)
    first = backend.start(request("job-iam", "us-east-1", "us-east-1a", settings))
    admin("ec2", "us-east-1").terminate_instances(InstanceIds=[first.instance_id])  # the instance is lost
    assert [e.instance_id for e in backend.poll()] == [first.instance_id]
    second = backend.start(request("job-iam", "us-west-2", "us-west-2b", settings))

    launched = {r: admin("ec2", r).describe_instances(Filters=[{"Name": "tag:spotshift:job-id", "Values": ["job-iam"]}])
                ["Reservations"][0]["Instances"][0] for r in REGIONS}
    assert {r: i["ImageId"] for r, i in launched.items()} == images  # each region its own image
    assert images["us-east-1"] != images["us-west-2"]
    nic = launched["us-west-2"]["NetworkInterfaces"][0]
    assert [g["GroupName"] for g in nic["Groups"]] == [settings.security_group]
    assert nic["SubnetId"] == launched["us-west-2"]["SubnetId"] and nic.get("Association", {}).get("PublicIp")
    assert launched["us-west-2"]["Placement"]["AvailabilityZone"] == "us-west-2b"

    reaper = backend_for(settings, clients)  # a fresh backend, as the reaper and failure hooks build
    assert [i.instance_id for i in reaper.list("job-iam")] == [second.instance_id]
    reaper.stop(second.instance_id, "reaped")
    assert reaper.state(second.instance_id) in ("shutting-down", "terminated")


CHECK_ROW = {  # action -> the check row that needs it
    "ec2:DescribeImages": "image",
    "ec2:RunInstances": "run-instances dry run",
    "ec2:DescribeSecurityGroups": "security group",
    "ec2:DescribeSubnets": "subnets",
    "ec2:DescribeRouteTables": "subnet routes",
    "ec2:DescribeNatGateways": "subnet routes",
    "ec2:DescribeVpcEndpoints": "subnet routes",
    "iam:GetInstanceProfile": "instance profile",
    "s3:GetBucketLocation": "bucket",
}


@pytest.mark.parametrize("action", sorted(CHECK_ROW))
def test_check_without_one_action_fails_the_row_that_needs_it(moto_iam, set_up, action):
    settings, _ = set_up
    code, out = aws("check", settings, orchestrator(moto_iam, settings, drop=action))
    failed = [line for line in out.splitlines() if " FAIL " in line]
    assert code == 1
    assert any(f" {CHECK_ROW[action]} " in line for line in failed), out
    operation = action.split(":")[1]
    assert any(action in line or operation in line for line in failed), out


SETUP_STEP = {  # action -> (settings overrides that make setup need it, what the error names)
    "iam:CreateRole": ({"trainer_role": "spotshift-new-role", "instance_profile": "spotshift-new-role"}, "CreateRole"),
    "ec2:CreateSecurityGroup": ({"security_group": "spotshift-new-group"}, "CreateSecurityGroup"),
    # setup writes only what changes: a new bucket (or role) needs each write, the set-up one each read
    "s3:PutLifecycleConfiguration": ({"bucket": "spotshift-iam-new-lifecycle"}, "PutBucketLifecycleConfiguration"),
    "s3:PutBucketPublicAccessBlock": ({"bucket": "spotshift-iam-new-block"}, "PutPublicAccessBlock"),
    "s3:PutBucketTagging": ({"bucket": "spotshift-iam-new-tagging"}, "PutBucketTagging"),
    "s3:GetLifecycleConfiguration": ({}, "GetBucketLifecycleConfiguration"),
    "s3:GetBucketPublicAccessBlock": ({}, "GetPublicAccessBlock"),
    "iam:PutRolePolicy": ({"trainer_role": "spotshift-new-policy-role", "instance_profile": "spotshift-new-policy-role"},
                          "PutRolePolicy"),
    "iam:GetRolePolicy": ({}, "GetRolePolicy"),
}


@pytest.mark.parametrize("action", sorted(SETUP_STEP))
def test_setup_without_one_action_fails_at_the_step_that_needs_it(moto_iam, set_up, names, tmp_path, action):
    overrides, operation = SETUP_STEP[action]
    settings = settings_for(tmp_path, names, **overrides)
    with pytest.raises(SpotshiftAwsError) as failed:
        aws("setup", settings, orchestrator(moto_iam, settings, drop=action, which="setup"))
    assert failed.value.operation == operation and failed.value.code in ("AccessDenied", "UnauthorizedOperation")
    assert operation in str(failed.value)


def test_stopping_without_terminate_fails_naming_the_action(moto_iam, set_up):
    _, admin, _ = moto_iam
    settings, clients = set_up
    started = backend_for(settings, clients).start(request("job-noterm", "us-east-1", "us-east-1b", settings))
    limited = backend_for(settings, orchestrator(moto_iam, settings, drop="ec2:TerminateInstances"))
    with pytest.raises(SpotshiftAwsError, match="ec2:TerminateInstances"):
        limited.stop(started.instance_id, "test")
    admin("ec2", "us-east-1").terminate_instances(InstanceIds=[started.instance_id])


RUNTIME_REFUSED = {  # what only the setup policy allows -> a call that needs it
    "iam:CreateRole": lambda c, s: c("iam", "us-east-1").create_role(RoleName="spotshift-evil", AssumeRolePolicyDocument="{}"),
    "iam:PutRolePolicy": lambda c, s: c("iam", "us-east-1").put_role_policy(
        RoleName=s.trainer_role, PolicyName="more", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})),
    "s3:DeleteBucket": lambda c, s: c("s3", "us-east-1").delete_bucket(Bucket=s.bucket),
    "s3:CreateBucket": lambda c, s: c("s3", "us-east-1").create_bucket(Bucket=f"{s.bucket}-2"),
    "ec2:CreateSecurityGroup": lambda c, s: c("ec2", "us-east-1").create_security_group(GroupName="x", Description="x"),
}


@pytest.mark.parametrize("action", sorted(RUNTIME_REFUSED))
def test_the_runtime_user_cannot_change_the_role_or_the_bucket(set_up, action):
    settings, clients = set_up
    with pytest.raises(Exception, match="AccessDenied|UnauthorizedOperation|not authorized") as refused:
        RUNTIME_REFUSED[action](clients, settings)
    assert action.split(":")[1] in str(refused.value) or "AccessDenied" in str(refused.value)
