"""The Runtime: the collaborators a flow run works with (stores, S3, market, compute, clock), one
frozen bundle typed by their Protocols, and its construction from settings (here, with the other
clients: flows never build clients themselves). A test or the demo hands in its own, or derives one
with dataclasses.replace; nothing assigns to a Runtime once it is built.

flows.runtime re-exports Runtime: this module sits in blocks/ so that the construction below can
name the class it builds (a block may not import a flow)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from spotshift.aws.compute import ComputeBackend
from spotshift.clock import wall_clock
from spotshift.market.query import OfferQuery
from spotshift.market.source import MarketSource
from spotshift.models import Job
from spotshift.policy.state import SpotOutlook
from spotshift.settings import Settings, get_settings
from spotshift.stores import Jobs, Ledger
from spotshift.stores.market_history import ZoneHistory
from spotshift.stores.throughput import ThroughputRecords
from training.contract import JobPaths

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client  # botocore builds the client's class at run time: the stubs name it
else:
    S3Client = Any  # what a validator (Prefect's flow parameters) sees of the annotation at run time


def no_fault(point: str) -> None:
    """The default fault hook: nothing happens at the named points of a migration."""


@dataclass(frozen=True)
class Runtime:
    """Everything a spotshift flow needs besides its parameters: the collaborators (typed by their
    Protocols), values derived from settings, and the hooks tests and the demo replace (clock,
    sleep, fault). Frozen: derive a changed one with dataclasses.replace."""

    settings: Settings
    jobs: Jobs
    ledger: Ledger
    s3: S3Client | None  # None: stores_only (no S3 wanted)
    market: MarketSource | None
    backend: ComputeBackend | None
    clock: Callable[[], datetime] = wall_clock
    sleep: Callable[[float], None] = time.sleep
    policy: str = "spotshift"
    image_id: str | None = "ami-999844e0"  # moto's Deep Learning AMI; None on EC2 (per-region images)
    poll_seconds: float = 5.0  # wall seconds between looks at progress.json
    rescout_seconds: float | None = None  # wall seconds between in-flow re-scouts; None = leave it to continuous-scout
    changeover_hours: float = 0.2  # until measured: time from start to first progress on a new instance
    on_demand_prices: dict[str, float] = field(default_factory=dict)
    trainer_python: str = "python3"
    imds_endpoint: str | None = None  # the trainer polls it for spot notices (EC2: http://169.254.169.254)
    min_step_seconds: float = 0.0  # trainer pacing for demos and tests; 0 = train at full speed
    history: ZoneHistory | None = None  # recorded zone observations; None = no outlook for the policy
    throughput: ThroughputRecords | None = None  # measured training rates, for later estimates of the same shape
    fault: Callable[[str], None] = no_fault  # called at each named step of a migration (crash tests kill here)
    _bucket_regions: dict[str, str] = field(default_factory=dict)  # a cache: its contents change, the field not

    def outlook(self, query: OfferQuery, now: datetime) -> SpotOutlook | None:
        """The spot outlook of the query's regions from the recorded history (None without one)."""
        return self.history.outlook(query.regions, now) if self.history is not None else None

    def paths(self, job: Job) -> JobPaths:
        """Where the job's files live (its output_bucket, else the configured bucket)."""
        return job.paths(self.settings.bucket)

    def bucket_region(self, bucket: str) -> str:
        """The region of a bucket (where a job's checkpoints live), asked once."""
        if bucket not in self._bucket_regions:
            from spotshift.aws.s3 import bucket_region

            self._bucket_regions[bucket] = bucket_region(self.s3, bucket)
        return self._bucket_regions[bucket]

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Runtime:
        """runtime_from_settings: the runtime a deployment's flow run gets."""
        return runtime_from_settings(settings)

    @classmethod
    def stores_only(cls, settings: Settings | None = None) -> Runtime:
        """stores_only: just the job store and the ledger."""
        return stores_only(settings)

    @classmethod
    def local(cls, endpoint_url: str, home: str | Path, *, market: Any, clock: Callable[[], datetime] = wall_clock,
              bucket: str = "spotshift-jobs", backend_options: dict | None = None, seed_history: bool = True,
              **overrides: Any) -> Runtime:
        """local_runtime: the embedded runtime on a moto server."""
        return local_runtime(endpoint_url, home, market=market, clock=clock, bucket=bucket,
                             backend_options=backend_options, seed_history=seed_history, **overrides)


def runtime_from_settings(settings: Settings | None = None) -> Runtime:
    """The runtime a deployment's flow run gets: stores, market and compute from settings/blocks.
    EC2: every allowed region, per-region images and network, the trainer wheel from the
    bucket; the market reads the Pricing API and the Spot Advisor feed."""
    from blocks.aws import load_aws_credentials
    from blocks.stores import open_job_store, open_ledger, open_market_history, open_throughput_store
    from spotshift.aws.compute import make_backend

    settings = settings or get_settings()
    creds = load_aws_credentials(settings)

    def client_for(service: str, region: str):
        return creds.model_copy(update={"region_name": region}).get_client(service)

    on_ec2 = settings.compute_backend == "ec2"
    s3 = creds.get_s3_client()
    if on_ec2:
        from spotshift.aws.bucket_owner import expect_bucket_owner

        settings, backend, account = _ec2_backend(settings, client_for)
        s3 = expect_bucket_owner(s3, account)
    else:
        if not settings.aws_endpoint_url:
            raise ValueError("compute_backend 'local' needs SPOTSHIFT_AWS_ENDPOINT_URL (a moto server)")
        backend = make_backend("local", endpoint_url=settings.aws_endpoint_url,
                               work_dir=settings.home / "instances")
    return Runtime(settings=settings, jobs=open_job_store(settings), ledger=open_ledger(settings),
                   history=open_market_history(settings), throughput=open_throughput_store(settings),
                   s3=s3, market=_aws_market(settings, client_for, backend, live=on_ec2),
                   backend=backend,
                   poll_seconds=settings.monitor_poll_seconds, image_id=None if on_ec2 else settings.image_id,
                   trainer_python=settings.trainer_python if on_ec2 else "python3",
                   imds_endpoint="http://169.254.169.254" if on_ec2 else None)


