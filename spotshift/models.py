"""Domain models: what a user submits, what spotshift stores and decides. Pure data, no I/O.

Validation happens here, at the edge; every rejection names the field and what is allowed.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, NamedTuple

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from spotshift.catalog import KNOWN_GPUS, KNOWN_INSTANCE_TYPES, KNOWN_REGIONS
from training.contract import JobPaths
from training.spec import JOB_ID, check_shell_safe


class ChoiceEnum(str, Enum):
    """A str enum that prints its value and lists its choices when given a bad one."""

    def __str__(self) -> str:
        return self.value

    @classmethod
    def choices(cls) -> list[str]:
        return [m.value for m in cls]

    @classmethod
    def _missing_(cls, value: object):
        raise ValueError(f"{value!r} is not a valid {cls.__name__}. Choose between {', '.join(cls.choices())}")


class JobStatus(ChoiceEnum):
    PENDING = "pending"
    PLANNING = "planning"
    AWAITING_APPROVAL = "awaiting_approval"
    PROVISIONING = "provisioning"
    RUNNING = "running"
    MIGRATING = "migrating"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
LIVE_STATUSES = frozenset(JobStatus) - TERMINAL_STATUSES

# The job state machine: status -> statuses it may move to.
ALLOWED_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.PENDING: frozenset({JobStatus.PLANNING, JobStatus.FAILED, JobStatus.CANCELLED}),
    JobStatus.PLANNING: frozenset(
        {JobStatus.AWAITING_APPROVAL, JobStatus.PROVISIONING, JobStatus.FAILED, JobStatus.CANCELLED}
    ),
    JobStatus.AWAITING_APPROVAL: frozenset(
        {JobStatus.PROVISIONING, JobStatus.PLANNING, JobStatus.FAILED, JobStatus.CANCELLED}
    ),
    JobStatus.PROVISIONING: frozenset(
        {JobStatus.RUNNING, JobStatus.PLANNING, JobStatus.FAILED, JobStatus.CANCELLED}
    ),
    JobStatus.RUNNING: frozenset(
        {JobStatus.MIGRATING, JobStatus.PLANNING, JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED}
    ),
    JobStatus.MIGRATING: frozenset(
        {JobStatus.RUNNING, JobStatus.PLANNING, JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED}
    ),
    JobStatus.SUCCEEDED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}


def can_transition(current: JobStatus, new: JobStatus) -> bool:
    return new in ALLOWED_TRANSITIONS[current]


class Market(ChoiceEnum):
    SPOT = "spot"
    ON_DEMAND = "on_demand"


class MigrationReason(ChoiceEnum):
    PREEMPTED = "preempted"  # the spot capacity was taken back
    CHEAPER = "cheaper"  # a voluntary move to cheaper capacity
    DEADLINE = "deadline"  # the safety net: move to capacity that will finish in time
    STALLED = "stalled"  # the heartbeat stopped
    MANUAL = "manual"  # a user asked for it


class MigrationState(ChoiceEnum):
    """Where a migration (a move, or a recovery after the instance was lost) stands; its ledger row
    carries it. spotshift.lifecycle.migration holds the allowed steps between these."""

    REQUESTED = "requested"  # the old trainer was asked for a checkpoint
    CHECKPOINTED = "checkpointed"  # the checkpoint to resume from is known
    LAUNCHED = "launched"  # the new workload's instance started
    FIRST_STEP_SEEN = "first_step_seen"  # the new trainer reported a step past the checkpoint
    OLD_STOPPED = "old_stopped"  # the old instance was stopped
    RECORDED = "recorded"  # finished: the job trains on the new workload
    ABANDONED = "abandoned"  # no checkpoint came: the job stays where it was
    ROLLED_BACK = "rolled_back"  # the new placement never trained: the job resumes elsewhere or ends

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_MIGRATION_STATES


TERMINAL_MIGRATION_STATES = frozenset({MigrationState.RECORDED, MigrationState.ABANDONED, MigrationState.ROLLED_BACK})


class EndReason(ChoiceEnum):
    COMPLETED = "completed"
    PREEMPTED = "preempted"
    MIGRATED = "migrated"
    FAILED = "failed"
    CANCELLED = "cancelled"
    STALLED = "stalled"
    REAPED = "reaped"


class ApprovalMode(ChoiceEnum):
    AUTO = "auto"  # approve plans and moves within the thresholds, ask beyond them
    ALWAYS_ASK = "always_ask"  # a human answers every plan and move
    NEVER_MOVE = "never_move"  # auto-approve the first plan within the threshold; never move voluntarily


class Decider(ChoiceEnum):
    POLICY = "policy"
    HUMAN = "human"
    TIMEOUT = "timeout"


def utcnow() -> datetime:
    """The orchestrator's clock. Decisions take `now` as an argument instead of calling this."""
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def _aware(v: datetime, field: str) -> datetime:
    if v.tzinfo is None:
        raise ValueError(f"{field} must carry a timezone, e.g. 2026-12-01T12:00:00Z")
    return v.astimezone(UTC)


