"""TrainingSpec: what the orchestrator writes to jobs/<job_id>/spec.json for the instance.

Lives in training/ so the instance needs no orchestrator code. Never holds a secret.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Characters allowed in anything that may end up on a shell command line (user-data).
# No quotes, spaces, `$`, backticks, `;`, `&`, `|`, `<`, `>`, newlines, glob or brace characters.
SHELL_SAFE = re.compile(r"^[A-Za-z0-9._/:=@+~,-]+$")
SHELL_SAFE_HINT = "letters, digits and . _ / : = @ + ~ , - (no spaces, quotes, $, `, ;, &, |, <, >, newlines)"
JOB_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def check_shell_safe(value: str, field: str) -> str:
    if not value or not SHELL_SAFE.fullmatch(value):
        raise ValueError(f"{field} {value!r} may only contain {SHELL_SAFE_HINT}")
    if ".." in value.split("/"):
        raise ValueError(f"{field} {value!r} may not contain '..' path segments")
    return value


PositiveSteps = Annotated[int, Field(ge=1, le=10_000_000)]

METHODS = ("full", "lora", "qlora")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
SHARDINGS = ("auto", "ddp", "fsdp")
HF_DATASET_PREFIX = "hf://datasets/"


def choose_between(field: str, value: object, allowed: tuple[str, ...]) -> str:
    """A validation message naming the field and its allowed values."""
    return f"{field} {value!r} is not allowed. Choose between {', '.join(allowed)}"


class LoraSpec(BaseModel):
    """LoRA adapter settings (method lora or qlora)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    r: int = Field(default=16, ge=1, le=4096, description="adapter rank")
    alpha: int = Field(default=32, ge=1, le=65536, description="scaling: alpha / r")
    dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: list[str] | None = Field(
        default=None, min_length=1,
        description="module names to adapt; None = a default per model type (training.adapters)")


def dataset_kind(dataset: str) -> str:
    """'hub' (hf://datasets/<owner>/<name>), 'files' (a local dataset directory for the datasets
    library: the layout of a Hub dataset repo, or save_to_disk), or 'corpus' (.txt/.jsonl)."""
    if dataset.startswith(HF_DATASET_PREFIX):
        return "hub"
    if dataset.endswith((".txt", ".jsonl")):
        return "corpus"
    return "files"


class TrainingSpec(BaseModel):
    """The instance's whole job description. JSON field names are a contract: keep them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job_id: str = Field(description="spotshift job id (lowercase letters, digits, '-')")
    model: str = Field(description="Hugging Face repo id, local directory or s3:// prefix")
    dataset: str = Field(description=".txt or .jsonl (a `text` field per line), local or s3://")
    output: str = Field(description="s3://bucket/prefix/ of the job; checkpoints, progress, final")
    max_steps: PositiveSteps
    batch_size: int = Field(default=8, ge=1, le=4096,
                            description="micro-batch: the most samples one process runs in one pass")
    grad_accum: int = Field(default=1, ge=1, le=1024,
                            description="one optimizer step = batch_size x grad_accum samples (the global "
                            "batch), dealt over the processes; the same on 1 GPU or 8")
    learning_rate: float = Field(default=5e-4, gt=0, le=1)
    warmup_steps: int = Field(default=0, ge=0, le=10_000_000)
    weight_decay: float = Field(default=0.0, ge=0, le=1)
    seq_len: int = Field(default=128, ge=8, le=131_072)
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    checkpoint_every_steps: int | None = Field(default=50, ge=1, le=10_000_000)
    checkpoint_every_seconds: float | None = Field(default=None, gt=0)
    keep_checkpoints: int = Field(default=2, ge=1, le=100)
    heartbeat_seconds: float = Field(default=2.0, gt=0, le=300)
    control_poll_seconds: float = Field(default=2.0, gt=0, le=300)
    imds_endpoint: str | None = Field(
        default=None,
        description="IMDSv2 base URL polled for the spot instance-action notice; None = off "
        "(the EC2 default is http://169.254.169.254)",
    )
    instance_id: str | None = Field(default=None, description="reported in progress.json")
    device: str = Field(default="auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    method: str = Field(default="full", description="full | lora | qlora")
    precision: str = Field(
        default="auto", description="auto (bf16 where the GPU has it, fp16 + loss scaling on V100/T4, "
        "fp32 on CPU) | bf16 | fp16 | fp32; mixed precision keeps fp32 master weights")
    gradient_checkpointing: bool = False
    sharding: str = Field(
        default="auto", description="several processes: auto (FSDP for a full fine-tune whose fp32 weights, "
        "gradients and AdamW moments do not fit one GPU, DDP otherwise) | ddp | fsdp (full only)")
    lora: LoraSpec | None = Field(default=None, description="adapter settings (lora/qlora; None = defaults)")
    merge_adapter: bool = Field(default=False, description="lora/qlora: final/merged/ also gets merged weights")
    dataset_split: str = Field(default="train", pattern=r"^[A-Za-z0-9_.\-\[\]:%+]+$")
    dataset_text_column: str = Field(default="text", pattern=r"^[A-Za-z0-9_.\-]+$")
    eval_split: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.\-\[\]:%+]+$")
    eval_every_steps: int | None = Field(default=None, ge=1, le=10_000_000,
                                         description="None = every metrics_every_steps")
    metrics_every_steps: int = Field(default=10, ge=1, le=10_000_000)
    min_step_seconds: float = Field(
        default=0.0, ge=0, le=60,
        description="pace training so each step takes at least this long (demos and tests; 0 = off)",
    )

    @field_validator("job_id")
    @classmethod
    def _job_id(cls, v: str) -> str:
        if not JOB_ID.fullmatch(v):
            raise ValueError("job_id must be 1-63 lowercase letters, digits or '-', starting alphanumeric")
        return v

    @field_validator("model", "dataset", "output")
    @classmethod
    def _shell_safe(cls, v: str, info) -> str:
        return check_shell_safe(v, info.field_name)

    @field_validator("method", "precision", "sharding")
    @classmethod
    def _one_of(cls, v: str, info) -> str:
        allowed = {"method": METHODS, "precision": PRECISIONS, "sharding": SHARDINGS}[info.field_name]
        if v not in allowed:
            raise ValueError(choose_between(info.field_name, v, allowed))
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "TrainingSpec":
        if self.sharding == "fsdp" and self.method != "full":
            raise ValueError(f"sharding fsdp needs method full, not {self.method}. Choose between auto, ddp "
                             "for sharding with an adapter")
        if self.method == "full" and (self.lora is not None or self.merge_adapter):
            raise ValueError("lora and merge_adapter need method lora or qlora. Choose between lora, qlora "
                             "for method, or leave lora and merge_adapter out")
        if self.method == "qlora" and self.device == "cpu":
            raise ValueError("method qlora needs a CUDA GPU (bitsandbytes 4-bit) but device is cpu. "
                             "Choose between full, lora for method on CPU")
        if self.eval_split is not None and dataset_kind(self.dataset) == "corpus":
            raise ValueError("eval_split needs a dataset with splits (hf://datasets/<owner>/<name> or a dataset "
                             "directory), not a .txt/.jsonl file")
        return self

    @property
    def adapter(self) -> LoraSpec:
        """The LoRA settings in force (defaults when lora is None)."""
        return self.lora or LoraSpec()

    @field_validator("output")
    @classmethod
    def _output(cls, v: str) -> str:
        if not v.startswith("s3://") and not v.startswith("/"):
            raise ValueError("output must be an s3://bucket/prefix/ URI or an absolute local path")
        return v if v.endswith("/") else v + "/"
