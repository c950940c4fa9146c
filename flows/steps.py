"""The steps the flows compose: place a job (scout -> optimizer -> approval -> deploy), recover
from a lost instance, move a running job, and finalize. Each step is a chain of agent tasks."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.runtime import Runtime
from spotshift.approval import ApprovalRequest, auto_decision, plan_request
from spotshift.aws.errors import CapacityUnavailable
from spotshift.billing import cost_report, summarize
from spotshift.market.query import OfferQuery
from spotshift.models import (
    EndReason, Job, JobStatus, JobUpdate, Migration, MigrationReason, Offer, Plan, Workload, new_id,
)
from spotshift.monitoring import RateMeter
from spotshift.planning import remaining_work
from spotshift.policy.state import JobState, NoFeasiblePlacement
from tasks.deployer import start_instance, stop_instance, stop_job_instances
from tasks.migration import MigrationTimeout, request_checkpoint, wait_for_checkpoint, wait_for_heartbeat
from tasks.monitor import LOST_STATES, Watch, new_watch
from tasks.optimizer import plan_placement
from tasks.scout import scout
from tasks.user_proxy import approve
from tasks.workloads import close_workload, open_workload, publish_spec, training_spec

MAX_LAUNCH_ATTEMPTS = 5
DECLINED_MOVE_QUIET = timedelta(hours=1)  # a move a human (or the timeout) declined is not proposed again sooner


@dataclass
class JobRun:
    """What a train-job flow run knows about its job beyond the stores."""

    job: Job
    query: OfferQuery
    total_work: float  # V100-hours, pre-run estimate
    spec_uri: str = ""
    output: str = ""
    flow_run_id: str = ""
    plan: Plan | None = None
    watch: Watch | None = None
    blocked: set[tuple[str, str, str, str]] = field(default_factory=set)
    moves: int = 0
    last_move_at: datetime | None = None
    started_at: datetime | None = None
    changeover_hours: float | None = None
    checkpoint_gb: float = 0.0
    was_preempted: bool = False
    home_zone: str | None = None
    spent_usd: float = 0.0
    failures: int = 0
    declined: dict[tuple[str, str, str, str], datetime] = field(default_factory=dict)  # offer key -> ask again after

    @property
    def workload(self) -> Workload | None:
        return self.watch.workload if self.watch else None

    def state(self, now: datetime, default_changeover_hours: float) -> JobState:
        """The JobState the policy decides over, from what this run measured."""
        meter = self.watch.meter if self.watch else RateMeter()
        current = self.plan.offer if (self.plan and self.watch) else None
        step = self.watch.last_step if self.watch else self.job.step
        work = remaining_work(step, self.job.request.max_steps, meter.steps_per_hour,
                              current.instance_type if current else None, self.total_work)
        return JobState(
            job_id=self.job.id, remaining_work=work, deadline=self.job.request.deadline, current=current,
            placed_at=self.workload.started_at if self.workload else None, ready_at=None,
            changeover_hours=self.changeover_hours if self.changeover_hours is not None else default_changeover_hours,
            checkpoint_gb=self.checkpoint_gb, checkpoint_region=current.region if current else None,
            total_work=self.total_work, started_at=self.started_at, moves=self.moves,
            last_move_at=self.last_move_at, was_preempted=self.was_preempted, home_zone=self.home_zone,
            budget_usd=self.job.request.budget_usd, spent_usd=self.spent_usd,
        )


def transition(rt: Runtime, run: JobRun, to: JobStatus, message: str = "", **changes) -> Job:
    run.job = rt.jobs.transition(run.job.id, to, now=rt.clock(), update=JobUpdate(**changes) if changes else None,
                                 message=message)
    return run.job


def launch(rt: Runtime, run: JobRun, plan: Plan) -> Workload:
    """Start an instance for the plan and open its workload (raises CapacityUnavailable)."""
    from spotshift.aws.ec2 import LaunchRequest
    from training.bootstrap import render_user_data

    workload_id = new_id("wl")
    on_ec2 = rt.settings.compute_backend == "ec2"  # the local backend runs the same trainer as a process
    user_data = render_user_data(run.spec_uri, python=rt.trainer_python, imds=rt.imds_endpoint if on_ec2 else None,
                                 power_off=on_ec2)
    request = LaunchRequest(job_id=run.job.id, workload_id=workload_id, flow_run_id=run.flow_run_id,
                            offer=plan.offer, spec_uri=run.spec_uri, image_id=rt.image_id,
                            instance_profile=rt.settings.instance_profile, user_data=user_data)
    launched = start_instance(request, rt.backend)
    workload = open_workload(rt.ledger, run.job, plan, workload_id, launched.instance_id, rt.clock())
    run.plan = plan
    run.watch = new_watch(workload, run.job.id)
    run.home_zone = run.home_zone or plan.offer.zone
    run.started_at = run.started_at or workload.started_at
    return workload


def place(rt: Runtime, run: JobRun) -> Workload | None:
    """scout -> optimizer -> approval -> deployer, taking the next offer on capacity errors.
    The job goes PLANNING -> (AWAITING_APPROVAL) -> PROVISIONING -> RUNNING; None = not approved."""
    logger = get_run_logger()
    # a placement decides on fresh prices: a cached snapshot may still offer the capacity just lost
    snapshot = scout.with_options(refresh_cache=True)(rt.market, run.query, rt.clock())
    for _ in range(MAX_LAUNCH_ATTEMPTS):
        now = rt.clock()
        plan = plan_placement(run.state(now, rt.changeover_hours), snapshot, now, rt.ledger,
                              frozenset(run.blocked), rt.policy)
        request = plan_request(plan)
        if auto_decision(run.job.request.approval, request, now) is None:
            transition(rt, run, JobStatus.AWAITING_APPROVAL, f"plan {plan.id} waits for a human")
        decision = approve(run.job.request.approval, request, now)
        if not decision.approved:
            logger.warning("Plan %s not approved (%s: %s)", plan.id, decision.decided_by, decision.comment)
            return None
        transition(rt, run, JobStatus.PROVISIONING, f"plan {plan.id} approved by {decision.decided_by}")
        try:
            workload = launch(rt, run, plan)
        except CapacityUnavailable as exc:
            logger.warning("No capacity for %s: %s; blocking it and taking the next offer", plan.offer.key, exc)
            run.blocked.add(plan.offer.key)
            transition(rt, run, JobStatus.PLANNING, f"capacity error on {plan.offer.zone}: {exc.code}")
            continue
        transition(rt, run, JobStatus.RUNNING, f"running on {workload.instance_id}", current_workload_id=workload.id)
        return workload
    raise NoFeasiblePlacement(run.job.id, f"{MAX_LAUNCH_ATTEMPTS} launches failed for lack of capacity")


def end_workload(rt: Runtime, run: JobRun, reason: EndReason) -> Workload | None:
    """Stop the current instance (if still up) and close its workload."""
    if run.workload is None:
        return None
    stop_instance(run.workload.instance_id, reason.value, rt.backend)
    return _close_current(rt, run, reason)


def _close_current(rt: Runtime, run: JobRun, reason: EndReason) -> Workload:
    """Close the current workload in the ledger and count its cost; the run has none after."""
    closed = close_workload(rt.ledger, run.workload, reason, rt.clock())
    run.spent_usd += closed.cost_usd
    run.watch = None
    return closed


def _measure_changeover(run: JobRun, started: datetime, first_heartbeat: datetime) -> None:
    """The slowest changeover seen so far: the policy's safety net keeps only a small margin
    above it, so a single fast start must not make it plan for faster ones."""
    measured = max(0.0, (first_heartbeat - started).total_seconds() / 3600)
    run.changeover_hours = max(run.changeover_hours or 0.0, measured)


def _first_heartbeat(rt: Runtime, run: JobRun, workload: Workload, after_step: int) -> datetime:
    """When the new instance's trainer first reported a step past `after_step`."""
    _, seen = wait_for_heartbeat(rt.s3, run.output, workload.instance_id, after_step,
                                 timeout_s=rt.settings.heartbeat_stall_seconds, poll_s=rt.poll_seconds,
                                 sleep=rt.sleep, clock=rt.clock,
                                 is_alive=lambda: rt.backend.state(workload.instance_id) not in LOST_STATES)
    _measure_changeover(run, workload.started_at, seen)
    return seen


