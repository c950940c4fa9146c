"""Moving a job: recover after its instance was lost (re-plan, resume from the last checkpoint
elsewhere) and a move of a healthy job (checkpoint now -> start there -> first step -> stop the
old one). Each is a migration (spotshift.lifecycle.migration): every state it reaches is persisted
as its one ledger row (tasks.migration.record_migration_step) before the next step, and the
runtime's fault hook is called there with the state's name, so a crash anywhere leaves what an
adopting run needs to roll it forward."""

from __future__ import annotations

from datetime import datetime, timedelta

from prefect import get_run_logger

from flows.runtime import Runtime
from flows.steps import (
    DECLINED_MOVE_QUIET, JobRun, checkpoint_step, close_current, end_workload, hold, job_state, launch, place,
    transition,
)
from spotshift.aws.errors import CapacityUnavailable
from spotshift.instances import LOST_STATES
from spotshift.lifecycle.migration import advance, begin
from spotshift.lifecycle.plans import move_request, plan_move
from spotshift.models import EndReason, JobStatus, JobUpdate, Migration, MigrationReason, MigrationState, Plan, Workload
from spotshift.monitoring import TrainerFailedPermanently, after_changeover
from spotshift.planning import offer_of_workload
from spotshift.policy.state import Move, NoFeasiblePlacement
from tasks import events
from tasks.deployer import stop_instance
from tasks.jobs import update_job
from tasks.migration import (
    MigrationTimeout, record_migration_step, request_checkpoint, wait_for_checkpoint, wait_for_heartbeat,
)
from tasks.optimizer import record_plan
from tasks.user_proxy import approve

MAX_NEW_INSTANCES = 5


def first_step(rt: Runtime, run: JobRun, workload: Workload, after_step: int) -> datetime:
    """When the new instance's trainer first reported a step past `after_step`; the changeover it
    took is measured (the slowest seen so far: the safety net keeps only a small margin above it)."""
    # issue 11: boot + install + model download may take longer than a stall
    timeout_s = max(rt.settings.first_heartbeat_seconds, rt.settings.heartbeat_stall_seconds)
    hold(rt, run, timeout_s)  # the fleet leaves the job to this run meanwhile
    _, seen = wait_for_heartbeat(rt.s3, run.output, workload.instance_id, after_step, timeout_s=timeout_s,
                                 poll_s=rt.poll_seconds, sleep=rt.sleep, clock=rt.clock,
                                 is_alive=lambda: rt.backend.state(workload.instance_id) not in LOST_STATES)
    measured = after_changeover(run.job.measured, workload.id, workload.started_at, seen)
    run.job = update_job(rt.jobs, run.job.id, JobUpdate(measured=measured), rt.clock())
    return seen


def recover(rt: Runtime, run: JobRun, reason: MigrationReason, end: EndReason, lost_at: datetime, *,
            resume: tuple[Migration | None, Plan] | None = None) -> bool:
    """The instance is gone (taken back, stalled, failed): re-plan and resume from the last
    checkpoint elsewhere, until an instance trains again; the migration (begun `checkpointed`)
    records the downtime. False = the new plan was not approved. `resume`: the migration in flight
    and the plan a human was asked about, when a suspended recovery is run again after the answer."""
    if resume is None:
        old = end_workload(rt, run, end)
        m = _step(rt, begin(run.job.id, old, reason, at=lost_at, state=MigrationState.CHECKPOINTED)) if old else None
        asked = None
    else:
        m, asked = resume
    for _ in range(MAX_NEW_INSTANCES):
        if asked is None:
            transition(rt, run, JobStatus.PLANNING, f"{reason}: re-planning")
        step = checkpoint_step(rt, run)
        new = place(rt, run, reason=end.value, running=False, asked=asked)  # running once its trainer reported
        asked = None
        if new is None:
            if m is not None:
                _step(rt, advance(m, MigrationState.ROLLED_BACK, at=rt.clock()))
            return False
        if m is not None:
            m = _step(rt, advance(m, MigrationState.LAUNCHED, at=rt.clock(), to_workload_id=new.id,
                                  checkpoint_step=step))
        try:
            seen = first_step(rt, run, new, step)
            break
        except MigrationTimeout as exc:
            get_run_logger().warning("The new instance never trained (%s); re-planning", exc)
            end_workload(rt, run, EndReason.FAILED)
        except TrainerFailedPermanently:  # no other placement can do better: the flow ends the job
            if m is not None:
                _step(rt, advance(m, MigrationState.ROLLED_BACK, at=rt.clock()))
            raise
    else:
        if m is not None:
            _step(rt, advance(m, MigrationState.ROLLED_BACK, at=rt.clock()))
        raise NoFeasiblePlacement(run.job.id, f"{MAX_NEW_INSTANCES} new instances never trained")
    if m is not None:  # the old instance was already gone: recorded once the new one trains
        m = _step(rt, advance(m, MigrationState.FIRST_STEP_SEEN, at=seen))
        _step(rt, advance(m, MigrationState.RECORDED, at=seen))
    transition(rt, run, JobStatus.RUNNING, f"running on {new.instance_id}", current_workload_id=new.id)
    return True


