"""Checkpoints of a finished job marked for the bucket's lifecycle rule (spotshift:expire=true,
expired after SPOTSHIFT_CHECKPOINT_EXPIRE_DAYS); the final model and logs stay."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from spotshift.aws.calls import call_aws
from spotshift.aws.errors import map_client_error

EXPIRE_TAG = {"TagSet": [{"Key": "spotshift:expire", "Value": "true"}]}


def mark_checkpoints_expiring(s3: Any, bucket: str, job_prefix: str, *, region: str = "") -> int:
    """Tag every object under <job_prefix>checkpoints/ for expiry; how many were tagged."""
    prefix = job_prefix.rstrip("/") + "/checkpoints/"
    try:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
    except ClientError as exc:
        raise map_client_error(exc, context=f"list {prefix}", region=region) from exc
    for key in keys:
        call_aws(s3.put_object_tagging, region=region, Bucket=bucket, Key=key, Tagging=EXPIRE_TAG)
    return len(keys)
