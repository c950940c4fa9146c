"""The steps the flows compose: place a job (scout -> optimizer -> approval -> deploy), launch,
end a workload, and finalize. The decisions are spotshift.lifecycle's; these only sequence tasks."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.runtime import Runtime
from spotshift.aws.errors import CapacityUnavailable
from spotshift.aws.quotas import blocked_by
from spotshift.billing import cost_report, summarize
from spotshift.lifecycle.plans import Wait, place_request
from spotshift.lifecycle.state import live_job_state
from spotshift.market.query import OfferQuery
from spotshift.models import EndReason, Job, JobStatus, JobUpdate, OfferKey, Plan, Workload, new_id
from spotshift.policy.state import JobState, NoFeasiblePlacement
from spotshift.sizing import fit
from spotshift.sizing.disk import job_disk_need
from tasks import events
from tasks.aws_check import check_region_before_launch
from tasks.deployer import start_instance, stop_instance, stop_job_instances
from tasks.jobs import transition_job, update_job
from tasks.measurements import record_market, record_rate, record_zone_lost
from tasks.monitor import Watch
from tasks.optimizer import plan_placement
from tasks.retention import expire_checkpoints
from tasks.scout import scout
from tasks.user_proxy import approve
from tasks.workloads import close_workload, open_workload, record_instance
from training.contract import JobPaths, read_latest

MAX_LAUNCH_ATTEMPTS = 5
DECLINED_MOVE_QUIET = timedelta(hours=1)  # a move a human (or the timeout) declined is not proposed again sooner


@dataclass
class JobRun:
    """What a train-job flow run holds of its job between steps; everything the policy decides
    over is read back from the stores (spotshift.lifecycle.state), so any run builds the same."""

    job: Job
    query: OfferQuery
    paths: JobPaths
    flow_run_id: str = ""
    plan: Plan | None = None
    watch: Watch | None = None
    blocked: set[OfferKey] = field(default_factory=set)
    failures: int = 0
    declined: dict[OfferKey, datetime] = field(default_factory=dict)  # offer key -> ask again after

    @property
    def workload(self) -> Workload | None:
        return self.watch.workload if self.watch else None

    @property
    def output(self) -> str:
        return self.paths.output


def job_run_of(rt: Runtime, job: Job, flow_run_id: str = "") -> JobRun:
    """A JobRun over a stored job (its query and paths), for a flow run that acts on it now."""
    return JobRun(job=job, query=OfferQuery.for_job(job.request, job.sizing or job.gpu_memory_gib or 0.0),
                  paths=rt.paths(job), flow_run_id=flow_run_id,
                  declined={OfferKey.from_text(k): until for k, until in job.declined_moves.items()})


def take_running(rt: Runtime, job_id: str, flow_run_id: str, workload_id: str | None = None) -> JobRun | None:
    """The job as a JobRun on its open current workload (on `workload_id`, when given) while it is
    RUNNING there, owned by this flow run from now on; None when it is not (it moved on)."""
    job = rt.jobs.get(job_id)
    if job.status is not JobStatus.RUNNING or not job.current_workload_id:
        return None
    if workload_id is not None and job.current_workload_id != workload_id:
        return None
    workload = next((w for w in rt.ledger.workloads(job_id) if w.id == job.current_workload_id), None)
    if workload is None or not workload.open:
        return None
    run = job_run_of(rt, update_job(rt.jobs, job_id, JobUpdate(flow_run_id=flow_run_id or None), rt.clock()),
                     flow_run_id)
    watch_existing(run, workload)
    return run


def hold(rt: Runtime, run: JobRun, seconds: float) -> None:
    """Tell the fleet this run works on the job for up to `seconds` more (a wait for a checkpoint or
    a first step): the job is not taken for abandoned before then, however stale updated_at is."""
    run.job = update_job(rt.jobs, run.job.id, JobUpdate(lease_until=rt.clock() + timedelta(seconds=seconds + 60)),
                         rt.clock())


def record_throughput(rt: Runtime, run: JobRun) -> None:
    """Store the rate measured on the current workload's instance type (the fleet pass keeps it in
    the job's measurements), so that later estimates of the same (instance type, model, method,
    precision) use it instead of the table. Called as the workload ends."""
    from spotshift.stores.throughput import measurement

    run.job = rt.jobs.get(run.job.id)
    measured, workload = run.job.measured, run.workload
    if rt.throughput is None or run.job.sizing is None or workload is None or measured.steps_per_hour is None:
        return
    if measured.rate_instance_type != workload.instance_type:
        return
    record = measurement(run.job.sizing, run.job.request.model, measured.rate_instance_type,
                         measured.steps_per_hour, rt.clock())
    if record is not None:
        record_rate(rt.throughput, record)


def job_state(rt: Runtime, run: JobRun, now: datetime) -> JobState:
    """The JobState of the run's job, from the stores (the same builder continuous-scout uses)."""
    run.job = rt.jobs.get(run.job.id)
    return live_job_state(run.job, rt.ledger.workloads(run.job.id), now=now,
                          default_changeover_hours=rt.changeover_hours,
                          checkpoint_region=rt.bucket_region(run.paths.bucket),
                          outlook=rt.outlook(run.query, now))


