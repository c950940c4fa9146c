"""The reaper's pure decision: which spotshift instances no live job owns."""

from __future__ import annotations

from spotshift.instances import JOB_TAG, InstanceInfo
from spotshift.aws.orphans import find_orphans
from spotshift.models import Market


def instance(instance_id: str, state: str = "running", job_id: str | None = None) -> InstanceInfo:
    tags = {JOB_TAG: job_id} if job_id else {"Name": "someone-elses"}
    return InstanceInfo(instance_id=instance_id, region="us-east-1", zone="us-east-1a", instance_type="g5.xlarge",
                        state=state, market=Market.SPOT, tags=tags)


def test_instances_of_dead_jobs_are_orphans_live_and_untagged_ones_are_not():
    instances = [
        instance("i-live", job_id="job-live"),
        instance("i-dead-running", job_id="job-dead"),
        instance("i-dead-stopped", state="stopped", job_id="job-dead"),
        instance("i-dead-pending", state="pending", job_id="job-gone"),
        instance("i-dead-terminated", state="terminated", job_id="job-dead"),
        instance("i-dead-shutting", state="shutting-down", job_id="job-dead"),
        instance("i-not-ours"),
    ]
    orphans = find_orphans(instances, live_job_ids={"job-live"})
    assert [o.instance_id for o in orphans] == ["i-dead-running", "i-dead-stopped", "i-dead-pending"]


def test_with_no_live_jobs_every_tagged_instance_is_an_orphan():
    assert [o.instance_id for o in find_orphans([instance("i-1", job_id="j"), instance("i-2")], set())] == ["i-1"]
