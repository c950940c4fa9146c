"""The VPC and subnets of launches (SPOTSHIFT_VPC_ID, SPOTSHIFT_SUBNET_IDS, else the default VPC) and
what `check` proves of each subnet: a route to the internet (an internet gateway with a public IP,
or an available NAT gateway) that S3, the package index and the Hub need; an S3 gateway endpoint
alone is not enough. Against the moto server (VPCs, subnets, route tables, internet and NAT
gateways, VPC endpoints); the pure decision (spotshift.aws.routes) also on hand-written answers for
what moto cannot make (a blackhole route, a pending NAT gateway, a transit gateway). Service
Quotas: Stubber (moto has no EC2 codes)."""

from __future__ import annotations

import argparse
import io
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from deployments.aws_cli import run_aws
from deployments.local_aws import client
from spotshift.aws.check import CheckConfig, RegionNotReady, check_region, launch_verdict, render_rows
from spotshift.aws.ec2_backend import Ec2Backend
from spotshift.aws.ec2 import LaunchRequest
from spotshift.aws.images import RegionImage
from spotshift.aws.launch_env import LaunchEnvironment
from spotshift.aws.network import LaunchNetwork, NetworkChoice, NetworkConfigError, SubnetUnusable
from spotshift.aws.routes import subnet_reach
from spotshift.aws.setup import ensure_security_group
from spotshift.catalog import INSTANCE_TYPES
from spotshift.market.aws import AwsMarket
from spotshift.market.query import OfferQuery
from spotshift.models import Market, Offer
from spotshift.settings import Settings
from tests.aws_helpers import moto_clients, stubbed_quotas

REGION = "us-east-1"
IMAGE = "ami-999844e0"


@dataclass(frozen=True)
class Lab:
    """A non-default VPC with one subnet of each kind, each in its own zone and route table."""

    vpc: str
    public: str  # 0.0.0.0/0 -> the internet gateway (us-east-1a)
    natted: str  # 0.0.0.0/0 -> a NAT gateway in the public subnet (us-east-1b)
    s3_only: str  # only an S3 gateway endpoint (us-east-1c)
    isolated: str  # no association: the VPC's main table, the local route only (us-east-1d)
    tables: dict[str, str]  # subnet -> its route table
    igw: str
    nat: str
    endpoint: str


def make_lab(ec2) -> Lab:
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]

    def subnet(n: int, zone: str) -> str:
        return ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.20.{n}.0/24", AvailabilityZone=zone)["Subnet"]["SubnetId"]

    def table_of(subnet_id: str) -> str:
        table = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
        ec2.associate_route_table(RouteTableId=table, SubnetId=subnet_id)
        return table

    public, natted, s3_only, isolated = (subnet(1, "us-east-1a"), subnet(2, "us-east-1b"), subnet(3, "us-east-1c"),
                                         subnet(4, "us-east-1d"))
    igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
    tables = {public: table_of(public), natted: table_of(natted), s3_only: table_of(s3_only)}
    ec2.create_route(RouteTableId=tables[public], DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
    nat = ec2.create_nat_gateway(SubnetId=public, AllocationId=ec2.allocate_address(Domain="vpc")["AllocationId"])
    nat_id = nat["NatGateway"]["NatGatewayId"]
    ec2.create_route(RouteTableId=tables[natted], DestinationCidrBlock="0.0.0.0/0", NatGatewayId=nat_id)
    endpoint = ec2.create_vpc_endpoint(VpcId=vpc, ServiceName=f"com.amazonaws.{REGION}.s3", VpcEndpointType="Gateway",
                                       RouteTableIds=[tables[s3_only]])["VpcEndpoint"]["VpcEndpointId"]
    main = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc]},
                                              {"Name": "association.main", "Values": ["true"]}])["RouteTables"][0]
    tables[isolated] = main["RouteTableId"]
    return Lab(vpc, public, natted, s3_only, isolated, tables, igw, nat_id, endpoint)


