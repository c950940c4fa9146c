"""S3 facts the orchestrator needs about a job's bucket."""

from __future__ import annotations

from typing import Any

from spotshift.aws.calls import call_aws


def bucket_region(s3: Any, bucket: str) -> str:
    """The region a bucket lives in (GetBucketLocation answers None for us-east-1)."""
    answer = call_aws(s3.get_bucket_location, region="global", Bucket=bucket)
    return answer.get("LocationConstraint") or "us-east-1"
