"""Knobs with an env prefix (SPOTSHIFT_...), in one place instead of scattered literals."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """spotshift's configuration. Every field can be set as SPOTSHIFT_<FIELD> in the environment."""

    model_config = SettingsConfigDict(env_prefix="SPOTSHIFT_", extra="ignore")

    home: Path = Field(default=Path(".spotshift"), description="embedded stores and local state")
    bucket: str = Field(default="spotshift-jobs", description="S3 bucket holding jobs/<job_id>/")
    compute_backend: Literal["local", "ec2"] = Field(default="local", description="where instances run")
    aws_endpoint_url: str | None = Field(default=None, description="e.g. a moto server: http://127.0.0.1:5000")
    aws_region: str = Field(default="us-east-1", description="region of the bucket and the default client")
    image_id: str = Field(default="ami-999844e0", description="AMI of the training instances (default: a moto "
                          "image; set your Deep Learning AMI for EC2)")
    instance_profile: str = Field(default="spotshift-trainer", description="IAM instance profile of trainers")
    mongodb_url: SecretStr | None = Field(default=None, description="real MongoDB; unset = embedded store")
    mongodb_database: str = Field(default="spotshift")
    supabase_url: str | None = Field(default=None, description="Supabase project URL; unset = embedded ledger")
    supabase_key: SecretStr | None = Field(default=None, description="Supabase service-role key")
    scout_cache_seconds: float = Field(default=300, ge=0, description="how long a scout result is reused")
    heartbeat_stall_seconds: float = Field(default=600, gt=0, description="no heartbeat for this long = stalled")
    job_lease_seconds: float = Field(default=7200, gt=0, description="a live job whose flow run has not "
                                     "refreshed it for this long is reaped (its flow process died)")
    monitor_poll_seconds: float = Field(default=5, gt=0)
    aws_max_attempts: int = Field(default=5, ge=1, description="attempts per AWS call (botocore's standard "
                                  "retry mode retries throttling and transient errors)")
    aws_task_retry_delay_s: float = Field(default=30, ge=0, description="pause before a Prefect task retries an "
                                          "AWS step that still failed after botocore's attempts")

    @property
    def store_dir(self) -> Path:
        return self.home / "store"


def get_settings() -> Settings:
    return Settings()
