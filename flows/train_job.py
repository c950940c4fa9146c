"""train-job: validate -> HF metadata -> scout -> optimizer -> approval -> deploy, then the job is
the fleet's (flows/fleet.py watches it; flows/actions.py recovers, restarts and finalizes it)."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run as current_flow_run

from flows import hooks
from flows.runtime import Runtime
from flows.adoption import adopt
from flows.steps import JobRun, finalize, pending_plan, place, transition
from spotshift.market.query import OfferQuery
from spotshift.models import EndReason, JobCreate, JobStatus, MigrationReason
from spotshift.monitoring import TrainerFailedPermanently
from spotshift.sizing import JobSizing, job_work_v100_hours, single_gpu_memory_gib
from tasks.retries import retry_unless_input_is_final
from tasks.workloads import publish_spec, training_spec


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
    """Place a stored job: size it, scout, plan, approve and launch; the run ends once the job's
    instance is up (RUNNING). From then on the job holds no process: the `fleet` pass watches it and
    starts a short `job-action` run for what it finds (recover, restart, finalize) and
    continuous-scout a `migrate-job` run for a move. A job already placed is adopted: its instances
    and ledger are reconciled first. Returns the job's summary."""
    logger = get_run_logger()
    rt = runtime or Runtime.from_settings()
    flow_run_id = str(current_flow_run.id or "")
    hooks.ACTIVE_RUNTIMES[flow_run_id] = rt  # the failure hooks stop this runtime's instances
    job = rt.jobs.get(job_id)
    if job.status.terminal:
        logger.info("Job %s is already %s", job_id, job.status)
    elif job.status is JobStatus.RUNNING:
        logger.info("Job %s is already running: the fleet watches it", job_id)
    else:
        run = _prepare(rt, job, flow_run_id)
        try:
            _place_or_adopt(rt, run)
        except TrainerFailedPermanently as exc:  # relaunching would fail the same way: the job ends here
            logger.error("Job %s failed: %s", job_id, exc)
            finalize(rt, run, JobStatus.FAILED, "the trainer failed permanently", error=str(exc)[:500])
            raise
    hooks.ACTIVE_RUNTIMES.pop(flow_run_id, None)
    return summary(rt, job_id)


def _place_or_adopt(rt: Runtime, run: JobRun) -> None:
    """Place the job (or adopt it), leaving it RUNNING; a plan nobody approved cancels it."""
    if run.job.status is JobStatus.PENDING:
        transition(rt, run, JobStatus.PLANNING, "planning", flow_run_id=run.flow_run_id,
                   gpu_memory_gib=run.job.gpu_memory_gib, total_work=run.job.total_work, sizing=run.job.sizing)
        started = place(rt, run) is not None
    elif (asked := pending_plan(rt, run.job)) is not None:  # the rerun of a run suspended on the question
        started = place(rt, run, asked=asked) is not None
    else:
        started = adopt(rt, run)
    if not started:
        finalize(rt, run, JobStatus.CANCELLED, "plan not approved")


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
