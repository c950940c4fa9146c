"""EC2 vCPU quotas (Service Quotas codes) for GPU instance families, and reading them.

New accounts start at 0 vCPUs for G and P instances: the quota, not capacity, refuses the launch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from botocore.exceptions import BotoCoreError

from spotshift.aws.calls import call_aws
from spotshift.aws.errors import CapacityUnavailable, NotFound, PermissionDenied, QuotaExceeded, SpotshiftAwsError
from spotshift.catalog import INSTANCE_TYPES
from spotshift.models import Market

SERVICE_CODE = "ec2"


@dataclass(frozen=True)
class Quota:
    """One EC2 vCPU quota: its Service Quotas code, its name as the console shows it, and the
    instance group (G, P, standard) and market whose launches count against it."""

    code: str
    name: str
    group: str
    market: Market

    def describe(self) -> str:
        return f"{self.name} ({self.code})"

    @property
    def label(self) -> str:
        """`G spot`, `P on-demand`: the family and market in a sentence."""
        return f"{self.group} {Market(self.market).value.replace('_', '-')}"


# (quota group, market) -> quota. G and VT share quotas; every P family shares one per market.
QUOTAS: dict[tuple[str, Market], Quota] = {(q.group, q.market): q for q in (
    Quota("L-DB2E81BA", "Running On-Demand G and VT instances", "G", Market.ON_DEMAND),
    Quota("L-3819A6DF", "All G and VT Spot Instance Requests", "G", Market.SPOT),
    Quota("L-417A185B", "Running On-Demand P instances", "P", Market.ON_DEMAND),
    Quota("L-7212CCBC", "All P Spot Instance Requests", "P", Market.SPOT),
    Quota("L-1216C47A", "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances", "standard",
          Market.ON_DEMAND),
    Quota("L-34B43A08", "All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests", "standard", Market.SPOT),
)}


def family_of(instance_type: str) -> str:
    """g5.xlarge -> g5, p4d.24xlarge -> p4d."""
    return instance_type.split(".", 1)[0]


def quota_group(instance_type: str) -> str:
    """G (g*, vt*), P (p*) or standard."""
    family = family_of(instance_type)
    if family.startswith(("g", "vt")):
        return "G"
    if family.startswith("p"):
        return "P"
    return "standard"


def quota_for(instance_type: str, market: Market) -> Quota:
    """The vCPU quota a launch of this type in this market counts against."""
    return QUOTAS[(quota_group(instance_type), Market(market))]


def gpu_quotas() -> list[tuple[str, Market, Quota]]:
    """The G and P quotas `spotshift aws check` reads in every region."""
    return [(group, market, q) for (group, market), q in QUOTAS.items() if group in ("G", "P")]


@dataclass(frozen=True)
class QuotaReading:
    """A quota as Service Quotas answered it: `vcpus`, or None when it could not be read (`reason`
    says why: access denied, no Service Quotas in the region, throttled...). Unknown is not zero:
    a launch goes ahead, and a quota refusal at launch blocks the offers under it as any other."""

    quota: Quota
    vcpus: float | None
    source: str = "applied"  # "applied" (the account's value) or "AWS default" (never changed)
    reason: str = ""
    denied: bool = False  # unknown because the credentials may not read Service Quotas

    @property
    def known(self) -> bool:
        return self.vcpus is not None

    @property
    def usable(self) -> bool:
        """Offers under this quota may launch: more than 0 vCPUs, or unknown."""
        return self.vcpus is None or self.vcpus > 0

    def describe(self) -> str:
        if self.vcpus is None:
            return f"{self.quota.describe()}: unknown ({self.reason})"
        return f"{self.quota.describe()}: {self.vcpus:g} vCPUs ({self.source})"


def read_quota(service_quotas: Any, quota: Quota, *, region: str) -> QuotaReading:
    """The applied quota in vCPUs; the AWS default when the account has no applied value (Service
    Quotas answers NoSuchResourceException); unknown, with the reason, when neither can be read."""
    try:
        try:
            answer = call_aws(service_quotas.get_service_quota, region=region, ServiceCode=SERVICE_CODE,
                              QuotaCode=quota.code)
            source = "applied"
        except NotFound:
            answer = call_aws(service_quotas.get_aws_default_service_quota, region=region, ServiceCode=SERVICE_CODE,
                              QuotaCode=quota.code)
            source = "AWS default"
    except SpotshiftAwsError as exc:
        return QuotaReading(quota, None, reason=str(exc), denied=isinstance(exc, PermissionDenied))
    except BotoCoreError as exc:  # no Service Quotas endpoint in the region, a connection error
        return QuotaReading(quota, None, reason=f"{type(exc).__name__}: {exc}")
    return QuotaReading(quota, float(answer["Quota"]["Value"]), source=source)


def smallest_launch_vcpus(group: str) -> int:
    """The vCPUs of the catalog's smallest instance type in a quota group: the least quota that
    launches anything of that group (4 for G: a g4dn.xlarge)."""
    return min(t.vcpus for t in INSTANCE_TYPES.values() if quota_group(t.name) == group)


def increase_hint(quota: Quota, region: str) -> str:
    """How to ask for more of a quota: the console page and the CLI call (for the smallest type)."""
    return (f"request an increase of {quota.describe()} in Service Quotas ({region}): "
            f"https://{region}.console.aws.amazon.com/servicequotas/home/services/ec2/quotas/{quota.code} or "
            f"`aws service-quotas request-service-quota-increase --region {region} --service-code ec2 "
            f"--quota-code {quota.code} --desired-value {smallest_launch_vcpus(quota.group)}`")


def quota_error(error: CapacityUnavailable, instance_type: str, market: Market) -> QuotaExceeded:
    """A launch's quota error, naming the quota the instance type and market count against."""
    quota = quota_for(instance_type, market)
    return QuotaExceeded(error.aws_message, quota_code=quota.code, quota_name=quota.name, code=error.code,
                         operation=error.operation, region=error.region, context=error.context)


def same_quota(a_type: str, a_market: Market, b_type: str, b_market: Market) -> bool:
    return quota_group(a_type) == quota_group(b_type) and Market(a_market) == Market(b_market)


def blocked_by(error: CapacityUnavailable, offer: Any, offers: Iterable[Any]) -> set:
    """The offer keys a failed launch takes out: a quota error every offer of the region, quota
    group and market (the quota is the account's, not the zone's); anything else the offer alone."""
    if not error.is_quota:
        return {offer.key}
    return {o.key for o in offers if o.region == offer.region and same_quota(
        o.instance_type, o.market, offer.instance_type, offer.market)} | {offer.key}
