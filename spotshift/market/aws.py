"""The live AWS market: GPU types, zone offerings, latest spot prices, on-demand prices and
interruption risk, read region by region in parallel with boto3 clients passed in."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError

from spotshift.aws.errors import SpotshiftAwsError
from spotshift.catalog import INSTANCE_TYPES, InstanceType
from spotshift.market.pricing import OnDemandPrices
from spotshift.market.query import OfferQuery
from spotshift.market.ranking import rank_offers
from spotshift.market.retry import RetryPolicy, paginate_aws
from spotshift.market.spot_advisor import RiskTable, SpotAdvisor
from spotshift.models import Market, MarketSnapshot, Offer

SPOT_SOURCE = "ec2:spot-price-history"
SPOT_PRODUCTS = ["Linux/UNIX", "Linux/UNIX (Amazon VPC)"]
ClientFor = Callable[[str, str], Any]  # (service, region) -> boto3 client
log = logging.getLogger(__name__)


class AwsMarket:
    """MarketSource over EC2 (+ Pricing API + Spot Advisor). A region that fails is reported in
    snapshot.failed_regions; the others still answer."""

    def __init__(
        self,
        client_for: ClientFor,
        *,
        on_demand: OnDemandPrices | None = None,
        risks: SpotAdvisor | None = None,
        retry: RetryPolicy = RetryPolicy(),
        max_workers: int = 16,
        placement_scores: bool = True,
        sleep: Callable[[float], None] = time.sleep,
        cache_token: str = "aws",
    ) -> None:
        self.client_for = client_for
        self.on_demand = on_demand or OnDemandPrices(None, retry, sleep)
        self.risks = risks or SpotAdvisor(fetch=None)
        self.retry = retry
        self.max_workers = max_workers
        self.placement_scores = placement_scores
        self.sleep = sleep
        self._cache_token = cache_token
        self._types: dict[str, dict[str, dict]] = {}
        self._types_lock = threading.Lock()

    @property
    def cache_token(self) -> str:
        return self._cache_token

    def snapshot(self, query: OfferQuery, now: datetime) -> MarketSnapshot:
        wanted = query.instance_types_wanted()
        risks = self.risks.table(now) if Market.SPOT in query.markets else RiskTable()
        offers: list[Offer] = []
        failed: dict[str, str] = {}
        workers = max(1, min(self.max_workers, len(query.regions)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="scout") as pool:
            futures = {r: pool.submit(self.region_offers, r, wanted, query, now, risks) for r in query.regions}
            for region, future in futures.items():
                try:
                    offers.extend(future.result())
                except (SpotshiftAwsError, BotoCoreError) as exc:
                    log.warning("scout: region %s failed: %s", region, exc)
                    failed[region] = str(exc)
        return MarketSnapshot(taken_at=now, offers=rank_offers(offers), failed_regions=failed, source="aws")

    def region_offers(self, region: str, wanted: list[InstanceType], query: OfferQuery, now: datetime,
                      risks: RiskTable) -> list[Offer]:
        """Every offer of one region that fits the query."""
        ec2 = self.client_for("ec2", region)
        zones_of = self._offerings(region, ec2, [t.name for t in wanted])
        names = [t.name for t in wanted if t.name in zones_of]
        if not names:
            return []
        described = self.instance_types(region, ec2, names)
        names = [name for name in names if name in described]
        offers: list[Offer] = []
        if Market.SPOT in query.markets:
            scores = self._placement_scores(region, ec2, names) if self.placement_scores else {}
            for (name, zone), usd in self._spot_prices(region, ec2, names, now).items():
                if zone in zones_of.get(name, ()):
                    offers.append(self._offer(INSTANCE_TYPES[name], described[name], region, zone, Market.SPOT, usd,
                                              now, SPOT_SOURCE, risks, scores.get(zone)))
        if Market.ON_DEMAND in query.markets:
            for name, (usd, source) in self.on_demand.prices(region, names).items():
                for zone in sorted(zones_of.get(name, ())):
                    offers.append(self._offer(INSTANCE_TYPES[name], described[name], region, zone, Market.ON_DEMAND,
                                              usd, now, source, RiskTable(), None))
        return offers

    def instance_types(self, region: str, ec2: Any, names: list[str]) -> dict[str, dict]:
        """describe_instance_types of `names` (types this region offers), cached per region. Named
        types, not a filter: EC2 answers those directly instead of filtering every type it has."""
        with self._types_lock:
            cached = self._types.setdefault(region, {})
            missing = [n for n in names if n not in cached]
        for i in range(0, len(missing), 100):  # at most 100 names per call
            pages = paginate_aws(ec2, "describe_instance_types", region=region, retry=self.retry, sleep=self.sleep,
                                 InstanceTypes=missing[i:i + 100])
            found = {row["InstanceType"]: row for page in pages for row in page.get("InstanceTypes", [])}
            with self._types_lock:
                cached.update(found)
        with self._types_lock:
            return {n: cached[n] for n in names if n in cached}

    def _offerings(self, region: str, ec2: Any, names: list[str]) -> dict[str, set[str]]:
        pages = paginate_aws(ec2, "describe_instance_type_offerings", region=region, retry=self.retry,
                             sleep=self.sleep, LocationType="availability-zone",
                             Filters=[{"Name": "instance-type", "Values": names}])
        zones: dict[str, set[str]] = {}
        for page in pages:
            for row in page.get("InstanceTypeOfferings", []):
                zones.setdefault(row["InstanceType"], set()).add(row["Location"])
        return zones

    def _spot_prices(self, region: str, ec2: Any, names: list[str], now: datetime) -> dict[tuple[str, str], float]:
        """(type, zone) -> the latest spot price (StartTime=now returns the price in force now)."""
        pages = paginate_aws(ec2, "describe_spot_price_history", region=region, retry=self.retry, sleep=self.sleep,
                             InstanceTypes=names, ProductDescriptions=SPOT_PRODUCTS, StartTime=now)
        latest: dict[tuple[str, str], tuple[Any, float]] = {}
        for page in pages:
            for row in page.get("SpotPriceHistory", []):
                key = (row["InstanceType"], row["AvailabilityZone"])
                if key not in latest or row["Timestamp"] > latest[key][0]:
                    latest[key] = (row["Timestamp"], float(row["SpotPrice"]))
        return {key: usd for key, (_, usd) in latest.items()}

    def _placement_scores(self, region: str, ec2: Any, names: list[str]) -> dict[str, int]:
        """zone name -> spot placement score (1-10) for one instance of these types; {} where not permitted."""
        try:
            pages = paginate_aws(ec2, "get_spot_placement_scores", region=region, retry=self.retry, sleep=self.sleep,
                                 InstanceTypes=names, TargetCapacity=1, TargetCapacityUnitType="units",
                                 SingleAvailabilityZone=True, RegionNames=[region])
            zone_ids = {row["ZoneId"]: row["ZoneName"] for row in paginate_aws(
                ec2, "describe_availability_zones", region=region, retry=self.retry, sleep=self.sleep,
            )[0].get("AvailabilityZones", [])}
        except (SpotshiftAwsError, BotoCoreError) as exc:
            log.info("scout: no spot placement scores in %s: %s", region, exc)
            return {}
        return {zone_ids[row["AvailabilityZoneId"]]: int(row["Score"])
                for page in pages for row in page.get("SpotPlacementScores", [])
                if row.get("AvailabilityZoneId") in zone_ids}

    @staticmethod
    def _offer(t: InstanceType, described: dict, region: str, zone: str, market: Market, usd: float,
               now: datetime, source: str, risks: RiskTable, placement_score: int | None) -> Offer:
        return Offer(
            instance_type=t.name, gpu=t.gpu, gpu_count=t.gpu_count, gpu_memory_gib=t.gpu_memory_gib,
            vcpus=described.get("VCpuInfo", {}).get("DefaultVCpus", t.vcpus),
            memory_gib=described.get("MemoryInfo", {}).get("SizeInMiB", t.memory_gib * 1024) / 1024,
            region=region, zone=zone, market=market, usd_per_hour=usd,
            interruption=risks.risk(region, t.name), observed_at=now, source=source,
            **({"placement_score": placement_score} if placement_score is not None else {}),
        )
