"""migrate-job: move a running job to a target offer (checkpoint now -> start there -> first
step past the checkpoint -> stop the old instance -> record the Migration)."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.runtime import flow_run as current_flow_run

from flows.moves import move
from flows.runtime import Runtime
from flows.steps import finalize, take_running
from spotshift.models import JobStatus, MigrationReason, Offer
from spotshift.monitoring import TrainerFailedPermanently
from spotshift.policy.state import Move


@flow(name="migrate-job", flow_run_name="migrate-{job_id}")
def migrate_job(job_id: str, target: Offer, reason: MigrationReason = MigrationReason.CHEAPER,
                expected_saving_usd: float = 0.0, runtime: Runtime | None = None) -> bool:
    """Move the job to `target`; True when it runs there now."""
    rt = runtime or Runtime.from_settings()
    run = take_running(rt, job_id, str(current_flow_run.id or ""))
    if run is None:
        get_run_logger().warning("Job %s is not running on an open workload: nothing to move", job_id)
        return False
    try:
        return move(rt, run, Move(target=target, reason=reason, expected_saving_usd=expected_saving_usd))
    except TrainerFailedPermanently as exc:  # resumed nowhere: the job ends here, with the trainer's words
        finalize(rt, run, JobStatus.FAILED, "the trainer failed permanently", error=str(exc)[:500])
        raise
