from datetime import UTC, datetime

import pytest

from spotshift.approval import ApprovalRequest, auto_decision
from spotshift.models import ApprovalMode, ApprovalPolicy, Decider, MigrationReason

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def plan(cost: float) -> ApprovalRequest:
    return ApprovalRequest(job_id="j1", subject="plan", summary="p3.2xlarge spot in us-east-1a",
                           expected_cost_usd=cost, expected_hours=2)


def move(saving: float, reason=MigrationReason.CHEAPER) -> ApprovalRequest:
    return ApprovalRequest(job_id="j1", subject="move", summary="a -> b", expected_cost_usd=0,
                           expected_hours=0, expected_saving_usd=saving, reason=reason)


def test_auto_approves_plans_within_the_cost_threshold_and_asks_beyond():
    policy = ApprovalPolicy(max_auto_plan_usd=10)
    ok = auto_decision(policy, plan(9.99), NOW)
    assert ok is not None and ok.approved and ok.decided_by is Decider.POLICY
    assert auto_decision(policy, plan(10.01), NOW) is None


def test_voluntary_moves_need_the_saving_threshold():
    policy = ApprovalPolicy(min_auto_saving_usd=1.0)
    assert auto_decision(policy, move(1.0), NOW).approved
    assert auto_decision(policy, move(0.5), NOW) is None


def test_never_move_refuses_voluntary_moves_but_keeps_a_preempted_job_alive():
    policy = ApprovalPolicy(mode=ApprovalMode.NEVER_MOVE, max_auto_plan_usd=100)
    refused = auto_decision(policy, move(100.0), NOW)
    assert refused is not None and not refused.approved
    recovery = ApprovalRequest(job_id="j1", subject="move", summary="lost -> b", expected_cost_usd=3,
                               expected_hours=1, reason=MigrationReason.PREEMPTED)
    assert auto_decision(policy, recovery, NOW).approved


@pytest.mark.parametrize("request_", [plan(0.0), move(1e6)])
def test_always_ask_never_decides_alone(request_):
    assert auto_decision(ApprovalPolicy(mode=ApprovalMode.ALWAYS_ASK), request_, NOW) is None


def test_the_question_shows_cost_saving_and_risk():
    text = move(2.5).markdown()
    assert "$2.50" in text and "risk" in text and "cheaper" in text
