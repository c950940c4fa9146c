"""Prefect events for each job, for automations (notify on a preemption, page on a failure): one
function per event, `spotshift.job.<what>` on the resource `spotshift.job.<job_id>`.

Every function takes plain records (the Job, its Workload rows, a Plan) and may be called from any
flow or task (train-job, migrate-job, the fleet controller's action runs, cancel). Emitting never
fails a job: an event that cannot be built or sent is logged as a warning and dropped. An event's
id is derived from what it reports (job, workload, event), so an action run that is retried after
a crash re-sends the same id, and the Prefect server stores and triggers on it once.
Payloads carry ids, placements, prices, steps and costs; never credentials or tokens.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable
from uuid import NAMESPACE_URL, UUID, uuid5

from prefect.context import FlowRunContext, TaskRunContext
from prefect.events import emit_event
from prefect.settings import PREFECT_API_URL

from spotshift.billing import billed_seconds_so_far
from spotshift.models import Job, JobStatus, MigrationReason, Plan, Workload

log = logging.getLogger("spotshift.events")

PLACED = "spotshift.job.placed"
PREEMPTED = "spotshift.job.preempted"
STALLED = "spotshift.job.stalled"
MOVED = "spotshift.job.moved"
FINISHED = "spotshift.job.finished"
FAILED = "spotshift.job.failed"
CANCELLED = "spotshift.job.cancelled"
JOB_EVENTS = (PLACED, PREEMPTED, STALLED, MOVED, FINISHED, FAILED, CANCELLED)
ENDED_EVENTS = {JobStatus.SUCCEEDED: FINISHED, JobStatus.FAILED: FAILED, JobStatus.CANCELLED: CANCELLED}
MAX_TEXT = 500  # an error or a detail in a payload is cut to this many characters


@dataclass(frozen=True)
class JobEventSpec:
    """One event as emit_event takes it: name, primary resource, related resources, payload, id."""

    event: str
    resource: dict[str, str]
    related: list[dict[str, str]] = field(default_factory=list)
    payload: dict[str, Any] = field(default_factory=dict)
    id: UUID | None = None


def job_resource_id(job_id: str) -> str:
    """The primary resource of every event of a job: `spotshift.job.<job_id>`."""
    return f"spotshift.job.{job_id}"


def cost_so_far(workloads: Iterable[Workload], now: datetime) -> float:
    """What the job's workloads cost up to `now`: closed ones as billed, open ones as if they ended now."""
    return sum(billed_seconds_so_far(w, now) / 3600.0 * w.usd_per_hour for w in workloads)


def job_cost(ledger, job_id: str, now: datetime) -> float | None:
    """cost_so_far of the job's workloads in `ledger` (a Ledger); None, with a warning, when it cannot be read."""
    try:
        return cost_so_far(ledger.workloads(job_id), now)
    except Exception as exc:  # a figure for an event: never fail the job for it
        log.warning("Cost of job %s not read for its event: %s: %s", job_id, type(exc).__name__, exc)
        return None


def placement(workload: Workload) -> dict[str, Any]:
    """Where a workload runs, as payload fields."""
    return {"workload_id": workload.id, "instance_id": workload.instance_id, "instance_type": workload.instance_type,
            "region": workload.region, "zone": workload.zone, "market": workload.market.value,
            "usd_per_hour": round(workload.usd_per_hour, 6)}


def _resource(job: Job, workload: Workload | None) -> dict[str, str]:
    labels = {"prefect.resource.id": job_resource_id(job.id), "prefect.resource.name": job.request.name,
              "spotshift.model": job.request.model, "spotshift.method": job.request.method.value}
    if workload is not None:
        labels |= {"spotshift.instance-type": workload.instance_type, "spotshift.market": workload.market.value,
                   "spotshift.region": workload.region, "spotshift.zone": workload.zone}
    return labels


def _where(w: Workload, prefix: str) -> list[dict[str, str]]:
    """The related resources of a workload: its instance (role `<prefix>instance`) and zone (`<prefix>zone`)."""
    zone = {"prefect.resource.id": f"spotshift.zone.{w.zone}", "prefect.resource.role": f"{prefix}zone",
            "prefect.resource.name": w.zone, "spotshift.region": w.region}
    if not w.instance_id:
        return [zone]
    return [{"prefect.resource.id": f"spotshift.instance.{w.instance_id}", "prefect.resource.role": f"{prefix}instance",
             "prefect.resource.name": w.instance_id, "spotshift.instance-type": w.instance_type,
             "spotshift.market": w.market.value}, zone]


def _related(job: Job, flow_run_id: str | None, current: Workload | None,
             previous: Workload | None) -> list[dict[str, str]]:
    """The job's flow run, its instance and zone, and for a move the previous instance and zone."""
    related = []
    if flow_run_id or job.flow_run_id:
        related.append({"prefect.resource.id": f"prefect.flow-run.{flow_run_id or job.flow_run_id}",
                        "prefect.resource.role": "flow-run"})
    if current is not None:
        related += _where(current, "")
    if previous is not None:
        related += _where(previous, "previous-")
    return related


