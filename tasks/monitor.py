"""Monitor agent: watches one instance's heartbeat (progress.json) and the compute backend until
something needs the flow: done, stopped, failed, stalled, taken back, or a re-scout is due."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable
from uuid import UUID

import httpx
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import ArtifactUpdate

from spotshift.aws.errors import SpotshiftAwsError
from spotshift.aws.s3 import get_if_changed
from spotshift.instances import LOST_STATES
from spotshift.loss_curve import loss_curve_key, render_loss_curve
from spotshift.models import Job, JobMeasurements, JobStatus, JobUpdate, Workload
from spotshift.monitoring import RateMeter, Verdict, assess, measurements_after
from training.contract import METRICS, Progress, TrainerState, parse_metrics, read_progress
from training.storage import S3Store



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
class LossCurve:
    """The loss-curve artifact of one watch: one version, rewritten in place when metrics.jsonl changed."""

    artifact_id: UUID | None = None
    etag: str | None = None  # of the metrics.jsonl last read: a conditional GET skips an unchanged one
    last_step: int = -1  # step of the newest record shown


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
    loss_curve: LossCurve = field(default_factory=LossCurve)


def new_watch(workload: Workload, job_id: str, *, progress_artifact: bool = False) -> Watch:
    """A watch of the workload; `progress_artifact`: with a progress artifact that the watch moves
    (the action runs that only carry a workload between two states make none)."""
    artifact = create_progress_artifact(progress=0.0, key=f"progress-{job_id}", description=(
        f"job {job_id} on {workload.instance_type} in {workload.zone}")) if progress_artifact else None
    return Watch(workload=workload, meter=RateMeter(), artifact_id=artifact, last_sign_of_life=workload.started_at)


@task(name="monitor", cache_policy=NO_CACHE, task_run_name="watch-{watch.workload.instance_id}")
def watch_instance(watch: Watch, *, s3: Any, output: str, backend: Any, jobs: Any, job_id: str,
                   clock: Callable[[], datetime], sleep: Callable[[float], None], poll_seconds: float,
                   stall_seconds: float, wall_budget_s: float | None = None, flow_run_id: str = "",
                   first_heartbeat_seconds: float | None = None) -> WatchOutcome:
    """Poll until the instance needs the flow; refreshes the job's lease, the progress artifact and
    the loss-curve artifact (once more as the watch ends, so that it shows the whole curve)."""
    w = watch.workload
    waited = 0.0
    while True:
        now = clock()
        progress = read_progress(s3, output)
        measured = _note_heartbeat(watch, progress, now)
        verdict = assess(progress, instance_id=w.instance_id or "", now=now,
                         last_sign_of_life=watch.last_sign_of_life or w.started_at, stall_seconds=stall_seconds,
                         first_heartbeat_seconds=first_heartbeat_seconds)
        job = jobs.update(job_id, JobUpdate(step=watch.last_step, measured=measured), now=now)  # also the job's lease
        watch.measured = job.measured
        outcome = _needs_flow(watch, verdict, progress, job, backend, flow_run_id)
        if outcome is None and wall_budget_s is not None and waited >= wall_budget_s:
            outcome = WatchOutcome(verdict, progress, rescout_due=True)
        refresh_loss_curve(watch.loss_curve, s3=s3, output=output, job_id=job_id,
                           trained_to=None if outcome else watch.last_step)
        if outcome is not None:
            return outcome
        sleep(poll_seconds)
        waited += poll_seconds


def _note_heartbeat(watch: Watch, progress: Progress | None, now: datetime) -> JobMeasurements | None:
    """A new heartbeat of this instance: a sign of life, a rate sample, the progress artifact moved;
    the job's measurements to store when they changed."""
    w, measured = watch.workload, None
    if progress is not None and progress.instance_id == w.instance_id and progress.updated_at != watch.last_beat:
        watch.last_beat, watch.last_sign_of_life = progress.updated_at, now
        if progress.state is TrainerState.training:  # not the start-up (model load) nor the last save
            watch.meter.observe(progress.step, now)
            measured = measurements_after(watch.measured, watch.meter, w)
        if progress.step != watch.last_step:
            watch.last_step = progress.step
            if watch.artifact_id is not None:
                update_progress_artifact(watch.artifact_id, progress=100.0 * progress.step / progress.max_steps)
    return measured


def _needs_flow(watch: Watch, verdict: Verdict | None, progress: Progress | None, job: Job, backend: Any,
                flow_run_id: str) -> WatchOutcome | None:
    """Why the flow must act now (another run took the job, the trainer ended or stalled, the
    instance is gone), or None to keep watching."""
    logger, w = get_run_logger(), watch.workload
    if flow_run_id and job.flow_run_id not in (None, flow_run_id):
        return WatchOutcome(verdict, progress, disowned=True, detail=f"adopted by flow run {job.flow_run_id}")
    if job.status is JobStatus.MIGRATING or job.current_workload_id not in (None, w.id):
        return WatchOutcome(verdict, progress, handover=True, detail="moved by another flow run")
    if verdict in (Verdict.DONE, Verdict.CHECKPOINTED, Verdict.FAILED, Verdict.FAILED_PERMANENTLY, Verdict.STALLED):
        logger.info("Instance %s: %s at step %s", w.instance_id, verdict.value, watch.last_step)
        return WatchOutcome(verdict, progress, detail=getattr(progress, "stop_reason", None) or "")
    lost = [e for e in backend.poll() if e.instance_id == w.instance_id and e.kind in ("preempted", "terminated")]
    if lost or backend.state(w.instance_id) in LOST_STATES:
        logger.warning("Instance %s was taken back (%s)", w.instance_id, lost[0].kind if lost else "state")
        return WatchOutcome(verdict, progress, lost=True, detail="spot interruption")
    return None


def refresh_loss_curve(curve: LossCurve, *, s3: Any, output: str, job_id: str, trained_to: int | None) -> None:
    """Re-render the `loss-curve-<job id>` artifact when metrics.jsonl changed. `trained_to`: the
    heartbeat's step; no read while it is not past the newest record shown (None: read anyway).
    A missing, empty or garbled file leaves the artifact as it was."""
    if trained_to is not None and trained_to <= curve.last_step:
        return
    logger = get_run_logger()
    try:
        read = get_if_changed(s3, S3Store.from_uri(s3, output).uri(METRICS), curve.etag)
        curve.etag = read.etag
        records = parse_metrics(read.data) if read.changed else []
    except (SpotshiftAwsError, ValueError) as exc:  # ValueError: a line that is not a MetricsRecord
        logger.debug("metrics.jsonl of job %s not read: %s", job_id, exc.__class__.__name__)
        return
    if not records:
        return
    markdown = render_loss_curve(job_id, records)
    try:
        if curve.artifact_id is None:
            curve.artifact_id = create_markdown_artifact(
                markdown=markdown, key=loss_curve_key(job_id), description=f"loss of job {job_id} while it trains")
        else:
            with get_client(sync_client=True) as client:
                client.update_artifact(curve.artifact_id, ArtifactUpdate(data=markdown))
    except httpx.HTTPError as exc:  # the Prefect API is away: the next poll tries again
        curve.etag = None
        logger.warning("loss-curve artifact of job %s not written: %s", job_id, exc.__class__.__name__)
        return
    curve.last_step = records[-1].step
