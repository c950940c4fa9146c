"""`spotshift aws setup` / `teardown`: the bucket, the trainer role and instance profile, the spot
service-linked role and an egress-only security group per region. Every step is idempotent, writes
only what differs and, with `dry_run`, only reads and says what it would change."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Literal
from urllib.parse import unquote

from spotshift.aws.bucket_rules import (CREATED_BY_TAG, Change, bucket_lifecycle, created_by_setup,
                                        legacy_prefix_rules, merge_lifecycle, stricter_public_access_block)
from spotshift.aws.calls import call_aws
from spotshift.instances import JOB_TAG
from spotshift.aws.errors import NotFound, PermissionDenied, SpotshiftAwsError, WaitTimeout
from spotshift.aws.iam import MANAGED_TAG, ec2_trust_policy, trainer_policy
from spotshift.aws.network import NetworkChoice, find_security_group, region_vpc
from spotshift.data_prefixes import DataPrefix

TRAINER_POLICY_NAME = "spotshift-trainer-access"
SPOT_SLR = "AWSServiceRoleForEC2Spot"
Status = Literal["created", "exists", "updated", "unchanged", "deleted", "absent", "kept"]
LIFECYCLE_REFUSED = frozenset({"MalformedXML", "InvalidRequest", "InvalidArgument"})  # S3's answers to a bad rule set
DELETE_BATCH = 1000  # DeleteObjects takes up to 1,000 keys


class SetupError(SpotshiftAwsError):
    """A setup step cannot proceed; the message says what to change."""


@dataclass(frozen=True)
class Step:
    """One resource setup or teardown touched: its status (in a dry run, what would happen), the
    changes made or planned, notes to read, and problems left for the user (the command exits 1)."""

    resource: str
    name: str
    status: Status
    region: str = ""
    changes: tuple[Change, ...] = ()
    notes: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()
    dry_run: bool = False


def ensure_bucket(s3: Any, bucket: str, *, region: str, account: str, expire_days: int,
                  dry_run: bool = False) -> Step:
    """The bucket in `region`, owned by `account`, public access blocked, with spotshift's lifecycle
    rules. A new bucket is tagged spotshift:created-by=setup (teardown deletes only such a bucket).
    An existing bucket keeps its own settings: spotshift's rules are added or replaced by their IDs
    beside the owner's, the public access block becomes the stricter of both; only what changes is
    written ("unchanged" when nothing does). An owner's rule that works against spotshift's data
    is left as it is and noted; a rule set S3 refuses leaves the lifecycle as it was, as a problem.
    `dry_run`: read only, the step says what would change."""
    try:  # 403 when another account owns it (ExpectedBucketOwner); NoSuchBucket when it is new
        check_bucket(s3, bucket, region=region, account=account)
        exists = True
    except NotFound:
        exists = False
    changes: list[Change] = []
    owner = {"ExpectedBucketOwner": account}
    if not exists:
        changes += [Change("create", f"bucket {bucket} in {region}"),
                    Change("tag", f"it {CREATED_BY_TAG['Key']}={CREATED_BY_TAG['Value']}")]
    if not dry_run:  # (a dry run cannot tell a name another account took where GetBucketLocation does not: moto)
        made = _create_bucket(s3, bucket, region=region)  # also when it exists: refused if another account's
        if not exists and not made:  # made meanwhile, by this account: not setup's
            exists, changes = True, []
        if not exists:  # created now (not a 200 of us-east-1 for a bucket the account had): the only tagging
            call_aws(s3.put_bucket_tagging, region=region, Bucket=bucket, **owner,
                     Tagging={"TagSet": [dict(CREATED_BY_TAG)]})  # a new bucket has no tags to replace
        check_bucket(s3, bucket, region=region, account=account)
    block_now = _read_unless(s3.get_public_access_block, "NoSuchPublicAccessBlockConfiguration", region=region,
                             Bucket=bucket, **owner) if exists else None
    block, block_changes = stricter_public_access_block((block_now or {}).get("PublicAccessBlockConfiguration"))
    lifecycle_now = _read_unless(s3.get_bucket_lifecycle_configuration, "NoSuchLifecycleConfiguration",
                                 region=region, Bucket=bucket, **owner) if exists else None
    plan = merge_lifecycle((lifecycle_now or {}).get("Rules", []), bucket_lifecycle(expire_days)["Rules"])
    problems: list[str] = []
    if block_changes and not dry_run:
        call_aws(s3.put_public_access_block, region=region, Bucket=bucket, **owner,
                 PublicAccessBlockConfiguration=block)
    changes += block_changes
    if plan.changes and not dry_run:
        refused = _put_lifecycle(s3, bucket, plan.rules, region=region, owner=owner,
                                 min_size=(lifecycle_now or {}).get("TransitionDefaultMinimumObjectSize"))
        if refused:
            problems.append(refused)
    if not problems:
        changes += plan.changes
    status: Status = "created" if not exists else "updated" if changes else "unchanged"
    return Step("s3 bucket", bucket, status, region, changes=tuple(changes), notes=plan.conflicts,
                problems=tuple(problems), dry_run=dry_run)


def _create_bucket(s3: Any, bucket: str, *, region: str) -> bool:
    """CreateBucket; False when S3 answers that this account already owns it. (us-east-1 answers
    200 for a bucket the account owns: whether setup created it is decided before, by check_bucket.)"""
    kwargs: dict[str, Any] = {"Bucket": bucket}
    if region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:  # CreateBucket is what tells a name taken by another account apart everywhere (moto too)
        call_aws(s3.create_bucket, region=region, **kwargs)
    except SpotshiftAwsError as exc:
        if exc.code == "BucketAlreadyExists":
            raise SetupError(f"bucket {bucket!r} already exists and belongs to another AWS account: choose "
                             "another name with --bucket (or SPOTSHIFT_BUCKET)", code=exc.code,
                             operation="CreateBucket", region=region) from exc
        if exc.code != "BucketAlreadyOwnedByYou":
            raise
        return False
    return True


def _read_unless(fn: Callable[..., dict], missing: str, *, region: str, **kwargs: Any) -> dict | None:
    """fn(**kwargs), or None when S3 answers `missing` (the bucket has no such configuration)."""
    try:
        return call_aws(fn, region=region, **kwargs)
    except SpotshiftAwsError as exc:
        if exc.code != missing:
            raise
        return None


def _put_lifecycle(s3: Any, bucket: str, rules: list[dict], *, region: str, owner: dict[str, str],
                   min_size: str | None) -> str | None:
    """Write the merged rules (with the bucket's own TransitionDefaultMinimumObjectSize: left out,
    S3 would reset it); None, or the problem when S3 refuses them (the bucket keeps its rules)."""
    try:
        call_aws(s3.put_bucket_lifecycle_configuration, region=region, Bucket=bucket, **owner,
                 LifecycleConfiguration={"Rules": rules},
                 **({"TransitionDefaultMinimumObjectSize": min_size} if min_size else {}))
    except SpotshiftAwsError as exc:
        if exc.code not in LIFECYCLE_REFUSED:
            raise
        legacy = legacy_prefix_rules(rules)
        hint = (f"; rule(s) {', '.join(map(repr, legacy))} use the deprecated top-level Prefix, which S3 may refuse "
                "beside rules with a Filter: rewrite them with Filter.Prefix (same objects)" if legacy else "")
        return (f"S3 refused spotshift's lifecycle rules beside the bucket's own ({exc.code}: {exc.aws_message}): "
                f"the bucket's lifecycle is unchanged and spotshift's rules were not added{hint}; then run setup "
                "again")
    return None


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


def check_data_prefix(s3: Any, prefix: DataPrefix, *, account: str) -> Step:
    """A data prefix's bucket exists and belongs to this account (the orchestrator sends
    ExpectedBucketOwner=<account> on every S3 call, so another account's bucket could never be read);
    the step names the bucket's region. Nothing under the prefix is read."""
    try:
        answer = call_aws(s3.get_bucket_location, region="global", Bucket=prefix.bucket, ExpectedBucketOwner=account)
    except NotFound as exc:
        raise SetupError(f"data prefix {prefix.uri}: bucket {prefix.bucket!r} does not exist (a typo?)",
                         code=exc.code, operation="GetBucketLocation") from exc
    except PermissionDenied as exc:
        raise SetupError(f"data prefix {prefix.uri}: GetBucketLocation of bucket {prefix.bucket!r} was refused: another "
                         f"account owns it (only buckets of account {account} can be granted: copy the data into one), "
                         "or this user lacks s3:GetBucketLocation on it (the setup policy printed with the same "
                         "--data grants it)", code=exc.code, operation="GetBucketLocation") from exc
    return Step("data prefix", prefix.uri, "exists", answer.get("LocationConstraint") or "us-east-1")


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
                        data_prefixes: list[str] = (), wait: Callable[[], None] | None = None,
                        attempts: int = 30, dry_run: bool = False) -> list[Step]:
    """The role (EC2 may assume it), its inline policy (read on the user's `data_prefixes` too;
    written only when it differs), and an instance profile (named `profile_name`, default the
    role's name) holding it; returns once the profile shows the role (IAM is eventually
    consistent). `dry_run`: read only, the steps say what would change."""
    profile_name = profile_name or role
    steps = []
    document = trainer_policy(bucket=bucket, secret_arn=secret, data_prefixes=list(data_prefixes))
    try:
        call_aws(iam.get_role, region="global", RoleName=role)
        steps.append(Step("iam role", role, "exists", dry_run=dry_run))
        role_exists = True
    except NotFound:
        if not dry_run:
            call_aws(iam.create_role, region="global", RoleName=role,
                     AssumeRolePolicyDocument=json.dumps(ec2_trust_policy()),
                     Description="spotshift trainer instances", Tags=[{"Key": MANAGED_TAG, "Value": "true"}])
        steps.append(Step("iam role", role, "created", changes=(Change("create", f"role {role} (EC2 may assume it)"),),
                          dry_run=dry_run))
        role_exists = False
    current = _role_policy(iam, role) if role_exists else None
    if current == document:
        steps.append(Step("iam role policy", TRAINER_POLICY_NAME, "unchanged", dry_run=dry_run))
    else:
        if not dry_run:
            call_aws(iam.put_role_policy, region="global", RoleName=role, PolicyName=TRAINER_POLICY_NAME,
                     PolicyDocument=json.dumps(document))
        steps.append(Step("iam role policy", TRAINER_POLICY_NAME, "created" if current is None else "updated",
                          changes=(Change("put", f"inline policy {TRAINER_POLICY_NAME} on role {role}"),),
                          dry_run=dry_run))
    try:
        profile = call_aws(iam.get_instance_profile, region="global", InstanceProfileName=profile_name)["InstanceProfile"]
        steps.append(Step("instance profile", profile_name, "exists", dry_run=dry_run))
    except NotFound:
        profile = {"Roles": []}
        if not dry_run:
            profile = call_aws(iam.create_instance_profile, region="global",
                               InstanceProfileName=profile_name)["InstanceProfile"]
        steps.append(Step("instance profile", profile_name, "created",
                          changes=(Change("create", f"instance profile {profile_name}"),), dry_run=dry_run))
    if role not in {r["RoleName"] for r in profile.get("Roles", [])}:
        if not dry_run:
            call_aws(iam.add_role_to_instance_profile, region="global", InstanceProfileName=profile_name, RoleName=role)
        last = steps[-1]
        steps[-1] = replace(last, status="updated" if last.status == "exists" else last.status,
                            changes=(*last.changes, Change("add", f"role {role} to instance profile {profile_name}")))
    if not dry_run:
        wait_profile_ready(iam, profile_name, role, wait=wait or (lambda: time.sleep(2)), attempts=attempts)
    return steps


