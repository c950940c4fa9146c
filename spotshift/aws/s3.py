"""S3 facts the orchestrator needs about a job's bucket, and a read of an object only when it changed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from spotshift.aws.calls import call_aws
from spotshift.aws.errors import map_client_error
from training.missing_keys import PermissionDenied, is_missing_key
from training.storage import split_s3_uri


def bucket_region(s3: Any, bucket: str) -> str:
    """The region a bucket lives in (GetBucketLocation answers None for us-east-1)."""
    answer = call_aws(s3.get_bucket_location, region="global", Bucket=bucket)
    return answer.get("LocationConstraint") or "us-east-1"


@dataclass(frozen=True)
class ObjectRead:
    """A conditional GET's answer: `changed` False when the object's ETag is still the one asked with
    (no body was sent); `data` None when there is no object."""

    changed: bool
    data: bytes | None = None
    etag: str | None = None


def get_if_changed(s3: Any, uri: str, etag: str | None) -> ObjectRead:
    """The object at s3://bucket/key unless its ETag is still `etag` (S3 answers 304 without the body)."""
    bucket, key = split_s3_uri(uri)
    try:
        answer = s3.get_object(Bucket=bucket, Key=key, **({"IfNoneMatch": etag} if etag else {}))
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("304", "NotModified"):
            return ObjectRead(changed=False, etag=etag)
        if _absent(s3, bucket, key, exc):
            return ObjectRead(changed=etag is not None)
        raise map_client_error(exc, region="global") from exc
    return ObjectRead(changed=True, data=answer["Body"].read(), etag=answer.get("ETag"))


def _absent(s3: Any, bucket: str, key: str, exc: ClientError) -> bool:
    """S3's rule for a missing key (training.missing_keys). The orchestrator's policy lists the bucket,
    so S3 answers it 404 and this costs nothing more; a 403 (other credentials, another account's
    bucket) costs one listing. A denied read (the object exists, or the listing is refused too) is
    the caller's to map, as the GET's own AccessDenied; a listing that fails otherwise is mapped here."""
    try:
        return is_missing_key(s3, bucket, key, exc)
    except PermissionDenied:
        return False
    except ClientError as listing:
        raise map_client_error(listing, region="global") from exc
