"""Can an instance in this subnet reach S3 and the package index? A pure decision over the answers
of DescribeSubnets, DescribeRouteTables, DescribeNatGateways and DescribeVpcEndpoints.

The user-data fetches the trainer from S3, installs its locked requirements from the package index
(PyPI), reads the Hub token from Secrets Manager and a Hub model from huggingface.co: S3 alone
may go through a gateway VPC endpoint, the rest needs the internet, so a subnet passes only with
its route table's 0.0.0.0/0 going to an internet gateway (and the instance getting a public IP) or
to an available NAT gateway.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ANYWHERE = "0.0.0.0/0"
INTERNET_NEEDS = "the package index (PyPI) the user-data installs the trainer's requirements from and the Hugging Face Hub"
# default-route targets spotshift cannot follow to the internet (a transit gateway, a NAT instance, ...)
OPAQUE_TARGETS = ("TransitGatewayId", "NetworkInterfaceId", "InstanceId", "VpcPeeringConnectionId",
                  "LocalGatewayId", "CarrierGatewayId", "CoreNetworkArn")


@dataclass(frozen=True)
class SubnetReach:
    """What a subnet reaches. `problem` is empty when it passes; `unverified` when its default route
    goes somewhere spotshift cannot follow (a transit gateway, a NAT instance): it is tried."""

    subnet_id: str
    zone: str
    route_table: str
    main_table: bool
    internet: str = ""
    s3: str = ""
    problem: str = ""
    fix: str = ""
    unverified: bool = False

    @property
    def ok(self) -> bool:
        return not self.problem

    @property
    def detail(self) -> str:
        table = f"{self.route_table} (the VPC's main table)" if self.main_table else self.route_table
        where = f"{self.zone}, {table or 'no route table'}"
        if self.problem:
            return f"{where}: {self.problem}"
        return f"{where}: {self.internet}; S3 {self.s3}"


def route_table_of(subnet: dict[str, Any], tables: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, bool]:
    """(the subnet's route table, whether it is the VPC's main table): the table explicitly
    associated with the subnet, else the main table of its VPC (AWS's rule)."""
    vpc_tables = [t for t in tables if t.get("VpcId") == subnet["VpcId"]]
    for table in vpc_tables:
        if any(a.get("SubnetId") == subnet["SubnetId"] for a in table.get("Associations") or []):
            return table, False
    for table in vpc_tables:
        if any(a.get("Main") for a in table.get("Associations") or []):
            return table, True
    return None, False


def s3_endpoint(table_id: str, endpoints: list[dict[str, Any]], region: str) -> str | None:
    """The id of an available gateway endpoint for com.amazonaws.<region>.s3 on this route table."""
    for ep in endpoints:
        if (ep.get("ServiceName") == f"com.amazonaws.{region}.s3" and ep.get("VpcEndpointType", "Gateway") == "Gateway"
                and ep.get("State", "available").lower() == "available" and table_id in (ep.get("RouteTableIds") or [])):
            return ep["VpcEndpointId"]
    return None


def subnet_reach(subnet: dict[str, Any], tables: list[dict[str, Any]], nat_gateways: list[dict[str, Any]],
                 endpoints: list[dict[str, Any]], *, region: str, public_ip: bool) -> SubnetReach:
    """Whether an instance launched into `subnet` reaches S3 and the package index. `public_ip`:
    the launch asks for a public IP (AssociatePublicIpAddress: spotshift does unless
    SPOTSHIFT_PRIVATE_SUBNETS=true); the subnet's MapPublicIpOnLaunch gives one too."""
    table, main = route_table_of(subnet, tables)
    base = dict(subnet_id=subnet["SubnetId"], zone=subnet.get("AvailabilityZone", ""), main_table=main,
                route_table=table["RouteTableId"] if table else "")
    nat_route_fix = (f"add a route 0.0.0.0/0 to {base['route_table'] or 'its route table'}: to a NAT gateway (a "
                     "private subnet) or an internet gateway (a public one), or name another subnet")
    if subnet.get("State", "available") != "available":
        return SubnetReach(**base, problem=f"the subnet is {subnet.get('State')}", fix="use an available subnet")
    if subnet.get("AvailableIpAddressCount", 1) <= 0:
        return SubnetReach(**base, problem="the subnet has no free IP address", fix="free addresses or use another subnet")
    if table is None:
        return SubnetReach(**base, problem="no route table applies (no association and no main table)",
                           fix="associate a route table with 0.0.0.0/0 to an internet or NAT gateway")
    endpoint = s3_endpoint(table["RouteTableId"], endpoints, region)
    via_endpoint = f"through gateway endpoint {endpoint}" if endpoint else ""
    default = next((r for r in table.get("Routes") or [] if r.get("DestinationCidrBlock") == ANYWHERE), None)
    if default is None:
        reach = f"S3 is reachable {via_endpoint}, but not " if endpoint else "S3, "
        return SubnetReach(**base, s3=via_endpoint, problem=(
            f"no route to 0.0.0.0/0: {reach}{INTERNET_NEEDS} (no VPC endpoint serves them)" if endpoint else
            f"no route to 0.0.0.0/0: {reach}{INTERNET_NEEDS} are unreachable"), fix=nat_route_fix)
    target = _target(default)
    if default.get("State", "active") != "active":
        return SubnetReach(**base, s3=via_endpoint, problem=f"0.0.0.0/0 goes to {target}, which is gone (route "
                           f"{default.get('State')})", fix=f"replace that route in {table['RouteTableId']} with one to "
                           "an existing internet or NAT gateway")
    gateway = default.get("GatewayId", "")
    s3 = via_endpoint or "over the internet"
    if gateway.startswith("igw-"):
        if not (public_ip or subnet.get("MapPublicIpOnLaunch")):
            return SubnetReach(**base, s3=via_endpoint, problem=(
                f"0.0.0.0/0 goes to internet gateway {gateway}, but an instance gets no public IP here "
                "(SPOTSHIFT_PRIVATE_SUBNETS=true and the subnet does not map public IPs on launch)"),
                fix="unset SPOTSHIFT_PRIVATE_SUBNETS (spotshift then asks for a public IP), or "
                f"route 0.0.0.0/0 in {table['RouteTableId']} to a NAT gateway")
        how = "a public IP at launch" if public_ip else "the subnet's public IP on launch"
        return SubnetReach(**base, internet=f"0.0.0.0/0 -> internet gateway {gateway} with {how}", s3=s3)
    nat_id = default.get("NatGatewayId", "")
    if nat_id:
        nat = next((n for n in nat_gateways if n.get("NatGatewayId") == nat_id), None)
        state = nat.get("State", "") if nat else "not found"
        if state != "available":
            return SubnetReach(**base, s3=via_endpoint, problem=f"0.0.0.0/0 goes to NAT gateway {nat_id}, which is "
                               f"{state}", fix=f"route 0.0.0.0/0 in {table['RouteTableId']} to an available NAT gateway")
        extra = " (the public IP spotshift asks for is unused here: SPOTSHIFT_PRIVATE_SUBNETS=true saves its " \
                "charge)" if public_ip else ""
        return SubnetReach(**base, internet=f"0.0.0.0/0 -> NAT gateway {nat_id}{extra}", s3=s3)
    if any(default.get(k) for k in OPAQUE_TARGETS) or gateway:
        return SubnetReach(**base, internet=f"0.0.0.0/0 -> {target}, not verified", s3=via_endpoint or "if that "
                           "reaches the internet", unverified=True,
                           fix=f"make sure {target} reaches S3 and {INTERNET_NEEDS}")
    return SubnetReach(**base, s3=via_endpoint, problem="0.0.0.0/0 has no target", fix=nat_route_fix)


def _target(route: dict[str, Any]) -> str:
    for key in ("GatewayId", "NatGatewayId", *OPAQUE_TARGETS, "EgressOnlyInternetGatewayId"):
        if route.get(key):
            return str(route[key])
    return "nothing"
