"""train-job: validate -> HF metadata -> scout -> optimizer -> approval -> deploy -> monitor ->
(recover from interruptions, move to cheaper capacity) -> finalize."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run as current_flow_run

from flows import hooks
from flows.runtime import Runtime
from flows.adoption import adopt
from flows.moves import follow_handover, move, recover
from flows.steps import JobRun, finalize, job_state, place, transition
from spotshift.market.query import OfferQuery
from spotshift.models import EndReason, JobCreate, JobStatus, Market, MigrationReason
from spotshift.monitoring import TrainerFailedPermanently, Verdict
from spotshift.policy import decide
from spotshift.policy.state import Move, NoFeasiblePlacement
from spotshift.sizing import JobSizing, job_work_v100_hours, single_gpu_memory_gib
from spotshift.stores.throughput import measurement
from tasks import events
from tasks.monitor import watch_instance
from tasks.retries import retry_unless_input_is_final
from tasks.scout import scout
from tasks.workloads import publish_spec, training_spec

MAX_TRAINER_FAILURES = 3


@task(name="model-metadata", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2,
      retry_condition_fn=retry_unless_input_is_final)
def model_needs(request: JobCreate, s3: Any) -> JobSizing:
    """The model's size from its config.json and the job's training shape (spotshift.sizing). A
    refused or missing config.json fails at once, naming the key (and for a refusal the
    `spotshift aws setup --data` command)."""
    from spotshift.hf import model_size

    return JobSizing.of_job(request, model_size(request.model, s3_client=s3))


def summary(rt: Runtime, job_id: str) -> dict:
    from flows.steps import on_demand_prices
    from spotshift.billing import summarize

    job = rt.jobs.get(job_id)
    workloads = sorted(rt.ledger.workloads(job_id), key=lambda w: w.started_at)
    migrations = rt.ledger.migrations(job_id)
    s = summarize(workloads, on_demand_prices(rt, workloads))
    return {
        "job_id": job.id, "status": job.status.value, "steps": job.step,
        "workloads": [{"zone": w.zone, "market": w.market.value, "usd_per_hour": round(w.usd_per_hour, 4),
                       "seconds": round(w.billed_seconds or 0.0, 1), "end_reason": str(w.end_reason)}
                      for w in workloads],
        "preemptions": sum(1 for w in workloads if w.end_reason is EndReason.PREEMPTED),
        "migrations": sum(1 for m in migrations if m.reason is not MigrationReason.PREEMPTED),
        "cost_usd": round(s.total_usd, 4), "on_demand_usd": round(s.on_demand_usd, 4),
        "final_model": job.final_model, "error": job.error,
    }


@flow(name="train-job", on_failure=[hooks.on_failure], on_crashed=[hooks.on_crashed],
      on_cancellation=[hooks.on_cancellation], flow_run_name="train-{job_id}")
def train_job(job_id: str, runtime: Runtime | None = None) -> dict:
    """Run a stored job to the end on the cheapest capacity that meets its deadline. A job another
    run started (its flow process died) is adopted: its instances and ledger are reconciled first."""
    logger = get_run_logger()
    rt = runtime or Runtime.from_settings()
    flow_run_id = str(current_flow_run.id or "")
    hooks.ACTIVE_RUNTIMES[flow_run_id] = rt  # the failure hooks stop this runtime's instances
    job = rt.jobs.get(job_id)
    if job.status.terminal:
        logger.info("Job %s is already %s", job_id, job.status)
    else:
        run = _prepare(rt, job, flow_run_id)
        try:
            _run_to_the_end(rt, run)
        except TrainerFailedPermanently as exc:  # relaunching would fail the same way: the job ends here
            logger.error("Job %s failed: %s", job_id, exc)
            finalize(rt, run, JobStatus.FAILED, "the trainer failed permanently", error=str(exc)[:500])
            raise
    hooks.ACTIVE_RUNTIMES.pop(flow_run_id, None)
    return summary(rt, job_id)


def _run_to_the_end(rt: Runtime, run: JobRun) -> None:
    """Place (or adopt) the job, train it to the end, finalize it; TrainerFailedPermanently when
    its trainer failed in a way no restart can fix."""
    if run.job.status is JobStatus.PENDING:
        transition(rt, run, JobStatus.PLANNING, "planning", flow_run_id=run.flow_run_id,
                   gpu_memory_gib=run.job.gpu_memory_gib, total_work=run.job.total_work, sizing=run.job.sizing)
        started = place(rt, run) is not None
    else:
        started = adopt(rt, run)
    if not started:
        finalize(rt, run, JobStatus.CANCELLED, "plan not approved")
    elif _train_until_done(rt, run):
        finalize(rt, run, JobStatus.SUCCEEDED, "final model written")


def _prepare(rt: Runtime, job, flow_run_id: str) -> JobRun:
    """The run's view of its job: the spec in S3, the model's needs, the offers it may use."""
    paths = rt.paths(job)
    spec = training_spec(job, paths.bucket, imds_endpoint=rt.imds_endpoint, min_step_seconds=rt.min_step_seconds)
    publish_spec(rt.s3, spec)
    if job.sizing is None or job.total_work is None:
        sizing = model_needs(job.request, rt.s3)
        job = job.model_copy(update={"sizing": sizing, "gpu_memory_gib": single_gpu_memory_gib(sizing),
                                     "total_work": job_work_v100_hours(sizing, job.request.max_steps)})
    return JobRun(job=job, query=OfferQuery.for_job(job.request, job.sizing), paths=paths,
                  flow_run_id=flow_run_id)


def _train_until_done(rt: Runtime, run: JobRun) -> bool:
    """Watch, recover, move until the trainer is done (True) or another run took the job (False)."""
    logger = get_run_logger()
    while True:
        assert run.watch is not None and run.workload is not None
        outcome = watch_instance(run.watch, s3=rt.s3, output=run.output, backend=rt.backend, jobs=rt.jobs,
                                 job_id=run.job.id, clock=rt.clock, sleep=rt.sleep, poll_seconds=rt.poll_seconds,
                                 stall_seconds=rt.settings.heartbeat_stall_seconds, wall_budget_s=rt.rescout_seconds,
                                 first_heartbeat_seconds=rt.settings.first_heartbeat_seconds,
                                 flow_run_id=run.flow_run_id)
        _record_throughput(rt, run)
        if outcome.verdict is Verdict.DONE:
            return True
        if outcome.disowned:
            logger.warning("Job %s: %s; this run leaves it", run.job.id, outcome.detail)
            return False
        if outcome.rescout_due:
            _review(rt, run)
            continue
        if outcome.handover:
            if not follow_handover(rt, run):
                return run.job.status is not JobStatus.FAILED  # failed meanwhile (the move's trainer): ended
            continue
        if not _recover_from(rt, run, outcome):
            raise NoFeasiblePlacement(run.job.id, "the new placement was not approved")


def _record_throughput(rt: Runtime, run: JobRun) -> None:
    """Store the rate the watch measured on its instance type, so that later estimates of the same
    (instance type, model, method, precision) use it instead of the table."""
    measured = run.watch.measured if run.watch is not None else None
    if rt.throughput is None or run.job.sizing is None or measured is None:
        return
    if measured.steps_per_hour is None or measured.rate_instance_type != run.workload.instance_type:
        return
    record = measurement(run.job.sizing, run.job.request.model, measured.rate_instance_type,
                         measured.steps_per_hour, rt.clock())
    if record is not None:
        rt.throughput.record(record)


def _recover_from(rt: Runtime, run: JobRun, outcome) -> bool:
    """The instance stopped training: lost, stalled or failed; resume elsewhere. A trainer that
    failed permanently raises TrainerFailedPermanently (resumed nowhere)."""
    now = rt.clock()
    last_step = max(run.job.step, outcome.progress.step) if outcome.progress else None
    if outcome.verdict is Verdict.FAILED_PERMANENTLY:
        raise TrainerFailedPermanently(outcome.progress.error or "the trainer failed permanently",
                                       run.workload.instance_id)
    if outcome.lost or outcome.verdict is Verdict.CHECKPOINTED:
        if run.workload.market is Market.SPOT:
            rt.record_zone_lost(run.workload.zone, now, "preemption")
        events.job_preempted(run.job, run.workload, detail=outcome.detail, step=last_step,
                             cost_usd=events.job_cost(rt.ledger, run.job.id, now), flow_run_id=run.flow_run_id or None)
        return recover(rt, run, MigrationReason.PREEMPTED, EndReason.PREEMPTED, now)
    if outcome.verdict is Verdict.STALLED:
        events.job_stalled(run.job, run.workload, detail=outcome.detail, step=last_step,
                           cost_usd=events.job_cost(rt.ledger, run.job.id, now), flow_run_id=run.flow_run_id or None)
        return recover(rt, run, MigrationReason.STALLED, EndReason.STALLED, now)
    run.failures += 1
    detail = outcome.progress.error if outcome.progress else "unknown error"
    if run.failures >= MAX_TRAINER_FAILURES:
        raise RuntimeError(f"the trainer failed {run.failures} times; last: {detail}")
    get_run_logger().warning("Trainer failed (%s); restarting from the last checkpoint", detail)
    return recover(rt, run, MigrationReason.STALLED, EndReason.FAILED, now)


def _review(rt: Runtime, run: JobRun) -> None:
    """Re-scout this job's market and let the policy decide stay or move (continuous-scout's
    decision for one job, made inside the flow run that owns it)."""
    now = rt.clock()
    snapshot = scout.with_options(refresh_cache=True)(rt.market, run.query, now)  # the market of now, as placements
    rt.record_market(snapshot, run.query, now)
    decision = decide(job_state(rt, run, now), snapshot, now, policy=rt.policy)
    if isinstance(decision, Move):
        move(rt, run, decision)