def _role_policy(iam: Any, role: str) -> dict | None:
    """The role's inline trainer policy as a document, or None when it has none."""
    try:
        document = call_aws(iam.get_role_policy, region="global", RoleName=role,
                            PolicyName=TRAINER_POLICY_NAME)["PolicyDocument"]
    except NotFound:
        return None
    return json.loads(unquote(document)) if isinstance(document, str) else document


def wait_profile_ready(iam: Any, profile: str, role: str, *, wait: Callable[[], None], attempts: int) -> None:
    for _ in range(attempts):
        found = call_aws(iam.get_instance_profile, region="global", InstanceProfileName=profile)["InstanceProfile"]
        if any(r["RoleName"] == role for r in found.get("Roles", [])):
            return
        wait()
    raise WaitTimeout(f"instance profile {profile!r} still has no role", code="WaitTimeout",
                      operation="GetInstanceProfile")


def ensure_spot_service_linked_role(iam: Any, *, dry_run: bool = False) -> Step:
    """The role EC2 needs to launch spot instances (created by AWS on first use in the console only)."""
    try:
        call_aws(iam.get_role, region="global", RoleName=SPOT_SLR)
        return Step("service-linked role", SPOT_SLR, "exists", dry_run=dry_run)
    except NotFound:
        pass
    created = Step("service-linked role", SPOT_SLR, "created",
                   changes=(Change("create", "the service-linked role of spot.amazonaws.com"),), dry_run=dry_run)
    if dry_run:
        return created
    try:
        call_aws(iam.create_service_linked_role, region="global", AWSServiceName="spot.amazonaws.com")
    except SpotshiftAwsError as exc:
        if exc.code != "EntityAlreadyExists":  # created meanwhile (or under another name, as moto does)
            raise
        return Step("service-linked role", SPOT_SLR, "exists")
    return created


