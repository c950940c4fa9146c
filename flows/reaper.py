"""reaper (scheduled): terminate spotshift-tagged instances that no live job owns, and fail the
jobs whose flow run stopped refreshing its lease (a killed flow process)."""

from __future__ import annotations

from datetime import timedelta

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from flows.hooks import terminate_job_instances
from flows.runtime import Runtime
from tasks.deployer import reap_orphans
from spotshift.models import LIVE_STATUSES, JobStatus, JobUpdate


@flow(name="reaper")
def reaper(runtime: Runtime | None = None, lease_seconds: float | None = None) -> list[str]:
    """Stop orphaned instances; returns their ids."""
    logger = get_run_logger()
    rt = runtime or Runtime.from_settings()
    now = rt.clock()
    lease = timedelta(seconds=lease_seconds if lease_seconds is not None else rt.settings.job_lease_seconds)
    live = set()
    for job in rt.jobs.list(list(LIVE_STATUSES)):
        if job.status in (JobStatus.PENDING, JobStatus.AWAITING_APPROVAL) or now - job.updated_at <= lease:
            live.add(job.id)
            continue
        terminate_job_instances(rt, job.id, "reaper: job lease expired")
        rt.jobs.transition(job.id, JobStatus.FAILED, now=now, message="reaper: its flow run stopped",
                           update=JobUpdate(error=f"no sign of life since {job.updated_at.isoformat()}"))
    orphans = reap_orphans(live, rt.backend)
    create_table_artifact(key="reaper", table=[{"instance": i.instance_id, "zone": i.zone,
                                                "job": i.tags.get("spotshift:job-id", "")} for i in orphans])
    logger.info("Reaped %d instance(s)", len(orphans))
    return [i.instance_id for i in orphans]
