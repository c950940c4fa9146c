"""IAM policy documents: the setup policy (what an admin's `spotshift aws setup`/`teardown` calls),
the runtime policy (what the orchestrator calls while jobs run, no IAM writes), the trainer role's
(its job prefixes, the artifacts, the user's data prefixes, one optional secret) and the role's
trust policy, each scoped as tightly as its actions allow. Pure."""

from __future__ import annotations

import json
import re
from typing import Any

from spotshift.instances import JOB_TAG
from spotshift.catalog import INSTANCE_TYPES
from spotshift.data_prefixes import DataPrefix, parse_data_prefixes

JOBS_PREFIX = "jobs/"
ARTIFACTS_PREFIX = "artifacts/"
MANAGED_TAG = "spotshift:managed"
SECRET_PREFIX = "spotshift/"  # the only secrets the setup policy may look up (the Hub token's)
DEFAULT_BUCKET = "spotshift-*"  # the printed policies' bucket when none is configured or known
MANAGED_POLICY_MAX_CHARS = 6144  # IAM's quota for a customer-managed policy (whitespace not counted)
Statement = dict[str, Any]


def _stmt(sid: str, actions: list[str], resources: list[str] | str, condition: dict | None = None) -> Statement:
    out: Statement = {"Sid": sid, "Effect": "Allow", "Action": sorted(actions), "Resource": resources}
    if condition:
        out["Condition"] = condition
    return out


def gpu_instance_type_patterns() -> list[str]:
    """`<family>.*` for every GPU family the catalog knows: what the runtime policy may launch."""
    return sorted({f"{t.family}.*" for t in INSTANCE_TYPES.values()})


def _data_statements(prefixes: tuple[DataPrefix, ...], partition: str, sid: str) -> list[Statement]:
    """Read-only grants on the user's data prefixes: GetObject under each, ListBucket of each bucket
    only under its prefixes (s3:prefix)."""
    if not prefixes:
        return []
    statements = [_stmt(f"Read{sid}", ["s3:GetObject"],
                        [f"arn:{partition}:s3:::{p.bucket}/{p.prefix}*" for p in prefixes])]
    buckets = dict.fromkeys(p.bucket for p in prefixes)
    for n, bucket in enumerate(buckets, 1):
        statements.append(_stmt(f"List{sid}{n if len(buckets) > 1 else ''}", ["s3:ListBucket"],
                                f"arn:{partition}:s3:::{bucket}",
                                {"StringLike": {"s3:prefix": [f"{p.prefix}*" for p in prefixes if p.bucket == bucket]}}))
    return statements


def _profile_arn(iam: str, trainer_role: str, instance_profile: str | None) -> str:
    return f"{iam}:instance-profile/{instance_profile or trainer_role}"


def setup_statements(*, bucket: str = DEFAULT_BUCKET, trainer_role: str = "spotshift-trainer",
                     instance_profile: str | None = None, account: str = "*", data_prefixes: list[str] = (),
                     partition: str = "aws") -> list[Statement]:
    """What `spotshift aws setup` and `teardown` call (an admin, once): the bucket, the trainer role
    and its profile, the spot service-linked role, the security groups, the Hub-token secret's ARN.
    The data prefixes are validated here too; setup writes them into the trainer's policy and
    checks that each one's bucket exists in this account (GetBucketLocation); it reads no object."""
    data_buckets = dict.fromkeys(p.bucket for p in parse_data_prefixes(data_prefixes))
    ec2 = f"arn:{partition}:ec2:*:{account}"
    iam = f"arn:{partition}:iam::{account}"
    s3b = f"arn:{partition}:s3:::{bucket}"
    role = f"{iam}:role/{trainer_role}"
    return [
        _stmt("ReadNetworkAndInstances", ["ec2:DescribeVpcs", "ec2:DescribeSubnets", "ec2:DescribeSecurityGroups",
                                          "ec2:DescribeInstances"], "*"),
        _stmt("CreateSecurityGroup", ["ec2:CreateSecurityGroup"], [f"{ec2}:security-group/*", f"{ec2}:vpc/*"]),
        _stmt("TagSecurityGroupAtCreation", ["ec2:CreateTags"], f"{ec2}:security-group/*",
              {"StringEquals": {"ec2:CreateAction": "CreateSecurityGroup"}}),
        _stmt("DeleteOnlyManagedSecurityGroups", ["ec2:DeleteSecurityGroup"], f"{ec2}:security-group/*",
              {"StringEquals": {f"aws:ResourceTag/{MANAGED_TAG}": "true"}}),
        _stmt("TrainerRoleAndProfile", [
            "iam:GetRole", "iam:CreateRole", "iam:TagRole", "iam:DeleteRole", "iam:GetRolePolicy", "iam:PutRolePolicy",
            "iam:DeleteRolePolicy", "iam:GetInstanceProfile", "iam:CreateInstanceProfile", "iam:DeleteInstanceProfile",
            "iam:AddRoleToInstanceProfile", "iam:RemoveRoleFromInstanceProfile",
        ], [role, _profile_arn(iam, trainer_role, instance_profile)]),
        # AddRoleToInstanceProfile needs PassRole on the role (IAM API Reference); when IAM names the
        # service it is passed to, it must be EC2
        _stmt("PutTheTrainerRoleInItsProfile", ["iam:PassRole"], role,
              {"StringEqualsIfExists": {"iam:PassedToService": "ec2.amazonaws.com"}}),
        _stmt("SpotServiceLinkedRole", ["iam:GetRole"],
              f"{iam}:role/aws-service-role/spot.amazonaws.com/AWSServiceRoleForEC2Spot"),
        _stmt("CreateSpotServiceLinkedRole", ["iam:CreateServiceLinkedRole"],
              f"{iam}:role/aws-service-role/spot.amazonaws.com/*",
              {"StringEquals": {"iam:AWSServiceName": "spot.amazonaws.com"}}),
        _stmt("HubTokenSecretLookup", ["secretsmanager:DescribeSecret"],
              f"arn:{partition}:secretsmanager:*:{account}:secret:{SECRET_PREFIX}*"),
        # an existing bucket's settings are read and merged (spotshift/aws/bucket_rules.py); the tag
        # marks a bucket setup created, the only kind teardown deletes (versions too, if versioned)
        _stmt("BucketSetupAndTeardown", [
            "s3:CreateBucket", "s3:DeleteBucket", "s3:GetBucketLocation", "s3:GetBucketPublicAccessBlock",
            "s3:PutBucketPublicAccessBlock", "s3:GetLifecycleConfiguration", "s3:PutLifecycleConfiguration",
            "s3:GetBucketTagging", "s3:PutBucketTagging", "s3:GetBucketVersioning", "s3:ListBucket",
            "s3:ListBucketVersions",
        ], s3b),
        _stmt("EmptyTheBucketAtTeardown", ["s3:DeleteObject", "s3:DeleteObjectVersion"], f"{s3b}/*"),
        *([_stmt("CheckDataBuckets", ["s3:GetBucketLocation"], [f"arn:{partition}:s3:::{b}" for b in data_buckets])]
          if data_buckets else []),
    ]