def _spec(event: str, job: Job, *, workload: Workload | None = None, previous: Workload | None = None,
          payload: dict[str, Any], key: str, flow_run_id: str | None = None) -> JobEventSpec:
    body = {"job_id": job.id, "job_name": job.request.name, "status": job.status.value, "step": job.step,
            "max_steps": job.request.max_steps, **(placement(workload) if workload else {}), **payload}
    return JobEventSpec(event=event, resource=_resource(job, workload),
                        related=_related(job, flow_run_id, workload, previous),
                        payload=body, id=uuid5(NAMESPACE_URL, f"{job_resource_id(job.id)}/{key}/{event}"))


def _can_send() -> bool:
    """Inside a flow or task run, or with PREFECT_API_URL set; else emit_event would start an
    ephemeral Prefect server (a subprocess) for this one event: a CLI without an API sends nothing."""
    return bool(PREFECT_API_URL.value()) or FlowRunContext.get() is not None or TaskRunContext.get() is not None


def emit(spec: JobEventSpec):
    """Send one event (prefect.events.emit_event); the Event, or None when it was not sent. Never raises."""
    try:
        if not _can_send():
            log.debug("Event %s not sent: no Prefect API configured", spec.event)
            return None
        return emit_event(event=spec.event, resource=spec.resource, related=spec.related, payload=spec.payload,
                          id=spec.id)
    except Exception as exc:  # an event is a notification: losing one must not fail the job
        log.warning("Event %s for %s not sent: %s: %s", spec.event, spec.resource.get("prefect.resource.id"),
                    type(exc).__name__, exc)
        return None


def _cut(text: str | None) -> str | None:
    return text[:MAX_TEXT] if text else text


def _safely(build, *args, **kwargs):
    """Build and send; a record that cannot be turned into an event is logged, not raised."""
    try:
        spec = build(*args, **kwargs)
    except Exception as exc:  # as in emit: never fail the job for its notification
        log.warning("Event %s not built: %s: %s", build.__name__, type(exc).__name__, exc)
        return None
    return emit(spec)


def placed_event(job: Job, workload: Workload, *, plan: Plan | None = None, reason: str = "submitted",
                 cost_usd: float | None = None, flow_run_id: str | None = None) -> JobEventSpec:
    """`spotshift.job.placed`: an instance was started for the job and it is running there. `reason`:
    submitted (first placement), or why it was placed again (preempted, stalled, failed, cheaper...)."""
    payload: dict[str, Any] = {"reason": reason, "cost_usd": cost_usd}
    if plan is not None:
        payload |= {"plan_id": plan.id, "gpu": plan.offer.gpu, "gpu_count": plan.offer.gpu_count,
                    "expected_cost_usd": round(plan.expected_cost_usd, 4),
                    "expected_hours": round(plan.expected_hours, 4),
                    "deadline_slack_hours": round(plan.deadline_slack_hours, 4)}
    return _spec(PLACED, job, workload=workload, payload=payload, key=workload.id, flow_run_id=flow_run_id)


def _lost(detail: str, step: int | None, cost_usd: float | None) -> dict[str, Any]:
    lost = {"detail": _cut(detail), "cost_usd": cost_usd}
    return lost if step is None else lost | {"step": step}  # the trainer's last step, when newer than the job's


def preempted_event(job: Job, workload: Workload, *, detail: str = "", step: int | None = None,
                    cost_usd: float | None = None, flow_run_id: str | None = None) -> JobEventSpec:
    """`spotshift.job.preempted`: the job's instance was taken back (spot interruption, or it vanished);
    the job resumes from its last checkpoint elsewhere (a `placed` event follows)."""
    return _spec(PREEMPTED, job, workload=workload, payload=_lost(detail, step, cost_usd), key=workload.id,
                 flow_run_id=flow_run_id)


def stalled_event(job: Job, workload: Workload, *, detail: str = "", step: int | None = None,
                  cost_usd: float | None = None, flow_run_id: str | None = None) -> JobEventSpec:
    """`spotshift.job.stalled`: the trainer's heartbeat stopped; the instance is stopped and the job
    resumes from its last checkpoint (a `placed` event follows)."""
    return _spec(STALLED, job, workload=workload, payload=_lost(detail, step, cost_usd), key=workload.id,
                 flow_run_id=flow_run_id)


def moved_event(job: Job, old: Workload, new: Workload, *, reason: MigrationReason, expected_saving_usd: float,
                checkpoint_step: int | None, downtime_seconds: float | None = None, cost_usd: float | None = None,
                flow_run_id: str | None = None) -> JobEventSpec:
    """`spotshift.job.moved`: a running job was moved (checkpoint -> new instance trains -> old one
    stopped); the placement fields describe the new instance, `from` the old one."""
    payload = {"reason": reason.value, "expected_saving_usd": round(expected_saving_usd, 4),
               "checkpoint_step": checkpoint_step, "downtime_seconds": downtime_seconds, "cost_usd": cost_usd,
               "from": placement(old)}
    return _spec(MOVED, job, workload=new, previous=old, payload=payload, key=new.id, flow_run_id=flow_run_id)