# --- what a user submits ---------------------------------------------------------------------

HF_REPO_ID = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9._-]{0,95}/)?[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
S3_URI = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](?:/[A-Za-z0-9._/=@+~,:-]*)?$")
LOCAL_PATH_PREFIXES = ("/", "./", "../", "~")


def classify_model_ref(value: str) -> str:
    """'s3', 'local' or 'hub' for a model reference (already validated)."""
    if value.startswith("s3://"):
        return "s3"
    if value.startswith(LOCAL_PATH_PREFIXES) or Path(value).is_dir():
        return "local"
    return "hub"


def _stored(info: ValidationInfo) -> bool:
    """Read back from a store: paths were checked at submission and may be gone since."""
    return bool((info.context or {}).get("stored"))


def _model_ref(v: str, info: ValidationInfo) -> str:
    check_shell_safe(v, "model")
    if v.startswith("s3://"):
        if not S3_URI.fullmatch(v):
            raise ValueError(f"model {v!r} is not a valid s3://bucket/prefix URI")
        return v
    if v.startswith(LOCAL_PATH_PREFIXES) or "/" in v and Path(v).is_dir():
        if not _stored(info) and not Path(v).expanduser().is_dir():
            raise ValueError(f"model {v!r} looks like a local path but is not an existing directory")
        return v
    if not HF_REPO_ID.fullmatch(v) or "--" in v or ".." in v or v.endswith(".") or v.endswith("-"):
        raise ValueError(
            f"model {v!r} must be a Hugging Face repo id (name or owner/name, letters, digits, . _ -), "
            "an existing local directory or an s3:// prefix"
        )
    return v


HF_DATASET_PREFIX = "hf://datasets/"


def _dataset_ref(v: str, info: ValidationInfo) -> str:
    check_shell_safe(v, "dataset")
    if v.startswith("hf://"):
        repo = v.removeprefix(HF_DATASET_PREFIX)
        if not v.startswith(HF_DATASET_PREFIX) or not HF_REPO_ID.fullmatch(repo) or "--" in repo or ".." in repo:
            raise ValueError(f"dataset {v!r} must be hf://datasets/<owner>/<name> (a Hugging Face Hub dataset id)")
        return v
    if v.startswith("s3://"):
        if not S3_URI.fullmatch(v) or v.rstrip("/") == v.split("/", 3)[0] + "//" + v.split("/")[2]:
            raise ValueError(f"dataset {v!r} must be s3://bucket/key of a .txt or .jsonl file")
    elif not v.startswith(LOCAL_PATH_PREFIXES) and not _stored(info) and not Path(v).exists():
        raise ValueError(f"dataset {v!r} must be an s3:// URI or an existing local path")
    if not v.endswith((".txt", ".jsonl")):
        raise ValueError(f"dataset {v!r} must be a .txt or .jsonl file")
    return v


ModelRef = Annotated[str, AfterValidator(_model_ref)]
DatasetRef = Annotated[str, AfterValidator(_dataset_ref)]
SPLIT_NAME = r"^[A-Za-z0-9_.:%+\[\]-]{1,128}$"  # a datasets split, slices included ("train[:90%]")
COLUMN_NAME = r"^[A-Za-z0-9_.-]{1,128}$"