def region_vpcs(ec2_of: Callable[[str], Any], choices: dict[str, NetworkChoice]) -> dict[str, str]:
    """region -> the VPC its security group goes into, for every region at once, so that VPC and
    subnet settings that do not fit the account stop setup (NetworkConfigError naming the setting
    and the value) before it makes anything."""
    return {region: region_vpc(ec2_of(region), region=region, choice=choice)[0] for region, choice in choices.items()}


def ensure_security_group(ec2: Any, name: str, *, region: str, choice: NetworkChoice = NetworkChoice(),
                          dry_run: bool = False) -> Step:
    """An egress-only security group (no inbound rule; EC2's default allow-all egress) in the
    region's VPC: the one of the subnets or the VPC the settings name, else the default VPC
    (NetworkConfigError naming the settings when there is none, before anything is made)."""
    vpc, _ = region_vpc(ec2, region=region, choice=choice)
    if find_security_group(ec2, name, region=region, vpc_id=vpc) is not None:
        return Step("security group", name, "exists", region, dry_run=dry_run)
    if dry_run:
        return Step("security group", name, "created", region, changes=(
            Change("create", f"security group {name} in {vpc} (no inbound rule)"),), dry_run=True)
    call_aws(ec2.create_security_group, region=region, GroupName=name, VpcId=vpc,
             Description="spotshift trainers: no inbound, all outbound (S3, Hub, package index)",
             TagSpecifications=[{"ResourceType": "security-group", "Tags": [{"Key": MANAGED_TAG, "Value": "true"}]}])
    return Step("security group", name, "created", region,
                changes=(Change("create", f"security group {name} in {vpc} (no inbound rule)"),))