@pytest.fixture
def clients(moto_endpoint):
    return moto_clients(moto_endpoint, stubs={"service-quotas": stubbed_quotas({})})


@pytest.fixture
def lab(clients) -> Lab:
    return make_lab(clients("ec2", REGION))


def offer(zone: str, name: str = "g4dn.xlarge") -> Offer:
    t = INSTANCE_TYPES[name]
    return Offer(instance_type=t.name, gpu=t.gpu, gpu_count=t.gpu_count, gpu_memory_gib=t.gpu_memory_gib, vcpus=t.vcpus,
                 memory_gib=t.memory_gib, region=zone[:-1], zone=zone, market=Market.SPOT, usd_per_hour=0.2,
                 observed_at=datetime(2026, 11, 1, tzinfo=UTC), source="test")


def region_rows(clients, lab: Lab, subnets: tuple[str, ...], *, private: bool = False) -> dict:
    group = f"spotshift-{uuid.uuid4().hex[:8]}"
    choice = NetworkChoice(lab.vpc, subnets)
    ensure_security_group(clients("ec2", REGION), group, region=REGION, choice=choice)
    clients("iam", REGION).create_instance_profile(InstanceProfileName=group)
    config = CheckConfig(bucket="b", bucket_region=REGION, profile=group, security_group=group, regions=(REGION,),
                         private_subnets=private, image_overrides=((REGION, IMAGE),), networks=((REGION, choice),))
    return {r.check: r for r in check_region(clients, config, REGION)}


# --- check: one row per subnet, what it reaches ---

def test_check_passes_an_internet_gateway_and_a_nat_and_names_each_failing_subnet(clients, lab):
    rows = region_rows(clients, lab, (lab.public, lab.natted, lab.s3_only, lab.isolated))
    public, natted = rows[f"subnet {lab.public}"], rows[f"subnet {lab.natted}"]
    assert public.ok and f"us-east-1a, {lab.tables[lab.public]}: 0.0.0.0/0 -> internet gateway {lab.igw} with a " \
                         "public IP at launch; S3 over the internet" == public.detail
    assert natted.ok and f"0.0.0.0/0 -> NAT gateway {lab.nat}" in natted.detail

    s3_only = rows[f"subnet {lab.s3_only}"]
    assert not s3_only.ok and s3_only.zone == "us-east-1c"
    assert f"S3 is reachable through gateway endpoint {lab.endpoint}, but not the package index (PyPI)" in s3_only.detail
    assert "Hugging Face Hub (no VPC endpoint serves them)" in s3_only.detail
    assert s3_only.fix.startswith(f"add a route 0.0.0.0/0 to {lab.tables[lab.s3_only]}: to a NAT gateway")

    isolated = rows[f"subnet {lab.isolated}"]
    assert not isolated.ok
    assert isolated.detail == (f"us-east-1d, {lab.tables[lab.isolated]} (the VPC's main table): no route to 0.0.0.0/0: "
                               "S3, the package index (PyPI) the user-data installs the trainer's requirements from "
                               "and the Hugging Face Hub are unreachable")

    assert rows["subnets"].ok and rows["subnets"].detail.startswith(f"{lab.vpc} (SPOTSHIFT_SUBNET_IDS): us-east-1a: ")
    assert rows["security group"].ok and f"in {lab.vpc}" in rows["security group"].detail
    assert rows["run-instances dry run"].ok and f"({lab.public}, {IMAGE})" in rows["run-instances dry run"].detail
    table = render_rows(list(rows.values()))
    assert f"subnet {lab.isolated} FAIL" in " ".join(table.split()) and f"fix: add a route 0.0.0.0/0 to " \
        f"{lab.tables[lab.isolated]}" in table


