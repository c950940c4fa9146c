"""The decision core: when a job should launch, stay or move (pure, `now` passed in); the plans that
carry those decisions out are spotshift.lifecycle.plans."""

from spotshift.policy.egress import egress_prices, transfer_cost_usd
from spotshift.policy.policies import DEFAULT_POLICY, POLICIES, Policy, decide, get_policy
from spotshift.policy.state import Decision, JobState, Move, NoFeasiblePlacement, SpotOutlook, Stay, Stop

__all__ = [
    "DEFAULT_POLICY", "POLICIES", "Decision", "JobState", "Move", "NoFeasiblePlacement", "Policy",
    "SpotOutlook", "Stay", "Stop", "decide", "egress_prices", "get_policy", "transfer_cost_usd",
]
