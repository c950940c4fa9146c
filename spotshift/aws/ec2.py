"""EC2 instances for workloads: a pure plan of the run_instances call, and thin calls that run it.

Every call takes its boto3 EC2 client as an argument and raises spotshift.aws.errors types.
"""

from __future__ import annotations

import hashlib
import time
from datetime import datetime
from typing import Any, Callable, Iterable, Sequence

from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict, Field, field_validator

from spotshift.aws.errors import (
    CapacityUnavailable, NotFound, QuotaExceeded, SpotshiftAwsError, WaitTimeout, map_client_error,
)
from spotshift.aws.quotas import quota_error
from spotshift.instances import (
    FLOW_RUN_TAG, GONE_STATES, JOB_TAG, NOT_GONE_STATES, RESERVED_TAG_PREFIXES, WORKLOAD_TAG, InstanceInfo,
)
from spotshift.models import Market, Offer
from spotshift.sizing.disk import DiskNeed

USER_DATA_MAX_BYTES = 16 * 1024  # EC2's limit on raw user data
NOT_FOUND_GRACE_S = 60.0  # DescribeInstances may not know an instance this long after RunInstances


class LaunchRequest(BaseModel):
    """Everything needed to start one instance for one workload of a job."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    job_id: str = Field(min_length=1, max_length=63, description="spotshift job id")
    workload_id: str = Field(min_length=1, max_length=128, description="the ledger row this instance runs")
    flow_run_id: str = Field(default="", max_length=128, description="the Prefect flow run that started it")
    offer: Offer = Field(description="where and how: instance type, region, zone, market")
    spec_uri: str = Field(min_length=1, description="s3://bucket/jobs/<job_id>/spec.json the trainer reads")
    user_data: str = Field(default="", description="rendered by training.bootstrap.render_user_data")
    processes: int | None = Field(default=None, ge=1, description="trainer processes (torchrun's "
                                  "--nproc_per_node): the GPUs the job's global batch keeps busy; None = "
                                  "one per GPU of the instance")
    image_id: str | None = Field(default=None, pattern=r"^ami-[0-9a-f]{8,17}$",
                                 description="AMI with the training environment; None = the backend resolves "
                                 "the region's image (spotshift.aws.images)")
    subnet_id: str | None = Field(default=None, description="subnet of the offer's zone; None = EC2's default "
                                  "subnet (needs a default VPC)")
    security_group_ids: tuple[str, ...] = Field(default=(), description="the region's spotshift security group")
    public_ip: bool = Field(default=True, description="False for private subnets that reach S3 through a NAT "
                            "gateway or VPC endpoints")
    instance_profile: str | None = Field(
        default="spotshift-trainer", min_length=1, max_length=128,
        description="IAM instance profile name (the instance gets its role, never keys); None = none",
    )
    extra_tags: dict[str, str] = Field(default_factory=dict, description="more tags on instance and volumes")
    disk: DiskNeed | None = Field(default=None, description="what the trainer keeps on local disk (model, "
                                  "a restored checkpoint, the final model); None = unknown")
    root_device_name: str | None = Field(default=None, description="the image's root device (e.g. /dev/sda1)")
    root_volume_gib: int | None = Field(default=None, ge=1, le=16_384, description="the root gp3 volume's size; "
                                        "None = the image's own (spotshift.sizing.disk.plan_root_volume sizes it)")

    @field_validator("user_data")
    @classmethod
    def _user_data(cls, v: str) -> str:
        size = len(v.encode())
        if size > USER_DATA_MAX_BYTES:
            raise ValueError(f"user_data is {size} bytes; EC2 allows at most {USER_DATA_MAX_BYTES}")
        return v

    @field_validator("extra_tags")
    @classmethod
    def _extra_tags(cls, v: dict[str, str]) -> dict[str, str]:
        for key, value in v.items():
            if key.startswith(RESERVED_TAG_PREFIXES) or key == "Name":
                raise ValueError(f"extra_tags key {key!r} is reserved (Name, spotshift:*, aws:* are set by spotshift)")
            if not 1 <= len(key) <= 128 or len(value) > 256:
                raise ValueError(f"extra_tags {key!r}: keys must be 1-128 characters, values at most 256")
        return v

    @property
    def region(self) -> str:
        return self.offer.region

    @property
    def tags(self) -> dict[str, str]:
        """Every tag the instance and its volumes carry."""
        return {
            "Name": f"spotshift-{self.job_id}",
            JOB_TAG: self.job_id,
            FLOW_RUN_TAG: self.flow_run_id,
            WORKLOAD_TAG: self.workload_id,
            **self.extra_tags,
        }


class LaunchedInstance(BaseModel):
    """An instance started for a workload."""

    model_config = ConfigDict(frozen=True)

    instance_id: str
    job_id: str
    workload_id: str
    region: str
    zone: str
    instance_type: str
    market: Market
    state: str
    launched_at: datetime


def client_token(workload_id: str) -> str:
    """The idempotency token for a workload's launch: the same workload never starts two instances."""
    return "spotshift-" + hashlib.sha256(workload_id.encode()).hexdigest()[:40]


