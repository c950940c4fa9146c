"""Where a launch plugs in: the subnet of a zone and the region's spotshift security group."""

from __future__ import annotations

from typing import Any

from spotshift.aws.calls import call_aws
from spotshift.aws.errors import CapacityUnavailable, NotFound

MANAGED_TAG = "spotshift:managed"


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


def zone_subnets(ec2: Any, *, region: str, vpc_id: str, private: bool = False) -> dict[str, str]:
    """zone -> a usable subnet of the VPC: available, with free addresses; for public launches one
    that maps public IPs (the default subnets do) or is tagged spotshift:managed; the first by id."""
    subnets = call_aws(ec2.describe_subnets, region=region, Filters=[
        {"Name": "vpc-id", "Values": [vpc_id]}, {"Name": "state", "Values": ["available"]}]).get("Subnets", [])
    chosen: dict[str, str] = {}
    for s in sorted(subnets, key=lambda s: s["SubnetId"]):
        tags = {t["Key"]: t["Value"] for t in s.get("Tags") or []}
        usable = s.get("AvailableIpAddressCount", 1) > 0 and (
            private or s.get("MapPublicIpOnLaunch") or s.get("DefaultForAz") or MANAGED_TAG in tags)
        if usable:
            chosen.setdefault(s["AvailabilityZone"], s["SubnetId"])
    return chosen


class LaunchNetwork:
    """Per region: the VPC of the spotshift security group and a subnet per zone (cached)."""

    def __init__(self, clients: Any, *, security_group: str, private: bool = False) -> None:
        self._clients = clients
        self._group_name = security_group
        self._private = private
        self._regions: dict[str, tuple[str, dict[str, str]]] = {}

    @property
    def private(self) -> bool:
        return self._private

    def place(self, region: str, zone: str) -> tuple[str, str]:
        """(subnet id, security group id) for a launch in `zone`; NotFound naming what is missing."""
        if region not in self._regions:
            ec2 = self._clients(region)
            group = find_security_group(ec2, self._group_name, region=region)
            if group is None:
                raise NotFound(f"security group {self._group_name!r} is missing in {region}: run "
                               f"`spotshift aws setup --regions {region}`", code="InvalidGroup.NotFound",
                               operation="DescribeSecurityGroups", region=region)
            subnets = zone_subnets(ec2, region=region, vpc_id=group["VpcId"], private=self._private)
            self._regions[region] = (group["GroupId"], subnets)
        group_id, subnets = self._regions[region]
        if zone not in subnets:
            # one zone without a subnet blocks its offers, not the job
            raise CapacityUnavailable(f"no usable subnet in {zone} (VPC of security group {self._group_name!r})",
                                      code="NoSubnetInZone", operation="DescribeSubnets", region=region)
        return subnets[zone], group_id
