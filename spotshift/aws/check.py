"""`spotshift aws check`: read-only proof that the account can run a job, one row per check:
identity, bucket, profile, and per region the image, subnets, security group, what each subnet
reaches (S3 and the package index), G/P quotas and a RunInstances DryRun of the real launch plan.
A zero quota skips only the offers under it; the check fails on quotas only when no GPU family can
launch in any region."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Callable

from botocore.exceptions import ClientError

from spotshift.aws.calls import call_aws
from spotshift.aws.ec2 import LaunchRequest, plan_run_instances
from spotshift.aws.errors import PermissionDenied, QuotaExceeded, SpotshiftAwsError, map_client_error
from spotshift.aws.images import RegionImage, resolve_image
from spotshift.aws.network import NetworkChoice, SubnetUnusable, find_security_group, region_subnets, subnets_reach
from spotshift.aws.quotas import QuotaReading, gpu_quotas, increase_hint, quota_for, read_quota
from spotshift.aws.setup import SetupError, check_bucket
from spotshift.catalog import INSTANCE_TYPES
from spotshift.models import Market, Offer

PROBE_TYPE = "g4dn.xlarge"  # the smallest GPU type the Deep Learning AMI supports in every region
Clients = Callable[[str, str], Any]  # (service, region) -> boto3 client


@dataclass(frozen=True)
class CheckRow:
    """One check's outcome; `fix` says what to do when it failed. A quota row carries its reading:
    it is ok when offers under the quota may launch (more than 0 vCPUs, or unknown). A subnet row
    carries its zone (a failed one blocks the offers there); `unverified`: ok, but not proven."""

    region: str
    check: str
    ok: bool
    detail: str
    fix: str = ""
    quota: QuotaReading | None = None
    zone: str = ""
    unverified: bool = False

    @property
    def result(self) -> str:
        """OK or FAIL; a quota row says ZERO (its offers are skipped) or UNKNOWN (they launch); a
        subnet whose default route spotshift cannot follow says UNKNOWN (it is tried)."""
        if (self.quota is not None and not self.quota.known) or self.unverified:
            return "UNKNOWN"
        if self.quota is not None and not self.ok:
            return "ZERO"
        return "OK" if self.ok else "FAIL"


@dataclass(frozen=True)
class CheckConfig:
    """What the check needs from settings."""

    bucket: str
    bucket_region: str
    profile: str
    security_group: str
    regions: tuple[str, ...]
    private_subnets: bool = False
    image_overrides: tuple[tuple[str, str], ...] = ()
    image_parameter: str = ""
    image_name_pattern: str = ""
    image_owners: tuple[str, ...] = ("amazon",)
    networks: tuple[tuple[str, NetworkChoice], ...] = ()  # region -> its VPC/subnet settings (none: default VPC)

    def network(self, region: str) -> NetworkChoice:
        return dict(self.networks).get(region, NetworkChoice())

    @classmethod
    def from_settings(cls, settings: Any, *, bucket: str | None = None, regions: list[str] | None = None) -> CheckConfig:
        regions = list(regions or settings.regions)
        return cls(bucket=bucket or settings.bucket, bucket_region=settings.aws_region,
                   profile=settings.instance_profile, security_group=settings.security_group,
                   networks=tuple((r, NetworkChoice.of(settings, r)) for r in regions),
                   regions=tuple(regions), private_subnets=settings.private_subnets,
                   image_overrides=tuple(settings.image_ids.items()), image_parameter=settings.image_ssm_parameter,
                   image_name_pattern=settings.image_name_pattern, image_owners=tuple(settings.image_owners))


def _row(region: str, check: str, fn: Callable[[], str], fix: str) -> CheckRow:
    try:
        return CheckRow(region, check, True, fn())
    except (SpotshiftAwsError, CheckFailed) as exc:
        return CheckRow(region, check, False, str(exc), getattr(exc, "fix", None) or fix)


class CheckFailed(Exception):
    """A check found something wrong that is not an AWS error (`fix`: a better hint than the row's)."""

    def __init__(self, message: str, fix: str = "") -> None:
        super().__init__(message)
        self.fix = fix


def check_account(clients: Clients, config: CheckConfig) -> tuple[str, list[CheckRow]]:
    """(account id, rows for identity, bucket and instance profile)."""
    home = config.bucket_region
    identity = call_aws(clients("sts", home).get_caller_identity, region=home)
    account = identity["Account"]
    rows = [CheckRow("global", "identity", True, f"{identity['Arn']} (account {account})")]
    rows.append(_row(home, "bucket", lambda: _bucket(clients("s3", home), config, account),
                     "run `spotshift aws setup` or choose your own bucket with --bucket"))
    rows.append(_row("global", "instance profile", lambda: _profile(clients("iam", home), config.profile),
                     "run `spotshift aws setup`"))
    return account, rows


def _bucket(s3: Any, config: CheckConfig, account: str) -> str:
    try:
        located = check_bucket(s3, config.bucket, region=config.bucket_region, account=account)
    except SetupError as exc:
        raise CheckFailed(exc.aws_message) from exc
    return f"{config.bucket} in {located}, owned by {account}"


def _profile(iam: Any, name: str) -> str:
    profile = call_aws(iam.get_instance_profile, region="global", InstanceProfileName=name)["InstanceProfile"]
    roles = [r["RoleName"] for r in profile.get("Roles", [])]
    if not roles:
        raise CheckFailed(f"instance profile {name} holds no role")
    return f"{name} -> role {', '.join(roles)}"


def check_region(clients: Clients, config: CheckConfig, region: str) -> list[CheckRow]:
    """The rows of one region; the DryRun uses the image, a subnet that reaches S3 and the package
    index, and the group found before it."""
    ec2 = clients("ec2", region)
    found: dict[str, Any] = {}
    overrides = dict(config.image_overrides)

    def image() -> str:
        img = resolve_image(region, ssm=clients("ssm", region), ec2=ec2, override=overrides.get(region),
                            parameter=config.image_parameter, name_pattern=config.image_name_pattern,
                            owners=config.image_owners)
        found["image"] = img
        return f"{img.image_id} ({img.name or 'unnamed'}, {img.architecture}) from {img.source}"

    def group() -> str:
        vpc = found["subnets"].vpc_id if "subnets" in found else None  # else by name alone: still says if it exists
        sg = find_security_group(ec2, config.security_group, region=region, vpc_id=vpc)
        if sg is None:
            raise CheckFailed(f"no security group {config.security_group!r}" + (f" in {vpc}" if vpc else ""))
        if not sg.get("IpPermissionsEgress"):
            raise CheckFailed(f"{sg['GroupId']} allows no outbound traffic (S3 and the Hub are unreachable)")
        found["group"] = sg
        return f"{sg['GroupId']} in {sg['VpcId']}: egress open, {len(sg.get('IpPermissions', []))} inbound rule(s)"

    def subnets() -> str:
        chosen = region_subnets(ec2, region=region, choice=config.network(region), private=config.private_subnets)
        if not chosen.subnets:
            raise CheckFailed(f"no usable subnet in {chosen.vpc_id} ({chosen.source}): none is available with free "
                              "addresses" + ("" if config.private_subnets else " and public IPs on launch"))
        found["subnets"] = chosen
        return chosen.describe()

    rows = [_row(region, "image", image, "set SPOTSHIFT_IMAGE_IDS for this region or check the SSM parameter"),
            _row(region, "subnets", subnets, "name subnets with SPOTSHIFT_SUBNET_IDS (public, or private with a NAT "
                 "gateway and SPOTSHIFT_PRIVATE_SUBNETS=true)"),
            _row(region, "security group", group, f"run `spotshift aws setup --regions {region}`")]
    rows += subnet_rows(ec2, region, found, config)
    rows += quota_rows(clients("service-quotas", region), region)
    rows.append(_row(region, "run-instances dry run", lambda: dry_run(ec2, region, found, config),
                     "attach the policy `spotshift aws setup` prints to this user"))
    return rows


def subnet_rows(ec2: Any, region: str, found: dict[str, Any], config: CheckConfig) -> list[CheckRow]:
    """One row per subnet launches use: does an instance there reach S3 and the package index
    (spotshift.aws.routes)? The reachable ones go into found["reachable"] for the DryRun."""
    if "subnets" not in found:
        return []
    try:
        reach = subnets_reach(ec2, found["subnets"], public_ip=not config.private_subnets)
    except SpotshiftAwsError as exc:
        return [CheckRow(region, "subnet routes", False, str(exc), "allow ec2:DescribeRouteTables, "
                         "ec2:DescribeNatGateways and ec2:DescribeVpcEndpoints (the policy `spotshift aws policy` "
                         "prints)")]
    found["reachable"] = [r for r in reach if r.ok]
    return [CheckRow(region, f"subnet {r.subnet_id}", r.ok, r.detail, r.fix, zone=r.zone, unverified=r.unverified)
            for r in reach]


def quota_rows(service_quotas: Any, region: str) -> list[CheckRow]:
    """One row per G/P x spot/on-demand vCPU quota."""
    return [quota_row(region, read_quota(service_quotas, quota, region=region)) for _, _, quota in gpu_quotas()]


def quota_row(region: str, reading: QuotaReading) -> CheckRow:
    """A quota's row: 0 vCPUs names how to ask for more; unknown names the reason and goes ahead."""
    name = quota_row_name(reading.quota.group, reading.quota.market)
    if reading.known:
        fix = "" if reading.usable else increase_hint(reading.quota, region)
        return CheckRow(region, name, reading.usable, reading.describe(), fix, quota=reading)
    fix = ("allow servicequotas:GetServiceQuota and servicequotas:GetAWSDefaultServiceQuota (the policy "
           "`spotshift aws policy` prints)" if reading.denied else "read it in the Service Quotas console")
    return CheckRow(region, name, True, reading.describe(), f"{fix}; meanwhile launches go ahead and a quota "
                    "refusal at launch skips the offers under it", quota=reading)


def probe_request(region: str, zone: str, image: RegionImage, subnet: str, group: str, config: CheckConfig) -> LaunchRequest:
    """The launch plan of a real job, for the smallest GPU type the image supports."""
    t = INSTANCE_TYPES[PROBE_TYPE]
    offer = Offer(instance_type=t.name, gpu=t.gpu, gpu_count=t.gpu_count, gpu_memory_gib=t.gpu_memory_gib,
                  vcpus=t.vcpus, memory_gib=t.memory_gib, region=region, zone=zone, market=Market.SPOT,
                  usd_per_hour=0.0, observed_at=datetime.now(UTC), source="spotshift aws check")
    return LaunchRequest(job_id="spotshift-check", workload_id=f"check-{region}", offer=offer,
                         spec_uri=f"s3://{config.bucket}/jobs/spotshift-check/spec.json", image_id=image.image_id,
                         instance_profile=config.profile, subnet_id=subnet, security_group_ids=(group,),
                         public_ip=not config.private_subnets, user_data="#!/bin/bash\nshutdown -h now\n")


def dry_run(ec2: Any, region: str, found: dict[str, Any], config: CheckConfig) -> str:
    missing = [k for k in ("image", "group", "subnets") if k not in found]
    if missing:
        raise CheckFailed(f"needs the {', '.join(missing)} checks to pass first", fix="fix the failed rows above")
    if not found.get("reachable"):
        raise CheckFailed("needs a subnet that reaches S3 and the package index", fix="fix the subnet rows above")
    zone, subnet = found["reachable"][0].zone, found["reachable"][0].subnet_id
    request = probe_request(region, zone, found["image"], subnet, found["group"]["GroupId"], config)
    try:
        ec2.run_instances(**plan_run_instances(request), DryRun=True)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "DryRunOperation":
            return f"{PROBE_TYPE} spot in {zone} would launch ({subnet}, {found['image'].image_id})"
        error = map_client_error(exc, context=f"dry run of {PROBE_TYPE} in {zone}", region=region)
        fix = ("attach the policy `spotshift aws policy` prints to this user" if isinstance(error, PermissionDenied)
               else "run `spotshift aws setup` (instance profile, security group) or fix what the error names")
        raise CheckFailed(str(error), fix=fix) from exc
    raise CheckFailed("EC2 launched an instance for a dry run")  # never: DryRun=True launches nothing


class RegionNotReady(SpotshiftAwsError):
    """A region's preflight check failed on something only the user can fix (image, network, rights)."""


def quota_row_name(group: str, market: Market) -> str:
    return f"quota {group} {Market(market).value}"


def launch_verdict(offer: Offer, rows: list[CheckRow]) -> None:
    """Raise when the region's rows say this offer cannot launch: RegionNotReady naming each failed
    row and its fix (image, network, rights; every subnet failing), SubnetUnusable when the subnet
    of the offer's zone cannot reach S3 and the package index, QuotaExceeded when the quota the
    offer counts against is known to be zero (the flow blocks the offers of that zone, or under that
    quota, and goes on). An unknown quota does not stop the launch; other quotas do not matter."""
    quota = quota_for(offer.instance_type, offer.market)
    zones: dict[str, CheckRow] = {}
    for r in rows:
        if r.zone:
            zones.setdefault(r.zone, r)  # the first subnet of a zone is the one launches there use
    failed = [r for r in rows if not r.ok and r.quota is None and not r.zone]
    if zones and not any(r.ok for r in zones.values()):  # no subnet reaches the internet: the region is out
        failed = list(zones.values()) + failed
    if failed:
        raise RegionNotReady("; ".join(f"{r.check}: {r.detail} (fix: {r.fix})" for r in failed),
                             code="RegionNotReady", operation="spotshift aws check", region=offer.region)
    subnet = zones.get(offer.zone)
    if subnet is not None and not subnet.ok:
        raise SubnetUnusable(f"{subnet.check}: {subnet.detail} (fix: {subnet.fix})", code="SubnetUnreachable",
                             operation="spotshift aws check", region=offer.region)
    zero = [r for r in rows if r.quota is not None and r.quota.quota == quota and not r.quota.usable]
    if zero:
        raise QuotaExceeded(f"{zero[0].detail}; {zero[0].fix}", quota_code=quota.code, quota_name=quota.name,
                            code="VcpuLimitExceeded", operation="GetServiceQuota", region=offer.region)


def check_failures(rows: list[CheckRow]) -> list[CheckRow]:
    """The rows that fail `spotshift aws check`: every failed row but a zero quota, and the zero
    quotas too when no GPU quota is usable (above 0 or unknown) in any region: nothing can launch."""
    failed = [r for r in rows if not r.ok and r.quota is None]
    quotas = [r for r in rows if r.quota is not None]
    if quotas and not any(r.ok for r in quotas):
        failed += quotas
    return failed


def failure_summary(failed: list[CheckRow]) -> str:
    """One line: each failed check and its fix; zero quotas as one clause naming their codes."""
    parts = [f"{r.region} {r.check}: {r.fix or r.detail}" for r in failed if r.quota is None]
    codes = sorted({r.quota.quota.code for r in failed if r.quota is not None})
    if codes:
        parts.append(f"no GPU family is usable in any region: every G and P vCPU quota is 0 ({', '.join(codes)}); "
                     "request an increase of one in Service Quotas (the fix under each ZERO row)")
    return f"{len(failed)} check(s) failed: " + "; ".join(parts)


def quota_summary(rows: list[CheckRow]) -> list[str]:
    """Per region, which GPU families and markets can launch, e.g. `us-east-1: usable: G spot 8
    vCPUs, G on-demand 8 vCPUs; quota 0: P spot (L-7212CCBC), P on-demand (L-417A185B)`."""
    lines = []
    for region in dict.fromkeys(r.region for r in rows if r.quota is not None):
        readings = [r.quota for r in rows if r.quota is not None and r.region == region]
        usable = [f"{q.quota.label} {f'{q.vcpus:g} vCPUs' if q.known else 'quota unknown'}"
                  for q in readings if q.usable]
        zero = [f"{q.quota.label} ({q.quota.code})" for q in readings if not q.usable]
        parts = [f"usable: {', '.join(usable)}" if usable else "no GPU family usable"]
        if zero:
            parts.append(f"quota 0: {', '.join(zero)} (request an increase: see the fix under each ZERO row)")
        lines.append(f"{region}: {'; '.join(parts)}")
    return lines


def run_check(clients: Clients, config: CheckConfig) -> list[CheckRow]:
    """Every row: the account's, then each region's."""
    _, rows = check_account(clients, config)
    for region in config.regions:
        rows += check_region(clients, config, region)
    return rows


def render_rows(rows: list[CheckRow]) -> str:
    """A plain-text table: region, check, result, detail (and the fix under a row that is not OK)."""
    width = max((len(r.check) for r in rows), default=5)
    lines = [f"{'region':<14} {'check':<{width}} {'result':<7}  detail"]
    for r in rows:
        lines.append(f"{r.region:<14} {r.check:<{width}} {r.result:<7}  {r.detail}")
        if r.result != "OK" and r.fix:
            lines.append(f"{'':<14} {'':<{width}}          fix: {r.fix}")
    return "\n".join(lines)


class RegionPreflight:
    """check_region per region, kept for `ttl_s` seconds: what the flow runs before a job's first
    launch in a region (`spotshift aws check`'s rows, without the account rows)."""

    def __init__(self, clients: Clients, config: CheckConfig, *, ttl_s: float = 3600,
                 monotonic: Callable[[], float] | None = None) -> None:
        import time

        self._clients = clients
        self._config = config
        self._ttl_s = ttl_s
        self._monotonic = monotonic or time.monotonic
        self._rows: dict[str, tuple[float, list[CheckRow]]] = {}

    def rows(self, region: str) -> tuple[list[CheckRow], bool]:
        """(the region's rows, whether they came from the cache)."""
        now = self._monotonic()
        cached = self._rows.get(region)
        if cached and now - cached[0] < self._ttl_s:
            return cached[1], True
        rows = check_region(self._clients, self._config, region)
        self._rows[region] = (now, rows)
        return rows, False
