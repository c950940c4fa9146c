"""Knobs with an env prefix (SPOTSHIFT_...), in one place instead of scattered literals."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """spotshift's configuration. Every field can be set as SPOTSHIFT_<FIELD> in the environment."""

    model_config = SettingsConfigDict(env_prefix="SPOTSHIFT_", extra="ignore")

    home: Path = Field(default=Path(".spotshift"), description="embedded stores and local state")
    bucket: str = Field(default="spotshift-jobs", description="S3 bucket holding jobs/<job_id>/ and artifacts/ "
                        "(`spotshift aws setup` proposes spotshift-<account>-<region>: see default_bucket_name)")
    compute_backend: Literal["local", "ec2"] = Field(default="local", description="where instances run")
    aws_endpoint_url: str | None = Field(default=None, description="e.g. a moto server: http://127.0.0.1:5000")
    aws_region: str = Field(default="us-east-1", description="region of the bucket and the default client")
    image_id: str = Field(default="ami-999844e0", description="AMI of the local backend's instances (a moto "
                          "image); EC2 resolves one image per region (image_ids, image_ssm_parameter)")
    instance_profile: str = Field(default="spotshift-trainer", description="IAM instance profile of trainers")
    # --- real AWS (spotshift aws setup / check, the EC2 backend); docs/aws.md ---
    regions: list[str] = Field(default_factory=lambda: ["us-east-1", "us-east-2", "us-west-2"],
                               description="every region jobs may use: setup, check and the fleet pass cover all of them")
    image_ids: dict[str, str] = Field(default_factory=dict, description="per-region image override, e.g. "
                                      '{"us-east-1": "ami-0123..."} (JSON in SPOTSHIFT_IMAGE_IDS)')
    image_ssm_parameter: str = Field(
        default="/aws/service/deeplearning/ami/x86_64/oss-nvidia-driver-gpu-pytorch-2.9-ubuntu-24.04/latest/ami-id",
        description="public SSM parameter naming the region's AWS Deep Learning AMI (PyTorch)")
    image_name_pattern: str = Field(default="Deep Learning OSS Nvidia Driver AMI GPU PyTorch 2.9 (Ubuntu 24.04) *",
                                    description="describe_images name filter when the SSM parameter is missing")
    image_owners: list[str] = Field(default_factory=lambda: ["amazon"], description="owners for describe_images")
    trainer_python: str = Field(default="/opt/pytorch/bin/python", description="the image's PyTorch python: "
                                "the trainer wheel is installed into its environment")
    trainer_role: str = Field(default="spotshift-trainer", description="IAM role of the trainer instances")
    security_group: str = Field(default="spotshift-trainer", description="egress-only security group, per region")
    private_subnets: bool = Field(default=False, description="launch without a public IP (the subnets need a NAT "
                                  "gateway or VPC endpoints for S3, Secrets Manager and the Hub)")
    vpc_id: str | dict[str, str] | None = Field(default=None, description="the VPC of launches and the security "
                                                 "group, per region: {\"us-east-1\": \"vpc-...\"} (JSON in "
                                                 "SPOTSHIFT_VPC_ID; a plain vpc-... when SPOTSHIFT_REGIONS names one "
                                                 "region); a region without it (or SPOTSHIFT_SUBNET_IDS) uses its "
                                                 "default VPC")
    subnet_ids: list[str] | dict[str, list[str]] = Field(default_factory=dict, description="the only subnets "
                                                         "launches use, per region: {\"us-east-1\": [\"subnet-...\", "
                                                         "...]} (JSON in SPOTSHIFT_SUBNET_IDS; a plain list when "
                                                         "SPOTSHIFT_REGIONS names one region); one VPC per region "
                                                         "(SPOTSHIFT_VPC_ID's when set); a zone without one is not used")
    hub_token_secret: str | None = Field(default=None, description="Secrets Manager secret (name or ARN) holding "
                                         "a Hugging Face token for gated models, read by the instance at run time; "
                                         "named under spotshift/ (e.g. spotshift/hf-token): the IAM policies allow "
                                         "no other, and setup and check refuse another name")
    root_volume_max_gib: int = Field(default=2048, ge=16, le=16_384, description="largest root EBS volume (gp3, "
                                     "GiB) a launch may ask for: the image plus, on a type whose instance store "
                                     "cannot hold the job's model, checkpoint and output, those too")
    data_prefixes: list[str] = Field(default_factory=list, description="the user's own S3 data jobs may read, "
                                     "s3://bucket/prefix each (JSON list in SPOTSHIFT_DATA_PREFIXES): `spotshift aws "
                                     "setup --data` grants both roles read there and prints this list; a job on EC2 "
                                     "whose model or dataset lies outside these and the bucket's jobs/ is refused")
    max_input_upload_bytes: int = Field(default=20 * 1024**3, ge=0, description="a local model or dataset of an "
                                        "EC2 job is uploaded at submit up to this size (default 20 GiB); a larger "
                                        "one is refused: copy it to a granted S3 prefix and submit the s3:// URI")
    checkpoint_expire_days: int = Field(default=30, ge=1, description="lifecycle: checkpoints of a job expire "
                                        "this many days after they were written")
    pricing_region: str = Field(default="us-east-1", description="endpoint region of the AWS Pricing API")
    first_heartbeat_seconds: float = Field(default=1800, gt=0, description="a new instance's first heartbeat may "
                                           "take this long (boot, install, model download)")
    check_cache_seconds: float = Field(default=3600, ge=0, description="how long a region's preflight check "
                                       "is reused before a launch there")
    mongodb_url: SecretStr | None = Field(default=None, description="real MongoDB; unset = embedded store")
    mongodb_database: str = Field(default="spotshift")
    supabase_url: str | None = Field(default=None, description="Supabase project URL; unset = embedded ledger")
    supabase_key: SecretStr | None = Field(default=None, description="Supabase service-role key")
    scout_cache_seconds: float = Field(default=300, ge=0, description="how long a scout result is reused")
    heartbeat_stall_seconds: float = Field(default=600, gt=0, description="no heartbeat for this long = stalled")
    job_lease_seconds: float = Field(default=1800, gt=0, description="a job between two states (placing, "
                                     "recovering, moving) untouched this long is adopted by the next fleet pass")
    monitor_poll_seconds: float = Field(default=5, gt=0)
    fleet_interval_seconds: float = Field(default=60, ge=10, description="seconds between two fleet passes (the "
                                          "`fleet` deployment's schedule: one pass judges every running job)")
    fleet_read_concurrency: int = Field(default=32, ge=1, le=256, description="heartbeat reads a fleet pass keeps "
                                        "in flight (threads of the pass's process)")
    aws_max_attempts: int = Field(default=5, ge=1, description="attempts per AWS call (botocore's standard "
                                  "retry mode retries throttling and transient errors)")
    aws_task_retry_delay_s: float = Field(default=30, ge=0, description="pause before a Prefect task retries an "
                                          "AWS step that still failed after botocore's attempts")
    api_cors_origins: list[str] = Field(default_factory=list, description="origins a browser may call the HTTP "
                                        "API from (JSON list, e.g. [\"https://app.example.com\"]); none by default")
    api_max_body_bytes: int = Field(default=1_000_000, ge=1_024, description="larger request bodies are refused (413)")
    prefect_ui_url: str = Field(default="http://127.0.0.1:4200", description="the Prefect UI the job page and "
                                "GET /jobs/{id} link flow runs to")

    @field_validator("vpc_id", mode="before")
    @classmethod
    def _vpc_id(cls, v: object) -> object:
        return v.strip() or None if isinstance(v, str) else v

    @field_validator("subnet_ids", mode="before")
    @classmethod
    def _subnet_ids(cls, v: object) -> object:  # "subnet-a,subnet-b" as well as a JSON list
        return [p.strip() for p in v.split(",") if p.strip()] if isinstance(v, str) else v

    @model_validator(mode="after")
    def _network(self) -> Settings:
        """VPC and subnet ids keyed by a region of SPOTSHIFT_REGIONS (a plain value only for one region)."""
        for name, value, pattern in (("SPOTSHIFT_VPC_ID", self.vpc_id, VPC_ID), ("SPOTSHIFT_SUBNET_IDS",
                                                                                self.subnet_ids, SUBNET_ID)):
            if not value:
                continue
            by_region = _by_region(name, value, self.regions)
            for region, ids in by_region.items():
                if region not in self.regions:
                    raise ValueError(f"{name} names region {region!r}, which is not in SPOTSHIFT_REGIONS "
                                     f"({', '.join(self.regions)}): add it there or remove it from {name}")
                if not ids:
                    raise ValueError(f"{name} names no id for {region}: remove {region} from it to use the default VPC")
                for one in ([ids] if isinstance(ids, str) else ids):
                    if not pattern.fullmatch(one):
                        raise ValueError(f"{name}: {one!r} (for {region}) is not an id like {EXAMPLE_IDS[name]}")
        return self

    def network_of(self, region: str) -> tuple[str | None, tuple[str, ...]]:
        """(VPC id, subnet ids) named for `region` (None, () = its default VPC)."""
        vpc = _by_region("SPOTSHIFT_VPC_ID", self.vpc_id, self.regions).get(region) if self.vpc_id else None
        subnets = _by_region("SPOTSHIFT_SUBNET_IDS", self.subnet_ids, self.regions).get(region) if self.subnet_ids \
            else None
        return vpc, tuple(dict.fromkeys(subnets or ()))

    @property
    def store_dir(self) -> Path:
        return self.home / "store"

    def image_override(self, region: str) -> str | None:
        return self.image_ids.get(region)