def recover(rt: Runtime, run: JobRun, reason: MigrationReason, end: EndReason, lost_at: datetime) -> bool:
    """The instance is gone (taken back, stalled, failed): re-plan and resume from the last
    checkpoint elsewhere, until an instance trains again; the Migration row records the downtime.
    False = the new plan was not approved."""
    from training.contract import read_latest

    old = end_workload(rt, run, end)
    for _ in range(MAX_LAUNCH_ATTEMPTS):
        run.was_preempted = reason is MigrationReason.PREEMPTED
        transition(rt, run, JobStatus.PLANNING, f"{reason}: re-planning")
        latest = read_latest(rt.s3, run.output)
        new = place(rt, run)
        if new is None:
            return False
        run.was_preempted = False
        try:
            seen = _first_heartbeat(rt, run, new, latest.step if latest else 0)
            break
        except MigrationTimeout as exc:
            get_run_logger().warning("The new instance never trained (%s); re-planning", exc)
            end_workload(rt, run, EndReason.FAILED)
    else:
        raise NoFeasiblePlacement(run.job.id, f"{MAX_LAUNCH_ATTEMPTS} new instances never trained")
    if old is not None:
        rt.ledger.upsert_migration(Migration(
            job_id=run.job.id, from_workload_id=old.id, to_workload_id=new.id, reason=reason,
            checkpoint_step=latest.step if latest else 0, downtime_seconds=(seen - lost_at).total_seconds(),
            started_at=lost_at, finished_at=seen, succeeded=True))
    return True


