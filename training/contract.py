"""The S3 contract between the orchestrator and the trainer: key layout under the job's output
prefix, the JSON documents stored there (Progress, ControlRequest, CheckpointManifest), and helpers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from training.spec import TrainingSpec
from training.storage import ObjectStore, S3Store, split_s3_uri

SPEC = "spec.json"
PROGRESS = "progress.json"
CONTROL = "control.json"
CHECKPOINTS = "checkpoints/"
LATEST = "checkpoints/LATEST.json"
FINAL = "final/"
FINAL_MERGED = "final/merged/"  # lora/qlora with merge_adapter: the merged model, save_pretrained layout
METRICS = "metrics.jsonl"
LOGS = "logs/"
INPUTS = "inputs/"  # a local model or dataset of an EC2 job, uploaded at submit: inputs/<field>/
JOBS_PREFIX = "jobs/"
_STEP_DIR = re.compile(r"^checkpoints/step-(\d+)/")


def checkpoint_prefix(step: int) -> str:
    """'checkpoints/step-<N>/' relative to the job's output prefix."""
    return f"{CHECKPOINTS}step-{step}/"


def step_of_key(key: str) -> int | None:
    """The N of a key under checkpoints/step-<N>/, else None."""
    match = _STEP_DIR.match(key)
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class JobPaths:
    """Every S3 location of one job, under s3://<bucket>/jobs/<job_id>/: the one object that names
    them (the orchestrator and the trainer both use it; nothing builds these keys by hand)."""

    bucket: str
    job_id: str

    @property
    def prefix(self) -> str:
        """'jobs/<job_id>/': the job's key prefix in its bucket."""
        return f"{JOBS_PREFIX}{self.job_id}/"

    @property
    def output(self) -> str:
        """s3://<bucket>/jobs/<job_id>/ (TrainingSpec.output)."""
        return f"s3://{self.bucket}/{self.prefix}"

    def key(self, name: str) -> str:
        """The bucket key of `name` (SPEC, PROGRESS, ...) under the job's prefix."""
        return f"{self.prefix}{name}"

    def uri(self, name: str) -> str:
        return f"s3://{self.bucket}/{self.key(name)}"

    @property
    def spec_uri(self) -> str:
        return self.uri(SPEC)

    @property
    def final_uri(self) -> str:
        return self.uri(FINAL)

    def input_prefix(self, field: str) -> str:
        """jobs/<job_id>/inputs/<field>/: where submit uploads a local `model` or `dataset` of an
        EC2 job (the instance cannot read the submitter's disk)."""
        return self.key(f"{INPUTS}{field}/")

    def log_key(self, instance_id: str) -> str:
        """jobs/<job_id>/logs/<instance_id>.log: the bootstrap and trainer log of one instance."""
        return self.key(f"{LOGS}{instance_id}.log")


class TrainerState(str, Enum):
    starting = "starting"
    training = "training"
    checkpointing = "checkpointing"
    checkpointed = "checkpointed"
    done = "done"
    failed = "failed"

    @property
    def ended(self) -> bool:
        """The trainer process has exited (finished, stopped after a checkpoint, or failed)."""
        return self in (TrainerState.done, TrainerState.checkpointed, TrainerState.failed)


class Progress(BaseModel):
    """progress.json: the trainer's heartbeat, rewritten every few seconds and on each state change."""

    model_config = ConfigDict(extra="ignore")

    state: TrainerState
    step: int = Field(ge=0, description="optimizer steps finished")
    max_steps: int = Field(ge=1)
    loss: float | None = Field(default=None, description="mean loss of the last finished step")
    samples_per_s: float | None = None
    tokens_per_s: float | None = None
    instance_id: str | None = None
    updated_at: datetime
    started_at: datetime | None = None
    job_id: str | None = None
    last_checkpoint_step: int | None = Field(default=None, description="step of the newest durable checkpoint")
    resumed_from_step: int | None = None
    honoured_request_id: str | None = Field(
        default=None, description="request_id of the last control.json request acted upon"
    )
    stop_reason: str | None = Field(default=None, description="sigterm | spot_notice | control | None")
    error: str | None = Field(default=None, description="one-line failure reason (state failed)")
    permanent: bool = Field(
        default=False, description="state failed: no restart, here or elsewhere, can fix it (exit code "
        "EXIT_PERMANENT, e.g. a checkpoint written by incompatible library versions); the orchestrator ends the "
        "job FAILED with `error` instead of launching it again")


