"""Flow-run hooks: when a train-job run fails or is cancelled, terminate every instance tagged with
its job and close the job, so nothing is left running. A crashed run (its process died: a worker
restart, a redeploy) leaves the job as it is: the next fleet pass adopts it (an adopt action)."""

from __future__ import annotations

import logging

from flows.runtime import Runtime
from spotshift.models import EndReason, JobStatus, JobUpdate
from spotshift.stores import InvalidTransition, JobNotFound
from tasks import events
from tasks.jobs import transition_job

log = logging.getLogger("spotshift.hooks")

# flow run id -> the runtime it runs with (hooks get only the flow run, not its objects)
ACTIVE_RUNTIMES: dict[str, Runtime] = {}


def terminate_job_instances(rt: Runtime, job_id: str, reason: str) -> list[str]:
    """Stop every instance of the job the backend still knows; close its open workloads."""
    from tasks.deployer import stop_job_instances
    from tasks.workloads import close_workload

    stopped = stop_job_instances.fn(job_id, reason, rt.backend)
    now = rt.clock()
    for w in rt.ledger.open_workloads(job_id):
        close_workload.fn(rt.ledger, w, EndReason.FAILED, now)
    return stopped


def _cleanup(status: JobStatus):
    def hook(flow, flow_run, state) -> None:
        job_id = (flow_run.parameters or {}).get("job_id")
        rt = ACTIVE_RUNTIMES.pop(str(flow_run.id), None)
        if not job_id or (flow_run.parameters or {}).get("action") == "terminate_orphan":
            return  # an orphan's instance failed to stop: its job (if any) is not this run's to end
        rt = rt or Runtime.from_settings()
        stopped = terminate_job_instances(rt, job_id, f"flow run {state.name}")
        error = f"flow run {flow_run.name} {state.name}: {state.message or ''}"[:500]
        try:
            job = transition_job.fn(rt.jobs, job_id, status, rt.clock(), JobUpdate(error=error),
                                    f"flow run {state.name}")
        except (InvalidTransition, JobNotFound):
            pass  # already terminal (and its event sent by whatever ended it)
        else:
            events.job_ended(job, status, message=f"flow run {state.name}", error=error, flow_run_id=str(flow_run.id),
                             cost_usd=events.job_cost(rt.ledger, job_id, rt.clock()))
        log.warning("Job %s: flow run %s; stopped instances %s", job_id, state.name, stopped)

    return hook


on_failure = _cleanup(JobStatus.FAILED)


def on_crashed(flow, flow_run, state) -> None:
    """The flow process died under the job: its instance, checkpoints and ledger are fine, so nothing
    is stopped; the next fleet pass sees the job left between two states and adopts it."""
    ACTIVE_RUNTIMES.pop(str(flow_run.id), None)
    log.warning("Job %s: flow run %s crashed; left running for adoption",
                (flow_run.parameters or {}).get("job_id"), flow_run.name)


on_cancellation = _cleanup(JobStatus.CANCELLED)
