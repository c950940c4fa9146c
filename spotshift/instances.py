"""What spotshift knows about an instance, pure: the tags it puts on every instance it starts, EC2's
instance states, and InstanceInfo (one instance as EC2 describes it). spotshift.aws reads and writes them."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from spotshift.models import Market

JOB_TAG = "spotshift:job-id"
FLOW_RUN_TAG = "spotshift:flow-run-id"
WORKLOAD_TAG = "spotshift:workload-id"
RESERVED_TAG_PREFIXES = ("spotshift:", "aws:")  # tags a user may not set (spotshift's, and AWS's own)

RUNNING_STATES = frozenset({"pending", "running"})  # the instance may be training
NOT_GONE_STATES: tuple[str, ...] = ("pending", "running", "stopping", "stopped")  # it may come back
GONE_STATES = frozenset({"shutting-down", "terminated"})  # it never comes back
LOST_STATES = GONE_STATES | {"stopping", "stopped"}  # it no longer trains (a job on it needs another)
# a fleet pass lists these: a terminated instance stays listed for about an hour, so a job's instance
# that ended is seen ended at once (only a launch too new for DescribeInstances may be missing)
LISTED_STATES: tuple[str, ...] = ("pending", "running", "stopping", "stopped", "shutting-down", "terminated")
# EC2's StateReason codes of a spot instance taken back (its workload was preempted, not failed)
SPOT_INTERRUPTION_REASONS = frozenset({"Server.SpotInstanceTermination", "Server.SpotInstanceShutdown"})


class InstanceInfo(BaseModel):
    """What describe_instances says about one (spotshift-tagged or not) instance."""

    model_config = ConfigDict(frozen=True)

    instance_id: str
    region: str
    zone: str
    instance_type: str
    state: str
    market: Market
    launched_at: datetime | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    state_reason: str | None = Field(default=None, description="e.g. Server.SpotInstanceTermination")

    @property
    def job_id(self) -> str | None:
        return self.tags.get(JOB_TAG)

    @property
    def workload_id(self) -> str | None:
        return self.tags.get(WORKLOAD_TAG)
