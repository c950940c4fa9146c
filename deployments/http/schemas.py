"""The API's request and response bodies (the OpenAPI schema at /docs is built from these)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from spotshift.job_report import JobReport
from spotshift.models import Job

IDEMPOTENCY_KEY = r"^[A-Za-z0-9._:-]+$"


class JobBrief(BaseModel):
    id: str
    name: str
    status: str
    step: int
    max_steps: int
    cost_usd: float = Field(description="billed for closed instances (the job page adds open ones up to now)")
    created_at: datetime
    updated_at: datetime
    flow_run_id: str | None

    @classmethod
    def of(cls, job: Job) -> JobBrief:
        return cls(id=job.id, name=job.request.name, status=job.status.value, step=job.step,
                   max_steps=job.request.max_steps, cost_usd=round(job.cost_usd, 4), created_at=job.created_at,
                   updated_at=job.updated_at, flow_run_id=job.flow_run_id)


class UploadedInput(BaseModel):
    field: str = Field(description="model or dataset")
    source: str = Field(description="the local path submitted")
    uri: str = Field(description="where it was uploaded; the job's spec names this")
    bytes: int
    files: int
    seconds: float = Field(description="how long the upload took")


class SubmitOut(JobBrief):
    uploaded_inputs: list[UploadedInput] = Field(default_factory=list, description="EC2 jobs: the local model or "
                                                 "dataset submit uploaded under jobs/<id>/inputs/")

    @classmethod
    def of(cls, job: Job) -> SubmitOut:
        from deployments.submit_inputs import UPLOAD_EVENT

        uploads = [UploadedInput(**e.data) for e in job.events if e.kind == UPLOAD_EVENT]
        return cls(**JobBrief.of(job).model_dump(), uploaded_inputs=uploads)


class JobPage(BaseModel):
    jobs: list[JobBrief]
    total: int = Field(description="jobs matching the filter")
    offset: int
    limit: int
    next_offset: int | None = Field(description="offset of the next page; None on the last")


class JobDetail(JobBrief):
    flow_run_url: str | None = Field(description="the flow run in the Prefect UI")
    final_model: str | None
    error: str | None
    report: JobReport = Field(description="placements, migrations, cost so far against on-demand")


class Answer(BaseModel):
    comment: str = Field(default="", max_length=2000, description="shown beside the decision in the flow run")


class AnswerOut(BaseModel):
    job_id: str
    flow_run_id: str
    approved: bool


class CancelOut(BaseModel):
    job_id: str
    status: str
    flow_run_cancelled: bool = Field(description="False when the job had no live flow run (none, gone or over)")
    stopped_instances: list[str]
    closed_workloads: list[str]
    cost_usd: float


class MetricPoint(BaseModel):
    step: int
    loss: float | None
    eval_loss: float | None = None
    at: datetime | None = None


class Metrics(BaseModel):
    job_id: str
    source: str = Field(description="metrics.jsonl, progress.json (its last step only) or none")
    points: list[MetricPoint]


class Problem(BaseModel):
    detail: str
    status: str | None = Field(default=None, description="the job's current status (409)")