def test_the_preflight_blocks_only_the_zone_of_a_failing_subnet(clients, lab):
    rows = list(region_rows(clients, lab, (lab.public, lab.natted, lab.s3_only)).values())
    launch_verdict(offer("us-east-1a"), rows)
    launch_verdict(offer("us-east-1b"), rows)
    with pytest.raises(SubnetUnusable, match=f"subnet {lab.s3_only}: us-east-1c.*package index"):
        launch_verdict(offer("us-east-1c"), rows)

    dead = list(region_rows(clients, lab, (lab.s3_only, lab.isolated)).values())
    with pytest.raises(RegionNotReady, match=f"subnet {lab.s3_only}.*subnet {lab.isolated}"):
        launch_verdict(offer("us-east-1a"), dead)  # no subnet reaches the internet: the region is out
    assert not dead[-1].ok and "needs a subnet that reaches S3" in dead[-1].detail  # no dry run without one


def test_private_subnets_need_a_nat_an_internet_gateway_route_alone_gives_no_public_ip(clients, lab):
    rows = region_rows(clients, lab, (lab.public, lab.natted), private=True)
    public = rows[f"subnet {lab.public}"]
    assert not public.ok and f"goes to internet gateway {lab.igw}, but an instance gets no public IP" in public.detail
    assert public.fix.startswith("unset SPOTSHIFT_PRIVATE_SUBNETS")
    assert rows[f"subnet {lab.natted}"].ok
    assert rows["run-instances dry run"].ok and f"({lab.natted}, " in rows["run-instances dry run"].detail


def test_the_default_vpc_checks_the_subnet_it_uses_in_each_zone(clients):
    """No settings: the default VPC's subnets (AWS gives the default VPC an internet gateway: see
    tests/aws_helpers.complete_default_vpc for what moto lacks)."""
    group = f"spotshift-{uuid.uuid4().hex[:8]}"
    ensure_security_group(clients("ec2", REGION), group, region=REGION)
    config = CheckConfig(bucket="b", bucket_region=REGION, profile=group, security_group=group, regions=(REGION,),
                         image_overrides=((REGION, IMAGE),))
    rows = check_region(clients, config, REGION)
    subnets = [r for r in rows if r.check.startswith("subnet ")]
    assert len(subnets) == 6 and all(r.ok and "(the VPC's main table): 0.0.0.0/0 -> internet gateway igw-" in r.detail
                                     for r in subnets)
    assert next(r for r in rows if r.check == "subnets").detail.split(" ")[1:3] == ["(the", "default"]


# --- the decision on answers moto cannot produce ---

def _subnet(**extra) -> dict:
    return {"SubnetId": "subnet-1", "VpcId": "vpc-1", "AvailabilityZone": "us-east-1a", "State": "available",
            "AvailableIpAddressCount": 250, **extra}


def _table(*routes: dict, associated: bool = True) -> dict:
    assoc = {"SubnetId": "subnet-1"} if associated else {"Main": True}
    return {"RouteTableId": "rtb-1", "VpcId": "vpc-1", "Associations": [assoc],
            "Routes": [{"DestinationCidrBlock": "10.0.0.0/16", "GatewayId": "local", "State": "active"}, *routes]}


def test_a_blackhole_route_a_nat_not_available_and_a_full_subnet_fail_naming_why():
    gone = subnet_reach(_subnet(), [_table({"DestinationCidrBlock": "0.0.0.0/0", "NatGatewayId": "nat-9",
                                            "State": "blackhole"})], [], [], region=REGION, public_ip=True)
    assert not gone.ok and "0.0.0.0/0 goes to nat-9, which is gone (route blackhole)" in gone.problem
    pending = subnet_reach(_subnet(), [_table({"DestinationCidrBlock": "0.0.0.0/0", "NatGatewayId": "nat-9",
                                               "State": "active"})], [{"NatGatewayId": "nat-9", "State": "pending"}],
                           [], region=REGION, public_ip=False)
    assert not pending.ok and "NAT gateway nat-9, which is pending" in pending.problem
    full = subnet_reach(_subnet(AvailableIpAddressCount=0), [_table()], [], [], region=REGION, public_ip=True)
    assert not full.ok and "no free IP address" in full.problem