def teardown_region(ec2: Any, name: str, *, region: str, vpc_id: str | None = None) -> Step:
    """Delete the region's spotshift security group (in `vpc_id` when given; refused by EC2 while
    instances use it)."""
    group = find_security_group(ec2, name, region=region, vpc_id=vpc_id)
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
    """Delete the bucket only when asked to delete its objects too (checkpoints and models live
    there) and only when setup created it (tag spotshift:created-by=setup): every object, every
    version and delete marker of a versioned bucket, in DeleteObjects batches, then the bucket. A
    key S3 refuses to delete (object lock, a bucket policy) is named with S3's code and message,
    and the bucket is left. A bucket setup did not create is left whole, with the reason."""
    if not delete_objects:
        return Step("s3 bucket", bucket, "exists", region)
    owner = {"ExpectedBucketOwner": account}
    try:
        tags = _read_unless(s3.get_bucket_tagging, "NoSuchTagSet", region=region, Bucket=bucket, **owner)
    except NotFound:
        return Step("s3 bucket", bucket, "absent", region)
    if not created_by_setup((tags or {}).get("TagSet", [])):
        return Step("s3 bucket", bucket, "kept", region, problems=(
            f"bucket {bucket} was not created by `spotshift aws setup` (it has no tag "
            f"{CREATED_BY_TAG['Key']}={CREATED_BY_TAG['Value']}): left in place with everything in it. spotshift's "
            f"data in it is under jobs/ (checkpoints, logs, final models) and artifacts/ (the trainer wheel): delete "
            f"what you no longer need yourself (aws s3 rm s3://{bucket}/jobs/ --recursive; aws s3 rm "
            f"s3://{bucket}/artifacts/ --recursive); the lifecycle rules spotshift-abort-multipart and "
            "spotshift-expire-finished-checkpoints can go with them",))
    failed = [_failure_line(e) for e in empty_bucket(s3, bucket, region=region, account=account)]
    if failed:
        return Step("s3 bucket", bucket, "kept", region, problems=(
            f"{len(failed)} object(s) could not be deleted, so the bucket stays (run teardown again once they can "
            "be deleted):", *failed))
    call_aws(s3.delete_bucket, region=region, Bucket=bucket, **owner)
    return Step("s3 bucket", bucket, "deleted", region)


