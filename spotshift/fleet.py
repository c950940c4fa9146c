"""One fleet pass's judgment: every running job's instance (from one listing per region) and heartbeat
(a conditional read) judged by the pure monitor, with the action each finding calls for.

Pure: the caller lists the instances, reads the heartbeats and passes `now`; this module keeps, per
job, what the next pass needs (FleetMark: the heartbeat's ETag, the last sign of life, the rate meter).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import Enum
from typing import Iterable, Mapping, Sequence

from spotshift.instances import GONE_STATES, LOST_STATES, InstanceInfo
from spotshift.models import Job, JobMeasurements, JobStatus, Workload
from spotshift.monitoring import RateMeter, Verdict, assess, measurements_after
from training.contract import Progress, TrainerState

# a fleet pass lists spotshift.instances.LISTED_STATES (one DescribeInstances filter), terminated ones
# included: a job's instance missing from its region's listing is gone, or too new to be listed yet


class Finding(str, Enum):
    HEALTHY = "healthy"  # training (or starting) on a live instance
    PREEMPTED = "preempted"  # the instance is gone or going, or the trainer checkpointed and stopped
    STALLED = "stalled"  # no fresh heartbeat for too long
    DONE = "done"
    FAILED = "failed"  # another attempt may work
    FAILED_PERMANENTLY = "failed_permanently"
    ORPHAN = "orphan"  # a spotshift-tagged instance no open workload owns
    ABANDONED = "abandoned"  # a job between two states whose action run stopped (its lease ran out)


class Action(str, Enum):
    NONE = "none"
    RECOVER = "recover"  # resume from the last checkpoint elsewhere (recover flow)
    RESTART = "restart"  # stop the instance, resume from the last checkpoint (a stalled or failed trainer)
    FINALIZE = "finalize"  # close the job: succeeded, or failed for good
    TERMINATE_ORPHAN = "terminate_orphan"
    ADOPT = "adopt"  # reconcile the job with EC2 and roll its migration forward (a crashed action run)


ACTION_OF: dict[Finding, Action] = {
    Finding.HEALTHY: Action.NONE,
    Finding.PREEMPTED: Action.RECOVER,
    Finding.STALLED: Action.RESTART,
    Finding.DONE: Action.FINALIZE,
    Finding.FAILED: Action.RESTART,
    Finding.FAILED_PERMANENTLY: Action.FINALIZE,
    Finding.ORPHAN: Action.TERMINATE_ORPHAN,
    Finding.ABANDONED: Action.ADOPT,
}

# the statuses a job holds only while an action run works on it (a placement, a recovery, a move)
MID_ACTION_STATUSES = frozenset({JobStatus.PLANNING, JobStatus.PROVISIONING, JobStatus.MIGRATING})
# ... and while its run waits for a human's answer (suspended: its lease_until is the answer's deadline)
ADOPTABLE_STATUSES = MID_ACTION_STATUSES | {JobStatus.AWAITING_APPROVAL}


def action_key(job_id: str, workload_id: str, action: Action) -> str:
    """The idempotency key of an action: two passes that find the same thing start one flow run."""
    return f"{job_id}:{workload_id}:{Action(action).value}"


def move_key(job_id: str, workload_id: str, target: str, declined_until: datetime | None) -> str:
    """The idempotency key of a move continuous-scout decides (a migrate-job run): one per workload,
    target offer (region/zone/type/market) and decline: scouts that decide the same move while its
    run works or waits for a human get that run back; once a human declined it and its quiet time
    is over (`declined_until`, kept with the job), the move may be asked for again."""
    after = f":after-{declined_until.timestamp():.0f}" if declined_until is not None else ""
    return f"{job_id}:{workload_id}:move:{target}{after}"


@dataclass(frozen=True)
class HeartbeatRead:
    """A conditional read of a job's progress.json: `changed` False = the ETag still matched (304) or
    there is still none; `progress` the new heartbeat when changed (None: there is none)."""

    changed: bool
    progress: Progress | None = None
    etag: str | None = None


@dataclass
class FleetMark:
    """What the fleet remembers of one job's current workload between passes."""

    workload_id: str
    last_sign_of_life: datetime  # on the orchestrator's clock: when the heartbeat last changed (or the start)
    etag: str | None = None
    progress: Progress | None = None  # the last heartbeat read
    last_beat: datetime | None = None  # its updated_at (the trainer's clock), to tell a new one
    meter: RateMeter = field(default_factory=RateMeter)
    listed: bool = False  # a pass has seen its instance listed: missing from a listing now, it is gone


