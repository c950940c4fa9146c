"""Where a launch plugs in: the region's VPC and subnets (SPOTSHIFT_SUBNET_IDS, SPOTSHIFT_VPC_ID or
the default VPC), the subnet of a zone, the region's spotshift security group, and what each subnet
reaches (spotshift.aws.routes decides)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

from spotshift.aws.calls import call_aws, paginate_aws
from spotshift.aws.errors import CapacityUnavailable, NotFound, SpotshiftAwsError
from spotshift.aws.routes import SubnetReach, subnet_reach

MANAGED_TAG = "spotshift:managed"
DEFAULT_VPC = "the default VPC"
log = logging.getLogger(__name__)


class NetworkConfigError(SpotshiftAwsError):
    """The VPC and subnet settings do not fit the account (a subnet that does not exist, one outside
    the named VPC, no default VPC and nothing named): the message names the setting and the value."""


class SubnetUnusable(CapacityUnavailable):
    """The offer's zone has no subnet spotshift may use (none configured or usable there, or its
    subnet cannot reach S3 and the package index): block the offer, take the next one."""


@dataclass(frozen=True)
class NetworkChoice:
    """One region's network settings: the subnets named there (SPOTSHIFT_SUBNET_IDS), else the VPC
    (SPOTSHIFT_VPC_ID, a usable subnet per zone), else neither (the default VPC)."""

    vpc_id: str | None = None
    subnet_ids: tuple[str, ...] = ()

    @classmethod
    def of(cls, settings: Any, region: str) -> NetworkChoice:
        """The region's choice from Settings (SPOTSHIFT_VPC_ID, SPOTSHIFT_SUBNET_IDS)."""
        vpc_id, subnet_ids = settings.network_of(region)
        return cls(vpc_id, subnet_ids)


@dataclass(frozen=True)
class RegionSubnets:
    """The VPC and the subnets launches in a region use, in order (the first of a zone is the
    zone's), and where they came from (a setting or the default VPC)."""

    region: str
    vpc_id: str
    subnets: tuple[dict, ...]
    source: str

    def zones(self) -> dict[str, str]:
        """zone -> the subnet a launch there uses."""
        chosen: dict[str, str] = {}
        for s in self.subnets:
            chosen.setdefault(s["AvailabilityZone"], s["SubnetId"])
        return chosen

    def describe(self) -> str:
        zones = ", ".join(f"{z}: {s}" for z, s in sorted(self.zones().items()))
        return f"{self.vpc_id} ({self.source}): {zones}"


def find_security_group(ec2: Any, name: str, *, region: str, vpc_id: str | None = None) -> dict | None:
    """The security group called `name` (in `vpc_id` when given), or None."""
    filters = [{"Name": "group-name", "Values": [name]}]
    if vpc_id:
        filters.append({"Name": "vpc-id", "Values": [vpc_id]})
    groups = call_aws(ec2.describe_security_groups, region=region, Filters=filters).get("SecurityGroups", [])
    return groups[0] if groups else None


def default_vpc(ec2: Any, *, region: str) -> str | None:
    vpcs = call_aws(ec2.describe_vpcs, region=region, Filters=[{"Name": "is-default", "Values": ["true"]}])
    found = vpcs.get("Vpcs", [])
    return found[0]["VpcId"] if found else None


def usable_subnets(ec2: Any, *, region: str, vpc_id: str, private: bool = False) -> list[dict]:
    """A usable subnet of the VPC per zone: available, with free addresses; for public launches one
    that maps public IPs (the default subnets do) or is tagged spotshift:managed; the first by id."""
    subnets = call_aws(ec2.describe_subnets, region=region, Filters=[
        {"Name": "vpc-id", "Values": [vpc_id]}, {"Name": "state", "Values": ["available"]}]).get("Subnets", [])
    chosen: dict[str, dict] = {}
    for s in sorted(subnets, key=lambda s: s["SubnetId"]):
        tags = {t["Key"]: t["Value"] for t in s.get("Tags") or []}
        usable = s.get("AvailableIpAddressCount", 1) > 0 and (
            private or s.get("MapPublicIpOnLaunch") or s.get("DefaultForAz") or MANAGED_TAG in tags)
        if usable:
            chosen.setdefault(s["AvailabilityZone"], s)
    return [chosen[z] for z in sorted(chosen)]