def test_a_route_spotshift_cannot_follow_is_tried_and_says_so():
    reach = subnet_reach(_subnet(), [_table({"DestinationCidrBlock": "0.0.0.0/0", "TransitGatewayId": "tgw-1",
                                             "State": "active"})], [], [], region=REGION, public_ip=False)
    assert reach.ok and reach.unverified and "tgw-1, not verified" in reach.detail
    assert "make sure tgw-1 reaches S3 and the package index (PyPI)" in reach.fix


def test_the_subnet_route_table_wins_over_the_main_one_and_map_public_ip_counts():
    main = _table({"DestinationCidrBlock": "0.0.0.0/0", "GatewayId": "igw-1", "State": "active"}, associated=False)
    own = dict(_table(), RouteTableId="rtb-own")
    assert not subnet_reach(_subnet(), [main, own], [], [], region=REGION, public_ip=True).ok  # its own has no route
    mapped = subnet_reach(_subnet(MapPublicIpOnLaunch=True), [main], [], [], region=REGION, public_ip=False)
    assert mapped.ok and mapped.main_table and "the subnet's public IP on launch" in mapped.detail


# --- setup and settings: errors name the setting and the value, before anything is made ---

def settings_for(tmp_path, tag: str, **network) -> Settings:
    return Settings(home=tmp_path, bucket=f"spotshift-net-{tag}", trainer_role=f"spotshift-net-{tag}",
                    instance_profile=f"spotshift-net-{tag}", security_group=f"spotshift-net-{tag}", regions=[REGION],
                    image_ids={REGION: IMAGE}, **network)


def aws(action: str, settings: Settings, clients) -> tuple[int, str]:
    out = io.StringIO()
    args = argparse.Namespace(aws_action=action, regions=None, bucket=None, delete_bucket=False, which=None)
    return run_aws(args, settings=settings, clients=clients, out=out), out.getvalue()


def test_setup_puts_the_group_into_the_named_vpc_and_check_passes_on_its_subnets(clients, lab, tmp_path):
    tag = uuid.uuid4().hex[:8]
    settings = settings_for(tmp_path, tag, vpc_id=lab.vpc, subnet_ids=[lab.public, lab.natted])
    code, out = aws("setup", settings, clients)
    assert code == 0, out
    groups = clients("ec2", REGION).describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [settings.security_group]}])["SecurityGroups"]
    assert [g["VpcId"] for g in groups] == [lab.vpc]  # not the default VPC

    code, out = aws("check", settings, clients)
    assert code == 0 and "all checks passed" in out, out
    assert f"subnet {lab.public}" in out and f"subnet {lab.natted}" in out

    broken = settings.model_copy(update={"subnet_ids": [lab.public, lab.isolated]})
    code, out = aws("check", broken, clients)
    assert code == 1
    assert f"{REGION} subnet {lab.isolated}: add a route 0.0.0.0/0 to {lab.tables[lab.isolated]}" in out


def _nothing_made(clients, settings: Settings) -> None:
    assert settings.bucket not in [b["Name"] for b in clients("s3", REGION).list_buckets()["Buckets"]]
    with pytest.raises(Exception, match="NoSuchEntity"):
        clients("iam", REGION).get_role(RoleName=settings.trainer_role)


