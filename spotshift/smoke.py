"""`spotshift aws smoke`'s decisions, pure: the cheapest usable GPU spot offer of a region, what the
smoke run should cost (and the assumptions behind it), what it did cost, its phases and summary."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import Callable, Iterable, Mapping, Sequence

from spotshift.billing import MIN_BILLED_SECONDS
from spotshift.catalog import KNOWN_REGIONS
from spotshift.models import ApprovalPolicy, JobCreate, Market, Offer, Workload

SMOKE_STEPS = 20  # the tiny model trains this many steps in all
CHECKPOINT_STEP = 10  # the first instance is interrupted once a checkpoint at this step or later exists
DEFAULT_MAX_USD = 0.25
SMOKE_DEADLINE = timedelta(hours=3)
APPROVAL_TIMEOUT_S = 60.0  # a plan above the cap is not approved by the job's policy: nobody answers, it is rejected


class SmokeStep(str, Enum):
    """The steps of a smoke run, in order; a failure names the one it happened in."""

    PREFLIGHT = "preflight"  # the region's `spotshift aws check` rows
    OFFER = "offer"  # the cheapest usable GPU spot offer of the region
    ESTIMATE = "estimate"  # its cost against the cap (above: refused, nothing launched)
    INPUTS = "inputs"  # the tiny model and its dataset, uploaded to the job's prefix
    LAUNCH = "launch"  # the first instance starts
    CHECKPOINT = "checkpoint"  # its trainer writes a checkpoint at step CHECKPOINT_STEP or later
    INTERRUPT = "interrupt"  # it is terminated, as a spot preemption would end it
    RESUME = "resume"  # a second instance resumes from that checkpoint
    FINISH = "finish"  # training reaches SMOKE_STEPS and the final model is written
    CLEANUP = "cleanup"  # no instance of the smoke is left running
    COST = "cost"  # what it cost stays within the cap

    def __str__(self) -> str:
        return self.value


class SmokeFailed(Exception):
    """A smoke step failed; `step` names it, the message says what happened."""

    def __init__(self, step: SmokeStep, detail: str) -> None:
        super().__init__(f"{step.value}: {detail}")
        self.step = step
        self.detail = detail


@dataclass(frozen=True)
class SmokeAssumptions:
    """What the estimate assumes. Prices: us-east-1 list prices at the time of writing (check the
    AWS pricing pages); durations: pessimistic for a Deep Learning AMI on a G instance."""

    boot_s: float = 600.0  # launch -> first heartbeat: boot (1-2 min), the trainer wheel and its locked
    #                         requirements installed with pip (3-5 min), the tiny model downloaded and loaded
    step_s: float = 5.0  # one paced step: the trainer takes at least one monitor poll per step, so that the
    #                      orchestrator sees the step-10 checkpoint while steps 11-19 still run
    checkpoint_s: float = 30.0  # a checkpoint (or the final model) of the tiny model written to S3
    resume_s: float = 30.0  # the second instance downloads and loads that checkpoint
    shutdown_s: float = 90.0  # the interruption's own checkpoint, the log upload, power-off, EC2's termination
    root_volume_gib: float = 200.0  # gp3 root volume, billed while the instance lives (the AMI's size or more)
    ebs_usd_per_gib_month: float = 0.08  # gp3
    public_ipv4_usd_per_hour: float = 0.005  # every public IPv4 address, in use or not
    hours_per_month: float = 730.0  # how AWS prorates a GB-month

    @property
    def ebs_usd_per_hour(self) -> float:
        return self.root_volume_gib * self.ebs_usd_per_gib_month / self.hours_per_month

    def lifetimes_s(self) -> tuple[float, float]:
        """The two instances' expected lives: boot, 10 steps, checkpoint, interruption; then boot,
        resume, the last 10 steps, the final model, power-off."""
        first = self.boot_s + CHECKPOINT_STEP * self.step_s + self.checkpoint_s + self.shutdown_s
        second = (self.boot_s + self.resume_s + (SMOKE_STEPS - CHECKPOINT_STEP) * self.step_s + self.checkpoint_s
                  + self.shutdown_s)
        return first, second

    def describe(self) -> str:
        first, second = self.lifetimes_s()
        return (f"2 instances of {first / 60:.0f} and {second / 60:.0f} min (boot and install {self.boot_s / 60:.0f} "
                f"min each, {SMOKE_STEPS} steps of {self.step_s:g} s, checkpoints, resume, shutdown), each with a "
                f"{self.root_volume_gib:g} GiB gp3 volume (${self.ebs_usd_per_gib_month}/GB-month) and a public "
                f"IPv4 address (${self.public_ipv4_usd_per_hour}/h); per-second billing, 60 s minimum")


@dataclass(frozen=True)
class SmokeCost:
    """Instances (their spot price), their root volumes and public IPv4 addresses, over billed seconds."""

    instances_usd: float
    ebs_usd: float
    ipv4_usd: float
    billed_seconds: float

    @property
    def total_usd(self) -> float:
        return self.instances_usd + self.ebs_usd + self.ipv4_usd

    def describe(self) -> str:
        return (f"${self.total_usd:.4f} (instances ${self.instances_usd:.4f}, EBS ${self.ebs_usd:.4f}, "
                f"public IPv4 ${self.ipv4_usd:.4f}; {self.billed_seconds:.0f} billed instance-seconds)")


def cost_of(stints: Iterable[tuple[float, float]], assumptions: SmokeAssumptions) -> SmokeCost:
    """The cost of instances given as (billed seconds, spot $/h) each."""
    stints = list(stints)
    seconds = sum(s for s, _ in stints)
    return SmokeCost(instances_usd=sum(s / 3600 * usd for s, usd in stints),
                     ebs_usd=seconds / 3600 * assumptions.ebs_usd_per_hour,
                     ipv4_usd=seconds / 3600 * assumptions.public_ipv4_usd_per_hour, billed_seconds=seconds)


def billed(seconds: float) -> float:
    """EC2's per-second billing with its one-minute minimum."""
    return max(MIN_BILLED_SECONDS, seconds)