VPC_ID = re.compile(r"^vpc-[0-9a-f]{8,17}$")
SUBNET_ID = re.compile(r"^subnet-[0-9a-f]{8,17}$")
EXAMPLE_IDS = {"SPOTSHIFT_VPC_ID": "vpc-0123456789abcdef0", "SPOTSHIFT_SUBNET_IDS": "subnet-0123456789abcdef0"}


def _by_region(name: str, value: str | list[str] | dict, regions: list[str]) -> dict:
    """A network setting keyed by region; a plain value (not keyed) belongs to the one region."""
    if isinstance(value, dict):
        return value
    if len(regions) != 1:
        example = f'"{value}"' if isinstance(value, str) else "[" + ", ".join(f'"{v}"' for v in value) + "]"
        raise ValueError(f"{name} is {value!r}, not keyed by region, but SPOTSHIFT_REGIONS names {len(regions)} "
                         f"regions ({', '.join(regions)}): VPCs and subnets belong to one region; write "
                         f"{name}='{{\"{regions[0] if regions else 'us-east-1'}\": {example}}}'")
    return {regions[0]: value}


def default_bucket_name(account_id: str, region: str) -> str:
    """spotshift-<account>-<region>: bucket names are global, this one is the account's own."""
    return f"spotshift-{account_id}-{region}"


def bucket_name(settings: Settings, account: Callable[[], str]) -> str:
    """The one bucket rule: SPOTSHIFT_BUCKET when it is set; otherwise, on AWS (the ec2 backend),
    spotshift-<account>-<SPOTSHIFT_AWS_REGION> (what `spotshift aws setup` creates; `account()` asks
    STS only then); offline (the local backend, a moto server) the default `spotshift-jobs`."""
    if "bucket" in settings.model_fields_set or settings.compute_backend != "ec2":
        return settings.bucket
    return default_bucket_name(account(), settings.aws_region)


def get_settings() -> Settings:
    return Settings()
