"""migrate-job: move a running job to a target offer (checkpoint now -> start there -> first
heartbeat past the checkpoint -> stop the old instance -> record the Migration)."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.runtime import flow_run as current_flow_run

from flows.runtime import Runtime
from flows.steps import JobRun, move, watch_existing
from spotshift.market.query import OfferQuery
from spotshift.models import JobStatus, MigrationReason, Offer


def adopt(rt: Runtime, job_id: str) -> JobRun | None:
    """A JobRun for a job another flow run started, from the stores (None if it is not running)."""
    job = rt.jobs.get(job_id)
    if job.status is not JobStatus.RUNNING or not job.current_workload_id:
        return None
    workload = next((w for w in rt.ledger.workloads(job_id) if w.id == job.current_workload_id), None)
    if workload is None or not workload.open:
        return None
    run = JobRun(job=job, query=OfferQuery.for_job(job.request, job.gpu_memory_gib or 0.0),
                 total_work=job.total_work or 0.0, output=f"s3://{rt.settings.bucket}/{job.output_prefix}",
                 spec_uri=f"s3://{rt.settings.bucket}/{job.output_prefix}spec.json",
                 flow_run_id=str(current_flow_run.id or ""))
    watch_existing(run, workload, rt.clock(), "adopted running workload")
    return run


@flow(name="migrate-job", flow_run_name="migrate-{job_id}")
def migrate_job(job_id: str, target: Offer, reason: MigrationReason = MigrationReason.CHEAPER,
                expected_saving_usd: float = 0.0, runtime: Runtime | None = None) -> bool:
    """Move the job to `target`; True when it runs there now."""
    rt = runtime or Runtime.from_settings()
    run = adopt(rt, job_id)
    if run is None:
        get_run_logger().warning("Job %s is not running on an open workload: nothing to move", job_id)
        return False
    return move(rt, run, target, reason, expected_saving_usd)
