"""UserProxy agent: approves plans and moves within the job's policy, or asks a human for a typed
answer from the Prefect UI or `spotshift approve` (resume_flow_run). A run of a deployment is
suspended while it waits (its process ends; the answer reschedules it, and on its rerun the same
question, asked under the same key, returns the answer); a run without a deployment (in this
process: tests, the demo, `--run inline`) is paused and waits in its process."""

from __future__ import annotations

from datetime import datetime
from typing import Callable

from prefect import get_run_logger, task
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run, suspend_flow_run
from prefect.input import RunInput

from spotshift.approval import ApprovalRequest, auto_decision
from spotshift.models import ApprovalDecision, ApprovalPolicy, Decider, utcnow


class ApprovalInput(RunInput):
    """The answer a human types in the Prefect UI (or `spotshift approve <job> [--reject]`)."""

    approved: bool = False
    comment: str = ""


def from_deployment() -> bool:
    """Whether the current flow run belongs to a deployment (only those can be suspended)."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    return bool(context is not None and context.flow_run is not None and context.flow_run.deployment_id)


def ask_human(request: ApprovalRequest, timeout_s: float, now: datetime | None = None,
              key: str | None = None) -> ApprovalDecision:
    """Ask a human; no answer in time = rejected. `key` names the question: the rerun of a suspended
    run must ask under the same key to get its answer back (default: the subject and the time).

    Must run in the flow (not inside a task): a paused or suspended flow run is what the UI shows
    as waiting, with the form for the answer.
    """
    logger = get_run_logger()
    key = key or f"approve-{request.subject}-{(now or utcnow()).timestamp():.0f}"
    logger.info("Waiting up to %.0f s for a human to approve the %s of job %s",
                timeout_s, request.subject, request.job_id)
    form = ApprovalInput.with_initial_data(description=request.markdown())
    if from_deployment():  # no process waits: the run ends here and is rescheduled by the answer
        answer = suspend_flow_run(wait_for_input=form, timeout=int(timeout_s), key=key)
        return ApprovalDecision(approved=answer.approved, decided_by=Decider.HUMAN, decided_at=utcnow(),
                                comment=answer.comment)
    try:
        answer = pause_flow_run(wait_for_input=form, timeout=int(timeout_s),
                                poll_interval=1 if timeout_s < 60 else 10, key=key)
    except FlowPauseTimeout:
        logger.warning("No answer within %.0f s: the %s is not approved", timeout_s, request.subject)
        _resume_running()
        return ApprovalDecision(approved=False, decided_by=Decider.TIMEOUT, decided_at=utcnow(),
                                comment=f"no answer within {timeout_s:.0f} s")
    return ApprovalDecision(approved=answer.approved, decided_by=Decider.HUMAN, decided_at=utcnow(),
                            comment=answer.comment)


def _resume_running() -> None:
    """An unanswered pause leaves the flow run Paused on the server (or failed by its expiry); the
    run goes on with the safe default, so it says it is Running again."""
    from prefect.client.orchestration import get_client
    from prefect.context import FlowRunContext
    from prefect.states import Running

    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(context.flow_run.id, Running(message="approval timed out: not approved"),
                                  force=True)


@task(name="user-proxy-policy", task_run_name="policy-{request.subject}-{request.job_id}")
def policy_decision(policy: ApprovalPolicy, request: ApprovalRequest, now: datetime) -> ApprovalDecision | None:
    """The approval policy's own answer (None = a human must decide)."""
    decision = auto_decision(policy, request, now)
    if decision is not None:
        get_run_logger().info("%s %s by policy: %s", request.subject,
                              "approved" if decision.approved else "refused", decision.comment)
    return decision


def approve(policy: ApprovalPolicy, request: ApprovalRequest, now: datetime,
            on_ask: Callable[[], object] | None = None, key: str | None = None) -> ApprovalDecision:
    """The UserProxy: the policy decides where it may (decided once), a human otherwise (`on_ask`
    runs first, e.g. to show the job as awaiting approval; `key`: ask_human's)."""
    decision = policy_decision(policy, request, now)
    if decision is not None:
        return decision
    if on_ask is not None:
        on_ask()
    return ask_human(request, policy.timeout_s, now, key=key)