def zone_subnets(ec2: Any, *, region: str, vpc_id: str, private: bool = False) -> dict[str, str]:
    """zone -> the usable subnet of the VPC there (usable_subnets)."""
    return {s["AvailabilityZone"]: s["SubnetId"] for s in usable_subnets(ec2, region=region, vpc_id=vpc_id,
                                                                          private=private)}


def config_fix(region: str) -> str:
    """How to name the network of `region` (for an error without a default VPC)."""
    return (f"name the VPC or the subnets to use there: SPOTSHIFT_VPC_ID='{{\"{region}\": \"vpc-...\"}}' or "
            f"SPOTSHIFT_SUBNET_IDS='{{\"{region}\": [\"subnet-...\", ...]}}' (or create a default VPC: aws ec2 "
            f"create-default-vpc --region {region}), or drop {region} from SPOTSHIFT_REGIONS / --regions")


def configured_subnets(ec2: Any, *, region: str, choice: NetworkChoice) -> list[dict]:
    """The DescribeSubnets rows of the subnets SPOTSHIFT_SUBNET_IDS names for the region, in its
    order; NetworkConfigError when one does not exist there, lies outside SPOTSHIFT_VPC_ID, or
    they span several VPCs (the security group belongs to one)."""
    ids = list(choice.subnet_ids)
    rows = call_aws(ec2.describe_subnets, region=region, Filters=[{"Name": "subnet-id", "Values": ids}])
    found = {s["SubnetId"]: s for s in rows.get("Subnets", [])}
    missing = [i for i in ids if i not in found]
    if missing:
        raise NetworkConfigError(f"SPOTSHIFT_SUBNET_IDS names {', '.join(missing)}, which {_do(missing)} not exist in "
                                 f"{region} (aws ec2 describe-subnets --region {region} lists the subnets there)",
                                 code="InvalidSubnetID.NotFound", operation="DescribeSubnets", region=region)
    subnets = [found[i] for i in ids]
    outside = [s for s in subnets if choice.vpc_id and s["VpcId"] != choice.vpc_id]
    if outside:
        raise NetworkConfigError("SPOTSHIFT_SUBNET_IDS names " + ", ".join(f"{s['SubnetId']} (in {s['VpcId']})" for s in
                                 outside) + f", not in SPOTSHIFT_VPC_ID {choice.vpc_id} ({region}): name subnets of "
                                 "that VPC, or change or unset SPOTSHIFT_VPC_ID for the region",
                                 code="SubnetNotInVpc", operation="DescribeSubnets", region=region)
    vpcs = sorted({s["VpcId"] for s in subnets})
    if len(vpcs) > 1:
        raise NetworkConfigError("SPOTSHIFT_SUBNET_IDS names subnets of several VPCs in " + region + " (" + ", ".join(
                                 f"{s['SubnetId']}: {s['VpcId']}" for s in subnets) + "): the security group belongs "
                                 "to one VPC; name subnets of one", code="SubnetsInSeveralVpcs",
                                 operation="DescribeSubnets", region=region)
    return subnets


def _do(items: list) -> str:
    return "does" if len(items) == 1 else "do"


def region_vpc(ec2: Any, *, region: str, choice: NetworkChoice) -> tuple[str, str]:
    """(the VPC of the region's launches and security group, where it came from): the named
    subnets' VPC, else SPOTSHIFT_VPC_ID, else the default VPC; NetworkConfigError naming the
    setting and the value when the account has no such thing."""
    if choice.subnet_ids:
        return configured_subnets(ec2, region=region, choice=choice)[0]["VpcId"], "SPOTSHIFT_SUBNET_IDS"
    if choice.vpc_id:
        found = call_aws(ec2.describe_vpcs, region=region, Filters=[{"Name": "vpc-id", "Values": [choice.vpc_id]}])
        if not found.get("Vpcs"):
            raise NetworkConfigError(f"SPOTSHIFT_VPC_ID names {choice.vpc_id}, which does not exist in {region} "
                                     f"(aws ec2 describe-vpcs --region {region} lists the VPCs there)",
                                     code="InvalidVpcID.NotFound", operation="DescribeVpcs", region=region)
        return choice.vpc_id, "SPOTSHIFT_VPC_ID"
    vpc = default_vpc(ec2, region=region)
    if vpc is None:
        raise NetworkConfigError(f"{region} has no default VPC and no VPC or subnets are named for it: "
                                 f"{config_fix(region)}", code="VPCIdNotSpecified", operation="DescribeVpcs",
                                 region=region)
    return vpc, DEFAULT_VPC


