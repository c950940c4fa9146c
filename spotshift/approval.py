"""Approval policy: whether the UserProxy may approve a plan or a move alone, or must ask a human."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from spotshift.models import ApprovalDecision, ApprovalMode, ApprovalPolicy, Decider, MigrationReason

Subject = Literal["plan", "move"]


@dataclass(frozen=True)
class ApprovalRequest:
    """What is to be approved, in the figures a human needs to decide."""

    job_id: str
    subject: Subject
    summary: str
    expected_cost_usd: float
    expected_hours: float
    expected_saving_usd: float = 0.0
    interruption_risk: str = "unknown"
    reason: MigrationReason | None = None

    def markdown(self) -> str:
        lines = [
            f"### spotshift: approve {self.subject} for job `{self.job_id}`",
            "",
            f"- **where**: {self.summary}",
            f"- **expected cost**: ${self.expected_cost_usd:,.2f} over {self.expected_hours:.2f} h",
            f"- **interruption risk**: {self.interruption_risk}",
        ]
        if self.subject == "move":
            lines.append(f"- **expected saving**: ${self.expected_saving_usd:,.2f}")
            lines.append(f"- **reason**: {self.reason}")
        lines += ["", "Answer `approved: true` to go ahead; no answer before the timeout means no."]
        return "\n".join(lines)


def auto_decision(policy: ApprovalPolicy, request: ApprovalRequest, now: datetime) -> ApprovalDecision | None:
    """The policy's own answer, or None when a human must answer.

    Involuntary moves (preemption, deadline safety net, stalled) keep the job alive and are
    approved whenever the plan itself would be; `never_move` refuses only voluntary moves.
    """
    voluntary = request.subject == "move" and request.reason in (MigrationReason.CHEAPER, MigrationReason.MANUAL)
    if policy.mode is ApprovalMode.ALWAYS_ASK:
        return None
    if voluntary and policy.mode is ApprovalMode.NEVER_MOVE:
        return ApprovalDecision(approved=False, decided_by=Decider.POLICY, decided_at=now,
                                comment="approval policy never_move: voluntary moves are refused")
    if voluntary:
        if request.expected_saving_usd >= policy.min_auto_saving_usd:
            return ApprovalDecision(approved=True, decided_by=Decider.POLICY, decided_at=now,
                                    comment=f"saving ${request.expected_saving_usd:.2f} >= "
                                    f"${policy.min_auto_saving_usd:.2f} threshold")
        return None
    if request.expected_cost_usd <= policy.max_auto_plan_usd:
        return ApprovalDecision(approved=True, decided_by=Decider.POLICY, decided_at=now,
                                comment=f"expected cost ${request.expected_cost_usd:.2f} <= "
                                f"${policy.max_auto_plan_usd:.2f} threshold")
    return None
