"""Pure planners for the three things a flow does to a job: place it, recover it after its
instance was lost, move it. Each returns the Plan (or a Wait) and the approval request it needs;
a recovery's or a move's Migration row is spotshift.lifecycle.migration's state machine: the flows
only sequence the tasks that carry them out."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from spotshift.approval import ApprovalRequest
from spotshift.models import MarketSnapshot, Offer, OfferKey, Plan
from spotshift.policy.policies import get_policy
from spotshift.policy.state import JobState, Move, NoFeasiblePlacement, Stay, Stop
from spotshift.policy.view import hours_to_finish, make_view, move_cost_usd

MAX_ALTERNATIVES = 3


@dataclass(frozen=True)
class Wait:
    """The policy would rather not launch now (it waits for capacity it expects back, as the
    simulator's jobs do); ask again at `until` or when the market changes, whichever is first."""

    reason: str
    until: datetime | None


def plan_for(state: JobState, offer: Offer, now: datetime, reason: str,
             alternatives: list[Offer] | None = None) -> Plan:
    """The Plan of running the rest of the job on `offer` from `now`: hours (changeover included),
    dollars (changeover and checkpoint transfer included), and the slack left at the deadline."""
    hours = hours_to_finish(state, offer) + state.changeover_hours
    hours_left = (state.deadline - now).total_seconds() / 3600
    return Plan(
        job_id=state.job_id, offer=offer, expected_hours=hours,
        expected_cost_usd=hours_to_finish(state, offer) * offer.usd_per_hour + move_cost_usd(state, offer),
        deadline_slack_hours=hours_left - hours, alternatives=list(alternatives or [])[:MAX_ALTERNATIVES],
        reason=reason, created_at=now,
    )


def plan_place(state: JobState, snapshot: MarketSnapshot, now: datetime, blocked: frozenset[OfferKey],
               policy: str) -> Plan | Wait:
    """Where the job should start now, by the policy that moves it; a Wait when the policy would
    rather idle. Raises NoFeasiblePlacement naming why when no unblocked offer finishes in time."""
    chooser = get_policy(policy)
    offers = [o for o in snapshot.offers if o.key not in blocked]
    if not offers:
        raise NoFeasiblePlacement(state.job_id, "every offer is blocked" if snapshot.offers
                                  else "the snapshot holds no offers")
    hours_left = (state.deadline - now).total_seconds() / 3600
    view = make_view(state, snapshot, now, blocked=blocked)
    in_time = [o for o in view.spot + view.on_demand
               if hours_to_finish(state, o) + state.changeover_hours <= hours_left]
    if not in_time:
        raise NoFeasiblePlacement(
            state.job_id, f"no unblocked offer finishes {state.remaining_work:.2f} V100-hours plus a "
            f"{state.changeover_hours:.2f} h changeover in the {hours_left:.2f} h before the deadline")
    decision = chooser.decide(state, snapshot.model_copy(update={"offers": in_time}), now)
    if isinstance(decision, Stay):
        return Wait(reason=f"{chooser.name}: {decision.reason}", until=decision.until)
    if isinstance(decision, Stop):
        raise NoFeasiblePlacement(state.job_id, f"{chooser.name} stopped the job: {decision.reason}")
    target = decision.target
    return plan_for(state, target, now, f"{chooser.name}: {decision.reason}",
                    [o for o in in_time if o.key != target.key])


def plan_move(state: JobState, move: Move, now: datetime) -> Plan:
    """The Plan of a move the policy decided: the target's real expected hours and cost."""
    return plan_for(state, move.target, now, f"{move.reason} move, expected saving ${move.expected_saving_usd:.2f}")


def where(offer: Offer) -> str:
    return f"{offer.instance_type} {offer.market} in {offer.zone} at ${offer.usd_per_hour:.3f}/h"


def place_request(plan: Plan) -> ApprovalRequest:
    """What a human approves before a placement (a first one, or a recovery's)."""
    return ApprovalRequest(job_id=plan.job_id, subject="plan", summary=where(plan.offer),
                           expected_cost_usd=plan.expected_cost_usd, expected_hours=plan.expected_hours,
                           interruption_risk=plan.offer.interruption.bucket or "unknown")


def move_request(plan: Plan, current: Offer, move: Move) -> ApprovalRequest:
    """What a human approves before a running job is moved."""
    return ApprovalRequest(job_id=plan.job_id, subject="move", summary=f"{where(current)} -> {where(plan.offer)}",
                           expected_cost_usd=plan.expected_cost_usd, expected_hours=plan.expected_hours,
                           expected_saving_usd=move.expected_saving_usd, reason=move.reason,
                           interruption_risk=plan.offer.interruption.bucket or "unknown")

