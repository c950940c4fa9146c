"""Preflight agent: before a job's first launch in a region, the same checks as `spotshift aws
check` (image, subnets, security group, quotas, a RunInstances DryRun), cached per region."""

from __future__ import annotations

import logging
from typing import Any

from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger

from spotshift.aws.check import CheckRow, launch_verdict
from spotshift.models import Offer


def _logger():
    try:
        return get_run_logger()
    except MissingContextError:  # called as .fn outside a flow
        return logging.getLogger(__name__)


def _in_run() -> bool:
    from prefect.context import get_run_context

    try:
        get_run_context()
        return True
    except MissingContextError:
        return False


@task(name="check-region", task_run_name="check-{offer.region}", cache_policy=NO_CACHE)
def check_region_before_launch(offer: Offer, backend: Any) -> list[CheckRow]:
    """Run the region's preflight when the backend has one (EC2; the local backend has none); raises
    RegionNotReady naming each fix, or QuotaExceeded when the offer's quota is known to be zero (block
    and go on); an unknown quota (not readable) lets the launch go ahead."""
    preflight = getattr(backend, "preflight", None)
    if preflight is None:
        return []
    rows, cached = preflight.rows(offer.region)
    if not cached:
        _logger().info("checked %s: %d/%d rows pass", offer.region, sum(r.ok for r in rows), len(rows))
        if _in_run():
            create_table_artifact(key=f"aws-check-{offer.region}", description=f"spotshift aws check of {offer.region}",
                                  table=[{"check": r.check, "result": r.result, "detail": r.detail, "fix": r.fix}
                                         for r in rows])
    launch_verdict(offer, rows)
    return rows
