"""The decision core: where a job should run and when it should move (pure, `now` passed in)."""

from spotshift.policy.egress import egress_prices, transfer_cost_usd
from spotshift.policy.placement import choose_placement
from spotshift.policy.policies import DEFAULT_POLICY, POLICIES, Policy, decide, get_policy
from spotshift.policy.state import Decision, JobState, Move, NoFeasiblePlacement, SpotOutlook, Stay, Stop

__all__ = [
    "DEFAULT_POLICY", "POLICIES", "Decision", "JobState", "Move", "NoFeasiblePlacement", "Policy",
    "SpotOutlook", "Stay", "Stop", "choose_placement", "decide", "egress_prices", "get_policy", "transfer_cost_usd",
]
