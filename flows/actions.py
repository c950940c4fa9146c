"""job-action: the short flow runs the fleet pass starts for what it finds (spotshift.fleet.Action).

- recover: the instance was taken back (or its trainer checkpointed and stopped): resume from the
  last checkpoint on a new placement.
- restart: the trainer stalled or failed: stop its instance, resume from the last checkpoint.
- finalize: the trainer is done (or failed for good): close the job, write its cost report.
- terminate_orphan: stop a spotshift instance no open workload owns.
- adopt: a job left between two states by an action run that died: reconcile it with EC2 and roll
  its migration forward (spotshift.lifecycle.adoption), then leave it training.

Each run does one thing and ends (a recovery ends once the new instance reported its first step);
between actions a running job holds no process: the fleet pass watches it. Every action reads the
job back from the stores and does nothing when the job has moved on since the finding (another
pass, a cancel), so a late or repeated start is harmless.
"""

from __future__ import annotations

from typing import Callable

from prefect import flow, get_run_logger
from prefect.runtime import flow_run as current_flow_run

from flows import hooks
from flows.adoption import adopt, reconcile
from flows.moves import recover
from flows.runtime import Runtime
from flows.steps import (
    JobRun, finalize, job_run_of, pending_plan, record_throughput, take_running, watch_existing,
)
from spotshift.fleet import ADOPTABLE_STATUSES, Action
from spotshift.models import EndReason, JobStatus, JobUpdate, Market, MigrationReason, Plan
from spotshift.monitoring import TrainerFailedPermanently, permanent_failure
from spotshift.policy.state import NoFeasiblePlacement
from spotshift.stores import JobNotFound
from tasks import events
from tasks.deployer import stop_instance
from tasks.jobs import update_job
from tasks.measurements import record_zone_lost
from tasks.monitor import refresh_loss_curve
from training.contract import TrainerState, read_progress

MAX_TRAINER_FAILURES = 3  # a trainer that failed this many times on fresh instances fails the job

STALE = "stale: the job moved on since the finding"


@flow(name="job-action", flow_run_name="{action}-{job_id}", on_failure=[hooks.on_failure],
      on_crashed=[hooks.on_crashed], on_cancellation=[hooks.on_cancellation])
def job_action(job_id: str, workload_id: str, action: str, runtime: Runtime | None = None) -> dict:
    """Carry out one action of the fleet for one job's workload; returns what it did."""
    try:
        kind = Action(action)
    except ValueError:
        raise ValueError(f"action {action!r} is not one of {[a.value for a in ACTIONS]}") from None
    rt = runtime or Runtime.from_settings()
    flow_run_id = str(current_flow_run.id or "")
    hooks.ACTIVE_RUNTIMES[flow_run_id] = rt
    try:
        asked = pending_plan(rt, rt.jobs.get(job_id)) if kind in (Action.RECOVER, Action.RESTART) else None
        if asked is not None:  # the rerun of this run, suspended on a human's answer to its placement
            outcome = resume_recovery(rt, job_id, asked, flow_run_id)
        else:
            outcome = ACTIONS[kind](rt, job_id, workload_id, flow_run_id)
    except TrainerFailedPermanently as exc:  # resumed nowhere: the job ends here, with the trainer's words
        get_run_logger().error("Job %s failed: %s", job_id, exc)
        run = job_run_of(rt, rt.jobs.get(job_id), flow_run_id)
        current = next((w for w in rt.ledger.open_workloads(job_id) if w.id == run.job.current_workload_id), None)
        if current is not None:
            watch_existing(run, current)  # its workload ends FAILED, not cancelled with the job
        finalize(rt, run, JobStatus.FAILED, "the trainer failed permanently", error=str(exc)[:500])
        raise
    hooks.ACTIVE_RUNTIMES.pop(flow_run_id, None)  # on a failure the failure hook takes it (and ends the job)
    try:
        status = rt.jobs.get(job_id).status.value
    except JobNotFound:  # an orphan's instance may name a job no store has
        status = "unknown"
    get_run_logger().info("Job %s: %s -> %s (job %s)", job_id, kind.value, outcome, status)
    return {"job_id": job_id, "workload_id": workload_id, "action": kind.value, "outcome": outcome, "status": status}


def _not_approved(run: JobRun) -> NoFeasiblePlacement:
    return NoFeasiblePlacement(run.job.id, "the new placement was not approved")


def do_recover(rt: Runtime, job_id: str, workload_id: str, flow_run_id: str) -> str:
    """The instance is gone or going (a spot interruption, an outside stop), or its trainer
    checkpointed on a notice and exited: resume from the last checkpoint elsewhere."""
    run = take_running(rt, job_id, flow_run_id, workload_id)
    if run is None:
        return STALE
    now = rt.clock()
    record_throughput(rt, run)
    if run.workload.market is Market.SPOT:
        record_zone_lost(rt.history, run.workload.zone, now, "preemption")
    events.job_preempted(run.job, run.workload, detail="found by the fleet pass", step=run.job.step,
                         cost_usd=events.job_cost(rt.ledger, job_id, now), flow_run_id=flow_run_id or None)
    if not recover(rt, run, MigrationReason.PREEMPTED, EndReason.PREEMPTED, now):
        raise _not_approved(run)
    return f"recovered on {run.workload.zone}"