def runtime_statements(*, bucket: str = DEFAULT_BUCKET, trainer_role: str = "spotshift-trainer",
                       instance_profile: str | None = None, account: str = "*",
                       image_owners: list[str] = ("amazon",), data_prefixes: list[str] = (),
                       partition: str = "aws") -> list[Statement]:
    """What the orchestrator calls while jobs run (scout, check, deployer, the fleet pass and its actions): reads
    on `*` only where the action takes no resource; launches only of the catalog's GPU types with
    the trainer's profile from Amazon's or the account's images (or `image_owners`), tagged with a
    job; termination only of such instances; PassRole only of the trainer role to EC2; objects
    only under jobs/ and artifacts/ (and read-only under `data_prefixes`). No IAM write, no
    secret, no bucket change."""
    ec2 = f"arn:{partition}:ec2:*:{account}"
    iam = f"arn:{partition}:iam::{account}"
    s3b = f"arn:{partition}:s3:::{bucket}"
    profile = _profile_arn(iam, trainer_role, instance_profile)
    me = account if account != "*" else "${aws:PrincipalAccount}"  # IAM fills it in: no account needed
    owners = sorted({"amazon", me} | {me if o == "self" else o for o in image_owners})
    return [
        _stmt("ReadMarketImagesAndNetwork", [
            "ec2:DescribeInstances", "ec2:DescribeInstanceTypes", "ec2:DescribeInstanceTypeOfferings",
            "ec2:DescribeSpotPriceHistory", "ec2:GetSpotPlacementScores", "ec2:DescribeAvailabilityZones",
            "ec2:DescribeImages", "ec2:DescribeSubnets", "ec2:DescribeSecurityGroups", "ec2:DescribeVpcs",
            "ec2:DescribeRouteTables", "ec2:DescribeNatGateways", "ec2:DescribeVpcEndpoints",
            "pricing:GetProducts", "servicequotas:GetServiceQuota", "servicequotas:GetAWSDefaultServiceQuota",
        ], "*"),
        _stmt("ReadDeepLearningImageParameters", ["ssm:GetParameter"],
              f"arn:{partition}:ssm:*:*:parameter/aws/service/deeplearning/*"),
        _stmt("ReadTrainerProfile", ["iam:GetInstanceProfile"], profile),
        _stmt("LaunchGpuTypesWithTrainerProfile", ["ec2:RunInstances"], f"{ec2}:instance/*", {
            "Null": {f"aws:RequestTag/{JOB_TAG}": "false"},
            "StringLike": {"ec2:InstanceType": gpu_instance_type_patterns()},
            ("ArnLike" if "*" in profile else "ArnEquals"): {"ec2:InstanceProfile": profile}}),
        _stmt("LaunchTaggedVolumes", ["ec2:RunInstances"], f"{ec2}:volume/*",
              {"Null": {f"aws:RequestTag/{JOB_TAG}": "false"}}),
        _stmt("LaunchOwnedImages", ["ec2:RunInstances"], f"arn:{partition}:ec2:*::image/*",
              {"StringEquals": {"ec2:Owner": owners}}),
        _stmt("LaunchIntoNetwork", ["ec2:RunInstances"], [
            f"{ec2}:network-interface/*", f"{ec2}:subnet/*", f"{ec2}:security-group/*",
            f"{ec2}:spot-instances-request/*"]),
        _stmt("TagOnlyAtLaunch", ["ec2:CreateTags"], [f"{ec2}:instance/*", f"{ec2}:volume/*"],
              {"StringEquals": {"ec2:CreateAction": "RunInstances"}}),
        _stmt("TerminateOnlyJobInstances", ["ec2:TerminateInstances"], f"{ec2}:instance/*",
              {"Null": {f"aws:ResourceTag/{JOB_TAG}": "false"}}),
        _stmt("PassOnlyTrainerRoleToEc2", ["iam:PassRole"], f"{iam}:role/{trainer_role}",
              {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}),
        _stmt("BucketLocationAndList", ["s3:GetBucketLocation", "s3:ListBucket"], s3b),
        _stmt("JobObjects", ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload",
                             "s3:PutObjectTagging"], f"{s3b}/{JOBS_PREFIX}*"),
        _stmt("TrainerArtifacts", ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"],
              f"{s3b}/{ARTIFACTS_PREFIX}*"),
        *_data_statements(parse_data_prefixes(data_prefixes), partition, "Data"),
    ]