def move(rt: Runtime, run: JobRun, target: Offer, reason: MigrationReason, expected_saving_usd: float) -> bool:
    """Checkpoint now -> start on `target` -> first heartbeat past the checkpoint -> terminate the
    old instance -> record the Migration. If the new placement fails, the job resumes from the
    checkpoint on the next best placement (the target blocked)."""
    logger = get_run_logger()
    old = run.workload
    assert old is not None
    now = rt.clock()
    request = ApprovalRequest(job_id=run.job.id, subject="move", reason=reason,
                              summary=f"{old.zone} {old.market} ${old.usd_per_hour:.3f}/h -> {target.zone} "
                                      f"{target.market} ${target.usd_per_hour:.3f}/h",
                              expected_cost_usd=0.0, expected_hours=0.0, expected_saving_usd=expected_saving_usd,
                              interruption_risk=target.interruption.bucket or "unknown")
    if run.declined.get(target.key, now) > now:
        return False  # declined lately: not asked again before then
    decision = approve(run.job.request.approval, request, now)
    if not decision.approved:
        logger.info("Move to %s not made (%s: %s)", target.zone, decision.decided_by, decision.comment)
        run.declined[target.key] = now + DECLINED_MOVE_QUIET
        return False
    transition(rt, run, JobStatus.MIGRATING, f"moving to {target.zone} ({reason})")
    started = rt.clock()
    rid = request_checkpoint(rt.s3, run.output, f"{reason}: move to {target.zone}")
    try:
        step = wait_for_checkpoint(rt.s3, run.output, rid, timeout_s=rt.settings.heartbeat_stall_seconds,
                                   poll_s=rt.poll_seconds, sleep=rt.sleep, clock=rt.clock,
                                   is_alive=lambda: rt.backend.state(old.instance_id) not in LOST_STATES)
    except MigrationTimeout as exc:
        logger.warning("Move abandoned, the job stays where it is: %s", exc)
        transition(rt, run, JobStatus.RUNNING, f"move abandoned: {exc}")
        return False
    # the old trainer exited after its checkpoint and its instance shuts itself down (the local
    # backend ends it with the process; on EC2 the user-data powers off, which terminates it): its
    # workload ends now, so one workload is open at a time
    _close_current(rt, run, EndReason.MIGRATED)
    plan = Plan(job_id=run.job.id, offer=target, expected_hours=0.0, expected_cost_usd=0.0,
                deadline_slack_hours=(run.job.request.deadline - started).total_seconds() / 3600,
                reason=f"{reason} move, expected saving ${expected_saving_usd:.2f}", created_at=started)
    rt.ledger.record_plan(plan)
    try:
        new = launch(rt, run, plan)
        seen = _first_heartbeat(rt, run, new, step)
    except (CapacityUnavailable, MigrationTimeout) as exc:
        logger.warning("New placement on %s failed (%s); resuming from the checkpoint", target.zone, exc)
        stop_instance(old.instance_id, "migrated", rt.backend)
        rt.ledger.upsert_migration(Migration(
            job_id=run.job.id, from_workload_id=old.id, to_workload_id=run.workload.id if run.workload else None,
            reason=reason, expected_saving_usd=expected_saving_usd, checkpoint_step=step, started_at=started,
            finished_at=rt.clock(), succeeded=False))
        run.blocked.add(target.key)
        return recover(rt, run, reason, EndReason.FAILED, started)
    stop_instance(old.instance_id, "migrated", rt.backend)  # for sure; a no-op once it shut itself down
    rt.ledger.upsert_migration(Migration(
        job_id=run.job.id, from_workload_id=old.id, to_workload_id=new.id, reason=reason,
        expected_saving_usd=expected_saving_usd, checkpoint_step=step,
        downtime_seconds=(seen - started).total_seconds(), started_at=started, finished_at=seen, succeeded=True))
    run.moves += 1
    run.last_move_at = seen
    transition(rt, run, JobStatus.RUNNING, f"moved to {new.instance_id}", current_workload_id=new.id)
    return True


