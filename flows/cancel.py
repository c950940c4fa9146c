"""Cancel a job: its flow run to Cancelling (Prefect), the job to CANCELLED, every instance of the
job terminated, its open workloads closed and billed. Checkpoints stay in S3. Safe to repeat.
Called by the CLI and the HTTP API, outside any flow run: its store writes are the tasks' .fn."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from flows.runtime import Runtime
from spotshift.job_actions import plan_cancel
from spotshift.models import JobStatus, JobUpdate
from spotshift.stores import InvalidTransition
from tasks import events
from tasks.jobs import transition_job, update_job
from tasks.workloads import record_workload

log = logging.getLogger("spotshift.cancel")


class PrefectFlowRuns:
    """The flow runs of jobs, through the Prefect client (the configured PREFECT_API_URL)."""

    def state(self, flow_run_id: str) -> str | None:
        """The run's state type (RUNNING, PAUSED, ...), or None when the server has no such run."""
        from prefect.client.orchestration import get_client
        from prefect.exceptions import ObjectNotFound

        with get_client(sync_client=True) as client:
            try:
                flow_run = client.read_flow_run(flow_run_id)
            except ObjectNotFound:
                return None
        return flow_run.state.type.value if flow_run.state else None

    def cancel(self, flow_run_id: str, message: str) -> str:
        """Ask for the run's cancellation (its worker or runner stops it); the state it is in now."""
        from prefect.client.orchestration import get_client
        from prefect.states import Cancelling

        with get_client(sync_client=True) as client:
            result = client.set_flow_run_state(flow_run_id, Cancelling(message=message))
        return result.state.type.value if result.state else "unknown"


@dataclass(frozen=True)
class CancelOutcome:
    job_id: str
    status: str
    flow_run_cancelled: bool
    stopped_instances: list[str]
    closed_workloads: list[str]
    cost_usd: float


def cancel_job(rt: Runtime, job_id: str, flow_runs, *, reason: str = "cancelled by the user") -> CancelOutcome:
    """Cancel `job_id` (JobNotFound, or WrongJobState for a job that already ended)."""
    job = rt.jobs.get(job_id)
    if rt.backend is None:
        raise RuntimeError("cancelling a job needs the compute backend its instances run on (Runtime.from_settings)")
    run_state = flow_runs.state(job.flow_run_id) if job.flow_run_id else None
    now = rt.clock()
    plan = plan_cancel(job, rt.ledger.open_workloads(job_id), run_state, now)
    if plan.cancel_flow_run:
        flow_runs.cancel(plan.cancel_flow_run, reason)
    cancelled_now = False
    if plan.close_job:  # before the instances go, so a still-running flow cannot launch another
        try:
            transition_job.fn(rt.jobs, job_id, JobStatus.CANCELLED, now, message=reason)
            cancelled_now = True
        except InvalidTransition as exc:
            if exc.current is not JobStatus.CANCELLED:  # it ended meanwhile: leave it as it ended
                raise
    stopped = [i.instance_id for i in rt.backend.list(job_id)]
    for instance_id in stopped:
        rt.backend.stop(instance_id, reason)
    for workload in plan.close_workloads:
        record_workload.fn(rt.ledger, workload)
    cost = sum(w.cost_usd for w in rt.ledger.workloads(job_id))
    closed = update_job.fn(rt.jobs, job_id, JobUpdate(cost_usd=cost), now)
    if cancelled_now:
        events.job_cancelled(closed, message=reason, cost_usd=cost)
    log.info("Job %s cancelled: flow run %s, instances %s, workloads %s", job_id, plan.cancel_flow_run,
             stopped, [w.id for w in plan.close_workloads])
    return CancelOutcome(job_id=job_id, status=rt.jobs.get(job_id).status.value,
                         flow_run_cancelled=plan.cancel_flow_run is not None, stopped_instances=stopped,
                         closed_workloads=[w.id for w in plan.close_workloads], cost_usd=round(cost, 4))
