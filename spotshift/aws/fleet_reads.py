"""A fleet pass's reads: every spotshift-tagged instance of a region in one paginated
DescribeInstances (1,000 per page), and a job's heartbeat by a conditional GET (ETag)."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from spotshift.aws.ec2 import find_instances
from spotshift.aws.s3 import get_if_changed
from spotshift.fleet import HeartbeatRead
from spotshift.instances import LISTED_STATES, InstanceInfo
from training.contract import PROGRESS, JobPaths, Progress

PAGE_SIZE = 1000  # DescribeInstances' largest MaxResults: calls per region = ceil(instances / 1000)


def list_tagged_instances(ec2: Any) -> list[InstanceInfo]:
    """Every spotshift-tagged instance of the client's region that is pending, running, stopping or
    shutting down, one DescribeInstances call per 1,000 instances."""
    return find_instances(ec2, states=LISTED_STATES, page_size=PAGE_SIZE)


def read_heartbeat(s3: Any, paths: JobPaths, etag: str | None) -> HeartbeatRead:
    """The job's progress.json unless its ETag is still `etag` (S3 answers 304 without a body).
    A missing key (404, or a 403 a listing confirms: spotshift.aws.s3.get_if_changed) is no
    heartbeat; a garbled one counts as unchanged (the trainer rewrites it within seconds)."""
    read = get_if_changed(s3, paths.uri(PROGRESS), etag)
    if not read.changed:
        return HeartbeatRead(changed=False, etag=etag)
    if read.data is None:
        return HeartbeatRead(changed=True, progress=None, etag=None)
    try:
        progress = Progress.model_validate_json(read.data)
    except ValidationError:
        return HeartbeatRead(changed=False, etag=etag)
    return HeartbeatRead(changed=True, progress=progress, etag=read.etag)