def empty_bucket(s3: Any, bucket: str, *, region: str, account: str) -> list[dict[str, str]]:
    """Delete every object of the bucket (of a bucket that is or was versioned, every version and
    delete marker) with DeleteObjects, 1,000 at a time; S3's Errors entries (Key, VersionId, Code,
    Message) of the objects it did not delete."""
    owner = {"ExpectedBucketOwner": account}
    versioning = call_aws(s3.get_bucket_versioning, region=region, Bucket=bucket, **owner).get("Status")
    objects = _object_versions(s3, bucket, region=region, owner=owner) if versioning else \
        _objects(s3, bucket, region=region, owner=owner)
    errors: list[dict[str, str]] = []
    for start in range(0, len(objects), DELETE_BATCH):
        answer = call_aws(s3.delete_objects, region=region, Bucket=bucket, **owner,
                          Delete={"Objects": objects[start:start + DELETE_BATCH], "Quiet": True})
        errors += answer.get("Errors", [])
    return errors


def _objects(s3: Any, bucket: str, *, region: str, owner: dict[str, str]) -> list[dict[str, str]]:
    keys, token = [], None
    while True:
        page = call_aws(s3.list_objects_v2, region=region, Bucket=bucket, **owner,
                        **({"ContinuationToken": token} if token else {}))
        keys += [{"Key": o["Key"]} for o in page.get("Contents", [])]
        token = page.get("NextContinuationToken")
        if not token:
            return keys


def _object_versions(s3: Any, bucket: str, *, region: str, owner: dict[str, str]) -> list[dict[str, str]]:
    found, markers = [], {}
    while True:
        page = call_aws(s3.list_object_versions, region=region, Bucket=bucket, **owner, **markers)
        found += [{"Key": v["Key"], "VersionId": v["VersionId"]}
                  for v in page.get("Versions", []) + page.get("DeleteMarkers", [])]
        if not page.get("IsTruncated"):
            return found
        markers = {"KeyMarker": page["NextKeyMarker"], "VersionIdMarker": page["NextVersionIdMarker"]}


def _failure_line(error: dict[str, str]) -> str:
    version = f" (version {error['VersionId']})" if error.get("VersionId") else ""
    return f"  {error.get('Key')}{version}: {error.get('Code')}: {error.get('Message')}"