def test_a_subnet_that_does_not_exist_or_lies_outside_the_vpc_stops_setup_before_anything_is_made(clients, lab, tmp_path):
    missing = settings_for(tmp_path, uuid.uuid4().hex[:8], subnet_ids=[lab.public, "subnet-0123456789abcdef0"])
    with pytest.raises(NetworkConfigError, match="SPOTSHIFT_SUBNET_IDS names subnet-0123456789abcdef0, which does not "
                                                 f"exist in {REGION}"):
        aws("setup", missing, clients)
    _nothing_made(clients, missing)

    default_subnet = clients("ec2", REGION).describe_subnets(
        Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"][0]
    outside = settings_for(tmp_path, uuid.uuid4().hex[:8], vpc_id=lab.vpc, subnet_ids=[default_subnet["SubnetId"]])
    with pytest.raises(NetworkConfigError, match=f"{default_subnet['SubnetId']} \\(in {default_subnet['VpcId']}\\), "
                                                 f"not in SPOTSHIFT_VPC_ID {lab.vpc}"):
        aws("setup", outside, clients)
    _nothing_made(clients, outside)

    no_vpc = settings_for(tmp_path, uuid.uuid4().hex[:8], vpc_id="vpc-0123456789abcdef0")
    with pytest.raises(NetworkConfigError, match="SPOTSHIFT_VPC_ID names vpc-0123456789abcdef0, which does not exist"):
        aws("setup", no_vpc, clients)
    _nothing_made(clients, no_vpc)


def test_a_region_without_a_default_vpc_needs_a_named_one(moto_endpoint, tmp_path):
    region = "ca-central-1"
    raw = client("ec2", moto_endpoint, region)  # before moto_clients completes its default VPC
    default = raw.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
    for vpc in default:
        for s in raw.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])["Subnets"]:
            raw.delete_subnet(SubnetId=s["SubnetId"])
        raw.delete_vpc(VpcId=vpc["VpcId"])
    clients = moto_clients(moto_endpoint)
    settings = settings_for(tmp_path, uuid.uuid4().hex[:8]).model_copy(update={"regions": [region]})
    with pytest.raises(NetworkConfigError, match=f"{region} has no default VPC and no VPC or subnets are named for it: "
                                                 f"name the VPC or the subnets to use there: SPOTSHIFT_VPC_ID="):
        aws("setup", settings, clients)
    _nothing_made(clients, settings)

    vpc = raw.create_vpc(CidrBlock="10.30.0.0/16")["Vpc"]["VpcId"]
    named = settings.model_copy(update={"vpc_id": {region: vpc}})
    code, out = aws("setup", named, clients)
    assert code == 0, out
    assert [g["VpcId"] for g in raw.describe_security_groups(Filters=[
        {"Name": "group-name", "Values": [settings.security_group]}])["SecurityGroups"]] == [vpc]


@pytest.mark.parametrize("network, message", [
    ({"vpc_id": "vpc-0123456789abcdef0"}, "SPOTSHIFT_VPC_ID is 'vpc-0123456789abcdef0', not keyed by region, but "
     "SPOTSHIFT_REGIONS names 2 regions"),
    ({"subnet_ids": {"eu-west-1": ["subnet-0123456789abcdef0"]}}, "SPOTSHIFT_SUBNET_IDS names region 'eu-west-1', "
     "which is not in SPOTSHIFT_REGIONS"),
    ({"subnet_ids": {"us-east-1": ["sn-1"]}}, "SPOTSHIFT_SUBNET_IDS: 'sn-1' \\(for us-east-1\\) is not an id like "
     "subnet-0123456789abcdef0"),
    ({"vpc_id": {"us-west-2": "subnet-0123456789abcdef0"}}, "SPOTSHIFT_VPC_ID: 'subnet-0123456789abcdef0' \\(for "
     "us-west-2\\) is not an id like vpc-"),
    ({"subnet_ids": {"us-east-1": []}}, "SPOTSHIFT_SUBNET_IDS names no id for us-east-1"),
])
def test_settings_that_cannot_be_right_are_refused_naming_the_setting(network, message):
    with pytest.raises(ValidationError, match=message):
        Settings(regions=["us-east-1", "us-west-2"], **network)