@dataclass(frozen=True)
class SmokeEstimate:
    """What the smoke should cost on an offer, before anything is launched."""

    offer: Offer
    cost: SmokeCost
    assumptions: SmokeAssumptions

    @property
    def total_usd(self) -> float:
        return self.cost.total_usd


def estimate_smoke_cost(offer: Offer, assumptions: SmokeAssumptions = SmokeAssumptions()) -> SmokeEstimate:
    """Both instances' expected lives at the offer's spot price, plus EBS and public IPv4."""
    return SmokeEstimate(offer, cost_of(((billed(s), offer.usd_per_hour) for s in assumptions.lifetimes_s()),
                                        assumptions), assumptions)


def refusal(estimate: SmokeEstimate, max_usd: float) -> str | None:
    """Why the smoke must not launch on this estimate (above the cap), or None."""
    if estimate.total_usd <= max_usd:
        return None
    return (f"refused: the smoke would cost about ${estimate.total_usd:.4f}, above the cap of ${max_usd:.2f} "
            f"(raise it with --max-usd, or pick a region with cheaper GPU spot capacity); nothing was launched")


def workloads_cost(workloads: Sequence[Workload], assumptions: SmokeAssumptions) -> SmokeCost:
    """What the smoke's instances cost, from their ledger rows (billed seconds at the plan's price)."""
    return cost_of(((w.billed_seconds or 0.0, w.usd_per_hour) for w in workloads if w.billed_seconds is not None),
                   assumptions)


@dataclass(frozen=True)
class OfferChoice:
    """The offer the smoke runs on (None: no usable one), and why cheaper ones were left out."""

    offer: Offer | None
    considered: int
    skipped: tuple[str, ...] = ()


def choose_smoke_offer(offers: Iterable[Offer], *, quota_vcpus: Mapping[str, float | None],
                       supported: Callable[[str], bool]) -> OfferChoice:
    """The cheapest spot offer (ties: fewest GPUs, fewest vCPUs, then by name and zone) whose type the
    region's image supports and whose vCPUs fit its spot quota. `quota_vcpus`: instance type -> the
    vCPUs of the spot quota it counts against, None (or absent) when unknown: an unknown quota is tried."""
    spot = sorted((o for o in offers if o.market is Market.SPOT),
                  key=lambda o: (o.usd_per_hour, o.gpu_count, o.vcpus, o.instance_type, o.zone))
    skipped: dict[str, str] = {}
    for offer in spot:
        t = offer.instance_type
        if not supported(t):
            skipped.setdefault(t, f"{t}: the region's image does not support it")
            continue
        limit = quota_vcpus.get(t)
        if limit is not None and offer.vcpus > limit:
            skipped.setdefault(t, f"{t}: needs {offer.vcpus} vCPUs, its spot quota allows {limit:g}")
            continue
        return OfferChoice(offer, len(spot), tuple(skipped.values()))
    return OfferChoice(None, len(spot), tuple(skipped.values()))


def check_smoke_input(region: str, max_usd: float) -> None:
    """Refuse bad input before anything is read or launched, naming the field and what is allowed."""
    if region not in KNOWN_REGIONS:
        raise ValueError(f"region {region!r} is not allowed. Choose between {', '.join(KNOWN_REGIONS)}")
    if not 0 < max_usd <= 100:
        raise ValueError(f"max_usd {max_usd!r} must be above 0 and at most 100 (dollars)")