def region_subnets(ec2: Any, *, region: str, choice: NetworkChoice, private: bool = False) -> RegionSubnets:
    """The subnets launches in the region use: the named ones (all of them, in order), else a
    usable one per zone of SPOTSHIFT_VPC_ID or the default VPC (possibly none)."""
    if choice.subnet_ids:
        subnets = configured_subnets(ec2, region=region, choice=choice)
        return RegionSubnets(region, subnets[0]["VpcId"], tuple(subnets), "SPOTSHIFT_SUBNET_IDS")
    vpc, source = region_vpc(ec2, region=region, choice=choice)
    return RegionSubnets(region, vpc, tuple(usable_subnets(ec2, region=region, vpc_id=vpc, private=private)), source)


def subnets_reach(ec2: Any, subnets: RegionSubnets, *, public_ip: bool) -> list[SubnetReach]:
    """What each subnet reaches (spotshift.aws.routes.subnet_reach), from the VPC's route tables,
    NAT gateways and VPC endpoints: three Describe calls per region."""
    region, vpc = subnets.region, [{"Name": "vpc-id", "Values": [subnets.vpc_id]}]
    tables = [t for page in paginate_aws(ec2, "describe_route_tables", region=region, Filters=vpc)
              for t in page.get("RouteTables", [])]
    nats = [n for page in paginate_aws(ec2, "describe_nat_gateways", region=region, Filter=vpc)
            for n in page.get("NatGateways", [])]
    endpoints = [e for page in paginate_aws(ec2, "describe_vpc_endpoints", region=region, Filters=vpc + [
        {"Name": "service-name", "Values": [f"com.amazonaws.{region}.s3"]}]) for e in page.get("VpcEndpoints", [])]
    return [subnet_reach(s, tables, nats, endpoints, region=region, public_ip=public_ip) for s in subnets.subnets]


class LaunchNetwork:
    """Per region: the subnets launches use (RegionSubnets), a subnet per zone and the spotshift
    security group of their VPC (cached). `choice(region)` gives the region's settings
    (Settings.network_choice); without it every region uses its default VPC."""

    def __init__(self, clients: Any, *, security_group: str, private: bool = False,
                 choice: Callable[[str], NetworkChoice] | None = None) -> None:
        self._clients = clients
        self._group_name = security_group
        self._private = private
        self._choice = choice or (lambda region: NetworkChoice())
        self._subnets: dict[str, RegionSubnets] = {}
        self._regions: dict[str, tuple[str, RegionSubnets]] = {}

    @property
    def private(self) -> bool:
        return self._private

    def subnets(self, region: str) -> RegionSubnets:
        """The region's subnets for launches (cached); NetworkConfigError when the settings do not fit."""
        if region not in self._subnets:
            self._subnets[region] = region_subnets(self._clients(region), region=region, choice=self._choice(region),
                                                   private=self._private)
        return self._subnets[region]

    def _region(self, region: str) -> tuple[str, RegionSubnets]:
        if region not in self._regions:
            ec2 = self._clients(region)
            subnets = self.subnets(region)
            group = find_security_group(ec2, self._group_name, region=region, vpc_id=subnets.vpc_id)
            if group is None:
                raise NotFound(f"security group {self._group_name!r} is missing in {subnets.vpc_id} ({subnets.source}, "
                               f"{region}): run `spotshift aws setup --regions {region}`", code="InvalidGroup.NotFound",
                               operation="DescribeSecurityGroups", region=region)
            self._regions[region] = (group["GroupId"], subnets)
        return self._regions[region]

    def zones(self, region: str) -> set[str]:
        """The zones of the region that have a subnet for launches (the market offers no other)."""
        return set(self.subnets(region).zones())

    def place(self, region: str, zone: str) -> tuple[str, str]:
        """(subnet id, security group id) for a launch in `zone`; NotFound naming what is missing,
        SubnetUnusable (blocks the offer only) when the zone has no subnet of the region's choice."""
        group_id, subnets = self._region(region)
        zones = subnets.zones()
        if zone not in zones:
            log.info("no launch in %s: %s has no subnet there (%s)", zone, subnets.source, subnets.describe())
            raise SubnetUnusable(f"no subnet in {zone}: {subnets.source} has none there ({subnets.describe()})",
                                 code="NoSubnetInZone", operation="DescribeSubnets", region=region)
        return zones[zone], group_id
