"""Adopting a running job whose flow run died (a worker restart, a redeploy): take ownership,
reconcile the job's instances with the ledger (spotshift.lifecycle.adoption decides), then watch
the instance that trains it, or resume from the last checkpoint when none does."""

from __future__ import annotations

from prefect import get_run_logger

from flows.moves import recover
from flows.runtime import Runtime
from flows.steps import JobRun, transition, watch_existing
from spotshift.lifecycle.adoption import Adoption, plan_adoption
from spotshift.models import EndReason, JobStatus, JobUpdate, MigrationReason
from spotshift.monitoring import TrainerFailedPermanently, permanent_failure
from tasks import events
from tasks.deployer import stop_instance
from tasks.jobs import update_job
from tasks.migration import record_migration_step
from tasks.workloads import close_workload, record_instance
from training.contract import read_progress

# the statuses a job may be RUNNING again from, and the way there
_TO_RUNNING = {JobStatus.PLANNING: (JobStatus.PROVISIONING, JobStatus.RUNNING),
               JobStatus.AWAITING_APPROVAL: (JobStatus.PROVISIONING, JobStatus.RUNNING),
               JobStatus.PROVISIONING: (JobStatus.RUNNING,), JobStatus.MIGRATING: (JobStatus.RUNNING,),
               JobStatus.RUNNING: ()}


def reconcile(rt: Runtime, run: JobRun) -> Adoption:
    """Decide and carry out what makes the ledger match EC2 again; returns the decision."""
    job = run.job
    workloads = rt.ledger.workloads(job.id)
    current = next((w for w in workloads if w.id == job.current_workload_id), None)
    progress = read_progress(rt.s3, run.output)
    exited = bool(current and progress and progress.instance_id == current.instance_id and progress.state.ended)
    adoption = plan_adoption(workloads, rt.backend.list(job.id), rt.ledger.migrations(job.id),
                             job.current_workload_id, exited, now=rt.clock())
    for instance in adoption.stop:
        stop_instance(instance.instance_id, "adopted job: not the instance that trains it", rt.backend)
    for workload, reason in adoption.close:
        close_workload(rt.ledger, workload, reason, rt.clock())
    for migration in adoption.finish:  # already rolled forward to their final state
        record_migration_step(rt.ledger, migration)
    return adoption


def _failed_permanently(rt: Runtime, run: JobRun) -> str | None:
    """The reason, when the trainer of the job's current workload failed in a way no restart fixes."""
    current = next((w for w in rt.ledger.workloads(run.job.id) if w.id == run.job.current_workload_id), None)
    if current is None or not current.instance_id:
        return None
    return permanent_failure(read_progress(rt.s3, run.output), current.instance_id)


def adopt(rt: Runtime, run: JobRun) -> bool:
    """Take the job over from a dead flow run and leave it training (True), or False when a new
    placement was not approved; TrainerFailedPermanently when its trainer failed for good."""
    logger = get_run_logger()
    run.job = update_job(rt.jobs, run.job.id, JobUpdate(flow_run_id=run.flow_run_id), rt.clock())
    adoption = reconcile(rt, run)
    rt.fault("adopted")
    logger.info("Adopting job %s: keep %s, stopped %d instance(s), closed %d workload(s)", run.job.id,
                adoption.keep.instance_id if adoption.keep else None, len(adoption.stop), len(adoption.close))
    if adoption.keep is None:
        if (reason := _failed_permanently(rt, run)) is not None:  # resuming elsewhere would fail the same way
            raise TrainerFailedPermanently(reason)
        closed, lost = next(iter(adoption.close), (None, EndReason.FAILED))
        reason = MigrationReason.PREEMPTED if lost is EndReason.PREEMPTED else MigrationReason.STALLED
        if closed is not None and lost is EndReason.PREEMPTED:  # taken back while no run watched it
            events.job_preempted(run.job, closed, detail="found gone when the job was adopted",
                                 cost_usd=events.job_cost(rt.ledger, run.job.id, rt.clock()),
                                 flow_run_id=run.flow_run_id or None)
        return recover(rt, run, reason, lost, rt.clock())  # no workload is open: `lost` only names the placed reason
    keep = adoption.keep
    if keep.instance_id and not next(w for w in rt.ledger.workloads(run.job.id) if w.id == keep.id).instance_id:
        keep = record_instance(rt.ledger, keep, keep.instance_id)
    for status in _TO_RUNNING.get(run.job.status, ()):
        transition(rt, run, status, f"adopted by flow run {run.flow_run_id}", current_workload_id=keep.id)
    if run.job.status is JobStatus.RUNNING and run.job.current_workload_id != keep.id:
        run.job = update_job(rt.jobs, run.job.id, JobUpdate(current_workload_id=keep.id), rt.clock())
    watch_existing(run, keep)
    return True
