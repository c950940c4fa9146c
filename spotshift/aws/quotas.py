"""EC2 vCPU quotas (Service Quotas codes) for GPU instance families, and reading them.

New accounts start at 0 vCPUs for G and P instances: the quota, not capacity, refuses the launch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from spotshift.aws.calls import call_aws
from spotshift.aws.errors import CapacityUnavailable, NotFound, QuotaExceeded
from spotshift.models import Market

SERVICE_CODE = "ec2"


@dataclass(frozen=True)
class Quota:
    """One EC2 vCPU quota: its Service Quotas code and its name as the console shows it."""

    code: str
    name: str

    def describe(self) -> str:
        return f"{self.name} ({self.code})"


# (quota group, market) -> quota. G and VT share quotas; every P family shares one per market.
QUOTAS: dict[tuple[str, Market], Quota] = {
    ("G", Market.ON_DEMAND): Quota("L-DB2E81BA", "Running On-Demand G and VT instances"),
    ("G", Market.SPOT): Quota("L-3819A6DF", "All G and VT Spot Instance Requests"),
    ("P", Market.ON_DEMAND): Quota("L-417A185B", "Running On-Demand P instances"),
    ("P", Market.SPOT): Quota("L-7212CCBC", "All P Spot Instance Requests"),
    ("standard", Market.ON_DEMAND): Quota("L-1216C47A", "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances"),
    ("standard", Market.SPOT): Quota("L-34B43A08", "All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests"),
}


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


def quota_value(service_quotas: Any, quota: Quota, *, region: str) -> float:
    """The applied quota in vCPUs; the AWS default when the account never changed it."""
    try:
        answer = call_aws(service_quotas.get_service_quota, region=region, ServiceCode=SERVICE_CODE,
                          QuotaCode=quota.code)
    except NotFound:
        answer = call_aws(service_quotas.get_aws_default_service_quota, region=region, ServiceCode=SERVICE_CODE,
                          QuotaCode=quota.code)
    return float(answer["Quota"]["Value"])


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
