"""Deployer agent: start the instance of a plan through a compute backend, stop instances.

Throttling is retried with backoff; CapacityUnavailable is raised typed, never retried, so the
flow blocklists the offer and takes the next one.
"""

from __future__ import annotations

import logging

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger

from spotshift.aws.compute import ComputeBackend
from spotshift.aws.ec2 import LaunchedInstance, LaunchRequest
from spotshift.aws.errors import CapacityUnavailable
from tasks.retries import AWS_STEP_RETRY

def _logger():
    try:
        return get_run_logger()
    except MissingContextError:  # called as .fn outside a flow
        return logging.getLogger(__name__)


_aws_task = dict(cache_policy=NO_CACHE, **AWS_STEP_RETRY)


@task(name="start-instance", task_run_name="start-{request.workload_id}", **_aws_task)
def start_instance(request: LaunchRequest, backend: ComputeBackend) -> LaunchedInstance:
    """Start the request's instance and return once it runs (a retry never starts a second one)."""
    offer = request.offer
    try:
        launched = backend.start(request)
    except CapacityUnavailable as exc:
        _logger().warning("no capacity for %s %s in %s: %s", offer.market, offer.instance_type, offer.zone, exc.code)
        raise
    _logger().info("started %s (%s %s in %s) for workload %s", launched.instance_id, offer.market,
                   offer.instance_type, launched.zone, request.workload_id)
    return launched


@task(name="stop-instance", task_run_name="stop-{instance_id}", **_aws_task)
def stop_instance(instance_id: str, reason: str, backend: ComputeBackend) -> None:
    """Stop (terminate) one instance; stopping a terminated one is fine."""
    backend.stop(instance_id, reason)
    _logger().info("terminated %s: %s", instance_id, reason)


@task(name="stop-job-instances", task_run_name="stop-instances-of-{job_id}", **_aws_task)
def stop_job_instances(job_id: str, reason: str, backend: ComputeBackend) -> list[str]:
    """Terminate every instance tagged with the job (flow failure/crash/cancel hooks); their ids."""
    stopped = [i.instance_id for i in backend.list(job_id)]
    for instance_id in stopped:
        backend.stop(instance_id, reason)
    _logger().info("terminated %d instance(s) of %s: %s", len(stopped), job_id, reason)
    return stopped
