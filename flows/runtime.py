"""The collaborators a flow run works with (stores, S3, market, compute, clock), built once from
settings or handed in by a test or the demo: flows never build clients themselves."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable

from spotshift.clock import wall_clock
from spotshift.settings import Settings, get_settings


@dataclass
class Runtime:
    """Everything a spotshift flow needs besides its parameters."""

    settings: Settings
    jobs: Any  # spotshift.stores.JobStore
    ledger: Any  # spotshift.stores.Ledger
    s3: Any  # boto3 S3 client
    market: Any  # spotshift.market.MarketSource
    backend: Any  # spotshift.aws.compute.ComputeBackend
    clock: Callable[[], datetime] = wall_clock
    sleep: Callable[[float], None] = time.sleep
    policy: str = "spotshift"
    image_id: str = "ami-999844e0"  # moto's Deep Learning AMI; SPOTSHIFT_IMAGE_ID for EC2
    poll_seconds: float = 5.0  # wall seconds between looks at progress.json
    rescout_seconds: float | None = None  # wall seconds between in-flow re-scouts; None = leave it to continuous-scout
    changeover_hours: float = 0.2  # until measured: time from start to first progress on a new instance
    on_demand_prices: dict[str, float] = field(default_factory=dict)
    trainer_python: str = "python3"
    imds_endpoint: str | None = None  # the trainer polls it for spot notices (EC2: http://169.254.169.254)
    min_step_seconds: float = 0.0  # trainer pacing for demos and tests; 0 = train at full speed

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Runtime:
        """The runtime a deployment's flow run gets: stores, market and compute from settings/blocks."""
        from blocks.aws import load_aws_credentials
        from spotshift.aws.compute import make_backend
        from spotshift.market.aws import AwsMarket
        from blocks.stores import open_job_store, open_ledger

        settings = settings or get_settings()
        creds = load_aws_credentials(settings)

        def client_for(service: str, region: str):
            return creds.model_copy(update={"region_name": region}).get_client(service)

        if settings.compute_backend == "ec2":
            backend = make_backend("ec2", clients=lambda region: client_for("ec2", region))
        else:
            if not settings.aws_endpoint_url:
                raise ValueError("compute_backend 'local' needs SPOTSHIFT_AWS_ENDPOINT_URL (a moto server)")
            backend = make_backend("local", endpoint_url=settings.aws_endpoint_url,
                                   work_dir=settings.home / "instances")
        return cls(settings=settings, jobs=open_job_store(settings), ledger=open_ledger(settings),
                   s3=creds.get_s3_client(), market=AwsMarket(client_for), backend=backend,
                   poll_seconds=settings.monitor_poll_seconds, image_id=settings.image_id,
                   imds_endpoint="http://169.254.169.254" if settings.compute_backend == "ec2" else None)

    @classmethod
    def stores_only(cls, settings: Settings | None = None) -> Runtime:
        """Just the job store and the ledger: what `status`, `jobs` and `approve` need."""
        from blocks.stores import open_job_store, open_ledger

        settings = settings or get_settings()
        return cls(settings=settings, jobs=open_job_store(settings), ledger=open_ledger(settings), s3=None,
                   market=None, backend=None)

    @classmethod
    def local(cls, endpoint_url: str, home, *, market: Any, clock: Callable[[], datetime] = wall_clock,
              bucket: str = "spotshift-jobs", backend_options: dict | None = None, **overrides: Any) -> Runtime:
        """The embedded runtime: a moto server for EC2 and S3, embedded stores under `home`, the
        local compute backend (interruptions follow `market`), and `clock` for market and bills."""
        from pathlib import Path

        from spotshift.aws.compute import make_backend
        from spotshift.aws.moto_env import client, ensure_bucket
        from blocks.stores import open_job_store, open_ledger

        home = Path(home)
        settings = Settings(home=home, bucket=bucket, aws_endpoint_url=endpoint_url,
                            **overrides.pop("settings", {}))
        ensure_bucket(endpoint_url, bucket)
        backend = make_backend("local", endpoint_url=endpoint_url, work_dir=home / "instances", oracle=market,
                               clock=clock, **(backend_options or {}))
        return cls(settings=settings, jobs=open_job_store(settings), ledger=open_ledger(settings),
                   s3=client("s3", endpoint_url), market=market, backend=backend, clock=clock, **overrides)
