"""What a job cost: billed seconds per workload (EC2 per-second billing, 60 s minimum), totals,
the on-demand equivalent, and the markdown cost report."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from spotshift.models import Migration, Workload

MIN_BILLED_SECONDS = 60.0  # Linux instances: per-second billing with a one-minute minimum


def billed_seconds(started_at: datetime, ended_at: datetime) -> float:
    return max(MIN_BILLED_SECONDS, (ended_at - started_at).total_seconds())


def billed_seconds_so_far(workload: Workload, now: datetime) -> float:
    """A workload's billed seconds: as recorded once closed, an open one's as if it ended `now`."""
    return (workload.billed_seconds or 0.0) if not workload.open else billed_seconds(workload.started_at, now)


@dataclass(frozen=True)
class CostSummary:
    total_usd: float
    on_demand_usd: float
    seconds: float

    @property
    def saving_ratio(self) -> float:
        return 0.0 if self.on_demand_usd == 0 else 1.0 - self.total_usd / self.on_demand_usd


def summarize(workloads: list[Workload], on_demand_usd_per_hour: dict[str, float]) -> CostSummary:
    """Totals over closed workloads; the on-demand equivalent runs the same seconds on each
    workload's instance type at its on-demand price."""
    closed = [w for w in workloads if w.billed_seconds is not None]
    total = sum(w.cost_usd for w in closed)
    od = sum((w.billed_seconds or 0) / 3600 * on_demand_usd_per_hour.get(w.instance_type, w.usd_per_hour)
             for w in closed)
    return CostSummary(total_usd=total, on_demand_usd=od, seconds=sum(w.billed_seconds or 0 for w in closed))


def cost_report(job_id: str, workloads: list[Workload], migrations: list[Migration],
                on_demand_usd_per_hour: dict[str, float]) -> str:
    """The markdown cost report artifact of a finished job."""
    s = summarize(workloads, on_demand_usd_per_hour)
    rows = [
        f"# Cost report: job `{job_id}`",
        "",
        "| # | instance | zone | market | $/h | seconds | cost $ | ended because |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, w in enumerate(sorted(workloads, key=lambda w: w.started_at), 1):
        rows.append(f"| {i} | {w.instance_type} | {w.zone} | {w.market} | {w.usd_per_hour:.4f} | "
                    f"{(w.billed_seconds or 0):.0f} | {w.cost_usd:.4f} | {w.end_reason or 'open'} |")
    rows += [
        "",
        f"**Total: ${s.total_usd:.4f}** over {s.seconds / 3600:.2f} instance-hours; "
        f"on-demand equivalent ${s.on_demand_usd:.4f} (saved {s.saving_ratio:.0%}).",
    ]
    if migrations:
        rows += ["", "| migration | reason | from | to | downtime s | expected saving $ |", "|---|---|---|---|---|---|"]
        for m in migrations:
            rows.append(f"| {m.id} | {m.reason} | {m.from_workload_id} | {m.to_workload_id or '-'} | "
                        f"{(m.downtime_seconds or 0):.1f} | {m.expected_saving_usd:.4f} |")
    return "\n".join(rows)
