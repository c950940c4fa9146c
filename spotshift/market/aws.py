"""The live AWS market: GPU types, zone offerings, latest spot prices, on-demand prices and
interruption risk, read with boto3 clients passed in; all regions' calls overlap in one bounded pool."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError
from botocore.parsers import ResponseParserError

from spotshift.aws.errors import OperationUnsupported, PermissionDenied, SpotshiftAwsError, map_parser_error
from spotshift.catalog import INSTANCE_TYPES, InstanceType
from spotshift.market.pricing import OnDemandPrices
from spotshift.market.query import OfferQuery
from spotshift.cost_model import rank_offers
from spotshift.aws.calls import paginate_aws
from spotshift.market.spot_advisor import RiskTable, SpotAdvisor
from spotshift.models import Market, MarketSnapshot, Offer

SPOT_SOURCE = "ec2:spot-price-history"
SPOT_PRODUCTS = ["Linux/UNIX", "Linux/UNIX (Amazon VPC)"]
AWS_ERRORS = (SpotshiftAwsError, BotoCoreError)
PLACEMENT_SCORES_API = "GetSpotPlacementScores"
DENIED_CODES = frozenset({"UnauthorizedOperation", "AccessDenied", "AccessDeniedException"})  # the policy, not the credentials
UNSUPPORTED_CODES = frozenset({"UnsupportedOperation", "Unsupported"})  # mapped as capacity codes (launches)
MAX_TYPES_PER_DESCRIBE = 100  # describe_instance_types accepts at most 100 names
ClientFor = Callable[[str, str], Any]  # (service, region) -> boto3 client
ZonesOf = dict[str, set[str]]  # instance type -> zones of one region that offer it
log = logging.getLogger(__name__)


class AwsMarket:
    """MarketSource over EC2 (+ Pricing API + Spot Advisor). A region that fails is reported in
    snapshot.failed_regions; the others still answer. At most `max_workers` AWS calls run at once
    (1 = one call at a time). `supports(region, instance_type)` leaves out types the region's
    image cannot boot (an image that does not resolve fails the region); `launch_zones(region)`
    leaves out zones without a subnet for launches (settings that do not fit fail the region)."""

    def __init__(
        self,
        client_for: ClientFor,
        *,
        on_demand: OnDemandPrices | None = None,
        risks: SpotAdvisor | None = None,
        max_workers: int = 16,
        placement_scores: bool = True,
        cache_token: str = "aws",
        supports: Callable[[str, str], bool] | None = None,
        launch_zones: Callable[[str], set[str]] | None = None,
    ) -> None:
        self.client_for = client_for
        self.on_demand = on_demand or OnDemandPrices(None)
        self.risks = risks or SpotAdvisor(fetch=None)
        self.max_workers = max(1, max_workers)
        self.placement_scores = placement_scores
        self._cache_token = cache_token
        self.supports = supports
        self.launch_zones = launch_zones
        self._zones_left_out: dict[str, frozenset[str]] = {}  # region -> zones said to have no subnet (logged once)
        self._specs: dict[str, dict] = {}  # instance type -> its describe_instance_types row (the same in every region)
        self._specs_lock = threading.Lock()
        self._no_scores: dict[str, str] = {}  # region -> why placement scores are unknown there (asked once)
        self._no_scores_lock = threading.Lock()

    @property
    def cache_token(self) -> str:
        return self._cache_token

    def snapshot(self, query: OfferQuery, now: datetime) -> MarketSnapshot:
        """Every offer that fits `query`, ranked; regions whose calls fail are in failed_regions."""
        wanted = [t.name for t in query.instance_types_wanted()]
        spot = Market.SPOT in query.markets
        failed: dict[str, str] = {}
        offers: list[Offer] = []
        with ThreadPoolExecutor(max_workers=self.max_workers, thread_name_prefix="scout") as pool:
            risk_table = pool.submit(self.risks.table, now) if spot else None  # a download: overlaps the AWS calls
            ec2 = self._clients(query.regions, failed)
            offerings = {r: pool.submit(self._offerings, r, c, wanted) for r, c in ec2.items()}
            spot_prices = {r: pool.submit(self._spot_prices, r, c, wanted, now) for r, c in ec2.items()} if spot else {}
            on_demand = ({r: pool.submit(self.on_demand.prices, r, wanted) for r in ec2}
                         if Market.ON_DEMAND in query.markets else {})
            zones, scores = self._zones_and_specs(pool, ec2, offerings, wanted, failed, spot and self.placement_scores)
            risks = risk_table.result() if risk_table is not None else RiskTable()
            for region in ec2:
                if region in failed:
                    continue
                try:
                    prices = spot_prices[region].result() if spot else {}
                    region_zones = self._launchable(region, self._bootable(region, zones[region]))
                except AWS_ERRORS as exc:
                    self._fail(failed, region, exc)
                    continue
                offers.extend(self._region_offers(
                    region, region_zones, prices, on_demand[region].result() if region in on_demand else {},
                    scores[region].result() if region in scores else {}, now, risks))
        return MarketSnapshot(taken_at=now, offers=rank_offers(offers), failed_regions=failed, source="aws")

    def _bootable(self, region: str, zones_of: ZonesOf) -> ZonesOf:
        """The region's types that its image can boot (all of them without a `supports`)."""
        if self.supports is None:
            return zones_of
        return {name: z for name, z in zones_of.items() if self.supports(region, name)}

    def _launchable(self, region: str, zones_of: ZonesOf) -> ZonesOf:
        """Only the zones where launches have a subnet (all of them without `launch_zones`)."""
        if self.launch_zones is None:
            return zones_of
        usable = self.launch_zones(region)
        left_out = frozenset(z for zs in zones_of.values() for z in zs) - usable
        if left_out and self._zones_left_out.get(region) != left_out:
            self._zones_left_out[region] = left_out
            log.info("%s: no offers in %s: no subnet for launches there (SPOTSHIFT_SUBNET_IDS, SPOTSHIFT_VPC_ID or "
                     "the default VPC)", region, ", ".join(sorted(left_out)))
        return {name: z & usable for name, z in zones_of.items() if z & usable}

    def _clients(self, regions: tuple[str, ...], failed: dict[str, str]) -> dict[str, Any]:
        clients = {}
        for region in regions:
            try:
                clients[region] = self.client_for("ec2", region)
            except BotoCoreError as exc:
                self._fail(failed, region, exc)
        return clients

    def _zones_and_specs(self, pool: ThreadPoolExecutor, ec2: dict[str, Any], offerings: dict[str, Future],
                         wanted: list[str], failed: dict[str, str], with_scores: bool,
                         ) -> tuple[dict[str, ZonesOf], dict[str, Future]]:
        """Each region's zones per type, as its offerings arrive; meanwhile every type not yet known is
        described once, in the first region that offers it (another one if that call fails)."""
        zones: dict[str, ZonesOf] = {}
        scores: dict[str, Future] = {}
        pending: dict[Future, tuple[str, list[str] | None]] = {f: (r, None) for r, f in offerings.items()}
        asked: set[str] = set()
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                region, described = pending.pop(future)
                try:
                    result = future.result()
                except AWS_ERRORS as exc:
                    self._fail(failed, region, exc)
                    asked.difference_update(described or ())
                    continue
                if described is None:
                    zones[region] = result
                    if with_scores and result:
                        scores[region] = pool.submit(self._placement_scores, region, ec2[region], sorted(result))
            for region in ec2:
                if region in zones and region not in failed:
                    todo = [n for n in wanted if n in zones[region] and n not in asked and n not in self._specs]
                    asked.update(todo)
                    for i in range(0, len(todo), MAX_TYPES_PER_DESCRIBE):
                        names = todo[i:i + MAX_TYPES_PER_DESCRIBE]
                        pending[pool.submit(self._describe, region, ec2[region], names)] = (region, names)
        return zones, scores

    def _region_offers(self, region: str, zones_of: ZonesOf, spot_prices: dict[tuple[str, str], float],
                       on_demand: dict[str, tuple[float, str]], scores: dict[str, int], now: datetime,
                       risks: RiskTable) -> list[Offer]:
        """One region's offers: spot prices in zones that offer the type, on-demand in every such zone."""
        offers: list[Offer] = []
        for (name, zone), usd in spot_prices.items():
            if zone in zones_of.get(name, ()) and name in self._specs:
                offers.append(self._offer(INSTANCE_TYPES[name], self._specs[name], region, zone, Market.SPOT, usd,
                                          now, SPOT_SOURCE, risks, scores.get(zone)))
        for name, (usd, source) in on_demand.items():
            if name in self._specs:
                for zone in sorted(zones_of.get(name, ())):
                    offers.append(self._offer(INSTANCE_TYPES[name], self._specs[name], region, zone,
                                              Market.ON_DEMAND, usd, now, source, RiskTable(), None))
        return offers

    def _describe(self, region: str, ec2: Any, names: list[str]) -> None:
        """describe_instance_types of `names` (named types: EC2 answers those directly), kept for
        every region and every later snapshot."""
        pages = paginate_aws(ec2, "describe_instance_types", region=region, InstanceTypes=names)
        found = {row["InstanceType"]: row for page in pages for row in page.get("InstanceTypes", [])}
        with self._specs_lock:
            self._specs.update(found)

    def _offerings(self, region: str, ec2: Any, names: list[str]) -> ZonesOf:
        pages = paginate_aws(ec2, "describe_instance_type_offerings", region=region, LocationType="availability-zone", MaxResults=1000,
                             Filters=[{"Name": "instance-type", "Values": names}])
        zones: ZonesOf = {}
        for page in pages:
            for row in page.get("InstanceTypeOfferings", []):
                zones.setdefault(row["InstanceType"], set()).add(row["Location"])
        return zones

    def _spot_prices(self, region: str, ec2: Any, names: list[str], now: datetime) -> dict[tuple[str, str], float]:
        """(type, zone) -> the latest spot price (StartTime=now returns the price in force now)."""
        pages = paginate_aws(ec2, "describe_spot_price_history", region=region, InstanceTypes=names, ProductDescriptions=SPOT_PRODUCTS, StartTime=now, MaxResults=1000)
        latest: dict[tuple[str, str], tuple[Any, float]] = {}
        for page in pages:
            for row in page.get("SpotPriceHistory", []):
                key = (row["InstanceType"], row["AvailabilityZone"])
                if key not in latest or row["Timestamp"] > latest[key][0]:
                    latest[key] = (row["Timestamp"], float(row["SpotPrice"]))
        return {key: usd for key, (_, usd) in latest.items()}

    def _placement_scores(self, region: str, ec2: Any, names: list[str]) -> dict[str, int]:
        """zone name -> spot placement score (1-10) for one instance of these types; {} (score unknown)
        where the endpoint lacks the API or the policy denies it: one warning per region, and this
        market does not ask that region again. Other failures (throttling once botocore's retries gave
        up, ...) leave this snapshot's scores unknown and the next snapshot asks again."""
        if region in self._no_scores:
            return {}
        try:
            pages = self._scores_call(ec2, "get_spot_placement_scores", region, InstanceTypes=names, TargetCapacity=1,
                                      TargetCapacityUnitType="units", SingleAvailabilityZone=True, RegionNames=[region])
            zone_ids = {row["ZoneId"]: row["ZoneName"] for row in self._scores_call(
                ec2, "describe_availability_zones", region)[0].get("AvailabilityZones", [])}
        except AWS_ERRORS as exc:
            reason = self._scores_unavailable(exc)
            if reason is None:
                log.info("scout: no spot placement scores in %s: %s", region, exc)
                return {}
            with self._no_scores_lock:
                first = region not in self._no_scores
                self._no_scores.setdefault(region, reason)
            if first:
                log.warning("scout: %s in %s: %s; placement risk unknown for the region's offers (%s)",
                            PLACEMENT_SCORES_API, region, reason, exc)
            return {}
        return {zone_ids[row["AvailabilityZoneId"]]: int(row["Score"])
                for page in pages for row in page.get("SpotPlacementScores", [])
                if row.get("AvailabilityZoneId") in zone_ids}

    @staticmethod
    def _scores_call(ec2: Any, operation: str, region: str, **kwargs: Any) -> list[dict]:
        """paginate_aws, with an answer botocore cannot parse (an endpoint that lacks the API) typed."""
        try:
            return paginate_aws(ec2, operation, region=region, **kwargs)
        except ResponseParserError as exc:
            api = ec2.meta.method_to_api_mapping.get(operation, operation)
            raise map_parser_error(exc, operation=api, region=region) from exc

    @staticmethod
    def _scores_unavailable(exc: Exception) -> str | None:
        """Why placement scores stay unknown for good (the endpoint lacks the API, the policy denies it);
        None for a failure the next snapshot may not meet (throttling, a transient error)."""
        if isinstance(exc, OperationUnsupported) or (isinstance(exc, SpotshiftAwsError) and exc.code in UNSUPPORTED_CODES):
            return "the endpoint does not implement it"
        if isinstance(exc, PermissionDenied) and exc.code in DENIED_CODES:
            return f"permission ec2:{exc.operation or PLACEMENT_SCORES_API} is missing"
        return None

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

    @staticmethod
    def _fail(failed: dict[str, str], region: str, exc: Exception) -> None:
        log.warning("scout: region %s failed: %s", region, exc)
        failed.setdefault(region, str(exc))
