"""One builder of the JobState the policy decides over, from what is stored about a job: its
workloads (the ledger), its measurements and step (the job store), the market's outlook, `now`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from spotshift.models import EndReason, Job, Offer, Workload
from spotshift.planning import offer_of_workload, remaining_work
from spotshift.policy.state import JobState, SpotOutlook
from spotshift.sizing import work_rates


@dataclass(frozen=True)
class Stint:
    """One placement of a job: an offer it ran on from `started_at` until `ended_at` (None = still on
    it), why it ended, and whether its trainer has trained yet (False = still in its changeover)."""

    offer: Offer
    started_at: datetime
    ended_at: datetime | None = None
    end_reason: EndReason | None = None
    trained: bool = True
    cost_usd: float = 0.0


@dataclass(frozen=True)
class JobFacts:
    """What a JobState is built from, besides the stints: the same fields live and in a replay."""

    job_id: str
    deadline: datetime
    started_at: datetime  # when the job was submitted: the start of its deadline window
    remaining_work: float  # V100-hours
    changeover_hours: float
    total_work: float | None = None
    budget_usd: float | None = None
    checkpoint_gb: float = 0.0
    checkpoint_region: str | None = None
    home_zone: str | None = None  # None = the zone of the first stint
    outlook: SpotOutlook | None = None
    work_rates: Mapping[str, float] | None = None  # instance type -> V100-hours/hour of this job


def job_state(facts: JobFacts, stints: Sequence[Stint]) -> JobState:
    """The JobState at the end of `stints` (in start order). The rules, the same for every caller:
    the job runs on the last stint while it is open; it is in its changeover until its trainer
    trains (ready at start + changeover); it was preempted when the last stint ended so and none
    is open; every stint after the first is a move; spent = the closed stints' cost."""
    last = stints[-1] if stints else None
    current = last if last is not None and last.ended_at is None else None
    changeover = timedelta(hours=facts.changeover_hours)
    return JobState(
        job_id=facts.job_id, remaining_work=facts.remaining_work, deadline=facts.deadline,
        current=current.offer if current else None,
        placed_at=current.started_at if current else None,
        ready_at=current.started_at + changeover if current and not current.trained else None,
        changeover_hours=facts.changeover_hours, checkpoint_gb=facts.checkpoint_gb,
        checkpoint_region=facts.checkpoint_region, total_work=facts.total_work, started_at=facts.started_at,
        moves=max(0, len(stints) - 1), last_move_at=stints[-1].started_at if len(stints) > 1 else None,
        was_preempted=current is None and last is not None and last.end_reason is EndReason.PREEMPTED,
        home_zone=facts.home_zone or (stints[0].offer.zone if stints else None),
        budget_usd=facts.budget_usd, spent_usd=sum(s.cost_usd for s in stints if s.ended_at is not None),
        outlook=facts.outlook, work_rates=facts.work_rates,
    )


def stints_of(workloads: Sequence[Workload], training_workload_id: str | None, now: datetime) -> list[Stint]:
    """The job's workloads (ledger rows) as stints, in start order."""
    return [
        Stint(offer=offer_of_workload(w, now), started_at=w.started_at, ended_at=w.ended_at,
              end_reason=w.end_reason, trained=w.id == training_workload_id or not w.open, cost_usd=w.cost_usd)
        for w in sorted(workloads, key=lambda w: w.started_at)
    ]


def live_job_state(job: Job, workloads: Sequence[Workload], *, now: datetime, default_changeover_hours: float,
                   checkpoint_region: str | None, outlook: SpotOutlook | None = None) -> JobState:
    """The JobState of a stored job: what train-job, continuous-scout and an adopting run all use
    (the step is the job's, which the run that watches the trainer keeps up to date)."""
    m = job.measured
    rates = work_rates(job.sizing) if job.sizing is not None else None
    measured_on = (rates or {}).get(m.rate_instance_type or "") if rates is not None else None
    facts = JobFacts(
        job_id=job.id, deadline=job.request.deadline, started_at=job.created_at,
        remaining_work=remaining_work(job.step, job.request.max_steps, m.steps_per_hour, m.rate_instance_type,
                                      job.total_work or 0.0, work_units_per_hour=measured_on),
        changeover_hours=m.changeover_hours if m.changeover_hours is not None else default_changeover_hours,
        total_work=job.total_work, budget_usd=job.request.budget_usd, checkpoint_gb=m.checkpoint_gb,
        checkpoint_region=checkpoint_region, outlook=outlook, work_rates=rates,
    )
    return job_state(facts, stints_of(workloads, m.training_workload_id, now))