@dataclass(frozen=True)
class RunningJob:
    """A running job and its open current workload, as the stores say."""

    job: Job
    workload: Workload


@dataclass(frozen=True)
class JobFinding:
    """One finding of a pass and the action it calls for. `measured`/`step`: what to record for the
    job (None = nothing new)."""

    job_id: str
    workload_id: str
    instance_id: str | None
    finding: Finding
    action: Action
    region: str
    verdict: Verdict | None = None
    step: int | None = None
    measured: JobMeasurements | None = None
    detail: str = ""
    attempt: str = ""  # tells apart two findings of the same kind on the same workload (an adoption's lease)

    @property
    def key(self) -> str:
        return action_key(self.job_id, self.workload_id, self.action) + (f":{self.attempt}" if self.attempt else "")

    @property
    def row(self) -> dict[str, str]:
        """A row of the pass's table artifact."""
        return {"job": self.job_id, "workload": self.workload_id, "instance": self.instance_id or "",
                "region": self.region, "finding": self.finding.value, "action": self.action.value,
                "step": "" if self.step is None else str(self.step), "detail": self.detail, "key": self.key}


@dataclass(frozen=True)
class FleetJudgment:
    findings: list[JobFinding]
    marks: dict[str, FleetMark]  # job id -> what the next pass starts from

    @property
    def actions(self) -> list[JobFinding]:
        """The findings that call for an action flow run."""
        return [f for f in self.findings if f.action is not Action.NONE]


@dataclass(frozen=True)
class Thresholds:
    stall_seconds: float
    first_heartbeat_seconds: float | None = None
    listing_grace_seconds: float = 60.0  # a new instance may be missing from DescribeInstances this long
    lease_seconds: float = 1800.0  # a job mid-action untouched this long lost its action run (adopted)


def judge_fleet(running: Sequence[RunningJob], instances: Iterable[InstanceInfo],
                heartbeats: Mapping[str, HeartbeatRead], marks: Mapping[str, FleetMark], *, now: datetime,
                listed_regions: Iterable[str], open_workload_ids: Iterable[str], live_job_ids: Iterable[str],
                thresholds: Thresholds, mid_action: Sequence[Job] = ()) -> FleetJudgment:
    """Judge every running job and every listed instance. A job whose region was not listed this
    pass (its listing failed) is judged from its heartbeat alone. Instances must be listed BEFORE
    the open workloads are read: a launch opens its workload before its instance exists, so an
    instance is never seen without its workload (no false orphan)."""
    seen = list(instances)
    by_id = {i.instance_id: i for i in seen}
    listed = set(listed_regions)
    findings, new_marks = [], {}
    for rj in running:
        mark = _mark_for(marks.get(rj.job.id), rj.workload)
        finding = judge_job(rj, by_id.get(rj.workload.instance_id or ""), rj.workload.region in listed,
                            heartbeats.get(rj.job.id), mark, now=now, thresholds=thresholds)
        findings.append(finding)
        new_marks[rj.job.id] = mark
    findings += find_orphans(seen, set(open_workload_ids), set(live_job_ids))
    findings += find_abandoned(mid_action, now=now, lease=timedelta(seconds=thresholds.lease_seconds))
    return FleetJudgment(findings, new_marks)


def _mark_for(previous: FleetMark | None, workload: Workload) -> FleetMark:
    """The previous pass's mark of this workload (a copy), or a fresh one for a new workload."""
    if previous is None or previous.workload_id != workload.id:
        return FleetMark(workload_id=workload.id, last_sign_of_life=workload.started_at)
    return replace(previous, meter=replace(previous.meter))