def plan_run_instances(request: LaunchRequest) -> dict[str, Any]:
    """The keyword arguments of ec2.run_instances for a launch request (pure)."""
    tags = [{"Key": k, "Value": v} for k, v in request.tags.items()]
    kwargs: dict[str, Any] = {
        "ImageId": request.image_id,
        "InstanceType": request.offer.instance_type,
        "MinCount": 1,
        "MaxCount": 1,
        "Placement": {"AvailabilityZone": request.offer.zone},
        "UserData": request.user_data,
        # The bootstrap powers off when training ends: that must end the bill, not park a volume.
        "InstanceInitiatedShutdownBehavior": "terminate",
        "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled"},
        "TagSpecifications": [
            {"ResourceType": "instance", "Tags": tags},
            {"ResourceType": "volume", "Tags": tags},
        ],
        "ClientToken": client_token(request.workload_id),
    }
    if request.image_id is None:
        raise ValueError("image_id is unresolved: the backend resolves the region's image before launching")
    if request.subnet_id:
        kwargs["NetworkInterfaces"] = [{
            "DeviceIndex": 0, "SubnetId": request.subnet_id, "Groups": list(request.security_group_ids),
            "AssociatePublicIpAddress": request.public_ip, "DeleteOnTermination": True,
        }]
    elif request.security_group_ids:
        kwargs["SecurityGroupIds"] = list(request.security_group_ids)
    if request.instance_profile:
        kwargs["IamInstanceProfile"] = {"Name": request.instance_profile}
    if request.root_volume_gib is not None:
        if not request.root_device_name:
            raise ValueError("root_volume_gib needs root_device_name: the image's RootDeviceName")
        # gp3, deleted with the instance (a terminated job leaves no volume to pay for)
        kwargs["BlockDeviceMappings"] = [{"DeviceName": request.root_device_name, "Ebs": {
            "VolumeSize": request.root_volume_gib, "VolumeType": "gp3", "DeleteOnTermination": True}}]
    if request.offer.market is Market.SPOT:
        kwargs["InstanceMarketOptions"] = {
            "MarketType": "spot",
            "SpotOptions": {"SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"},
        }
    return kwargs


def instance_info(raw: dict[str, Any], region: str) -> InstanceInfo:
    """An InstanceInfo from one describe_instances / run_instances instance record (pure)."""
    reason = raw.get("StateReason") or {}
    return InstanceInfo(
        instance_id=raw["InstanceId"],
        region=region,
        zone=(raw.get("Placement") or {}).get("AvailabilityZone", ""),
        instance_type=raw.get("InstanceType", ""),
        state=raw["State"]["Name"],
        market=Market.SPOT if raw.get("InstanceLifecycle") == "spot" else Market.ON_DEMAND,
        launched_at=raw.get("LaunchTime"),
        tags={t["Key"]: t["Value"] for t in raw.get("Tags") or []},
        state_reason=reason.get("Code"),
    )


def _region(ec2) -> str:
    return ec2.meta.region_name


def _describe(ec2, *, context: str, **kwargs) -> list[InstanceInfo]:
    region = _region(ec2)
    try:
        pages = ec2.get_paginator("describe_instances").paginate(**kwargs)
        return [instance_info(i, region) for page in pages for r in page["Reservations"] for i in r["Instances"]]
    except ClientError as exc:
        raise map_client_error(exc, context=context, region=region) from exc


def find_instances(
    ec2, *, job_id: str | None = None, workload_id: str | None = None, states: Sequence[str] = NOT_GONE_STATES,
    page_size: int | None = None,
) -> list[InstanceInfo]:
    """spotshift-tagged instances of the client's region, optionally of one job or workload;
    `page_size` instances per DescribeInstances call (MaxResults, 5 to 1,000) when given."""
    filters = [{"Name": "tag-key", "Values": [JOB_TAG]}, {"Name": "instance-state-name", "Values": list(states)}]
    if job_id is not None:
        filters.append({"Name": f"tag:{JOB_TAG}", "Values": [job_id]})
    if workload_id is not None:
        filters.append({"Name": f"tag:{WORKLOAD_TAG}", "Values": [workload_id]})
    paging = {"PaginationConfig": {"PageSize": page_size}} if page_size else {}
    return _describe(ec2, context="find spotshift instances", Filters=filters, **paging)


