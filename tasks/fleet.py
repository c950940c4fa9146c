"""Fleet agent: the reads and writes of one fleet pass, each a task over every running job at once
(not one task per job): list instances per region, read running jobs, read heartbeats, judge, record."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Mapping, Sequence

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import MissingContextError

from spotshift.aws.errors import SpotshiftAwsError
from spotshift.aws.fleet_reads import list_tagged_instances, read_heartbeat
from spotshift.fleet import (
    ADOPTABLE_STATUSES, FleetJudgment, FleetMark, HeartbeatRead, RunningJob, Thresholds, judge_fleet,
)
from spotshift.instances import InstanceInfo
from spotshift.models import LIVE_STATUSES, Job, JobStatus, JobUpdate


def _logger():
    try:
        return get_run_logger()
    except MissingContextError:  # called as .fn outside a flow
        return logging.getLogger(__name__)


@dataclass(frozen=True)
class InstanceListing:
    """Every region's spotshift-tagged instances; `listed`: the regions that answered."""

    instances: list[InstanceInfo]
    listed: list[str]
    failed: dict[str, str]  # region -> error code


@dataclass(frozen=True)
class FleetJobs:
    """The stores' view a pass judges: running jobs with their open current workload."""

    running: list[RunningJob]
    open_workload_ids: set[str]
    live_job_ids: set[str]
    mid_action: list[Job] = field(default_factory=list)  # placing, recovering or moving (spotshift.fleet)


@task(name="list-instances", cache_policy=NO_CACHE)
def list_instances(ec2_client: Callable[[str], Any], regions: Sequence[str]) -> InstanceListing:
    """One paginated DescribeInstances per region (tag filter). A region that fails is left out of
    `listed`: its jobs are judged by their heartbeats alone this pass."""
    instances, listed, failed = [], [], {}
    for region in dict.fromkeys(regions):
        try:
            instances += list_tagged_instances(ec2_client(region))
        except SpotshiftAwsError as exc:
            _logger().warning("Fleet: instances of %s not listed (%s); judged by heartbeats alone", region, exc.code)
            failed[region] = exc.code
            continue
        listed.append(region)
    return InstanceListing(instances, listed, failed)


@task(name="running-jobs", cache_policy=NO_CACHE)
def read_fleet_jobs(jobs: Any, ledger: Any) -> FleetJobs:
    """Running jobs whose current workload is open (one read of each store), the open workloads and
    the live jobs (for orphans). Read after the instances are listed."""
    open_by_id = {w.id: w for w in ledger.open_workloads()}
    live = jobs.list(list(LIVE_STATUSES))
    running = [RunningJob(j, open_by_id[j.current_workload_id]) for j in live
               if j.status is JobStatus.RUNNING and j.current_workload_id in open_by_id]
    return FleetJobs(running, set(open_by_id), {j.id for j in live},
                     [j for j in live if j.status in ADOPTABLE_STATUSES])


@task(name="read-heartbeats", cache_policy=NO_CACHE)
def read_heartbeats(s3: Any, running: Sequence[RunningJob], marks: Mapping[str, FleetMark], bucket: str,
                    concurrency: int) -> dict[str, HeartbeatRead]:
    """Each job's progress.json by a conditional GET with the ETag of the last pass (a 304 is
    "unchanged"), `concurrency` in flight. A job whose read fails is left out (judged on what the
    last pass read)."""
    def one(rj: RunningJob) -> tuple[str, HeartbeatRead | None]:
        mark = marks.get(rj.job.id)
        etag = mark.etag if mark is not None and mark.workload_id == rj.workload.id else None
        try:
            return rj.job.id, read_heartbeat(s3, rj.job.paths(bucket), etag)
        except SpotshiftAwsError as exc:
            _logger().warning("Fleet: heartbeat of job %s not read (%s)", rj.job.id, exc.code)
            return rj.job.id, None

    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(running) or 1)),
                            thread_name_prefix="heartbeat") as pool:
        return {job_id: read for job_id, read in pool.map(one, running) if read is not None}


@task(name="judge-fleet", cache_policy=NO_CACHE)
def judge(jobs: FleetJobs, listing: InstanceListing, heartbeats: Mapping[str, HeartbeatRead],
          marks: Mapping[str, FleetMark], now: datetime, thresholds: Thresholds) -> FleetJudgment:
    """spotshift.fleet.judge_fleet: every job's finding and the action it calls for."""
    return judge_fleet(jobs.running, listing.instances, heartbeats, marks, now=now, listed_regions=listing.listed,
                       open_workload_ids=jobs.open_workload_ids, live_job_ids=jobs.live_job_ids,
                       thresholds=thresholds, mid_action=jobs.mid_action)


@task(name="record-measurements", cache_policy=NO_CACHE)
def record_measurements(jobs: Any, judgment: FleetJudgment, now: datetime) -> int:
    """Store what a new heartbeat told of each job (step, rate, the training workload): the same
    JobUpdate the per-job monitor writes, for every such job in one bulk write. Returns how many."""
    updates = {f.job_id: JobUpdate(step=f.step, measured=f.measured) for f in judgment.findings
               if f.step is not None or f.measured is not None}
    return jobs.update_many(updates, now=now)


@task(name="save-fleet-marks", cache_policy=NO_CACHE)
def save_marks(store: Any, judgment: FleetJudgment) -> None:
    """What the next pass starts from (it may run in another process)."""
    store.save(judgment.marks)