def stores_only(settings: Settings | None = None) -> Runtime:
    """Just the job store and the ledger: what `status`, `jobs` and `approve` need."""
    from blocks.stores import open_job_store, open_ledger

    settings = settings or get_settings()
    return Runtime(settings=settings, jobs=open_job_store(settings), ledger=open_ledger(settings), s3=None,
                   market=None, backend=None)


def local_runtime(endpoint_url: str, home: str | Path, *, market: Any, clock: Callable[[], datetime] = wall_clock,
                  bucket: str = "spotshift-jobs", backend_options: dict | None = None, seed_history: bool = True,
                  **overrides: Any) -> Runtime:
    """The embedded runtime: a moto server for EC2 and S3, embedded stores under `home`, the
    local compute backend (interruptions follow `market`), and `clock` for market and bills.
    `seed_history`: record the market's past (a replay's ticks before now) as the scouts would have.
    `overrides`: any other Runtime field; `settings=` a dict of Settings fields."""
    from blocks.stores import open_job_store, open_ledger, open_market_history, open_throughput_store
    from spotshift.aws.compute import make_backend
    from spotshift.aws.moto_env import client, ensure_bucket

    home = Path(home)
    settings = Settings(home=home, bucket=bucket, aws_endpoint_url=endpoint_url,
                        **overrides.pop("settings", {}))
    ensure_bucket(endpoint_url, bucket)
    backend = make_backend("local", endpoint_url=endpoint_url, work_dir=home / "instances", oracle=market,
                           clock=clock, **(backend_options or {}))
    overrides.setdefault("throughput", open_throughput_store(settings))
    history = overrides.setdefault("history", open_market_history(settings))
    past = getattr(market, "past_observations", None)  # what a scout would have seen before now
    if seed_history and past is not None and history is not None and not history.zones():
        history.record(past(clock()), source="replay")
    return Runtime(settings=settings, jobs=open_job_store(settings), ledger=open_ledger(settings),
                   s3=client("s3", endpoint_url), market=market, backend=backend, clock=clock, **overrides)


def _ec2_backend(settings: Settings, client_for: Callable[[str, str], Any]) -> tuple[Settings, Any, str]:
    """(settings with the account's default bucket unless one was set, the EC2 backend, the account)."""
    from spotshift.aws.check import CheckConfig, RegionPreflight
    from spotshift.aws.compute import make_backend
    from spotshift.aws.images import settings_resolver
    from spotshift.aws.launch_env import LaunchEnvironment, TrainerBoot
    from spotshift.aws.network import LaunchNetwork, NetworkChoice
    from spotshift.aws.trainer_artifact import wheel_publisher
    from spotshift.settings import bucket_name

    region = settings.aws_region
    account = client_for("sts", region).get_caller_identity()["Account"]
    settings = settings.model_copy(update={"bucket": bucket_name(settings, lambda: account)})
    ec2 = lambda r: client_for("ec2", r)  # noqa: E731
    boot = TrainerBoot(wheel_uri=wheel_publisher(client_for("s3", region), settings.bucket, account=account,
                                                 region=region),
                       python=settings.trainer_python, bucket_region=region, hub_token_secret=settings.hub_token_secret)
    env = LaunchEnvironment(images=settings_resolver(settings, client_for),
                            network=LaunchNetwork(ec2, security_group=settings.security_group,
                                                  private=settings.private_subnets,
                                                  choice=lambda r: NetworkChoice.of(settings, r)), boot=boot,
                            root_volume_max_gib=settings.root_volume_max_gib)
    preflight = RegionPreflight(client_for, CheckConfig.from_settings(settings), ttl_s=settings.check_cache_seconds)
    backend = make_backend("ec2", clients=ec2, regions=settings.regions, launch_env=env, preflight=preflight)
    return settings, backend, account


def _aws_market(settings: Settings, client_for: Callable[[str, str], Any], backend: Any, *, live: bool) -> Any:
    """AwsMarket; live (EC2): on-demand prices from the Pricing API through its own endpoint region,
    interruption risk from the Spot Advisor feed (dated fallback / unknown only when unreachable),
    and only instance families the region's image supports."""
    from spotshift.market.aws import AwsMarket
    from spotshift.market.pricing import OnDemandPrices
    from spotshift.market.spot_advisor import SpotAdvisor, fetch_url

    if not live:
        return AwsMarket(client_for)
    env = getattr(backend, "launch_env", None)
    images = env.images if env is not None else None
    network = env.network if env is not None else None
    return AwsMarket(client_for, on_demand=OnDemandPrices(client_for("pricing", settings.pricing_region)),
                     risks=SpotAdvisor(fetch_url, cache_file=settings.home / "spot-advisor.json"),
                     supports=(lambda region, instance_type: images(region).supports(instance_type)) if images else None,
                     launch_zones=network.zones if network is not None else None)
