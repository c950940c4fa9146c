"""Optimizer agent: the policy's placement for a job, recorded in the ledger, shown as a table."""

from __future__ import annotations

from datetime import datetime

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from spotshift.models import MarketSnapshot, Plan
from spotshift.lifecycle.plans import Wait, plan_place
from spotshift.policy.state import JobState
from tasks.retries import STORE_WRITE_RETRY


def _row(rank: int, o) -> dict:
    return {"rank": rank, "instance": o.instance_type, "zone": o.zone, "market": str(o.market),
            "usd_per_hour": round(o.usd_per_hour, 4), "risk": o.interruption.bucket or "unknown",
            "source": o.source, "observed_at": o.observed_at.isoformat()}  # issue 11: where each price came from


@task(name="optimizer", cache_policy=NO_CACHE, task_run_name="plan-{state.job_id}")
def plan_placement(state: JobState, snapshot: MarketSnapshot, now: datetime, ledger,
                   blocked: frozenset = frozenset(), policy: str = "spotshift") -> Plan | Wait:
    """The policy's placement over the snapshot (a Wait when it would rather idle for capacity);
    a plan goes to the ledger and a table artifact."""
    plan = plan_place(state, snapshot, now, blocked, policy)
    if isinstance(plan, Wait):
        get_run_logger().info("No launch now: %s", plan.reason)
        return plan
    ledger.record_plan(plan)
    create_table_artifact(
        key=f"plan-{state.job_id}",
        table=[_row(i, o) for i, o in enumerate([plan.offer, *plan.alternatives[:9]])],
        description=f"Plan {plan.id}: ${plan.expected_cost_usd:.2f} over {plan.expected_hours:.2f} h; {plan.reason}",
    )
    get_run_logger().info("Plan %s: %s %s in %s at $%.3f/h (%s)", plan.id, plan.offer.instance_type,
                          plan.offer.market, plan.offer.zone, plan.offer.usd_per_hour, plan.reason)
    return plan


@task(name="record-plan", cache_policy=NO_CACHE, task_run_name="record-plan-{plan.job_id}", **STORE_WRITE_RETRY)
def record_plan(ledger, plan: Plan) -> Plan:
    """A plan decided outside the optimizer (a move's, spotshift.lifecycle.plans.plan_move) in the
    ledger: one idempotent upsert of its row, retried when the store did not answer."""
    ledger.record_plan(plan)
    return plan
