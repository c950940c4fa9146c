"""migrate-job: move a running job to a target offer (checkpoint now -> start there -> first
step past the checkpoint -> stop the old instance -> record the Migration)."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.runtime import flow_run as current_flow_run

from flows.moves import move
from flows.runtime import Runtime
from flows.steps import JobRun, finalize, job_run_of, watch_existing
from spotshift.models import JobStatus, JobUpdate, MigrationReason, Offer
from spotshift.monitoring import TrainerFailedPermanently
from spotshift.policy.state import Move
from tasks.jobs import update_job


def running_job(rt: Runtime, job_id: str) -> JobRun | None:
    """A JobRun over a running job (None if it is not running on an open workload), owned by this
    flow run from now on."""
    job = rt.jobs.get(job_id)
    if job.status is not JobStatus.RUNNING or not job.current_workload_id:
        return None
    workload = next((w for w in rt.ledger.workloads(job_id) if w.id == job.current_workload_id), None)
    if workload is None or not workload.open:
        return None
    flow_run_id = str(current_flow_run.id or "")
    run = job_run_of(rt, update_job(rt.jobs, job_id, JobUpdate(flow_run_id=flow_run_id or None), rt.clock()),
                     flow_run_id)
    watch_existing(run, workload)
    return run


@flow(name="migrate-job", flow_run_name="migrate-{job_id}")
def migrate_job(job_id: str, target: Offer, reason: MigrationReason = MigrationReason.CHEAPER,
                expected_saving_usd: float = 0.0, runtime: Runtime | None = None) -> bool:
    """Move the job to `target`; True when it runs there now."""
    rt = runtime or Runtime.from_settings()
    run = running_job(rt, job_id)
    if run is None:
        get_run_logger().warning("Job %s is not running on an open workload: nothing to move", job_id)
        return False
    try:
        return move(rt, run, Move(target=target, reason=reason, expected_saving_usd=expected_saving_usd))
    except TrainerFailedPermanently as exc:  # the job's own train-job run sees it FAILED and leaves it
        finalize(rt, run, JobStatus.FAILED, "the trainer failed permanently", error=str(exc)[:500])
        raise
