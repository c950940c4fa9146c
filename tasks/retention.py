"""Retention: a finished job's checkpoints are tagged so the bucket's lifecycle rule (set by
`spotshift aws setup`) expires them after the configured number of days; final/ is kept."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from spotshift.aws.retention import mark_checkpoints_expiring
from tasks.retries import AWS_STEP_RETRY
from training.contract import JobPaths


@task(name="expire-checkpoints", cache_policy=NO_CACHE, **AWS_STEP_RETRY)
def expire_checkpoints(s3: Any, paths: JobPaths) -> int:
    """Tag every checkpoint object of the job for expiry; how many were tagged."""
    tagged = mark_checkpoints_expiring(s3, paths.bucket, paths.prefix)
    get_run_logger().info("Tagged %d checkpoint object(s) of %s for expiry", tagged, paths.job_id)
    return tagged
