"""What a user's action on a job must do, decided from the job's state alone (pure): cancel's plan,
and whether an approval can be answered now."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from spotshift.billing import billed_seconds
from spotshift.models import EndReason, Job, JobStatus, Workload

# Prefect state types after which a flow run needs no cancelling.
FINAL_FLOW_RUN_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "CRASHED", "CANCELLING"})


class WrongJobState(ValueError):
    """The action needs the job in another status; carries the current one (HTTP 409)."""

    def __init__(self, job: Job, action: str, needs: str):
        super().__init__(f"job {job.id} is {job.status.value}: cannot {action} it ({needs})")
        self.job_id, self.status, self.action = job.id, job.status, action


@dataclass(frozen=True)
class CancelPlan:
    """The steps of a cancel: each is safe to repeat, so cancelling twice is not an error.

    cancel_flow_run: the flow run to move to Cancelling (None: no run, or it is gone or over).
    close_job: move the job to CANCELLED (False when it already is).
    close_workloads: the open workloads, closed and billed (end reason cancelled) at `now`.
    Instances tagged with the job are always terminated: the backend, not the ledger, knows them all.
    """

    job_id: str
    cancel_flow_run: str | None
    close_job: bool
    close_workloads: tuple[Workload, ...]


def plan_cancel(job: Job, open_workloads: list[Workload], flow_run_state: str | None, now: datetime) -> CancelPlan:
    """The cancel of `job`: `flow_run_state` is its flow run's Prefect state type (None when the
    job has no flow run or the run is gone). A succeeded or failed job cannot be cancelled."""
    if job.status in (JobStatus.SUCCEEDED, JobStatus.FAILED):
        raise WrongJobState(job, "cancel", "it has already ended")
    live_run = flow_run_state is not None and flow_run_state not in FINAL_FLOW_RUN_STATES
    closed = tuple(closed_workload(w, EndReason.CANCELLED, now) for w in open_workloads if w.open)
    return CancelPlan(job_id=job.id, cancel_flow_run=job.flow_run_id if live_run else None,
                      close_job=job.status is not JobStatus.CANCELLED, close_workloads=closed)


def closed_workload(workload: Workload, reason: EndReason, now: datetime) -> Workload:
    """The workload ended at `now` for `reason`, billed per second with the one-minute minimum."""
    return workload.model_copy(update={"ended_at": now, "end_reason": reason,
                                       "billed_seconds": billed_seconds(workload.started_at, now)})


def check_answerable(job: Job) -> None:
    """An approval can be answered only while the job waits for one."""
    if job.status is not JobStatus.AWAITING_APPROVAL:
        raise WrongJobState(job, "approve or reject", "only a job awaiting approval can be answered")