class TrainingMethod(ChoiceEnum):
    FULL = "full"  # every weight trained
    LORA = "lora"  # low-rank adapters on a frozen base in the training precision
    QLORA = "qlora"  # adapters on a frozen 4-bit (NF4) base


class Precision(ChoiceEnum):
    AUTO = "auto"  # bf16 where the GPU supports it, fp16 (loss scaler) on V100/T4, fp32 on CPU
    BF16 = "bf16"
    FP16 = "fp16"
    FP32 = "fp32"


class LoraOptions(BaseModel):
    """The adapters of a LoRA/QLoRA job. target_modules None = the default for the model type."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    r: int = Field(default=16, ge=1, le=4096, description="adapter rank")
    alpha: int = Field(default=32, ge=1, le=65536, description="LoRA scaling numerator (scale = alpha / r)")
    dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: list[str] | None = Field(default=None, min_length=1, max_length=64,
                                             description="module names to adapt, e.g. q_proj, v_proj")

    @field_validator("target_modules")
    @classmethod
    def _modules(cls, v: list[str] | None) -> list[str] | None:
        bad = [m for m in v or () if not re.fullmatch(r"[A-Za-z0-9_.]{1,128}", m)]
        if bad:
            raise ValueError(f"lora.target_modules: {bad[0]!r} is not a module name (letters, digits, _ and .)")
        return v


class ApprovalPolicy(BaseModel):
    """When the UserProxy may decide alone, and when a human must answer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: ApprovalMode = ApprovalMode.AUTO
    max_auto_plan_usd: float = Field(
        default=50.0, ge=0, le=1_000_000,
        description="plans whose expected cost is at most this are approved without asking",
    )
    min_auto_saving_usd: float = Field(
        default=0.0, ge=0, le=1_000_000,
        description="voluntary moves saving at least this much are approved without asking",
    )
    timeout_s: float = Field(default=3600, gt=0, le=7 * 24 * 3600,
                             description="how long to wait for a human; unanswered = rejected")


