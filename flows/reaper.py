"""reaper (scheduled): terminate spotshift-tagged instances that no live job owns, and hand every
job whose flow run stopped refreshing its lease (a killed flow process) to a new train-job run that
adopts it: its instance, checkpoints and ledger are fine, so it is not failed."""

from __future__ import annotations

from datetime import timedelta

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from flows.hooks import terminate_job_instances
from flows.runtime import Runtime
from spotshift.models import LIVE_STATUSES, JobStatus, JobUpdate
from tasks.deployer import reap_orphans


def _orphaned(rt: Runtime, job, lease: timedelta) -> bool:
    """A live job nobody has touched within its lease (not one waiting for a human or to start)."""
    waiting = job.status in (JobStatus.PENDING, JobStatus.AWAITING_APPROVAL)
    now = rt.clock()
    busy = job.lease_until is not None and now <= job.lease_until
    return not waiting and not busy and now - job.updated_at > lease


@flow(name="reaper")
def reaper(runtime: Runtime | None = None, lease_seconds: float | None = None) -> list[str]:
    """Restart the jobs whose flow run died (adoption), stop orphaned instances; their ids."""
    logger = get_run_logger()
    rt = runtime or Runtime.from_settings()
    lease = timedelta(seconds=lease_seconds if lease_seconds is not None else rt.settings.job_lease_seconds)
    live = set()
    for job in rt.jobs.list(list(LIVE_STATUSES)):
        live.add(job.id)
        if not _orphaned(rt, job, lease):
            continue
        if rt.restart_job is None:  # nothing can adopt it here: end it cleanly instead
            terminate_job_instances(rt, job.id, "reaper: job lease expired")
            rt.jobs.transition(job.id, JobStatus.FAILED, now=rt.clock(), message="reaper: its flow run stopped",
                               update=JobUpdate(error=f"no sign of life since {job.updated_at.isoformat()}"))
            continue
        rt.jobs.update(job.id, JobUpdate(), now=rt.clock())  # a new lease for the adopting run
        logger.warning("Job %s: no sign of life since %s; starting a run that adopts it", job.id, job.updated_at)
        rt.restart_job(job.id)
    orphans = reap_orphans(live, rt.backend)
    create_table_artifact(key="reaper", table=[{"instance": i.instance_id, "zone": i.zone,
                                                "job": i.tags.get("spotshift:job-id", "")} for i in orphans])
    logger.info("Reaped %d instance(s)", len(orphans))
    return [i.instance_id for i in orphans]