def do_restart(rt: Runtime, job_id: str, workload_id: str, flow_run_id: str) -> str:
    """The trainer stalled (no fresh heartbeat) or failed: stop its instance and resume from the last
    checkpoint on a new placement; a trainer that failed MAX_TRAINER_FAILURES times fails the job."""
    run = take_running(rt, job_id, flow_run_id, workload_id)
    if run is None:
        return STALE
    now = rt.clock()
    record_throughput(rt, run)
    progress = read_progress(rt.s3, run.output)
    mine = progress is not None and progress.instance_id == run.workload.instance_id
    if mine and (reason := permanent_failure(progress, run.workload.instance_id)) is not None:
        raise TrainerFailedPermanently(reason, run.workload.instance_id)
    if mine and progress.state is TrainerState.failed:
        failures = 1 + sum(1 for w in rt.ledger.workloads(job_id) if w.end_reason is EndReason.FAILED)
        if failures >= MAX_TRAINER_FAILURES:
            raise RuntimeError(f"the trainer failed {failures} times; last: {progress.error}")
        get_run_logger().warning("Trainer failed (%s); restarting from the last checkpoint", progress.error)
        ok = recover(rt, run, MigrationReason.STALLED, EndReason.FAILED, now)
    else:
        events.job_stalled(run.job, run.workload, detail="no fresh heartbeat", step=run.job.step,
                           cost_usd=events.job_cost(rt.ledger, job_id, now), flow_run_id=flow_run_id or None)
        ok = recover(rt, run, MigrationReason.STALLED, EndReason.STALLED, now)
    if not ok:
        raise _not_approved(run)
    return f"restarted on {run.workload.zone}"


def do_finalize(rt: Runtime, job_id: str, workload_id: str, flow_run_id: str) -> str:
    """The trainer wrote the final model (SUCCEEDED) or failed for good (FAILED with its words)."""
    run = take_running(rt, job_id, flow_run_id, workload_id)
    if run is None:
        return STALE
    record_throughput(rt, run)
    progress = read_progress(rt.s3, run.output)
    refresh_loss_curve(run.watch.loss_curve, s3=rt.s3, output=run.output, job_id=job_id, trained_to=None)
    if (reason := permanent_failure(progress, run.workload.instance_id)) is not None:
        raise TrainerFailedPermanently(reason, run.workload.instance_id)
    if progress is None or progress.instance_id != run.workload.instance_id or progress.state is not TrainerState.done:
        return "not done: nothing to finalize"  # judged on a heartbeat that has changed since
    if progress.step != run.job.step:
        run.job = update_job(rt.jobs, job_id, JobUpdate(step=progress.step), rt.clock())
    finalize(rt, run, JobStatus.SUCCEEDED, "final model written")
    return "succeeded"


def do_terminate_orphan(rt: Runtime, job_id: str, workload_id: str, flow_run_id: str) -> str:
    """Stop a tagged instance (its workload tag is `workload_id`, or its id when it has none) that no
    open workload owns, read again now: a launch may have opened its workload since the pass."""
    owned = {w.id for w in rt.ledger.open_workloads(job_id)}
    try:
        live = not rt.jobs.get(job_id).status.terminal
    except JobNotFound:  # an instance tagged with a job this store never had
        live = False
    stopped = []
    for i in rt.backend.list(job_id):
        if workload_id not in (i.workload_id, i.instance_id) or i.state in ("shutting-down", "terminated"):
            continue
        if (i.workload_id in owned) if i.workload_id else live:
            continue
        stop_instance(i.instance_id, "orphan: no open workload owns it", rt.backend)
        stopped.append(i.instance_id)
    return f"stopped {', '.join(stopped)}" if stopped else "nothing to stop"


def resume_recovery(rt: Runtime, job_id: str, asked: Plan, flow_run_id: str) -> str:
    """Go on with a recovery whose placement waited for a human (the run was suspended and is run
    again now that the answer is in): the same plan, asked about under the same key, gets the answer."""
    job = update_job(rt.jobs, job_id, JobUpdate(flow_run_id=flow_run_id or None), rt.clock())
    run = job_run_of(rt, job, flow_run_id)
    in_flight = next((m for m in rt.ledger.migrations(job_id) if not m.state.terminal), None)
    reason = in_flight.reason if in_flight is not None else MigrationReason.STALLED
    end = EndReason.PREEMPTED if reason is MigrationReason.PREEMPTED else EndReason.STALLED
    lost_at = in_flight.started_at if in_flight is not None else rt.clock()
    if not recover(rt, run, reason, end, lost_at, resume=(in_flight, asked)):
        raise _not_approved(run)
    return f"recovered on {run.workload.zone} (plan {asked.id} approved)"


def do_adopt(rt: Runtime, job_id: str, workload_id: str, flow_run_id: str) -> str:
    """Roll forward a job whose action run died between two states: reconcile its instances and
    ledger rows, finish its migration, then leave it training (resuming elsewhere if none trains).
    A job whose question to a human was never answered (its suspended run failed at its deadline)
    is reconciled and cancelled: no answer means no."""
    job = rt.jobs.get(job_id)
    if job.status not in ADOPTABLE_STATUSES:
        return STALE
    run = job_run_of(rt, job, flow_run_id)
    if job.status is JobStatus.AWAITING_APPROVAL:
        reconcile(rt, run)
        finalize(rt, run, JobStatus.CANCELLED, f"plan {job.pending_plan_id} not approved: no answer in time")
        return "cancelled: no answer in time"
    if not adopt(rt, run):
        finalize(rt, run, JobStatus.CANCELLED, "plan not approved")
        return "cancelled: the new placement was not approved"
    return f"adopted on {run.workload.zone}" if run.workload is not None else "adopted"


ACTIONS: dict[Action, Callable[[Runtime, str, str, str], str]] = {
    Action.RECOVER: do_recover,
    Action.RESTART: do_restart,
    Action.FINALIZE: do_finalize,
    Action.TERMINATE_ORPHAN: do_terminate_orphan,
    Action.ADOPT: do_adopt,
}