class JobCreate(BaseModel):
    """What a user submits. `deadline` must be in the future: pass `context={"now": ...}` to
    `model_validate` to judge it against another clock than the wall clock."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)

    name: str = Field(default="job", min_length=1, max_length=63, pattern=r"^[a-z0-9][a-z0-9-]*$",
                      description="lowercase letters, digits and '-'")
    model: ModelRef = Field(description="Hugging Face repo id, local directory or s3:// prefix")
    dataset: DatasetRef = Field(description=".txt or .jsonl file, local or s3://")
    max_steps: int = Field(ge=1, le=10_000_000)
    batch_size: int = Field(default=8, ge=1, le=4096,
                            description="micro-batch: the most samples one process runs in one pass")
    grad_accum: int = Field(default=1, ge=1, le=1024,
                            description="one optimizer step = batch_size x grad_accum samples (the global "
                            "batch), dealt over the processes; the same on 1 GPU or 8")
    learning_rate: float = Field(default=5e-4, gt=0, le=1)
    seq_len: int = Field(default=128, ge=8, le=131_072)
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    checkpoint_every_steps: int | None = Field(
        default=None, ge=1, le=10_000_000, description="None = min(50, max_steps)"
    )
    checkpoint_every_seconds: float | None = Field(default=None, ge=10, le=86_400)
    keep_checkpoints: int = Field(default=2, ge=1, le=100)
    budget_usd: float = Field(gt=0, le=1_000_000)
    deadline: datetime
    regions: list[str] = Field(default_factory=lambda: ["us-east-1", "us-east-2", "us-west-2"],
                               min_length=1, max_length=len(KNOWN_REGIONS))
    instance_types: list[str] | None = Field(default=None, min_length=1, max_length=len(KNOWN_INSTANCE_TYPES))
    gpus: list[str] | None = Field(default=None, min_length=1, max_length=len(KNOWN_GPUS))
    markets: list[Market] = Field(default_factory=lambda: [Market.SPOT, Market.ON_DEMAND], min_length=1)
    approval: ApprovalPolicy = Field(default_factory=ApprovalPolicy)
    output_bucket: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$",
                                      description="S3 bucket for jobs/<job_id>/; default from settings")
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=128,
                                        pattern=r"^[A-Za-z0-9._:-]+$")
    method: TrainingMethod = Field(default=TrainingMethod.FULL, description="full, lora or qlora")
    precision: Precision = Field(default=Precision.AUTO, description="auto, bf16, fp16 or fp32")
    gradient_checkpointing: bool = Field(default=False, description="recompute activations in backward")
    lora: LoraOptions | None = Field(default=None, description="adapter options (lora/qlora); None = defaults")
    merge_adapter: bool = Field(default=False, description="also write merged weights to final/ (lora/qlora)")
    dataset_split: str = Field(default="train", pattern=SPLIT_NAME, description="Hub dataset split to train on")
    dataset_text_column: str = Field(default="text", pattern=COLUMN_NAME, description="Hub dataset text column")
    eval_split: str | None = Field(default=None, pattern=SPLIT_NAME, description="Hub dataset split for eval loss")

    @field_validator("precision")
    @classmethod
    def _precision(cls, v: Precision, info: ValidationInfo) -> Precision:
        if info.data.get("method") is TrainingMethod.QLORA and v is Precision.FP32:
            raise ValueError("qlora computes in bf16 or fp16. Choose between auto, bf16, fp16")
        return v

    @field_validator("lora", "merge_adapter")
    @classmethod
    def _adapter_only(cls, v, info: ValidationInfo):
        if info.data.get("method") is TrainingMethod.FULL and v not in (None, False):
            raise ValueError(f"{info.field_name} applies to method lora or qlora only (method is full)")
        return v

    @property
    def lora_options(self) -> LoraOptions | None:
        """The adapters a lora/qlora job trains (defaults when none were given); None for full."""
        return None if self.method is TrainingMethod.FULL else (self.lora or LoraOptions())

    @field_validator("deadline")
    @classmethod
    def _deadline(cls, v: datetime, info: ValidationInfo) -> datetime:
        v = _aware(v, "deadline")
        now = (info.context or {}).get("now") or utcnow()
        if v <= now:
            raise ValueError(f"deadline {v.isoformat()} must be in the future (now is {now.isoformat()})")
        return v

    @field_validator("regions")
    @classmethod
    def _regions(cls, v: list[str]) -> list[str]:
        return _known(v, KNOWN_REGIONS, "region")

    @field_validator("instance_types")
    @classmethod
    def _instance_types(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else _known(v, KNOWN_INSTANCE_TYPES, "instance type")

    @field_validator("gpus")
    @classmethod
    def _gpus(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else _known(v, KNOWN_GPUS, "GPU")

    @field_validator("markets")
    @classmethod
    def _markets(cls, v: list[Market]) -> list[Market]:
        if len(set(v)) != len(v):
            raise ValueError("markets must not repeat")
        return v

    @field_validator("checkpoint_every_steps")
    @classmethod
    def _checkpoint_steps(cls, v: int | None, info: ValidationInfo) -> int | None:
        max_steps = info.data.get("max_steps")
        if v is not None and max_steps is not None and v > max_steps:
            raise ValueError(f"checkpoint_every_steps ({v}) must be at most max_steps ({max_steps})")
        return v

    @property
    def checkpoint_steps(self) -> int:
        """The checkpoint interval in steps the trainer gets."""
        return self.checkpoint_every_steps or min(50, self.max_steps)


def _known(values: list[str], allowed: tuple[str, ...], what: str) -> list[str]:
    bad = [v for v in values if v not in allowed]
    if bad:
        raise ValueError(f"unknown {what} {bad[0]!r}. Choose between {', '.join(allowed)}")
    if len(set(values)) != len(values):
        raise ValueError(f"{what}s must not repeat")
    return values


# --- what spotshift stores ---------------------------------------------------------------------


class JobEvent(BaseModel):
    model_config = ConfigDict(frozen=True)

    at: datetime
    kind: str
    message: str = ""
    data: dict[str, Any] = Field(default_factory=dict)


class JobMeasurements(BaseModel):
    """What the orchestrator measured of a running job, on its own clock, kept with the job so that
    every flow (train-job, continuous-scout, an adopting run) builds the same JobState."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    steps_per_hour: float | None = Field(default=None, gt=0, description="training rate on rate_instance_type")
    rate_instance_type: str | None = Field(default=None, description="the instance type the rate was measured on")
    changeover_hours: float | None = Field(default=None, ge=0, description="slowest start-to-first-step seen")
    training_workload_id: str | None = Field(default=None, description="the last workload whose trainer trained")
    checkpoint_gb: float = Field(default=0.0, ge=0, description="size of the latest checkpoint (LATEST manifest)")