def judge_job(rj: RunningJob, instance: InstanceInfo | None, region_listed: bool, read: HeartbeatRead | None,
              mark: FleetMark, *, now: datetime, thresholds: Thresholds) -> JobFinding:
    """One running job's finding; updates `mark` with the heartbeat (the monitor's own bookkeeping:
    a new heartbeat of this instance is a sign of life and, while training, a rate sample)."""
    job, w = rj.job, rj.workload
    if read is not None and read.changed:
        mark.progress, mark.etag = read.progress, read.etag
    progress = mark.progress
    step, measured = None, None
    if progress is not None and progress.instance_id == w.instance_id and progress.updated_at != mark.last_beat:
        mark.last_beat, mark.last_sign_of_life = progress.updated_at, now
        step = progress.step
        if progress.state is TrainerState.training:  # not the start-up (model load) nor the last save
            mark.meter.observe(progress.step, now)
            measured = measurements_after(job.measured, mark.meter, w)
    verdict = assess(progress, instance_id=w.instance_id or "", now=now, last_sign_of_life=mark.last_sign_of_life,
                     stall_seconds=thresholds.stall_seconds,
                     first_heartbeat_seconds=thresholds.first_heartbeat_seconds)
    if instance is not None:
        mark.listed = True
    # a new instance may be missing from DescribeInstances for a while; one already seen listed is not
    young = (now - w.started_at).total_seconds() < thresholds.listing_grace_seconds and not mark.listed
    presence_known = region_listed and w.instance_id is not None and not (instance is None and young)
    kind, detail = _finding(verdict, progress, instance, presence_known)
    return JobFinding(job_id=job.id, workload_id=w.id, instance_id=w.instance_id, finding=kind,
                      action=ACTION_OF[kind], region=w.region, verdict=verdict, step=step, measured=measured,
                      detail=detail)


def _finding(verdict: Verdict, progress: Progress | None, instance: InstanceInfo | None,
             presence_known: bool) -> tuple[Finding, str]:
    """The trainer's own word first (done, failed, checkpointed), then the instance's presence."""
    if verdict is Verdict.DONE:
        return Finding.DONE, "the trainer finished"
    if verdict is Verdict.FAILED_PERMANENTLY:
        return Finding.FAILED_PERMANENTLY, (progress.error if progress else None) or "failed permanently"
    if verdict is Verdict.FAILED:
        return Finding.FAILED, (progress.error if progress else None) or "the trainer failed"
    if verdict is Verdict.CHECKPOINTED:
        return Finding.PREEMPTED, getattr(progress, "stop_reason", None) or "checkpointed and stopped"
    if presence_known and (instance is None or instance.state in LOST_STATES):
        state = "not listed" if instance is None else instance.state
        return Finding.PREEMPTED, f"instance {state}" + (f" ({instance.state_reason})"
                                                         if instance is not None and instance.state_reason else "")
    if verdict is Verdict.STALLED:
        return Finding.STALLED, "no fresh heartbeat"
    return Finding.HEALTHY, verdict.value


def find_orphans(instances: Iterable[InstanceInfo], open_workload_ids: set[str],
                 live_job_ids: set[str]) -> list[JobFinding]:
    """Tagged instances, not already going, that no open workload owns (an instance without a
    workload tag: that no live job owns)."""
    out = []
    for i in instances:
        if i.job_id is None or i.state in GONE_STATES:
            continue
        owned = i.workload_id in open_workload_ids if i.workload_id else i.job_id in live_job_ids
        if not owned:
            out.append(JobFinding(job_id=i.job_id, workload_id=i.workload_id or i.instance_id,
                                  instance_id=i.instance_id, finding=Finding.ORPHAN, action=Action.TERMINATE_ORPHAN,
                                  region=i.region, detail=f"{i.state}, no open workload"))
    return out


def find_abandoned(jobs: Iterable[Job], *, now: datetime, lease: timedelta) -> list[JobFinding]:
    """Jobs left between two states (placing, recovering, moving, or waiting for an answer past its
    deadline) whose action run has not touched them within `lease` and holds no lease beyond now:
    the run died (SIGKILL, a lost worker, a suspended run whose answer never came). An
    adopting action rolls each forward; the key carries the job's last update, so that a second
    adoption after a first one that died too is started. A zero `lease` (no other process acts on
    these jobs: the controller in one process) takes every such job for abandoned."""
    out = []
    for job in jobs:
        if job.status not in ADOPTABLE_STATUSES:
            continue
        leased = job.lease_until is not None and now <= job.lease_until
        if lease > timedelta(0) and (leased or now - job.updated_at <= lease):
            continue
        out.append(JobFinding(job_id=job.id, workload_id=job.current_workload_id or "none", instance_id=None,
                              finding=Finding.ABANDONED, action=Action.ADOPT, region="",
                              detail=f"{job.status.value}, untouched since {job.updated_at.isoformat()}",
                              attempt=f"{job.updated_at.timestamp():.0f}"))
    return out