def test_the_settings_forms_one_region_plain_several_keyed_and_the_environment(monkeypatch):
    one = Settings(regions=["us-east-1"], vpc_id="vpc-0123456789abcdef0", subnet_ids="subnet-0123456789abcdef0, "
                   "subnet-0123456789abcdef1")
    assert one.network_of("us-east-1") == ("vpc-0123456789abcdef0", ("subnet-0123456789abcdef0",
                                                                      "subnet-0123456789abcdef1"))
    assert one.network_of("us-west-2") == (None, ())  # another region (--regions): its default VPC
    monkeypatch.setenv("SPOTSHIFT_REGIONS", '["us-east-1", "us-west-2"]')
    monkeypatch.setenv("SPOTSHIFT_VPC_ID", '{"us-west-2": "vpc-0123456789abcdef0"}')
    monkeypatch.setenv("SPOTSHIFT_SUBNET_IDS", '{"us-east-1": ["subnet-0123456789abcdef0"]}')
    env = Settings()
    assert env.network_of("us-east-1") == (None, ("subnet-0123456789abcdef0",))
    assert env.network_of("us-west-2") == ("vpc-0123456789abcdef0", ())


# --- launch: only the named subnets, offers only where one is ---

def test_launches_use_only_the_named_subnets_and_no_offer_elsewhere(clients, lab):
    group = f"spotshift-{uuid.uuid4().hex[:8]}"
    choice = NetworkChoice(lab.vpc, (lab.natted, lab.public))
    ensure_security_group(clients("ec2", REGION), group, region=REGION, choice=choice)
    network = LaunchNetwork(lambda r: clients("ec2", r), security_group=group, choice=lambda r: choice)
    env = LaunchEnvironment(images=lambda r: RegionImage(r, IMAGE, "settings"), network=network)
    backend = Ec2Backend(lambda r: clients("ec2", r), regions=[REGION], wait_poll_s=0, launch_env=env)
    job = f"net-{uuid.uuid4().hex[:8]}"

    def request(zone: str) -> LaunchRequest:
        return LaunchRequest(job_id=job, workload_id=f"wl-{uuid.uuid4().hex[:8]}", offer=offer(zone),
                             spec_uri=f"s3://b/jobs/{job}/spec.json", instance_profile=None)

    launched = {zone: backend.start(request(zone)).instance_id for zone in ("us-east-1a", "us-east-1b")}
    with pytest.raises(SubnetUnusable, match="no subnet in us-east-1e: SPOTSHIFT_SUBNET_IDS has none there"):
        backend.start(request("us-east-1e"))
    described = clients("ec2", REGION).describe_instances(Filters=[
        {"Name": "tag:spotshift:job-id", "Values": [job]}])["Reservations"]
    instances = {i["InstanceId"]: i for r in described for i in r["Instances"]}
    assert {i["SubnetId"] for i in instances.values()} == {lab.public, lab.natted}
    assert instances[launched["us-east-1b"]]["SubnetId"] == lab.natted
    assert all(i["VpcId"] == lab.vpc and i["NetworkInterfaces"][0]["Association"].get("PublicIp")
               for i in instances.values())  # a public IP as before (SPOTSHIFT_PRIVATE_SUBNETS unset)
    backend.stop(launched["us-east-1a"], "test done")
    backend.stop(launched["us-east-1b"], "test done")

    assert network.zones(REGION) == {"us-east-1a", "us-east-1b"}
    query = OfferQuery(regions=(REGION,), instance_types=("g4dn.xlarge",), markets=(Market.ON_DEMAND,))
    everywhere = AwsMarket(clients, placement_scores=False).snapshot(query, datetime(2026, 11, 1, tzinfo=UTC))
    named = AwsMarket(clients, placement_scores=False, launch_zones=network.zones).snapshot(
        query, datetime(2026, 11, 1, tzinfo=UTC))
    assert {o.zone for o in everywhere.offers} > {"us-east-1a", "us-east-1b"}
    assert {o.zone for o in named.offers} == {"us-east-1a", "us-east-1b"}