class Job(BaseModel):
    """A job as stored in the job store (MongoDB or the embedded document store)."""

    model_config = ConfigDict(extra="ignore")

    id: str
    request: JobCreate
    status: JobStatus = JobStatus.PENDING
    created_at: datetime
    updated_at: datetime
    idempotency_key: str | None = None
    flow_run_id: str | None = None
    current_workload_id: str | None = None
    step: int = 0
    cost_usd: float = 0.0
    final_model: str | None = None
    error: str | None = None
    gpu_memory_gib: float | None = Field(default=None, description="GPU memory the job needs on one GPU")
    total_work: float | None = Field(default=None, description="pre-run estimate of the job's work, V100-hours")
    sizing: JobSizing | None = Field(default=None, description="the model's size and the job's training shape")
    measured: JobMeasurements = Field(default_factory=JobMeasurements)
    lease_until: datetime | None = Field(default=None, description="the owning run is known busy until then "
                                         "(waiting for a human), however stale updated_at is")
    pending_plan_id: str | None = Field(default=None, description="the plan a human is asked to approve (while "
                                        "awaiting_approval): a suspended placement resumes with it")
    declined_moves: dict[str, datetime] = Field(default_factory=dict, description="offer (region/zone/type/market) "
                                                "-> a declined move there is not proposed again before then")
    events: list[JobEvent] = Field(default_factory=list)

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not JOB_ID.fullmatch(v):
            raise ValueError("id must be 1-63 lowercase letters, digits or '-'")
        return v

    def paths(self, default_bucket: str) -> JobPaths:
        """Where the job's files live: its own output_bucket when it names one, else `default_bucket`."""
        return JobPaths(bucket=self.request.output_bucket or default_bucket, job_id=self.id)


class JobUpdate(BaseModel):
    """Fields a transition or a progress report may change; None = leave as is."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    flow_run_id: str | None = None
    current_workload_id: str | None = None
    step: int | None = Field(default=None, ge=0)
    cost_usd: float | None = Field(default=None, ge=0)
    final_model: str | None = None
    error: str | None = None
    gpu_memory_gib: float | None = Field(default=None, ge=0)
    total_work: float | None = Field(default=None, ge=0)
    sizing: JobSizing | None = None
    measured: JobMeasurements | None = None
    lease_until: datetime | None = None
    pending_plan_id: str | None = None
    declined_moves: dict[str, datetime] | None = None

    def changes(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


# --- what the scout finds and the optimizer decides ---------------------------------------------


class OfferKey(NamedTuple):
    """What names an offer in a blocklist: (region, zone, instance type, market)."""

    region: str
    zone: str
    instance_type: str
    market: str

    @property
    def text(self) -> str:
        """region/zone/type/market: the key as a stored document's field name."""
        return "/".join(self)

    @classmethod
    def from_text(cls, text: str) -> OfferKey:
        return cls(*text.split("/"))


class InterruptionRisk(BaseModel):
    """Spot interruption frequency over the trailing month (Spot Instance Advisor buckets)."""

    model_config = ConfigDict(frozen=True)

    bucket: str | None = Field(default=None, description="'<5%', '5-10%', '10-15%', '15-20%', '>20%' or None")
    probability: float | None = Field(default=None, ge=0, le=1,
                                      description="numeric estimate of the monthly interruption rate")

    @property
    def known(self) -> bool:
        return self.probability is not None


