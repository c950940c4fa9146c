"""`spotshift aws setup` / `teardown`: the bucket, the trainer role and instance profile, the spot
service-linked role and an egress-only security group per region. Every step is idempotent."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Callable, Literal

from spotshift.aws.calls import call_aws
from spotshift.aws.ec2 import JOB_TAG
from spotshift.aws.errors import NotFound, SpotshiftAwsError, WaitTimeout
from spotshift.aws.iam import MANAGED_TAG, ec2_trust_policy, trainer_policy
from spotshift.aws.network import default_vpc, find_security_group

TRAINER_POLICY_NAME = "spotshift-trainer-access"
SPOT_SLR = "AWSServiceRoleForEC2Spot"
Status = Literal["created", "exists", "updated", "deleted", "absent"]


class SetupError(SpotshiftAwsError):
    """A setup step cannot proceed; the message says what to change."""


@dataclass(frozen=True)
class Step:
    """One resource setup or teardown touched."""

    resource: str
    name: str
    status: Status
    region: str = ""


def bucket_lifecycle(expire_days: int) -> dict[str, Any]:
    """Abort incomplete multipart uploads after a day; expire objects the orchestrator marked
    finished (tag spotshift:expire=true, set on a closed job's checkpoints) after `expire_days`."""
    return {"Rules": [
        {"ID": "spotshift-abort-multipart", "Status": "Enabled", "Filter": {"Prefix": ""},
         "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}},
        {"ID": "spotshift-expire-finished-checkpoints", "Status": "Enabled",
         "Filter": {"Tag": {"Key": "spotshift:expire", "Value": "true"}}, "Expiration": {"Days": expire_days}},
    ]}


def ensure_bucket(s3: Any, bucket: str, *, region: str, account: str, expire_days: int) -> Step:
    """The bucket in `region`, owned by `account`, public access blocked, with the lifecycle rules."""
    try:  # 403 when another account owns it (ExpectedBucketOwner); NoSuchBucket when it is new
        check_bucket(s3, bucket, region=region, account=account)
        status: Status = "exists"
    except NotFound:
        status = "created"
    kwargs: dict[str, Any] = {"Bucket": bucket}
    if region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:  # also when it exists: CreateBucket is what tells a bucket of another account apart everywhere
        call_aws(s3.create_bucket, region=region, **kwargs)
    except SpotshiftAwsError as exc:
        if exc.code == "BucketAlreadyExists":
            raise SetupError(f"bucket {bucket!r} already exists and belongs to another AWS account: choose "
                             "another name with --bucket (or SPOTSHIFT_BUCKET)", code=exc.code,
                             operation="CreateBucket", region=region) from exc
        if exc.code != "BucketAlreadyOwnedByYou":
            raise
    check_bucket(s3, bucket, region=region, account=account)
    owner = {"ExpectedBucketOwner": account}
    call_aws(s3.put_public_access_block, region=region, Bucket=bucket, **owner, PublicAccessBlockConfiguration={
        "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True})
    call_aws(s3.put_bucket_lifecycle_configuration, region=region, Bucket=bucket, **owner,
             LifecycleConfiguration=bucket_lifecycle(expire_days))
    return Step("s3 bucket", bucket, status, region)


def check_bucket(s3: Any, bucket: str, *, region: str, account: str) -> str:
    """The bucket's region; SetupError when another account owns it or it lives elsewhere."""
    try:
        answer = call_aws(s3.get_bucket_location, region=region, Bucket=bucket, ExpectedBucketOwner=account)
    except SpotshiftAwsError as exc:
        if exc.code in ("AccessDenied", "403"):
            raise SetupError(f"GetBucketLocation of bucket {bucket!r} was refused: another account owns it (choose "
                             "another name with --bucket), or this user lacks s3:GetBucketLocation on it",
                             code=exc.code, operation="GetBucketLocation", region=region) from exc
        raise
    located = answer.get("LocationConstraint") or "us-east-1"
    if located != region:
        raise SetupError(f"bucket {bucket!r} is in {located}, not {region}: set SPOTSHIFT_AWS_REGION={located} or "
                         "choose another bucket", code="BucketRegionMismatch", operation="GetBucketLocation",
                         region=region)
    return located


def secret_arn(secrets: Any, name: str | None, *, region: str) -> str | None:
    """The ARN of the Hub-token secret (so the trainer policy names exactly it), or None."""
    if not name:
        return None
    try:
        return call_aws(secrets.describe_secret, region=region, SecretId=name)["ARN"]
    except NotFound as exc:
        raise SetupError(f"secret {name!r} does not exist in {region}: create it (aws secretsmanager "
                         "create-secret --name ... --secret-string hf_...) or unset SPOTSHIFT_HUB_TOKEN_SECRET",
                         code=exc.code, operation="DescribeSecret", region=region) from exc


def ensure_trainer_role(iam: Any, role: str, *, bucket: str, secret: str | None, profile_name: str | None = None,
                        wait: Callable[[], None] | None = None, attempts: int = 30) -> list[Step]:
    """The role (EC2 may assume it), its inline policy, and an instance profile (named
    `profile_name`, default the role's name) holding it; returns once the profile shows the role
    (IAM is eventually consistent)."""
    profile_name = profile_name or role
    steps = []
    try:
        call_aws(iam.get_role, region="global", RoleName=role)
        steps.append(Step("iam role", role, "exists"))
    except NotFound:
        call_aws(iam.create_role, region="global", RoleName=role, AssumeRolePolicyDocument=json.dumps(ec2_trust_policy()),
                 Description="spotshift trainer instances", Tags=[{"Key": MANAGED_TAG, "Value": "true"}])
        steps.append(Step("iam role", role, "created"))
    call_aws(iam.put_role_policy, region="global", RoleName=role, PolicyName=TRAINER_POLICY_NAME,
             PolicyDocument=json.dumps(trainer_policy(bucket=bucket, secret_arn=secret)))
    steps.append(Step("iam role policy", TRAINER_POLICY_NAME, "updated"))
    try:
        profile = call_aws(iam.get_instance_profile, region="global", InstanceProfileName=profile_name)["InstanceProfile"]
        steps.append(Step("instance profile", profile_name, "exists"))
    except NotFound:
        profile = call_aws(iam.create_instance_profile, region="global", InstanceProfileName=profile_name)["InstanceProfile"]
        steps.append(Step("instance profile", profile_name, "created"))
    if role not in {r["RoleName"] for r in profile.get("Roles", [])}:
        call_aws(iam.add_role_to_instance_profile, region="global", InstanceProfileName=profile_name, RoleName=role)
    wait_profile_ready(iam, profile_name, role, wait=wait or (lambda: time.sleep(2)), attempts=attempts)
    return steps


def wait_profile_ready(iam: Any, profile: str, role: str, *, wait: Callable[[], None], attempts: int) -> None:
    for _ in range(attempts):
        found = call_aws(iam.get_instance_profile, region="global", InstanceProfileName=profile)["InstanceProfile"]
        if any(r["RoleName"] == role for r in found.get("Roles", [])):
            return
        wait()
    raise WaitTimeout(f"instance profile {profile!r} still has no role", code="WaitTimeout",
                      operation="GetInstanceProfile")


def ensure_spot_service_linked_role(iam: Any) -> Step:
    """The role EC2 needs to launch spot instances (created by AWS on first use in the console only)."""
    try:
        call_aws(iam.get_role, region="global", RoleName=SPOT_SLR)
        return Step("service-linked role", SPOT_SLR, "exists")
    except NotFound:
        pass
    try:
        call_aws(iam.create_service_linked_role, region="global", AWSServiceName="spot.amazonaws.com")
    except SpotshiftAwsError as exc:
        if exc.code != "EntityAlreadyExists":  # created meanwhile (or under another name, as moto does)
            raise
        return Step("service-linked role", SPOT_SLR, "exists")
    return Step("service-linked role", SPOT_SLR, "created")


def ensure_security_group(ec2: Any, name: str, *, region: str) -> Step:
    """An egress-only security group (no inbound rule; EC2's default allow-all egress) in the
    region's default VPC."""
    vpc = default_vpc(ec2, region=region)
    if vpc is None:
        raise SetupError(f"{region} has no default VPC: create one (aws ec2 create-default-vpc --region {region}) "
                         "or drop the region from --regions", code="VPCIdNotSpecified", operation="DescribeVpcs",
                         region=region)
    if find_security_group(ec2, name, region=region, vpc_id=vpc) is not None:
        return Step("security group", name, "exists", region)
    call_aws(ec2.create_security_group, region=region, GroupName=name, VpcId=vpc,
             Description="spotshift trainers: no inbound, all outbound (S3, Hub, package index)",
             TagSpecifications=[{"ResourceType": "security-group", "Tags": [{"Key": MANAGED_TAG, "Value": "true"}]}])
    return Step("security group", name, "created", region)


def teardown_region(ec2: Any, name: str, *, region: str) -> Step:
    """Delete the region's spotshift security group (refused by EC2 while instances use it)."""
    group = find_security_group(ec2, name, region=region)
    if group is None:
        return Step("security group", name, "absent", region)
    live = call_aws(ec2.describe_instances, region=region, Filters=[
        {"Name": "instance.group-id", "Values": [group["GroupId"]]},
        {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]},
        {"Name": "tag-key", "Values": [JOB_TAG]}]).get("Reservations", [])
    if live:
        raise SetupError(f"security group {name} in {region} is still used by spotshift instances: stop their jobs "
                         "first", code="DependencyViolation", operation="DeleteSecurityGroup", region=region)
    call_aws(ec2.delete_security_group, region=region, GroupId=group["GroupId"])
    return Step("security group", name, "deleted", region)


def teardown_role(iam: Any, role: str, profile_name: str | None = None) -> list[Step]:
    """Remove the instance profile and the trainer role (the spot service-linked role stays)."""
    steps = []
    profile_name = profile_name or role
    try:
        profile = call_aws(iam.get_instance_profile, region="global", InstanceProfileName=profile_name)["InstanceProfile"]
        for r in profile.get("Roles", []):
            call_aws(iam.remove_role_from_instance_profile, region="global", InstanceProfileName=profile_name,
                     RoleName=r["RoleName"])
        call_aws(iam.delete_instance_profile, region="global", InstanceProfileName=profile_name)
        steps.append(Step("instance profile", profile_name, "deleted"))
    except NotFound:
        steps.append(Step("instance profile", profile_name, "absent"))
    try:
        call_aws(iam.delete_role_policy, region="global", RoleName=role, PolicyName=TRAINER_POLICY_NAME)
    except NotFound:
        pass
    try:
        call_aws(iam.delete_role, region="global", RoleName=role)
        steps.append(Step("iam role", role, "deleted"))
    except NotFound:
        steps.append(Step("iam role", role, "absent"))
    return steps


def teardown_bucket(s3: Any, bucket: str, *, region: str, account: str, delete_objects: bool) -> Step:
    """Delete the bucket only when asked to delete its objects too (checkpoints and models live there)."""
    if not delete_objects:
        return Step("s3 bucket", bucket, "exists", region)
    keys: list[str] = []
    token = None
    while True:
        page = call_aws(s3.list_objects_v2, region=region, Bucket=bucket, ExpectedBucketOwner=account,
                        **({"ContinuationToken": token} if token else {}))
        keys += [o["Key"] for o in page.get("Contents", [])]
        token = page.get("NextContinuationToken")
        if not token:
            break
    for key in keys:
        call_aws(s3.delete_object, region=region, Bucket=bucket, Key=key, ExpectedBucketOwner=account)
    call_aws(s3.delete_bucket, region=region, Bucket=bucket, ExpectedBucketOwner=account)
    return Step("s3 bucket", bucket, "deleted", region)
