"""spotshift.aws.fleet_reads on the moto server: every region's spotshift instances in one
DescribeInstances per region (counted with botocore's before-call event hook), and a job's heartbeat
by a conditional GET (a 304 the second time)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from deployments.local_aws import client
from spotshift.instances import JOB_TAG, WORKLOAD_TAG
from spotshift.aws.fleet_reads import list_tagged_instances, read_heartbeat
from spotshift.aws.local_backend import MOTO_IMAGE_ID
from spotshift.fleet import Finding, HeartbeatRead, Thresholds, find_orphans
from training.contract import JobPaths, Progress, TrainerState, write_progress

REGIONS = ("us-east-1", "us-west-2")


class DescribeCounter:
    """Counts the DescribeInstances calls a client makes (botocore's `before-call` event)."""

    def __init__(self, ec2):
        self.calls = 0
        ec2.meta.events.register("before-call.ec2.DescribeInstances", self._count)

    def _count(self, **_):
        self.calls += 1


def launch(ec2, job_id: str, workload_id: str | None, count: int = 1) -> list[str]:
    tags = [{"Key": JOB_TAG, "Value": job_id}] + ([{"Key": WORKLOAD_TAG, "Value": workload_id}] if workload_id else [])
    answer = ec2.run_instances(ImageId=MOTO_IMAGE_ID, InstanceType="g5.xlarge", MinCount=count, MaxCount=count,
                               TagSpecifications=[{"ResourceType": "instance", "Tags": tags}])
    return [i["InstanceId"] for i in answer["Instances"]]


def test_two_jobs_in_two_regions_and_an_orphan_are_found_with_one_describe_per_region(moto_endpoint):
    run = uuid.uuid4().hex[:8]
    ec2 = {r: client("ec2", moto_endpoint, r) for r in REGIONS}
    east = launch(ec2["us-east-1"], f"job-a-{run}", f"wl-a-{run}")
    west = launch(ec2["us-west-2"], f"job-b-{run}", f"wl-b-{run}")
    orphan = launch(ec2["us-west-2"], f"job-gone-{run}", f"wl-gone-{run}")
    stopped = launch(ec2["us-east-1"], f"job-a-{run}", f"wl-old-{run}")
    ec2["us-east-1"].terminate_instances(InstanceIds=stopped)  # terminated: listed as such, never an orphan
    counters = {r: DescribeCounter(c) for r, c in ec2.items()}

    seen = [i for r in REGIONS for i in list_tagged_instances(ec2[r])]

    assert {r: c.calls for r, c in counters.items()} == {r: 1 for r in REGIONS}
    mine = {i.instance_id: i for i in seen if run in (i.job_id or "")}
    assert set(mine) == {*east, *west, *orphan, *stopped} and mine[stopped[0]].state == "terminated"
    assert (mine[east[0]].region, mine[east[0]].job_id, mine[east[0]].workload_id) == \
        ("us-east-1", f"job-a-{run}", f"wl-a-{run}")
    assert mine[west[0]].region == "us-west-2" and mine[west[0]].state in ("pending", "running")
    orphans = find_orphans(mine.values(), open_workload_ids={f"wl-a-{run}", f"wl-b-{run}"},
                           live_job_ids={f"job-a-{run}", f"job-b-{run}"})
    assert [(o.instance_id, o.finding, o.key) for o in orphans] == \
        [(orphan[0], Finding.ORPHAN, f"job-gone-{run}:wl-gone-{run}:terminate_orphan")]


def test_the_listing_follows_every_page(moto_endpoint):
    import spotshift.aws.fleet_reads as reads

    run = uuid.uuid4().hex[:8]
    ec2 = client("ec2", moto_endpoint, "eu-west-1")
    ids = [i for _ in range(7) for i in launch(ec2, f"job-p-{run}", f"wl-p-{run}")]  # moto pages by reservation
    counter = DescribeCounter(ec2)
    original, reads.PAGE_SIZE = reads.PAGE_SIZE, 5  # DescribeInstances' smallest MaxResults
    try:
        seen = list_tagged_instances(ec2)
    finally:
        reads.PAGE_SIZE = original
    assert set(ids) <= {i.instance_id for i in seen}
    assert counter.calls == -(-len(seen) // 5)  # ceil(instances / page size)


def test_a_heartbeat_read_twice_is_unchanged_the_second_time(s3, bucket):
    paths = JobPaths(bucket=bucket, job_id="job-hb")
    assert read_heartbeat(s3, paths, None) == HeartbeatRead(changed=False)  # none yet
    write_progress(s3, paths.output, Progress(state=TrainerState.training, step=7, max_steps=10, instance_id="i-1",
                                              updated_at=datetime(2026, 12, 6, tzinfo=UTC)))
    statuses = []
    s3.meta.events.register("after-call.s3.GetObject",
                            lambda http_response, **_: statuses.append(http_response.status_code))
    first = read_heartbeat(s3, paths, None)
    assert first.changed and first.progress.step == 7 and first.etag
    second = read_heartbeat(s3, paths, first.etag)
    assert second == HeartbeatRead(changed=False, etag=first.etag)
    assert statuses == [200, 304]
    write_progress(s3, paths.output, Progress(state=TrainerState.training, step=8, max_steps=10, instance_id="i-1",
                                              updated_at=datetime(2026, 12, 6, 0, 1, tzinfo=UTC)))
    third = read_heartbeat(s3, paths, first.etag)
    assert third.changed and third.progress.step == 8 and third.etag != first.etag
    s3.delete_object(Bucket=bucket, Key=paths.key("progress.json"))
    assert read_heartbeat(s3, paths, third.etag) == HeartbeatRead(changed=True, progress=None)


def test_a_missing_heartbeat_that_s3_answers_403_is_no_heartbeat(moto_endpoint, s3, bucket):
    from tests.s3_missing_key_403 import s3_answering_missing_keys_with_403

    with s3_answering_missing_keys_with_403(moto_endpoint) as proxy:
        read = read_heartbeat(client("s3", proxy.endpoint), JobPaths(bucket=bucket, job_id="job-403"), None)
    assert read == HeartbeatRead(changed=False)
    assert f"{bucket}/jobs/job-403/progress.json" in proxy.denied_keys()


def test_thresholds_default_listing_grace_is_a_minute():
    assert Thresholds(stall_seconds=1).listing_grace_seconds == 60.0