def move(rt: Runtime, run: JobRun, decision: Move) -> bool:
    """Checkpoint now -> start on the target -> first step past the checkpoint -> terminate the
    old instance -> record the migration, each step persisted (spotshift.lifecycle.migration). If
    the new placement fails, the job resumes from the checkpoint on the next best placement (the
    target blocked)."""
    logger = get_run_logger()
    old = run.workload
    assert old is not None
    now = rt.clock()
    if run.declined.get(decision.target.key, now) > now:
        return False  # declined lately: not asked again before then
    plan = plan_move(job_state(rt, run, now), decision, now)
    if not _approve_move(rt, run, plan, decision, now):
        return False
    transition(rt, run, JobStatus.MIGRATING, f"moving to {decision.target.zone} ({decision.reason})")
    started = rt.clock()
    m, step = _checkpoint_now(rt, run, old, decision, started)
    if step is None:
        _step(rt, advance(m, MigrationState.ABANDONED, at=rt.clock()))
        transition(rt, run, JobStatus.RUNNING, "move abandoned: no checkpoint")
        return False
    m = _step(rt, advance(m, MigrationState.CHECKPOINTED, at=rt.clock(), checkpoint_step=step))
    # the old trainer exited after its checkpoint and its instance shuts itself down: its workload
    # ends now, so one workload is open at a time
    close_current(rt, run, EndReason.MIGRATED)
    record_plan(rt.ledger, plan)
    try:
        new = launch(rt, run, plan)
        m = _step(rt, advance(m, MigrationState.LAUNCHED, at=rt.clock(), to_workload_id=new.id))
        try:
            seen = first_step(rt, run, new, step)
        except TrainerFailedPermanently:  # resumed nowhere: the flow ends the job
            _step(rt, advance(m, MigrationState.ROLLED_BACK, at=rt.clock()))
            raise
    except (CapacityUnavailable, MigrationTimeout) as exc:
        logger.warning("New placement on %s failed (%s); resuming from the checkpoint", decision.target.zone, exc)
        stop_instance(old.instance_id, "migrated", rt.backend)
        _step(rt, advance(m, MigrationState.ROLLED_BACK, at=rt.clock()))
        run.blocked.add(decision.target.key)
        return recover(rt, run, decision.reason, EndReason.FAILED, started)
    m = _step(rt, advance(m, MigrationState.FIRST_STEP_SEEN, at=seen))
    stop_instance(old.instance_id, "migrated", rt.backend)  # for sure; a no-op once it shut itself down
    m = _step(rt, advance(m, MigrationState.OLD_STOPPED, at=rt.clock()))
    done = _step(rt, advance(m, MigrationState.RECORDED, at=seen))
    transition(rt, run, JobStatus.RUNNING, f"moved to {new.instance_id}", current_workload_id=new.id)
    events.job_moved(run.job, old, new, reason=decision.reason, expected_saving_usd=decision.expected_saving_usd,
                     checkpoint_step=step, downtime_seconds=done.downtime_seconds, flow_run_id=run.flow_run_id or None,
                     cost_usd=events.job_cost(rt.ledger, run.job.id, rt.clock()))
    return True


def _step(rt: Runtime, m: Migration) -> Migration:
    """Persist the migration at its new state; a crash test may end the process right after (the
    fault point is the state's name; a finished migration has none)."""
    m = record_migration_step(rt.ledger, m)
    if not m.state.terminal:
        rt.fault(m.state.value)
    return m


def _approve_move(rt: Runtime, run: JobRun, plan: Plan, decision: Move, now: datetime) -> bool:
    current = offer_of_workload(run.workload, now)
    policy = run.job.request.approval
    asking = JobUpdate(lease_until=now + timedelta(seconds=policy.timeout_s))  # paused: no lease refresh meanwhile
    verdict = approve(policy, move_request(plan, current, decision), now,
                      on_ask=lambda: update_job(rt.jobs, run.job.id, asking, rt.clock()))
    if not verdict.approved:
        get_run_logger().info("Move to %s not made (%s: %s)", decision.target.zone, verdict.decided_by, verdict.comment)
        run.declined[decision.target.key] = now + DECLINED_MOVE_QUIET  # kept with the job: the next
        run.job = update_job(rt.jobs, run.job.id, JobUpdate(declined_moves={  # move's run reads it back
            k.text: until for k, until in run.declined.items() if until > now}), rt.clock())
        return False
    return True


def _checkpoint_now(rt: Runtime, run: JobRun, old: Workload, decision: Move,
                    started: datetime) -> tuple[Migration, int | None]:
    """Ask the old trainer to checkpoint and exit (the migration, begun at `started`, is then
    `requested`); the migration and the checkpoint's step, or None when it never came."""
    hold(rt, run, rt.settings.heartbeat_stall_seconds)  # the fleet leaves the job to this run meanwhile
    rid = request_checkpoint(rt.s3, run.output, f"{decision.reason}: move to {decision.target.zone}")
    m = _step(rt, begin(run.job.id, old, decision.reason, at=started,
                        expected_saving_usd=decision.expected_saving_usd))
    try:
        return m, wait_for_checkpoint(rt.s3, run.output, rid, timeout_s=rt.settings.heartbeat_stall_seconds,
                                   poll_s=rt.poll_seconds, sleep=rt.sleep, clock=rt.clock,
                                   is_alive=lambda: rt.backend.state(old.instance_id) not in LOST_STATES)
    except MigrationTimeout as exc:
        get_run_logger().warning("Move abandoned, the job stays where it is: %s", exc)
        return m, None
