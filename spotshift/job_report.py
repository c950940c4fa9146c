"""A job as its page and GET /jobs/{id} show it: placements with their cost so far (an open one
billed up to `now`), the on-demand equivalent, migrations with their downtime. Pure."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, computed_field

from spotshift.billing import billed_seconds_so_far
from spotshift.models import Job, Migration, Workload


class Placement(BaseModel):
    """One instance the job ran on (a workload), billed up to its end or up to now while open."""

    model_config = ConfigDict(frozen=True)

    workload_id: str
    instance_id: str | None
    instance_type: str
    region: str
    zone: str
    market: str
    usd_per_hour: float
    started_at: datetime
    ended_at: datetime | None = Field(description="None while the instance runs")
    seconds: float = Field(description="billed seconds (per-second, 60 s minimum), so far while open")
    cost_usd: float
    on_demand_usd: float = Field(description="the same seconds at the instance type's on-demand price")
    end_reason: str = Field(description="why it ended: completed, preempted, migrated, ...; 'running' while open")


class MigrationView(BaseModel):
    model_config = ConfigDict(frozen=True)

    reason: str
    from_zone: str | None
    to_zone: str | None
    started_at: datetime
    finished_at: datetime | None
    downtime_seconds: float | None
    checkpoint_step: int | None
    expected_saving_usd: float
    succeeded: bool | None


class JobReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    job_id: str
    status: str
    step: int
    max_steps: int
    placements: list[Placement]
    migrations: list[MigrationView]
    cost_usd: float = Field(description="billed so far, open instances up to now")
    on_demand_usd: float = Field(description="what the same instance-seconds cost on demand")
    as_of: datetime

    @computed_field(description="1 - cost / on-demand (0 when there is nothing to compare)")
    @property
    def saving_ratio(self) -> float:
        return 0.0 if self.on_demand_usd <= 0 else round(1.0 - self.cost_usd / self.on_demand_usd, 4)


def placement(workload: Workload, on_demand_usd_per_hour: float, now: datetime) -> Placement:
    seconds = billed_seconds_so_far(workload, now)
    return Placement(
        workload_id=workload.id, instance_id=workload.instance_id, instance_type=workload.instance_type,
        region=workload.region, zone=workload.zone, market=workload.market.value,
        usd_per_hour=workload.usd_per_hour, started_at=workload.started_at, ended_at=workload.ended_at,
        seconds=round(seconds, 1), cost_usd=round(seconds / 3600 * workload.usd_per_hour, 6),
        on_demand_usd=round(seconds / 3600 * on_demand_usd_per_hour, 6),
        end_reason=workload.end_reason.value if workload.end_reason else "running",
    )


def job_report(job: Job, workloads: list[Workload], migrations: list[Migration],
               on_demand_usd_per_hour: dict[str, float], now: datetime) -> JobReport:
    """The report of `job` at `now`; an instance type missing from the on-demand prices counts at
    its own price (no saving claimed)."""
    ordered = sorted(workloads, key=lambda w: w.started_at)
    placements = [placement(w, on_demand_usd_per_hour.get(w.instance_type, w.usd_per_hour), now) for w in ordered]
    zone_of = {w.id: w.zone for w in ordered}
    moves = [MigrationView(reason=m.reason.value, from_zone=zone_of.get(m.from_workload_id),
                           to_zone=zone_of.get(m.to_workload_id or ""), started_at=m.started_at,
                           finished_at=m.finished_at, downtime_seconds=m.downtime_seconds,
                           checkpoint_step=m.checkpoint_step, expected_saving_usd=m.expected_saving_usd,
                           succeeded=m.succeeded)
             for m in sorted(migrations, key=lambda m: m.started_at)]
    return JobReport(job_id=job.id, status=job.status.value, step=job.step, max_steps=job.request.max_steps,
                     placements=placements, migrations=moves, cost_usd=round(sum(p.cost_usd for p in placements), 4),
                     on_demand_usd=round(sum(p.on_demand_usd for p in placements), 4), as_of=now)
