"""What the instance is told: every training option of the job reaches the spec, under the job's
own output bucket when it names one; no secret is in it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from spotshift.models import Job, JobCreate
from tasks.workloads import training_spec

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def _job(**fields) -> Job:
    request = JobCreate.model_validate(dict(model="gpt2", dataset="s3://bkt/d.jsonl", max_steps=10, budget_usd=5,
                                            deadline=NOW + timedelta(hours=5), **fields), context={"now": NOW})
    return Job(id="job-x", request=request, created_at=NOW, updated_at=NOW)


def test_the_spec_carries_the_jobs_training_mode_and_its_output_bucket():
    spec = training_spec(_job(method="lora", precision="bf16", gradient_checkpointing=True,
                              lora={"r": 8, "target_modules": ["q_proj", "v_proj"]}, merge_adapter=True,
                              output_bucket="my-out-bucket"), "default-bucket")
    assert spec.output == "s3://my-out-bucket/jobs/job-x/"
    assert (spec.method, spec.precision, spec.gradient_checkpointing, spec.merge_adapter) == ("lora", "bf16", True, True)
    assert spec.lora.r == 8 and spec.lora.target_modules == ["q_proj", "v_proj"]


def test_without_an_output_bucket_the_configured_one_is_used():
    spec = training_spec(_job(), "default-bucket")
    assert spec.output == "s3://default-bucket/jobs/job-x/" and spec.method == "full" and spec.precision == "auto"
