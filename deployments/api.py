"""The Python API: submit a job, read its status, answer an approval.

    from deployments import api
    job_id = api.submit(JobCreate(...))                # runs the train-job deployment
    api.status(job_id)
    api.approve(job_id)                                # or reject=True
    api.cancel(job_id)                                 # flow run, instances, workloads; twice is fine
"""

from __future__ import annotations

from typing import Any, Callable, Literal

from flows.runtime import TRAIN_JOB_DEPLOYMENT
from spotshift.models import Job, JobCreate, JobStatus, JobUpdate

RunMode = Literal["deployment", "inline", "none"]


def _runtime(runtime):
    if runtime is not None:
        return runtime
    from flows.runtime import Runtime

    return Runtime.from_settings()


def _stores(runtime):
    """The runtime's stores, or the configured ones (no AWS client needed to read a job)."""
    if runtime is not None:
        return runtime
    from flows.runtime import Runtime

    return Runtime.stores_only()


def submit(request: JobCreate, *, run: RunMode = "deployment", runtime: Any = None,
           deployment: str = TRAIN_JOB_DEPLOYMENT, on_upload: Callable[[Any], None] | None = None) -> str:
    """Store the job (idempotent on request.idempotency_key) and start its train-job flow run:
    through the deployment (a worker or `spotshift serve` runs it; the fleet deployment takes the
    job from there), inline in this process (placed, then fleet passes here until it ends), or
    not at all ("none"). Submitting the same key again returns the same job and starts nothing.

    With the EC2 backend the inputs are judged first (deployments.submit_inputs): an S3 input
    outside the bucket's jobs/ and every granted data prefix raises InputsRefused naming the field
    and stores nothing; a local model or dataset is uploaded under the job's prefix (each upload
    is logged, stored as a job event and passed to `on_upload`) and the job points there."""
    from deployments.submit_inputs import ProjectBucket, admit

    rt = _runtime(runtime) if run == "inline" else _stores(runtime)  # a deployment's run builds its own
    job = rt.jobs.find_by_idempotency_key(request.idempotency_key)  # submitted before: nothing judged again
    if job is None:
        admitted = admit(request, rt.settings, ProjectBucket(rt), on_upload=on_upload)
        job = rt.jobs.create(admitted.request, now=rt.clock(), job_id=admitted.job_id)
        if admitted.job_id is not None and job.id != admitted.job_id:
            admitted.abandon()  # the same key was stored meanwhile: that job keeps its own inputs
        else:
            for event in admitted.events(rt.clock()):
                rt.jobs.append_event(job.id, event)
    if job.status is not JobStatus.PENDING or job.flow_run_id:
        return job.id  # already submitted: one job, one flow run
    if run == "deployment":
        from prefect.deployments import run_deployment

        flow_run = run_deployment(deployment, parameters={"job_id": job.id}, timeout=0)
        rt.jobs.update(job.id, JobUpdate(flow_run_id=str(flow_run.id)), now=rt.clock())
    elif run == "inline":  # the controller in this process: train-job, then fleet passes until it ended
        from flows.controller import run_job

        run_job(job.id, runtime=rt)
    return job.id


def get_job(job_id: str, *, runtime: Any = None) -> Job:
    return _stores(runtime).jobs.get(job_id)


def status(job_id: str, *, runtime: Any = None) -> dict:
    """The job's state, steps, workloads, migrations and cost so far."""
    from flows.train_job import summary

    return summary(_stores(runtime), job_id)


def list_jobs(status: JobStatus | None = None, *, runtime: Any = None) -> list[Job]:
    return _stores(runtime).jobs.list(status)


def approve(job_id: str, *, reject: bool = False, comment: str = "", runtime: Any = None) -> str:
    """Answer the approval a job's flow run is paused on; returns the flow run id."""
    from prefect.client.orchestration import get_client
    from prefect.flow_runs import resume_flow_run

    job = _stores(runtime).jobs.get(job_id)
    if not job.flow_run_id:
        raise ValueError(f"job {job_id} has no flow run yet: nothing to approve")
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(job.flow_run_id)
    if flow_run.state is None or not flow_run.state.is_paused():
        state = flow_run.state.name if flow_run.state else "unknown"
        raise ValueError(f"job {job_id}'s flow run is {state}, not waiting for an approval")
    resume_flow_run(flow_run.id, run_input={"approved": not reject, "comment": comment})
    return str(flow_run.id)


def cancel(job_id: str, *, runtime: Any = None, flow_runs: Any = None, reason: str = "cancelled by the user") -> dict:
    """Cancel the job: its flow run is cancelled through Prefect, every instance of the job is
    terminated, its open workloads are closed and billed, checkpoints stay in S3, the job ends
    CANCELLED. Cancelling twice is not an error; a job that already ended raises WrongJobState."""
    from dataclasses import asdict

    from flows.cancel import PrefectFlowRuns, cancel_job

    outcome = cancel_job(_runtime(runtime), job_id, flow_runs or PrefectFlowRuns(), reason=reason)
    return asdict(outcome)