def transition(rt: Runtime, run: JobRun, to: JobStatus, message: str = "", **changes) -> Job:
    """Move the job to `to` (already there: only the changes are stored, as a re-plan from PLANNING)."""
    if run.job.status is to:
        run.job = update_job(rt.jobs, run.job.id, JobUpdate(**changes), rt.clock())
        return run.job
    run.job = transition_job(rt.jobs, run.job.id, to, rt.clock(), JobUpdate(**changes) if changes else None, message)
    return run.job


def launch(rt: Runtime, run: JobRun, plan: Plan) -> Workload:
    """Open the workload (the intent, in the ledger first), start its instance, record the instance
    id: a crash in between leaves a row an adopting run reconciles with EC2 (raises CapacityUnavailable)."""
    from spotshift.aws.ec2 import LaunchRequest
    from training.bootstrap import render_user_data

    workload_id = new_id("wl")
    on_ec2 = rt.settings.compute_backend == "ec2"  # the local backend runs the same trainer as a process
    user_data = render_user_data(run.paths.spec_uri, python=rt.trainer_python,
                                 imds=rt.imds_endpoint if on_ec2 else None, power_off=on_ec2)
    request = LaunchRequest(job_id=run.job.id, workload_id=workload_id, flow_run_id=run.flow_run_id,
                            offer=plan.offer, spec_uri=run.paths.spec_uri, image_id=rt.image_id,
                            instance_profile=rt.settings.instance_profile, user_data=user_data,
                            processes=trainer_processes(run.job, plan.offer), disk=job_disk_need(run.job))
    if getattr(rt.backend, "preflight", None) is not None:  # issue 11: the region's `spotshift aws check` (cached)
        check_region_before_launch(plan.offer, rt.backend)
    pending = open_workload(rt.ledger, run.job, plan, workload_id, None, rt.clock())
    try:
        launched = start_instance(request, rt.backend)
    except Exception:
        close_workload(rt.ledger, pending, EndReason.FAILED, rt.clock())
        raise
    rt.fault("after_launch")
    workload = record_instance(rt.ledger, pending, launched.instance_id)
    run.plan = plan
    run.watch = Watch(workload)
    return workload


def _idle(rt: Runtime, run: JobRun, wait: Wait) -> None:
    """Wait for the market as the policy asked (the job stays PLANNING and keeps its lease): until
    `wait.until`, or one re-scout interval, whichever comes first."""
    get_run_logger().info("Job %s waits: %s (until %s)", run.job.id, wait.reason, wait.until)
    budget = rt.rescout_seconds or rt.settings.scout_cache_seconds
    waited = 0.0
    while (wait.until is None or rt.clock() < wait.until) and waited < budget:
        rt.sleep(rt.poll_seconds)
        waited += rt.poll_seconds
        update_job(rt.jobs, run.job.id, JobUpdate(), rt.clock())  # the lease