def describe_instance(ec2, instance_id: str) -> InstanceInfo:
    """One instance by id (NotFound when EC2 does not know it)."""
    found = _describe(ec2, context=f"describe {instance_id}", InstanceIds=[instance_id])
    if not found:  # EC2 answers InvalidInstanceID.NotFound; this covers an empty answer
        raise NotFound(f"instance {instance_id} does not exist", code="InvalidInstanceID.NotFound",
                       operation="DescribeInstances", region=_region(ec2))
    return found[0]


def instance_state(ec2, instance_id: str) -> str:
    """The instance's state name: pending, running, shutting-down, terminated, stopping, stopped."""
    return describe_instance(ec2, instance_id).state


def launch(ec2, request: LaunchRequest) -> LaunchedInstance:
    """Start the instance of a request, or return the one already started for its workload.

    The lookup by workload tag backs up the ClientToken (the moto server ignores ClientToken).
    """
    existing = find_instances(ec2, workload_id=request.workload_id, states=("pending", "running"))
    if existing:
        return _launched(request, existing[0])
    try:
        response = ec2.run_instances(**plan_run_instances(request))
    except ClientError as exc:
        raise launch_error(map_client_error(exc, context=f"launch {request.offer.instance_type} in "
                                            f"{request.offer.zone}", region=request.region), request.offer) from exc
    return _launched(request, instance_info(response["Instances"][0], request.region))


def launch_error(error: SpotshiftAwsError, offer: Offer) -> SpotshiftAwsError:
    """A quota refusal names the quota the offer counts against; other errors stay as they are."""
    if isinstance(error, CapacityUnavailable) and error.is_quota and not isinstance(error, QuotaExceeded):
        return quota_error(error, offer.instance_type, offer.market)
    return error


def _launched(request: LaunchRequest, info: InstanceInfo) -> LaunchedInstance:
    return LaunchedInstance(
        instance_id=info.instance_id, job_id=request.job_id, workload_id=request.workload_id,
        region=request.region, zone=info.zone or request.offer.zone, instance_type=info.instance_type,
        market=request.offer.market, state=info.state, launched_at=info.launched_at or request.offer.observed_at,
    )


def wait_running(
    ec2,
    instance_id: str,
    timeout_s: float = 600,
    *,
    poll_s: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
    not_found_grace_s: float = NOT_FOUND_GRACE_S,
) -> InstanceInfo:
    """Wait until the instance is running. A spot instance that dies on the way raises
    CapacityUnavailable with EC2's reason code; running out of time raises WaitTimeout.
    InvalidInstanceID.NotFound in the first `not_found_grace_s` counts as pending (EC2's reads
    are eventually consistent right after RunInstances)."""
    started = monotonic()
    deadline = started + timeout_s
    while True:
        try:
            info = describe_instance(ec2, instance_id)
        except NotFound:
            if monotonic() - started >= not_found_grace_s:
                raise
            sleep(poll_s)
            continue
        if info.state == "running":
            return info
        if info.state in GONE_STATES or info.state in ("stopping", "stopped"):
            raise CapacityUnavailable(
                f"instance {instance_id} went {info.state} before running ({info.state_reason or 'no reason given'})",
                code=info.state_reason or "InstanceTerminated", operation="DescribeInstances", region=info.region,
            )
        if monotonic() >= deadline:
            raise WaitTimeout(f"instance {instance_id} still {info.state} after {timeout_s:.0f}s",
                              code="WaitTimeout", operation="DescribeInstances", region=info.region)
        sleep(poll_s)


def terminate(ec2, instance_ids: Iterable[str]) -> list[str]:
    """Terminate instances (terminated ones are fine, unknown ids raise NotFound); return the ids EC2 accepted."""
    ids = list(instance_ids)
    if not ids:
        return []
    try:
        response = ec2.terminate_instances(InstanceIds=ids)
    except ClientError as exc:
        raise map_client_error(exc, context=f"terminate {', '.join(ids)}", region=_region(ec2)) from exc
    return [t["InstanceId"] for t in response.get("TerminatingInstances", [])]
