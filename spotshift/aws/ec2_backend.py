"""The real compute backend: instances on EC2, one boto3 client per region from a factory you pass
(e.g. `lambda region: aws_credentials.get_client("ec2")` per region)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Callable, Sequence

from spotshift.aws.compute import InstanceEvent
from spotshift.aws import ec2 as ec2_api
from spotshift.aws.ec2 import LaunchedInstance, LaunchRequest
from spotshift.aws.errors import NotFound, SpotshiftAwsError
from spotshift.aws.check import RegionPreflight
from spotshift.aws.launch_env import LaunchEnvironment
from spotshift.clock import wall_clock
from spotshift.instances import GONE_STATES, SPOT_INTERRUPTION_REASONS, InstanceInfo

log = logging.getLogger(__name__)

DEFAULT_REGIONS = ("us-east-1", "us-east-2", "us-west-2")


class Ec2Backend:
    """Starts, watches and terminates spotshift instances on EC2.

    start(): run_instances (idempotent per workload) -> wait until running; an instance that does
    not get there is terminated and the typed error raised (CapacityUnavailable, WaitTimeout).
    poll(): instances it started that are gone -> `preempted` (spot reclaimed) or `exited` (the
    bootstrap powered off after training). close() leaves instances running: the flow owns them.
    `launch_env` completes each request for its region (image, subnet, security group, user-data).
    stop()/state() find an instance by the region it was started or listed in, else by scanning
    every region in `regions` (give it all allowed regions: the fleet pass and the failure hooks do).
    """

    def __init__(
        self,
        clients: Callable[[str], Any],
        *,
        regions: Sequence[str] = DEFAULT_REGIONS,
        wait_timeout_s: float = 600,
        wait_poll_s: float = 5,
        clock: Callable[[], datetime] = wall_clock,
        launch_env: LaunchEnvironment | None = None,
        preflight: RegionPreflight | None = None,
    ) -> None:
        self._clients = clients
        self._regions = list(dict.fromkeys(regions))
        self._wait_timeout_s = wait_timeout_s
        self._wait_poll_s = wait_poll_s
        self._clock = clock
        self._started: dict[str, LaunchedInstance] = {}
        self._launch_env = launch_env
        self.preflight = preflight  # tasks/aws_check.py runs it before a job's first launch in a region
        self._seen_in: dict[str, str] = {}  # instance id -> region, from list()

    @property
    def launch_env(self) -> LaunchEnvironment | None:
        return self._launch_env

    @property
    def regions(self) -> list[str]:
        """Every region it watches (the configured ones, plus any it launched in)."""
        return list(self._regions)

    def ec2_client(self, region: str) -> Any:
        """Its EC2 client of `region` (the fleet pass lists each region once with it)."""
        return self._clients(region)

    def start(self, request: LaunchRequest) -> LaunchedInstance:
        if self._launch_env is not None:
            request = self._launch_env.complete(request)
        ec2 = self._clients(request.region)
        launched = ec2_api.launch(ec2, request)
        try:
            info = ec2_api.wait_running(ec2, launched.instance_id, self._wait_timeout_s, poll_s=self._wait_poll_s)
        except SpotshiftAwsError:
            ec2_api.terminate(ec2, [launched.instance_id])
            raise
        launched = launched.model_copy(update={"state": info.state})
        self._started[launched.instance_id] = launched
        if request.region not in self._regions:
            self._regions.append(request.region)
        return launched

    def stop(self, instance_id: str, reason: str) -> None:
        """Terminate the instance unless it is already gone (terminating it again would touch its
        deleted network interface: the moto server refuses that)."""
        ec2 = self._clients(self._region_of(instance_id))
        try:
            gone = ec2_api.instance_state(ec2, instance_id) in GONE_STATES
        except NotFound:
            gone = True
        if not gone:
            log.info("terminating %s: %s", instance_id, reason)
            ec2_api.terminate(ec2, [instance_id])
        self._started.pop(instance_id, None)

    def state(self, instance_id: str) -> str:
        return ec2_api.instance_state(self._clients(self._region_of(instance_id)), instance_id)

    def list(self, job_id: str | None = None) -> list[InstanceInfo]:
        found = [i for region in self._regions for i in ec2_api.find_instances(self._clients(region), job_id=job_id)]
        self._seen_in.update({i.instance_id: i.region for i in found})
        return found

    def poll(self) -> list[InstanceEvent]:
        events = []
        for instance_id, launched in list(self._started.items()):
            try:
                info = ec2_api.describe_instance(self._clients(launched.region), instance_id)
                state, reason = info.state, info.state_reason
            except NotFound:  # EC2 forgets terminated instances after about an hour
                state, reason = "terminated", None
            if state not in GONE_STATES:
                continue
            events.append(InstanceEvent(
                kind="preempted" if reason in SPOT_INTERRUPTION_REASONS else "exited", instance_id=instance_id,
                job_id=launched.job_id, workload_id=launched.workload_id, zone=launched.zone, at=self._clock(),
                detail=f"{state} ({reason or 'no reason given'})",
            ))
            del self._started[instance_id]
        return events

    def close(self) -> None:
        self._started.clear()

    def _region_of(self, instance_id: str) -> str:
        if instance_id in self._started:
            return self._started[instance_id].region
        if instance_id in self._seen_in:
            return self._seen_in[instance_id]
        for region in self._regions:
            try:
                return ec2_api.describe_instance(self._clients(region), instance_id).region
            except NotFound:
                continue
        raise NotFound(f"instance {instance_id} not found in {', '.join(self._regions)}",
                               code="InvalidInstanceID.NotFound", operation="DescribeInstances")