def _decide_placement(rt: Runtime, run: JobRun) -> Plan:
    """Scout and plan until the policy launches (it may wait for capacity first)."""
    while True:
        # a placement decides on fresh prices: a cached snapshot may still offer the capacity just lost
        snapshot = scout.with_options(refresh_cache=True)(rt.market, run.query, rt.clock())
        now = rt.clock()
        record_market(rt.history, snapshot, run.query.regions, now)
        decision = plan_placement(job_state(rt, run, now), snapshot, now, rt.ledger, frozenset(run.blocked),
                                  rt.policy)
        if isinstance(decision, Plan):
            return decision
        _idle(rt, run, decision)


def place(rt: Runtime, run: JobRun, *, reason: str = "submitted", running: bool = True,
          asked: Plan | None = None) -> Workload | None:
    """scout -> optimizer -> approval -> deployer, taking the next offer on capacity errors.
    The job goes PLANNING -> (AWAITING_APPROVAL) -> PROVISIONING -> RUNNING; None = not approved.
    `reason`: why the job needs an instance (submitted, or how the last one ended), for the placed event.
    `running` False: the job stays PROVISIONING on the new workload (a recovery makes it RUNNING once
    the new trainer reported its first step: until then the job is its action run's, not the fleet's).
    `asked`: the plan a human was asked about before this run (the rerun of a suspended run): it is
    asked about again under the same key, which returns the answer given meanwhile."""
    logger = get_run_logger()
    last_error: CapacityUnavailable | None = None
    for _ in range(MAX_LAUNCH_ATTEMPTS):
        plan, asked = asked or _decide_placement(rt, run), None
        policy = run.job.request.approval
        decision = approve(policy, place_request(plan), rt.clock(), key=f"approve-plan-{plan.id}",
                           on_ask=lambda: transition(
                               rt, run, JobStatus.AWAITING_APPROVAL, f"plan {plan.id} waits for a human",
                               pending_plan_id=plan.id, lease_until=rt.clock() + timedelta(seconds=policy.timeout_s)))
        if not decision.approved:
            logger.warning("Plan %s not approved (%s: %s)", plan.id, decision.decided_by, decision.comment)
            return None
        transition(rt, run, JobStatus.PROVISIONING, f"plan {plan.id} approved by {decision.decided_by}")
        try:
            workload = launch(rt, run, plan)
        except CapacityUnavailable as exc:
            logger.warning("No capacity for %s: %s; blocking it and taking the next offer", plan.offer.key, exc)
            run.blocked |= blocked_by(exc, plan.offer, plan.alternatives)  # issue 11: a quota blocks region x group x market
            last_error = exc
            if type(exc) is CapacityUnavailable:  # issue 11: quota and image errors say nothing of the zone
                record_zone_lost(rt.history, plan.offer.zone, rt.clock(), "capacity_error")
            transition(rt, run, JobStatus.PLANNING, f"{'quota' if exc.is_quota else 'capacity'} error on "
                       f"{plan.offer.zone}: {getattr(exc, 'quota_code', '') or exc.code}")
            continue
        transition(rt, run, JobStatus.RUNNING if running else JobStatus.PROVISIONING,
                   f"running on {workload.instance_id}" if running else f"started {workload.instance_id}",
                   current_workload_id=workload.id)
        events.job_placed(run.job, workload, plan=plan, reason=reason, flow_run_id=run.flow_run_id or None,
                          cost_usd=events.job_cost(rt.ledger, run.job.id, rt.clock()))
        return workload
    raise NoFeasiblePlacement(run.job.id, f"{MAX_LAUNCH_ATTEMPTS} launches failed; the last: {last_error}")


