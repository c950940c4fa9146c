"""The plain data the policies decide over (JobState) and what they answer (Stay, Move, Stop)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from spotshift.models import MigrationReason, Offer


@dataclass(frozen=True)
class SpotOutlook:
    """What the market's recent past says about spot, estimated online from past observations only
    (the simulator from past trace ticks, a scout from its history); the policy never sees the future."""

    uptime: float  # share of the recent past in which some spot offer of the job's market was up
    run_hours: Mapping[str, float] = field(default_factory=dict)  # zone -> expected hours its capacity stays up
    gap_hours: Mapping[str, float] = field(default_factory=dict)  # zone -> expected hours until its capacity is back
    fresh_run_hours: Mapping[str, float] = field(default_factory=dict)  # zone -> the mean of its past runs (with
    # the prior): the hours a launch there buys on average, up or down now (what the zone usually offers)
    as_of: datetime | None = None  # the instant these estimates were made at (None = not said)
    refresh_at: datetime | None = None  # the next instant they change without a change of the market
    # (None = only with the market): a Stay that depends on them holds at most until then

    def __post_init__(self) -> None:
        if not 0.0 <= self.uptime <= 1.0:
            raise ValueError(f"uptime must be in [0, 1], got {self.uptime}")


@dataclass(frozen=True)
class JobState:
    """A job as the policy sees it at one instant; every policy's memory lives here, not in globals.

    Work is counted in V100-hours (see `spotshift.catalog.work_units_per_hour`).
    """

    job_id: str
    remaining_work: float
    deadline: datetime
    current: Offer | None = None  # where it runs now; None = not running
    placed_at: datetime | None = None  # when `current` was started
    ready_at: datetime | None = None  # when `current` ends its changeover (None = already training)
    changeover_hours: float = 0.2  # measured start + restore time of a new instance
    checkpoint_gb: float = 0.0
    checkpoint_region: str | None = None  # where the latest checkpoint lives (egress on a move)
    total_work: float | None = None  # the job's whole work, for uniform-progress lines
    started_at: datetime | None = None  # when the job was first placed
    moves: int = 0
    last_move_at: datetime | None = None
    was_preempted: bool = False  # `current` is None because spot capacity was taken back
    home_zone: str | None = None  # the single-zone policies' zone
    budget_usd: float | None = None
    spent_usd: float = 0.0
    outlook: SpotOutlook | None = None  # online spot statistics; None = judge by the offers' interruption risk
    work_rates: Mapping[str, float] | None = None  # instance type -> V100-hours/hour for this job (its
    # precision, method and GPUs used: spotshift.sizing.work_rates); None = every GPU in mixed precision

    def __post_init__(self) -> None:
        if self.remaining_work < 0:
            raise ValueError(f"remaining_work must be >= 0, got {self.remaining_work}")
        if self.changeover_hours < 0:
            raise ValueError(f"changeover_hours must be >= 0, got {self.changeover_hours}")
        if self.deadline.tzinfo is None:
            raise ValueError("deadline must carry a timezone")


@dataclass(frozen=True)
class Stay:
    """Keep the job where it is (or idle, when it runs nowhere). `until`: the decision holds until
    then unless the market or the job changes (a hint that lets a replay skip ticks)."""

    reason: str
    until: datetime | None = None


@dataclass(frozen=True)
class Move:
    """Checkpoint, start on `target`, resume there, stop the old instance."""

    target: Offer
    reason: MigrationReason
    expected_saving_usd: float = 0.0


@dataclass(frozen=True)
class Stop:
    """Stop the job (done, out of budget, or nothing can run it)."""

    reason: str


Decision = Stay | Move | Stop


class NoFeasiblePlacement(Exception):
    """No offer can run the job (all blocked, none left, or none meets the deadline); says why."""

    def __init__(self, job_id: str, why: str) -> None:
        super().__init__(f"no feasible placement for job {job_id}: {why}")
        self.job_id = job_id
        self.why = why