class ControlRequest(BaseModel):
    """control.json: an orchestrator request to the running trainer."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["checkpoint_and_exit"] = "checkpoint_and_exit"
    request_id: str = Field(min_length=1, max_length=128)
    reason: str = Field(default="", max_length=500)


class MetricsRecord(BaseModel):
    """One line of metrics.jsonl: the training loss over the steps since the previous line (and the
    eval loss where one was measured at this step)."""

    model_config = ConfigDict(extra="ignore")

    step: int = Field(ge=0, description="optimizer steps finished")
    loss: float | None = Field(default=None, description="mean training loss of the steps since the last record")
    eval_loss: float | None = None
    learning_rate: float | None = None
    samples_seen: int | None = Field(default=None, ge=0, description="training samples consumed, all ranks")
    at: datetime


def parse_metrics(data: bytes | None) -> list[MetricsRecord]:
    """The records of a metrics.jsonl document (none when absent)."""
    if not data:
        return []
    return [MetricsRecord.model_validate_json(line) for line in data.decode().splitlines() if line.strip()]


class ManifestFile(BaseModel):
    key: str = Field(description="key relative to the job's output prefix")
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class LibraryVersions(BaseModel):
    """The versions of the libraries a trainer runs with (None: not installed there, e.g. peft in
    a full fine-tune environment without it). training.versions reads and compares them."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    torch: str | None = None
    transformers: str | None = None
    peft: str | None = None
    datasets: str | None = None
    trainer: str | None = Field(default=None, description="the spotshift_trainer distribution (spotshift in a "
                                "dev checkout)")


class CheckpointManifest(BaseModel):
    """checkpoints/LATEST.json (and step-<N>/manifest.json): a checkpoint exists once this is written."""

    step: int = Field(ge=0)
    files: list[ManifestFile]
    created_at: datetime
    versions: LibraryVersions | None = Field(
        default=None, description="the libraries that wrote it; None: written before versions were recorded")

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


# -- helpers over a store (the trainer) -------------------------------------------------------


def load_json(store: ObjectStore, key: str, model: type[BaseModel]):
    data = store.get_bytes(key)
    return None if data is None else model.model_validate_json(data)


def save_json(store: ObjectStore, key: str, doc: BaseModel) -> None:
    store.put_bytes(key, doc.model_dump_json(indent=1).encode())


# -- helpers over an s3 client and the job's output URI (the orchestrator) ---------------------


def _store(s3, output: str) -> S3Store:
    return S3Store.from_uri(s3, output)


def read_progress(s3, output: str) -> Progress | None:
    """The trainer's last heartbeat under `output` (s3://bucket/prefix/), or None before the first."""
    return load_json(_store(s3, output), PROGRESS, Progress)


def write_progress(s3, output: str, progress: Progress) -> None:
    save_json(_store(s3, output), PROGRESS, progress)


def read_control(s3, output: str) -> ControlRequest | None:
    return load_json(_store(s3, output), CONTROL, ControlRequest)


def write_control(s3, output: str, request: ControlRequest) -> None:
    """Ask the trainer to checkpoint and exit; it acts within control_poll_seconds (+ one step)."""
    save_json(_store(s3, output), CONTROL, request)


def read_metrics(s3, output: str) -> list[MetricsRecord]:
    """The trainer's loss curve so far (metrics.jsonl), oldest first."""
    return parse_metrics(_store(s3, output).get_bytes(METRICS))


def read_latest(s3, output: str) -> CheckpointManifest | None:
    """The manifest of the newest complete checkpoint, or None if there is none yet."""
    return load_json(_store(s3, output), LATEST, CheckpointManifest)


def write_spec(s3, spec: TrainingSpec) -> str:
    """Write spec.json under spec.output (an s3:// URI) and return the spec's s3:// URI."""
    split_s3_uri(spec.output)
    store = _store(s3, spec.output)
    store.put_bytes(SPEC, spec.model_dump_json(indent=1).encode())
    return store.uri(SPEC)