class Offer(BaseModel):
    """One place a job could run: instance type x zone x market, at a price, at a time."""

    model_config = ConfigDict(frozen=True)

    instance_type: str
    gpu: str
    gpu_count: int = Field(ge=1)
    gpu_memory_gib: float = Field(gt=0, description="per GPU")
    vcpus: int = Field(ge=1)
    memory_gib: float = Field(gt=0)
    region: str
    zone: str
    market: Market
    usd_per_hour: float = Field(ge=0)
    interruption: InterruptionRisk = Field(default_factory=InterruptionRisk)
    placement_score: int | None = Field(default=None, ge=1, le=10,
                                        description="EC2 spot placement score of the zone (1-10), where permitted")
    observed_at: datetime
    source: str = Field(description="where the price came from, e.g. 'ec2:spot-price-history', 'replay'")

    @property
    def key(self) -> OfferKey:
        """(region, zone, instance type, market): what a blocklist holds."""
        return OfferKey(self.region, self.zone, self.instance_type, self.market.value)

    @property
    def total_gpu_memory_gib(self) -> float:
        return self.gpu_memory_gib * self.gpu_count


class Plan(BaseModel):
    """The optimizer's answer for a job: where to run, what it should cost, what else was possible."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(default_factory=lambda: new_id("plan"))
    job_id: str
    offer: Offer
    expected_hours: float = Field(ge=0)
    expected_cost_usd: float = Field(ge=0)
    deadline_slack_hours: float
    alternatives: list[Offer] = Field(default_factory=list)
    reason: str = ""
    created_at: datetime


class ApprovalDecision(BaseModel):
    """The UserProxy's answer for a plan or a move."""

    model_config = ConfigDict(frozen=True)

    approved: bool
    decided_by: Decider
    comment: str = Field(default="", max_length=2000)
    decided_at: datetime


class Workload(BaseModel):
    """One instance a job ran on (a ledger row)."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(default_factory=lambda: new_id("wl"))
    job_id: str
    plan_id: str | None = None
    instance_id: str | None = None
    instance_type: str
    region: str
    zone: str
    market: Market
    usd_per_hour: float = Field(ge=0)
    started_at: datetime
    ended_at: datetime | None = None
    billed_seconds: float | None = Field(default=None, ge=0)
    end_reason: EndReason | None = None

    @property
    def open(self) -> bool:
        return self.ended_at is None

    @property
    def cost_usd(self) -> float:
        return (self.billed_seconds or 0.0) / 3600.0 * self.usd_per_hour


class Migration(BaseModel):
    """A move of a job from one workload to another (a ledger row)."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(default_factory=lambda: new_id("mig"))
    job_id: str
    from_workload_id: str
    to_workload_id: str | None = None
    reason: MigrationReason
    expected_saving_usd: float = 0.0
    checkpoint_step: int | None = Field(default=None, ge=0)
    downtime_seconds: float | None = Field(default=None, ge=0)
    started_at: datetime
    finished_at: datetime | None = None
    succeeded: bool | None = None
    state: MigrationState = MigrationState.REQUESTED

    @model_validator(mode="before")
    @classmethod
    def _state_of_an_older_row(cls, data: Any) -> Any:
        """A row stored before migrations had a state: recorded if it succeeded, rolled_back if it
        failed, requested while in flight."""
        if isinstance(data, dict) and data.get("state") is None:
            ok = data.get("succeeded")
            data = {**data, "state": MigrationState.REQUESTED if ok is None else
                    MigrationState.RECORDED if ok else MigrationState.ROLLED_BACK}
        return data


class MarketSnapshot(BaseModel):
    """Every offer the scout saw at one instant, cheapest work-unit price first, and the regions
    that could not be read (reported, not fatal)."""

    model_config = ConfigDict(frozen=True)

    taken_at: datetime
    offers: list[Offer] = Field(default_factory=list)
    failed_regions: dict[str, str] = Field(default_factory=dict, description="region -> error")
    source: str = ""


# JobSizing's module needs the enums above; Job and JobUpdate are completed once it is loaded.
from spotshift.sizing.model import JobSizing  # noqa: E402

Job.model_rebuild()
JobUpdate.model_rebuild()
