"""IAM policy documents: the orchestrator's (what the spotshift code calls, scoped), the trainer
role's (its job prefixes, the artifacts, one optional secret) and the role's trust policy. Pure."""

from __future__ import annotations

from typing import Any

from spotshift.aws.ec2 import JOB_TAG

JOBS_PREFIX = "jobs/"
ARTIFACTS_PREFIX = "artifacts/"
MANAGED_TAG = "spotshift:managed"
Statement = dict[str, Any]


def _stmt(sid: str, actions: list[str], resources: list[str] | str, condition: dict | None = None) -> Statement:
    out: Statement = {"Sid": sid, "Effect": "Allow", "Action": sorted(actions), "Resource": resources}
    if condition:
        out["Condition"] = condition
    return out


def orchestrator_statements(*, bucket: str = "spotshift-*", trainer_role: str = "spotshift-trainer",
                            instance_profile: str | None = None, account: str = "*",
                            partition: str = "aws") -> list[Statement]:
    """Every action spotshift (setup, check, scout, deployer, reaper, teardown) calls, each scoped
    as tightly as the action allows; Describe* and the price APIs take no resource scope."""
    ec2 = f"arn:{partition}:ec2:*:{account}"
    iam = f"arn:{partition}:iam::{account}"
    s3b = f"arn:{partition}:s3:::{bucket}"
    tagged = {"Null": {f"aws:ResourceTag/{JOB_TAG}": "false"}}
    return [
        _stmt("ReadMarketAndNetwork", [
            "ec2:DescribeInstances", "ec2:DescribeInstanceTypes", "ec2:DescribeInstanceTypeOfferings",
            "ec2:DescribeSpotPriceHistory", "ec2:GetSpotPlacementScores", "ec2:DescribeAvailabilityZones",
            "ec2:DescribeImages", "ec2:DescribeSubnets", "ec2:DescribeSecurityGroups", "ec2:DescribeVpcs",
            "pricing:GetProducts", "servicequotas:GetServiceQuota", "servicequotas:GetAWSDefaultServiceQuota",
        ], "*"),
        _stmt("ReadDeepLearningImageParameters", ["ssm:GetParameter"],
              f"arn:{partition}:ssm:*::parameter/aws/service/deeplearning/*"),
        _stmt("LaunchTaggedInstances", ["ec2:RunInstances"],
              [f"{ec2}:instance/*", f"{ec2}:volume/*"], {"Null": {f"aws:RequestTag/{JOB_TAG}": "false"}}),
        _stmt("LaunchIntoNetworkAndImage", ["ec2:RunInstances"], [
            f"{ec2}:network-interface/*", f"{ec2}:subnet/*", f"{ec2}:security-group/*",
            f"{ec2}:spot-instances-request/*", f"arn:{partition}:ec2:*::image/*"]),
        _stmt("TagOnlyAtCreation", ["ec2:CreateTags"], [
            f"{ec2}:instance/*", f"{ec2}:volume/*", f"{ec2}:spot-instances-request/*",
            f"{ec2}:network-interface/*", f"{ec2}:security-group/*"],
            {"StringEquals": {"ec2:CreateAction": ["RunInstances", "CreateSecurityGroup"]}}),
        _stmt("TerminateOnlySpotshiftInstances", ["ec2:TerminateInstances"], f"{ec2}:instance/*", tagged),
        _stmt("SecurityGroupSetup", ["ec2:CreateSecurityGroup"], [f"{ec2}:security-group/*", f"{ec2}:vpc/*"]),
        _stmt("SecurityGroupTeardown", ["ec2:DeleteSecurityGroup"], f"{ec2}:security-group/*",
              {"StringEquals": {f"aws:ResourceTag/{MANAGED_TAG}": "true"}}),
        _stmt("PassOnlyTheTrainerRole", ["iam:PassRole"], f"{iam}:role/{trainer_role}",
              {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}),
        _stmt("TrainerRoleSetup", [
            "iam:GetRole", "iam:CreateRole", "iam:TagRole", "iam:DeleteRole", "iam:PutRolePolicy", "iam:DeleteRolePolicy",
            "iam:GetInstanceProfile", "iam:CreateInstanceProfile", "iam:DeleteInstanceProfile",
            "iam:AddRoleToInstanceProfile", "iam:RemoveRoleFromInstanceProfile",
        ], [f"{iam}:role/{trainer_role}", f"{iam}:instance-profile/{instance_profile or trainer_role}"]),
        _stmt("SpotServiceLinkedRole", ["iam:GetRole"],
              f"{iam}:role/aws-service-role/spot.amazonaws.com/AWSServiceRoleForEC2Spot"),
        _stmt("CreateSpotServiceLinkedRole", ["iam:CreateServiceLinkedRole"],
              f"{iam}:role/aws-service-role/spot.amazonaws.com/*",
              {"StringEquals": {"iam:AWSServiceName": "spot.amazonaws.com"}}),
        _stmt("TrainerSecretLookup", ["secretsmanager:DescribeSecret"],
              f"arn:{partition}:secretsmanager:*:{account}:secret:*"),
        _stmt("BucketSetup", [
            "s3:CreateBucket", "s3:DeleteBucket", "s3:GetBucketLocation", "s3:PutBucketPublicAccessBlock",
            "s3:PutLifecycleConfiguration", "s3:ListBucket",
        ], s3b),
        _stmt("JobAndArtifactObjects", ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
              [f"{s3b}/{JOBS_PREFIX}*", f"{s3b}/{ARTIFACTS_PREFIX}*"]),
        _stmt("ExpireFinishedCheckpoints", ["s3:PutObjectTagging"], f"{s3b}/{JOBS_PREFIX}*"),
    ]


def orchestrator_policy(**kwargs: Any) -> dict[str, Any]:
    """The orchestrator's IAM policy (docs/iam/orchestrator-policy.json is this with the defaults)."""
    return {"Version": "2012-10-17", "Statement": orchestrator_statements(**kwargs)}


def policy_actions(policy: dict[str, Any]) -> list[str]:
    """Every distinct action a policy names, sorted."""
    return sorted({a for s in policy["Statement"] for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])})


def trainer_policy(*, bucket: str, secret_arn: str | None = None, partition: str = "aws") -> dict[str, Any]:
    """The trainer role's inline policy: read/write its job prefixes, read the artifacts, list only
    those prefixes, and read one secret (the Hub token) when there is one."""
    s3b = f"arn:{partition}:s3:::{bucket}"
    statements = [
        _stmt("JobObjects", ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
              f"{s3b}/{JOBS_PREFIX}*"),
        _stmt("TrainerArtifacts", ["s3:GetObject"], f"{s3b}/{ARTIFACTS_PREFIX}*"),
        _stmt("ListJobPrefixes", ["s3:ListBucket"], s3b,
              {"StringLike": {"s3:prefix": [f"{JOBS_PREFIX}*", f"{ARTIFACTS_PREFIX}*"]}}),
    ]
    if secret_arn:
        statements.append(_stmt("HubToken", ["secretsmanager:GetSecretValue"], secret_arn))
    return {"Version": "2012-10-17", "Statement": statements}


def ec2_trust_policy() -> dict[str, Any]:
    """Only EC2 may assume the trainer role."""
    return {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
