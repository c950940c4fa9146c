"""The optimizer's first answer: where a job should start (a Plan), by the same policy that moves it."""

from __future__ import annotations

from datetime import datetime

from spotshift.models import OfferKey, MarketSnapshot, Plan
from spotshift.policy.policies import DEFAULT_POLICY, get_policy
from spotshift.policy.state import JobState, Move, NoFeasiblePlacement
from spotshift.policy.view import hours_to_finish, make_view, move_cost_usd

MAX_ALTERNATIVES = 3


def choose_placement(
    job_state: JobState,
    snapshot: MarketSnapshot,
    now: datetime,
    blocked: frozenset[OfferKey] = frozenset(),
    policy: str = DEFAULT_POLICY,
) -> Plan:
    """Plan the job's next placement: the offer the policy would launch now (when it would rather
    wait, the best offer that meets the deadline), with the next best offers as alternatives.
    Raises NoFeasiblePlacement naming why when no unblocked offer finishes before the deadline."""
    chooser = get_policy(policy)
    offers = [o for o in snapshot.offers if o.key not in blocked]
    if not offers:
        why = "every offer is blocked" if snapshot.offers else "the snapshot holds no offers"
        raise NoFeasiblePlacement(job_state.job_id, why)
    hours_left = (job_state.deadline - now).total_seconds() / 3600
    view = make_view(job_state, snapshot, now, blocked=blocked)
    in_time = [
        o for o in view.spot + view.on_demand
        if hours_to_finish(job_state, o) + job_state.changeover_hours <= hours_left
    ]
    if not in_time:
        raise NoFeasiblePlacement(
            job_state.job_id,
            f"no unblocked offer finishes {job_state.remaining_work:.2f} V100-hours plus a "
            f"{job_state.changeover_hours:.2f} h changeover in the {hours_left:.2f} h before the deadline",
        )
    filtered = snapshot.model_copy(update={"offers": in_time})
    decision = chooser.decide(job_state, filtered, now)
    chosen = decision.target if isinstance(decision, Move) else in_time[0]
    hours = hours_to_finish(job_state, chosen) + job_state.changeover_hours
    return Plan(
        job_id=job_state.job_id,
        offer=chosen,
        expected_hours=hours,
        expected_cost_usd=hours * chosen.usd_per_hour + move_cost_usd(job_state, chosen)
        - job_state.changeover_hours * chosen.usd_per_hour,
        deadline_slack_hours=hours_left - hours,
        alternatives=[o for o in in_time if o.key != chosen.key][:MAX_ALTERNATIVES],
        reason=f"{chooser.name}: {getattr(decision, 'reason', 'best offer in time')}",
        created_at=now,
    )
