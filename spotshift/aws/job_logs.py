"""A job's instance logs in S3, jobs/<id>/logs/<instance-id>.log: the user-data uploads the whole log
every minute while the instance runs and once more at its exit; the log only grows, so a reader
fetches just the bytes past what it has."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from botocore.exceptions import ClientError

from spotshift.aws.errors import map_client_error
from training.contract import LOGS, JobPaths


@dataclass(frozen=True)
class InstanceLog:
    key: str
    instance_id: str
    size: int
    modified: datetime


def job_logs(s3, paths: JobPaths) -> list[InstanceLog]:
    """The job's instance logs, oldest upload first (the last one is the current instance's)."""
    prefix = paths.key(LOGS)
    try:
        objects = [o for page in s3.get_paginator("list_objects_v2").paginate(Bucket=paths.bucket, Prefix=prefix)
                   for o in page.get("Contents", [])]
    except ClientError as exc:
        raise map_client_error(exc, context=f"list s3://{paths.bucket}/{prefix}", region=s3.meta.region_name) from exc
    logs = [InstanceLog(key=o["Key"], instance_id=o["Key"][len(prefix):].removesuffix(".log"), size=o["Size"],
                        modified=o["LastModified"]) for o in objects if o["Key"].endswith(".log")]
    return sorted(logs, key=lambda log: (log.modified, log.key))


def read_from(s3, bucket: str, key: str, offset: int) -> bytes:
    """The log's bytes from `offset` on (b"" when nothing was appended since)."""
    kwargs = {"Range": f"bytes={offset}-"} if offset > 0 else {}
    try:
        return s3.get_object(Bucket=bucket, Key=key, **kwargs)["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "InvalidRange":  # 416: no byte past the offset yet
            return b""
        raise map_client_error(exc, context=f"read s3://{bucket}/{key}", region=s3.meta.region_name) from exc