def smoke_job_request(offer: Offer, *, model: str, dataset: str, max_usd: float, now: datetime,
                      key: str) -> JobCreate:
    """The smoke's job: the tiny model, SMOKE_STEPS steps with a checkpoint every CHECKPOINT_STEP, on
    the chosen instance type in the chosen region, spot only, auto-approved up to the cap."""
    return JobCreate.model_validate(dict(
        name="smoke", model=model, dataset=dataset, max_steps=SMOKE_STEPS, batch_size=4, seq_len=32,
        checkpoint_every_steps=CHECKPOINT_STEP, keep_checkpoints=2, budget_usd=max_usd,
        deadline=now + SMOKE_DEADLINE, regions=[offer.region], instance_types=[offer.instance_type],
        markets=[Market.SPOT], idempotency_key=key,
        approval=ApprovalPolicy(max_auto_plan_usd=max_usd, timeout_s=APPROVAL_TIMEOUT_S)), context={"now": now})


# -- what happened, and the summary -------------------------------------------------------------

PHASES: tuple[tuple[str, str, str], ...] = (
    # (label, from mark, to mark)
    ("preflight (check)", "start", "checked"),
    ("offer and estimate", "checked", "chosen"),
    ("inputs (tiny model)", "inputs", "inputs_ready"),
    ("launch 1", "launch_1", "running_1"),
    ("boot 1 (to first heartbeat)", "running_1", "heartbeat_1"),
    ("train to checkpoint", "heartbeat_1", "checkpoint_1"),
    ("interrupt 1 (terminate)", "interrupt_1", "interrupted_1"),
    ("re-plan and launch 2", "interrupted_1", "running_2"),
    ("boot 2 and resume", "running_2", "heartbeat_2"),
    ("train to the end", "heartbeat_2", "finished"),
    ("cleanup and checks", "finished", "cleaned"),
)


@dataclass
class SmokeTimeline:
    """When each point of the smoke was reached (the orchestrator's clock), and what it saw there."""

    marks: dict[str, datetime] = field(default_factory=dict)
    checkpoint_step: int | None = None  # the checkpoint the first instance was interrupted after
    resumed_from_step: int | None = None  # what the second instance's trainer reported

    def mark(self, name: str, at: datetime) -> None:
        self.marks.setdefault(name, at)

    def phases(self) -> list[tuple[str, float]]:
        """(label, seconds) of every phase whose two ends were reached."""
        return [(label, (self.marks[b] - self.marks[a]).total_seconds()) for label, a, b in PHASES
                if a in self.marks and b in self.marks]


@dataclass(frozen=True)
class SmokeReport:
    """Everything the summary prints."""

    region: str
    max_usd: float
    offer: Offer | None = None
    estimate: SmokeEstimate | None = None
    timeline: SmokeTimeline = field(default_factory=SmokeTimeline)
    workloads: tuple[Workload, ...] = ()
    cost: SmokeCost | None = None
    job_id: str | None = None
    failure: SmokeFailed | None = None
    notes: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return self.failure is None


def cost_verdict(cost: SmokeCost, max_usd: float) -> SmokeFailed | None:
    """A smoke that cost more than its cap failed (the estimate's assumptions were too low)."""
    if cost.total_usd <= max_usd:
        return None
    return SmokeFailed(SmokeStep.COST, f"it cost ${cost.total_usd:.4f}, above the cap of ${max_usd:.2f}")


def render_summary(report: SmokeReport) -> list[str]:
    """The lines the command prints last: offer, prices, phases, instances, cost, PASS or FAIL."""
    lines = [f"spotshift aws smoke in {report.region}" + (f" (job {report.job_id})" if report.job_id else "")]
    if report.offer is not None:
        o = report.offer
        lines.append(f"  instance   {o.instance_type} ({o.gpu_count}x {o.gpu}) spot in {o.zone} at "
                     f"${o.usd_per_hour:.4f}/h ({o.source})")
    if report.estimate is not None:
        lines.append(f"  estimate   ${report.estimate.total_usd:.4f} (cap ${report.max_usd:.2f})")
    phases = report.timeline.phases()
    if phases:
        lines.append("  phases")
        lines += [f"    {label:<28} {seconds:8.1f} s" for label, seconds in phases]
    if report.timeline.checkpoint_step is not None or report.timeline.resumed_from_step is not None:
        lines.append(f"  checkpoint step {report.timeline.checkpoint_step} seen before the interruption; "
                     f"resumed from step {report.timeline.resumed_from_step}")
    for i, w in enumerate(report.workloads, 1):
        lines.append(f"  instance {i} {w.instance_id} {w.instance_type} {w.zone} ${w.usd_per_hour:.4f}/h "
                     f"{(w.billed_seconds or 0):.0f} s billed, ended: {w.end_reason or 'open'}")
    if report.cost is not None:
        lines.append(f"  cost       {report.cost.describe()}, cap ${report.max_usd:.2f}")
    lines += [f"  note: {n}" for n in report.notes]
    if report.failure is None:
        lines.append(f"PASS: launched, trained {SMOKE_STEPS} steps, checkpointed, was interrupted, resumed and "
                     "finished; nothing left running")
    else:
        lines.append(f"FAIL at step {report.failure.step.value}: {report.failure.detail}")
    return lines
