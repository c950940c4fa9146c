"""Ledger bookkeeping around instances: write the spec, open a workload when an instance starts,
close it with its billed seconds and end reason."""

from __future__ import annotations

import logging
from datetime import datetime

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import MissingContextError

from spotshift.billing import billed_seconds
from spotshift.models import EndReason, Job, Plan, Workload
from tasks.retries import STORE_WRITE_RETRY
from training.contract import write_spec
from training.spec import TrainingSpec


def training_spec(job: Job, bucket: str, *, imds_endpoint: str | None = None,
                  min_step_seconds: float = 0.0) -> TrainingSpec:
    """What the instance receives for a job: hyper-parameters and the S3 prefix. No secrets.
    `min_step_seconds` paces the steps (the demo's, so its market timeline holds on any CPU)."""
    r = job.request
    return TrainingSpec(job_id=job.id, model=r.model, dataset=r.dataset, output=job.paths(bucket).output,
                        max_steps=r.max_steps, batch_size=r.batch_size, grad_accum=r.grad_accum,
                        learning_rate=r.learning_rate, seq_len=r.seq_len, seed=r.seed,
                        checkpoint_every_steps=r.checkpoint_steps, checkpoint_every_seconds=r.checkpoint_every_seconds,
                        keep_checkpoints=r.keep_checkpoints, imds_endpoint=imds_endpoint,
                        min_step_seconds=min_step_seconds, method=r.method.value, precision=r.precision.value,
                        gradient_checkpointing=r.gradient_checkpointing,
                        lora=r.lora.model_dump() if r.lora else None, merge_adapter=r.merge_adapter,
                        dataset_split=r.dataset_split, dataset_text_column=r.dataset_text_column,
                        eval_split=r.eval_split)


@task(name="write-spec", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def publish_spec(s3, spec: TrainingSpec) -> str:
    """spec.json under the job's prefix; returns its s3:// URI."""
    return write_spec(s3, spec)


@task(name="open-workload", cache_policy=NO_CACHE)
def open_workload(ledger, job: Job, plan: Plan, workload_id: str, instance_id: str | None, now: datetime) -> Workload:
    """The workload's ledger row, opened before its instance starts (instance_id None until then)."""
    o = plan.offer
    w = Workload(id=workload_id, job_id=job.id, plan_id=plan.id, instance_id=instance_id, instance_type=o.instance_type,
                 region=o.region, zone=o.zone, market=o.market, usd_per_hour=o.usd_per_hour, started_at=now)
    ledger.upsert_workload(w)
    return w


@task(name="record-instance", cache_policy=NO_CACHE)
def record_instance(ledger, workload: Workload, instance_id: str) -> Workload:
    """The instance a workload's launch started."""
    started = workload.model_copy(update={"instance_id": instance_id})
    ledger.upsert_workload(started)
    return started


@task(name="close-workload", cache_policy=NO_CACHE)
def close_workload(ledger, workload: Workload, reason: EndReason, now: datetime) -> Workload:
    """End a workload once: its billed seconds (per-second, 60 s minimum) and why it ended."""
    if not workload.open:
        return workload
    closed = workload.model_copy(update={"ended_at": now, "end_reason": reason,
                                         "billed_seconds": billed_seconds(workload.started_at, now)})
    ledger.upsert_workload(closed)
    _logger().info("Workload %s closed (%s): %.0f s at $%.3f/h = $%.4f", closed.id, reason,
                   closed.billed_seconds, closed.usd_per_hour, closed.cost_usd)
    return closed


@task(name="record-workload", cache_policy=NO_CACHE, task_run_name="record-workload-{workload.id}",
      **STORE_WRITE_RETRY)
def record_workload(ledger, workload: Workload) -> Workload:
    """A workload as decided elsewhere (a cancel's closed workloads, spotshift.job_actions.plan_cancel):
    one idempotent upsert of its ledger row, retried when the store did not answer."""
    ledger.upsert_workload(workload)
    return workload


def _logger():
    """The run's logger; the module's when called as .fn outside a flow (a CLI's cleanup after Ctrl-C)."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)
