"""Migration agents: ask the trainer for a checkpoint now, wait until it is durable, wait for the
new instance's first heartbeat past it, and record each step of the migration's state machine."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any, Callable

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from spotshift.models import Migration
from spotshift.monitoring import TrainerFailedPermanently, permanent_failure
from training.contract import (
    CONTROL, ControlRequest, Progress, TrainerState, read_latest, read_progress, write_control,
)
from training.storage import split_s3_uri


class MigrationTimeout(TimeoutError):
    """A step of a migration did not happen in time; the job stays where it is."""


@task(name="migration-step", cache_policy=NO_CACHE)
def record_migration_step(ledger: Any, migration: Migration) -> Migration:
    """Persist a migration at its new state (spotshift.lifecycle.migration.begin/advance built it):
    one idempotent upsert of its ledger row; returns it."""
    ledger.upsert_migration(migration)
    return migration


@task(name="request-checkpoint", cache_policy=NO_CACHE)
def request_checkpoint(s3: Any, output: str, reason: str) -> str:
    """Write control.json; returns the request id the trainer will echo in progress.json."""
    request_id = uuid.uuid4().hex
    write_control(s3, output, ControlRequest(request_id=request_id, reason=reason))
    get_run_logger().info("Asked the trainer to checkpoint and exit (%s, request %s)", reason, request_id)
    return request_id


def clear_control(s3: Any, output: str) -> None:
    """Remove control.json so the next trainer on this prefix does not honour it again."""
    bucket, prefix = split_s3_uri(output)
    s3.delete_object(Bucket=bucket, Key=prefix + CONTROL)


@task(name="wait-for-checkpoint", cache_policy=NO_CACHE)
def wait_for_checkpoint(s3: Any, output: str, request_id: str, *, timeout_s: float, poll_s: float,
                        sleep: Callable[[float], None], clock: Callable[[], datetime],
                        is_alive: Callable[[], bool] = lambda: True) -> int:
    """Wait until the trainer honoured the request and its checkpoint is in LATEST; its step.
    `timeout_s` is measured on `clock` (the runtime's clock, virtual in demos). Gives up as soon as
    the instance is gone without the checkpoint (taken back meanwhile: the job recovers from the
    last checkpoint instead of waiting out the timeout)."""
    deadline = clock() + timedelta(seconds=timeout_s)
    while clock() <= deadline:
        p = read_progress(s3, output)
        if p is not None and p.honoured_request_id == request_id and p.state in (TrainerState.checkpointed, TrainerState.done):
            latest = read_latest(s3, output)
            clear_control(s3, output)
            return latest.step if latest else p.step
        if not is_alive():
            clear_control(s3, output)
            raise MigrationTimeout(f"the instance went away before the checkpoint for request {request_id}")
        sleep(poll_s)
    clear_control(s3, output)
    raise MigrationTimeout(f"no checkpoint for request {request_id} within {timeout_s:.0f} s")


@task(name="wait-for-heartbeat", cache_policy=NO_CACHE)
def wait_for_heartbeat(s3: Any, output: str, instance_id: str, after_step: int, *, timeout_s: float,
                       poll_s: float, sleep: Callable[[float], None], clock: Callable[[], datetime],
                       is_alive: Callable[[], bool] = lambda: True) -> tuple[Progress, datetime]:
    """Wait for `instance_id`'s first heartbeat past `after_step` (or done); it and when it was seen.
    `timeout_s` is measured on `clock`. A trainer that failed raises MigrationTimeout (try another
    placement), one that failed permanently TrainerFailedPermanently (try none)."""
    deadline = clock() + timedelta(seconds=timeout_s)
    while clock() <= deadline:
        p = read_progress(s3, output)
        if p is not None and p.instance_id == instance_id and (p.step > after_step or p.state is TrainerState.done):
            return p, clock()
        if (reason := permanent_failure(p, instance_id)) is not None:  # not a timeout: nowhere else either
            raise TrainerFailedPermanently(reason, instance_id)
        if p is not None and p.instance_id == instance_id and p.state is TrainerState.failed:
            raise MigrationTimeout(f"the trainer on {instance_id} failed: {p.error}")
        if not is_alive():
            raise MigrationTimeout(f"instance {instance_id} went away before its first heartbeat")
        sleep(poll_s)
    raise MigrationTimeout(f"no heartbeat from {instance_id} past step {after_step} within {timeout_s:.0f} s")