def finalize(rt: Runtime, run: JobRun, status: JobStatus, message: str) -> Job:
    """Close what is open, stop every instance of the job, write the cost report, end the job."""
    end_workload(rt, run, EndReason.COMPLETED if status is JobStatus.SUCCEEDED else EndReason.CANCELLED)
    stop_job_instances(run.job.id, "job finished", rt.backend)
    for w in rt.ledger.open_workloads(run.job.id):
        close_workload(rt.ledger, w, EndReason.CANCELLED, rt.clock())
    workloads = rt.ledger.workloads(run.job.id)
    od = on_demand_prices(rt, workloads)
    summary = summarize(workloads, od)
    create_markdown_artifact(key=f"cost-{run.job.id}", markdown=cost_report(
        run.job.id, workloads, rt.ledger.migrations(run.job.id), od), description=f"cost of job {run.job.id}")
    final = f"{run.output}final/" if status is JobStatus.SUCCEEDED else None
    return transition(rt, run, status, message, cost_usd=summary.total_usd, final_model=final,
                      current_workload_id=None) if run.job.status is not status else run.job


def on_demand_prices(rt: Runtime, workloads: list[Workload]) -> dict[str, float]:
    """$/h on demand per instance type of these workloads (runtime overrides, else the dated table)."""
    from spotshift.market.on_demand_fallback import fallback_price

    prices = dict(rt.on_demand_prices)
    for w in workloads:
        if w.instance_type not in prices:
            prices[w.instance_type] = fallback_price(w.region, w.instance_type) or w.usd_per_hour
    return prices


def follow_handover(rt: Runtime, run: JobRun) -> bool:
    """Another flow run (migrate-job from continuous-scout) moved the job: wait for the move to end
    and watch the job's new workload. False when the job ended meanwhile."""
    while True:
        run.job = rt.jobs.get(run.job.id)
        if run.job.status is not JobStatus.MIGRATING:
            break
        rt.sleep(rt.poll_seconds)
    if run.job.status.terminal or not run.job.current_workload_id:
        return False
    workload = next(w for w in rt.ledger.workloads(run.job.id) if w.id == run.job.current_workload_id)
    watch_existing(run, workload, rt.clock(), "moved by another flow run")
    run.moves += 1
    run.last_move_at = rt.clock()
    return True


def watch_existing(run: JobRun, workload: Workload, now: datetime, why: str) -> None:
    """Make a workload another flow run started this run's current one."""
    from spotshift.planning import offer_of_workload

    run.plan = Plan(job_id=run.job.id, offer=offer_of_workload(workload, now), expected_hours=0, expected_cost_usd=0,
                    deadline_slack_hours=(run.job.request.deadline - now).total_seconds() / 3600, reason=why,
                    created_at=now)
    run.watch = new_watch(workload, run.job.id)
    run.watch.last_step = run.job.step