def setup_policy(**kwargs: Any) -> dict[str, Any]:
    """The admin's policy for `spotshift aws setup` / `teardown` (docs/iam/setup-policy.json is this
    with the defaults)."""
    return {"Version": "2012-10-17", "Statement": setup_statements(**kwargs)}


def runtime_policy(**kwargs: Any) -> dict[str, Any]:
    """The orchestrator's policy while jobs run, to attach as a customer-managed policy
    (docs/iam/runtime-policy.json is this with the defaults)."""
    return {"Version": "2012-10-17", "Statement": runtime_statements(**kwargs)}


def policy_size(policy: dict[str, Any]) -> int:
    """The characters IAM counts against a policy's size quota: the JSON without whitespace."""
    return len(re.sub(r"\s", "", json.dumps(policy)))


def secret_prefix_error(secret: str | None) -> str | None:
    """Why the Hub-token secret (a name or an ARN) lies outside SECRET_PREFIX, or None when it is
    inside (or unset): the setup policy may look up, and the trainer read, only secrets there."""
    if not secret:
        return None
    name = secret.split(":secret:", 1)[1] if secret.startswith("arn:") and ":secret:" in secret else secret
    if name.startswith(SECRET_PREFIX) and len(name) > len(SECRET_PREFIX):
        return None
    return (f"SPOTSHIFT_HUB_TOKEN_SECRET={secret!r} is outside the prefix {SECRET_PREFIX!r}: the policies allow "
            f"only secrets named {SECRET_PREFIX}...; create it as e.g. {SECRET_PREFIX}hf-token "
            f"(aws secretsmanager create-secret --name {SECRET_PREFIX}hf-token --secret-string hf_...)")


def policy_actions(policy: dict[str, Any]) -> list[str]:
    """Every distinct action a policy names, sorted."""
    return sorted({a for s in policy["Statement"] for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])})


def trainer_policy(*, bucket: str, secret_arn: str | None = None, data_prefixes: list[str] = (),
                   partition: str = "aws") -> dict[str, Any]:
    """The trainer role's inline policy: read/write its job prefixes, read the artifacts, list only
    those prefixes, read the user's `data_prefixes` (s3://bucket/prefix), and read one secret (the
    Hub token) when there is one."""
    s3b = f"arn:{partition}:s3:::{bucket}"
    statements = [
        _stmt("JobObjects", ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
              f"{s3b}/{JOBS_PREFIX}*"),
        _stmt("TrainerArtifacts", ["s3:GetObject"], f"{s3b}/{ARTIFACTS_PREFIX}*"),
        _stmt("ListJobPrefixes", ["s3:ListBucket"], s3b,
              {"StringLike": {"s3:prefix": [f"{JOBS_PREFIX}*", f"{ARTIFACTS_PREFIX}*"]}}),
    ]
    statements += _data_statements(parse_data_prefixes(data_prefixes), partition, "Data")
    if secret_arn:
        statements.append(_stmt("HubToken", ["secretsmanager:GetSecretValue"], secret_arn))
    return {"Version": "2012-10-17", "Statement": statements}


def ec2_trust_policy() -> dict[str, Any]:
    """Only EC2 may assume the trainer role."""
    return {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}


DEFAULT_POLICIES = {"setup": setup_policy, "runtime": runtime_policy}

if __name__ == "__main__":  # docs/iam: python -m spotshift.aws.iam setup > docs/iam/setup-policy.json
    import sys

    if sys.argv[1:2] not in ([name] for name in DEFAULT_POLICIES) or len(sys.argv) != 2:
        sys.exit(f"usage: python -m spotshift.aws.iam {{{'|'.join(DEFAULT_POLICIES)}}}")
    sys.stdout.write(json.dumps(DEFAULT_POLICIES[sys.argv[1]](), indent=2) + "\n")
