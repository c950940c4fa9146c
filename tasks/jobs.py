"""Job store writes of the flows, each a task (seen per job in the UI): a status change with what
changes with it, and the fields a step stores without one (its lease, measurements, its owner)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from spotshift.models import Job, JobStatus, JobUpdate
from tasks.retries import STORE_WRITE_RETRY


@task(name="job-update", cache_policy=NO_CACHE, task_run_name="job-update-{job_id}", **STORE_WRITE_RETRY)
def update_job(jobs: Any, job_id: str, update: JobUpdate, now: datetime) -> Job:
    """Store the non-None fields of `update` (the job's status stays); the job as stored. The same
    fields set again give the same job: retried when the store did not answer."""
    return jobs.update(job_id, update, now=now)


@task(name="job-transition", cache_policy=NO_CACHE, task_run_name="job-{to.value}-{job_id}")
def transition_job(jobs: Any, job_id: str, to: JobStatus, now: datetime, update: JobUpdate | None = None,
                   message: str = "") -> Job:
    """Move the job to `to` with `update`, and its status event (InvalidTransition when the state
    machine does not allow it now). Not retried: a move whose answer was lost would be refused, or
    its event written twice."""
    return jobs.transition(job_id, to, now=now, update=update, message=message)