def ended_event(job: Job, status: JobStatus, *, message: str = "", cost_usd: float | None = None,
                on_demand_usd: float | None = None, final_model: str | None = None, error: str | None = None,
                flow_run_id: str | None = None) -> JobEventSpec:
    """`spotshift.job.finished` (succeeded), `spotshift.job.failed` or `spotshift.job.cancelled`:
    the job ended with `status`, its instances stopped; its cost and (finished) final model."""
    if status not in ENDED_EVENTS:
        raise ValueError(f"status {status.value!r} does not end a job. Choose between "
                         f"{', '.join(s.value for s in ENDED_EVENTS)}")
    payload = {"status": status.value, "message": _cut(message), "cost_usd": cost_usd, "error": _cut(error)}
    if status is JobStatus.SUCCEEDED:
        payload |= {"final_model": final_model, "on_demand_usd": on_demand_usd,
                    "saving_usd": None if on_demand_usd is None or cost_usd is None
                    else round(on_demand_usd - cost_usd, 4)}
    return _spec(ENDED_EVENTS[status], job, payload=payload, key="ended", flow_run_id=flow_run_id)


def job_placed(job: Job, workload: Workload, *, plan: Plan | None = None, reason: str = "submitted",
               cost_usd: float | None = None, flow_run_id: str | None = None):
    """Emit `spotshift.job.placed` (see placed_event); the Event sent, or None. Never raises."""
    return _safely(placed_event, job, workload, plan=plan, reason=reason, cost_usd=cost_usd, flow_run_id=flow_run_id)


def job_preempted(job: Job, workload: Workload, *, detail: str = "", step: int | None = None,
                  cost_usd: float | None = None, flow_run_id: str | None = None):
    """Emit `spotshift.job.preempted` (see preempted_event); the Event sent, or None. Never raises."""
    return _safely(preempted_event, job, workload, detail=detail, step=step, cost_usd=cost_usd,
                   flow_run_id=flow_run_id)


def job_stalled(job: Job, workload: Workload, *, detail: str = "", step: int | None = None,
                cost_usd: float | None = None, flow_run_id: str | None = None):
    """Emit `spotshift.job.stalled` (see stalled_event); the Event sent, or None. Never raises."""
    return _safely(stalled_event, job, workload, detail=detail, step=step, cost_usd=cost_usd,
                   flow_run_id=flow_run_id)


def job_moved(job: Job, old: Workload, new: Workload, *, reason: MigrationReason, expected_saving_usd: float,
              checkpoint_step: int | None, downtime_seconds: float | None = None, cost_usd: float | None = None,
              flow_run_id: str | None = None):
    """Emit `spotshift.job.moved` (see moved_event); the Event sent, or None. Never raises."""
    return _safely(moved_event, job, old, new, reason=reason, expected_saving_usd=expected_saving_usd,
                   checkpoint_step=checkpoint_step, downtime_seconds=downtime_seconds, cost_usd=cost_usd,
                   flow_run_id=flow_run_id)


def job_finished(job: Job, *, cost_usd: float | None = None, on_demand_usd: float | None = None,
                 final_model: str | None = None, message: str = "", flow_run_id: str | None = None):
    """Emit `spotshift.job.finished`: the job succeeded (see ended_event). Never raises."""
    return _safely(ended_event, job, JobStatus.SUCCEEDED, message=message, cost_usd=cost_usd,
                   on_demand_usd=on_demand_usd, final_model=final_model, flow_run_id=flow_run_id)


def job_failed(job: Job, *, error: str | None = None, cost_usd: float | None = None, message: str = "",
               flow_run_id: str | None = None):
    """Emit `spotshift.job.failed`: the job ended failed, `error` says why (see ended_event). Never raises."""
    return _safely(ended_event, job, JobStatus.FAILED, message=message, cost_usd=cost_usd, error=error,
                   flow_run_id=flow_run_id)


def job_cancelled(job: Job, *, message: str = "", cost_usd: float | None = None, flow_run_id: str | None = None):
    """Emit `spotshift.job.cancelled`: the job was cancelled, `message` says by what (see ended_event). Never raises."""
    return _safely(ended_event, job, JobStatus.CANCELLED, message=message, cost_usd=cost_usd,
                   flow_run_id=flow_run_id)


def job_ended(job: Job, status: JobStatus, *, message: str = "", cost_usd: float | None = None,
              on_demand_usd: float | None = None, final_model: str | None = None, error: str | None = None,
              flow_run_id: str | None = None):
    """Emit the event of the status the job ended with (finished, failed, cancelled). Never raises."""
    return _safely(ended_event, job, status, message=message, cost_usd=cost_usd, on_demand_usd=on_demand_usd,
                   final_model=final_model, error=error, flow_run_id=flow_run_id)