def trainer_processes(job: Job, offer) -> int | None:
    """torchrun's processes on `offer`: the GPUs the job's global batch keeps busy there (the
    trainer refuses more ranks than samples per step); None (one per GPU) for a job not yet sized."""
    if job.sizing is None:
        return None
    try:
        return fit(job.sizing, offer.instance_type).gpus_used
    except KeyError:  # an instance type the catalog does not know
        return None


def end_workload(rt: Runtime, run: JobRun, reason: EndReason) -> Workload | None:
    """Stop the current instance (if still up) and close its workload."""
    if run.workload is None:
        return None
    stop_instance(run.workload.instance_id, reason.value, rt.backend)
    return close_current(rt, run, reason)


def close_current(rt: Runtime, run: JobRun, reason: EndReason) -> Workload:
    """Close the current workload in the ledger; the run has none after."""
    closed = close_workload(rt.ledger, run.workload, reason, rt.clock())
    run.watch = None
    return closed


def checkpoint_step(rt: Runtime, run: JobRun) -> int:
    """The step of the newest complete checkpoint (0 = none), and its size kept as a measurement."""
    latest = read_latest(rt.s3, run.output)
    if latest is None:
        return 0
    gb = latest.total_bytes / 1e9
    if run.job.measured.checkpoint_gb != gb:
        run.job = update_job(rt.jobs, run.job.id, JobUpdate(measured=run.job.measured.model_copy(
            update={"checkpoint_gb": gb})), rt.clock())
    return latest.step


_END_OF_JOB = {JobStatus.SUCCEEDED: EndReason.COMPLETED, JobStatus.FAILED: EndReason.FAILED}


def finalize(rt: Runtime, run: JobRun, status: JobStatus, message: str, error: str | None = None) -> Job:
    """Close what is open, stop every instance of the job, write the cost report, end the job
    (`error`: why it failed, stored on the job)."""
    end_workload(rt, run, _END_OF_JOB.get(status, EndReason.CANCELLED))
    stop_job_instances(run.job.id, "job finished", rt.backend)
    for w in rt.ledger.open_workloads(run.job.id):
        close_workload(rt.ledger, w, EndReason.CANCELLED, rt.clock())
    workloads = rt.ledger.workloads(run.job.id)
    od = on_demand_prices(rt, workloads)
    summary = summarize(workloads, od)
    create_markdown_artifact(key=f"cost-{run.job.id}", markdown=cost_report(
        run.job.id, workloads, rt.ledger.migrations(run.job.id), od), description=f"cost of job {run.job.id}")
    final = run.paths.final_uri if status is JobStatus.SUCCEEDED else None
    if status is JobStatus.SUCCEEDED:
        expire_checkpoints(rt.s3, run.paths)  # the final model stays; the checkpoints expire later
    if run.job.status is status:
        return run.job
    job = transition(rt, run, status, message, cost_usd=summary.total_usd, final_model=final,
                     current_workload_id=None, error=error)
    events.job_ended(job, status, message=message, cost_usd=summary.total_usd, on_demand_usd=summary.on_demand_usd,
                     final_model=final, error=error, flow_run_id=run.flow_run_id or None)
    return job


def on_demand_prices(rt: Runtime, workloads: list[Workload]) -> dict[str, float]:
    """$/h on demand per instance type of these workloads (runtime overrides, else the dated table)."""
    from spotshift.market.on_demand_fallback import fallback_price

    prices = dict(rt.on_demand_prices)
    for w in workloads:
        if w.instance_type not in prices:
            prices[w.instance_type] = fallback_price(w.region, w.instance_type) or w.usd_per_hour
    return prices


def pending_plan(rt: Runtime, job: Job) -> Plan | None:
    """The plan a job awaiting approval waits on (None when it waits on none)."""
    if job.status is not JobStatus.AWAITING_APPROVAL or not job.pending_plan_id:
        return None
    return next((p for p in rt.ledger.plans(job.id) if p.id == job.pending_plan_id), None)


def watch_existing(run: JobRun, workload: Workload) -> None:
    """Make a workload another flow run started (a move, or the run this one adopts) the current one."""
    run.plan = None
    run.watch = Watch(workload)
