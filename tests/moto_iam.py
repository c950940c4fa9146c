"""What moto's IAM enforcement checks where AWS checks something else: the one table of moto's own
action names, used only when a test hands a policy to a moto server (never in a printed policy).

moto (5.2 on) authorizes each S3 request under `s3:<its botocore operation name>`. AWS authorizes
many S3 operations under another action (the Service Authorization Reference for Amazon S3, "Actions
defined by Amazon S3", and the S3 API reference's "Permissions" section of each operation): a
HeadObject needs s3:GetObject, a ListObjectsV2 s3:ListBucket, a PutPublicAccessBlock
s3:PutBucketPublicAccessBlock. For those, MOTO_NAMES gives the names moto asks for instead; a test
policy grants them beside the AWS action, and dropping the AWS action drops them too.
tests/test_moto_iam.py proves each entry against the locked moto and checks that no printed policy
names one of them.

Besides names, moto evaluates non-S3 actions against Resource "*" only and denies any Condition it
cannot fill from the request: `for_moto` widens non-S3 resources to "*" and drops conditions; the
scoping itself is asserted on the policy document (tests/test_aws_iam.py).
"""

from __future__ import annotations

from typing import Any

# the AWS IAM action -> the S3 operation names moto authorizes the same calls under (the calls
# spotshift makes: setup's bucket settings, boto3's transfers (HeadObject before a download, the
# multipart trio for a large upload) and listings; each entry is proven against the locked moto by
# tests/test_moto_iam.py). DeleteObjects: moto checks s3:DeleteObjects on the bucket's ARN (not
# AWS's s3:DeleteObject / s3:DeleteObjectVersion on each key) and, refused, answers 200 with every key
# in Errors (AccessDenied); a grant of s3:DeleteObject only under a prefix cannot be shown to moto.
MOTO_NAMES: dict[str, tuple[str, ...]] = {
    "s3:PutBucketPublicAccessBlock": ("s3:PutPublicAccessBlock",),
    "s3:GetBucketPublicAccessBlock": ("s3:GetPublicAccessBlock",),
    "s3:PutLifecycleConfiguration": ("s3:PutBucketLifecycleConfiguration",),
    "s3:GetLifecycleConfiguration": ("s3:GetBucketLifecycleConfiguration",),
    "s3:ListBucket": ("s3:ListObjectsV2",),
    "s3:ListBucketVersions": ("s3:ListObjectVersions",),
    "s3:DeleteObject": ("s3:DeleteObjects",),
    "s3:GetObject": ("s3:HeadObject",),
    "s3:PutObject": ("s3:CreateMultipartUpload", "s3:UploadPart", "s3:CompleteMultipartUpload"),
}
MOTO_ONLY_NAMES = frozenset(name for names in MOTO_NAMES.values() for name in names)


def with_moto_names(actions: list[str]) -> list[str]:
    """The actions and, after each, the names moto checks for the same calls."""
    return [name for action in actions for name in (action, *MOTO_NAMES.get(action, ()))]


def for_moto(policy: dict[str, Any], drop: str | None = None) -> dict[str, Any]:
    """The policy as moto can evaluate it (see the module docstring), without action `drop` and
    without the names moto checks in its place."""
    statements = []
    for s in policy["Statement"]:
        actions = [a for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"]) if a != drop]
        if actions:
            statements.append({"Effect": s["Effect"], "Action": with_moto_names(actions),
                               "Resource": s["Resource"] if actions[0].startswith("s3:") else "*"})
    return {"Version": policy["Version"], "Statement": statements}
