"""Monitor agent: watches one instance's heartbeat (progress.json) and the compute backend until
something needs the flow: done, stopped, failed, stalled, taken back, or a re-scout is due."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable
from uuid import UUID

from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE

from spotshift.models import JobMeasurements, JobStatus, JobUpdate, Workload
from spotshift.monitoring import RateMeter, Verdict, assess, measurements_after
from training.contract import Progress, TrainerState, read_progress

LOST_STATES = frozenset({"shutting-down", "terminated", "stopping", "stopped"})


@dataclass
class WatchOutcome:
    """Why the watch ended. `lost`: the instance is gone (spot interruption or outside stop)."""

    verdict: Verdict | None
    progress: Progress | None
    lost: bool = False
    rescout_due: bool = False
    handover: bool = False  # another flow run (migrate-job) is moving the job
    disowned: bool = False  # another train-job run adopted the job: this one must leave it alone
    detail: str = ""


@dataclass
class Watch:
    """What the monitor carries between watches of the same workload."""

    workload: Workload
    meter: RateMeter
    artifact_id: UUID | None = None
    last_step: int = 0
    last_beat: datetime | None = None  # updated_at of the last heartbeat seen (the trainer's clock)
    last_sign_of_life: datetime | None = None  # when it last changed, on the orchestrator's clock
    measured: JobMeasurements = field(default_factory=JobMeasurements)  # the job's, as last stored


def new_watch(workload: Workload, job_id: str) -> Watch:
    artifact = create_progress_artifact(progress=0.0, key=f"progress-{job_id}",
                                        description=f"job {job_id} on {workload.instance_type} in {workload.zone}")
    return Watch(workload=workload, meter=RateMeter(), artifact_id=artifact, last_sign_of_life=workload.started_at)


@task(name="monitor", cache_policy=NO_CACHE, task_run_name="watch-{watch.workload.instance_id}")
def watch_instance(watch: Watch, *, s3: Any, output: str, backend: Any, jobs: Any, job_id: str,
                   clock: Callable[[], datetime], sleep: Callable[[float], None], poll_seconds: float,
                   stall_seconds: float, wall_budget_s: float | None = None, flow_run_id: str = "",
                   first_heartbeat_seconds: float | None = None) -> WatchOutcome:
    """Poll until the instance needs the flow; refreshes the job's lease and the progress artifact."""
    logger = get_run_logger()
    w = watch.workload
    waited = 0.0
    while True:
        now = clock()
        progress = read_progress(s3, output)
        measured = None
        if progress is not None and progress.instance_id == w.instance_id and progress.updated_at != watch.last_beat:
            watch.last_beat, watch.last_sign_of_life = progress.updated_at, now
            if progress.state is TrainerState.training:  # not the start-up (model load) nor the last save
                watch.meter.observe(progress.step, now)
                measured = measurements_after(watch.measured, watch.meter, w)
            if progress.step != watch.last_step:
                watch.last_step = progress.step
                if watch.artifact_id is not None:
                    update_progress_artifact(watch.artifact_id, progress=100.0 * progress.step / progress.max_steps)
        verdict = assess(progress, instance_id=w.instance_id or "", now=now,
                         last_sign_of_life=watch.last_sign_of_life or w.started_at, stall_seconds=stall_seconds,
                         first_heartbeat_seconds=first_heartbeat_seconds)
        job = jobs.update(job_id, JobUpdate(step=watch.last_step, measured=measured), now=now)  # also the job's lease
        watch.measured = job.measured
        if flow_run_id and job.flow_run_id not in (None, flow_run_id):
            return WatchOutcome(verdict, progress, disowned=True, detail=f"adopted by flow run {job.flow_run_id}")
        if job.status is JobStatus.MIGRATING or job.current_workload_id not in (None, w.id):
            return WatchOutcome(verdict, progress, handover=True, detail="moved by another flow run")
        if verdict in (Verdict.DONE, Verdict.CHECKPOINTED, Verdict.FAILED, Verdict.STALLED):
            logger.info("Instance %s: %s at step %s", w.instance_id, verdict.value, watch.last_step)
            return WatchOutcome(verdict, progress, detail=getattr(progress, "stop_reason", None) or "")
        lost = [e for e in backend.poll() if e.instance_id == w.instance_id and e.kind in ("preempted", "terminated")]
        if lost or backend.state(w.instance_id) in LOST_STATES:
            logger.warning("Instance %s was taken back (%s)", w.instance_id, lost[0].kind if lost else "state")
            return WatchOutcome(verdict, progress, lost=True, detail="spot interruption")
        if wall_budget_s is not None and waited >= wall_budget_s:
            return WatchOutcome(verdict, progress, rescout_due=True)
        sleep(poll_seconds)
        waited += poll_seconds
