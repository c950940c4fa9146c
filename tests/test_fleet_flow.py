"""The fleet flow on the local backend (moto's EC2 and S3, the embedded stores): one pass per tick
records each running job's step and rate from its heartbeats; it finds a preempted job and an orphan, lists each region once per pass
and reads an unchanged heartbeat as a 304; two passes finding the same preemption start one action run."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

from blocks.stores import open_job_store, open_ledger
from deployments.local_aws import client
from flows.fleet import fleet
from flows.runtime import Runtime
from spotshift.aws.ec2 import JOB_TAG, WORKLOAD_TAG
from spotshift.aws.local_backend import MOTO_IMAGE_ID, LocalBackend
from spotshift.models import JobCreate, JobStatus, JobUpdate, Market, Workload
from spotshift.settings import Settings
from training.contract import Progress, TrainerState, write_progress

pytestmark = [pytest.mark.xdist_group("prefect")]

REGIONS = ["us-east-1", "us-west-2"]
T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class DescribeCallRecorder:
    """A recorded-call wrapper of a compute backend: every EC2 client the fleet takes from it counts
    its DescribeInstances calls per region (botocore's before-call event)."""

    def __init__(self, backend):
        self._backend = backend
        self.calls: dict[str, int] = {}

    @property
    def regions(self):
        return self._backend.regions

    def ec2_client(self, region: str):
        ec2 = self._backend.ec2_client(region)
        ec2.meta.events.register("before-call.ec2.DescribeInstances",
                                 lambda **_: self.calls.__setitem__(region, self.calls.get(region, 0) + 1))
        return ec2


def runtime(home: Path, endpoint: str, bucket: str, clock: Clock) -> Runtime:
    settings = Settings(home=home, bucket=bucket, aws_endpoint_url=endpoint, regions=REGIONS)
    backend = LocalBackend(endpoint, home / "instances", watch_interval_s=None, regions=REGIONS)
    return Runtime(settings=settings, jobs=open_job_store(settings), ledger=open_ledger(settings),
                   s3=client("s3", endpoint), market=None, backend=backend, clock=clock)


def running_job(rt: Runtime, region: str, *, terminated: bool = False):
    """A RUNNING job whose open workload runs on a tagged instance of moto's EC2 in `region`."""
    request = JobCreate.model_validate(dict(
        name="fleet", model="gpt2", dataset="s3://data/corpus.txt", max_steps=1000, budget_usd=50,
        deadline=T0 + timedelta(days=2), regions=REGIONS, instance_types=["g5.xlarge"]), context={"now": T0})
    job = rt.jobs.create(request, now=T0 - timedelta(hours=1))
    workload_id = f"wl-{uuid.uuid4().hex[:12]}"
    ec2 = client("ec2", rt.settings.aws_endpoint_url, region)
    instance = ec2.run_instances(ImageId=MOTO_IMAGE_ID, InstanceType="g5.xlarge", MinCount=1, MaxCount=1,
                                 TagSpecifications=[{"ResourceType": "instance", "Tags": [
                                     {"Key": JOB_TAG, "Value": job.id}, {"Key": WORKLOAD_TAG, "Value": workload_id}]}]
                                 )["Instances"][0]["InstanceId"]
    if terminated:
        ec2.terminate_instances(InstanceIds=[instance])
    w = Workload(id=workload_id, job_id=job.id, instance_id=instance, instance_type="g5.xlarge", region=region,
                 zone=f"{region}a", market=Market.SPOT, usd_per_hour=0.4, started_at=T0 - timedelta(hours=1))
    rt.ledger.upsert_workload(w)
    for status in (JobStatus.PLANNING, JobStatus.PROVISIONING):
        rt.jobs.transition(job.id, status, now=T0)
    rt.jobs.transition(job.id, JobStatus.RUNNING, now=T0, update=JobUpdate(current_workload_id=w.id))
    return rt.jobs.get(job.id), w


def heartbeat(rt: Runtime, job, w: Workload, step: int, at: datetime) -> None:
    write_progress(rt.s3, job.paths(rt.settings.bucket).output, Progress(
        state=TrainerState.training, step=step, max_steps=1000, instance_id=w.instance_id, updated_at=at))


@flow(name="fleet-test-recover")
def recover_stand_in(job_id: str, workload_id: str, action: str) -> None:
    """A stand-in action flow: the fleet only creates its runs here (nobody executes them)."""


RECOVER_BY_STAND_IN = {"recover": "fleet-test-recover/fleet-test"}


def test_a_fleet_pass_records_each_jobs_step_and_rate_and_finds_preemptions_and_orphans(prefect_api, moto_endpoint, s3, bucket, tmp_path):
    clock = Clock(T0)
    by_fleet, elsewhere = runtime(tmp_path / "fleet", moto_endpoint, bucket, clock), \
        runtime(tmp_path / "elsewhere", moto_endpoint, bucket, clock)
    fleet_job, fleet_w = running_job(by_fleet, "us-west-2")
    gone_job, gone_w = running_job(by_fleet, "us-east-1", terminated=True)
    other_store, _ = running_job(elsewhere, "us-east-1")  # a job of another store: its instance is an orphan here
    orphan_job = f"job-gone-{uuid.uuid4().hex[:8]}"
    orphan = client("ec2", moto_endpoint, "us-east-1").run_instances(
        ImageId=MOTO_IMAGE_ID, InstanceType="g5.xlarge", MinCount=1, MaxCount=1, TagSpecifications=[
            {"ResourceType": "instance", "Tags": [{"Key": JOB_TAG, "Value": orphan_job}]}])["Instances"][0]["InstanceId"]
    recorder = DescribeCallRecorder(by_fleet.backend)
    by_fleet = replace(by_fleet, backend=recorder)  # a Runtime is frozen: the pass gets a derived one
    statuses: list[int] = []
    by_fleet.s3.meta.events.register("after-call.s3.GetObject",
                                     lambda http_response, **_: statuses.append(http_response.status_code))
    deployment_id = recover_stand_in.to_deployment(name="fleet-test").apply()

    passes, reads = [], []
    for at, step in ((T0, 100), (T0 + timedelta(minutes=1), 160), (T0 + timedelta(seconds=90), None)):
        clock.now = at
        if step is not None:  # the third tick brings no new heartbeat
            heartbeat(by_fleet, fleet_job, fleet_w, step, at)
        before = len(statuses)
        actions = RECOVER_BY_STAND_IN if passes else None  # the first pass only reports (run_deployment: ~2 s)
        passes.append({r["job"]: r for r in fleet(runtime=by_fleet, action_deployments=actions)})
        reads.append(sorted(statuses[before:]))

    assert recorder.calls == {region: 3 for region in REGIONS}  # one DescribeInstances per region per pass
    # 60 steps in the minute between two training heartbeats: 3,600 steps an hour on g5.xlarge
    fleet_side = by_fleet.jobs.get(fleet_job.id)
    assert fleet_side.step == 160
    assert fleet_side.measured.steps_per_hour == pytest.approx(3600.0)
    assert fleet_side.measured.rate_instance_type == "g5.xlarge"
    assert fleet_side.measured.training_workload_id == fleet_w.id
    last = passes[-1]
    assert (last[fleet_job.id]["finding"], last[fleet_job.id]["action"]) == ("healthy", "none")
    assert (last[gone_job.id]["finding"], last[gone_job.id]["action"]) == ("preempted", "recover")
    assert last[gone_job.id]["key"] == f"{gone_job.id}:{gone_w.id}:recover"
    assert last[orphan_job]["instance"] == orphan and last[orphan_job]["action"] == "terminate_orphan"
    assert last[other_store.id]["finding"] == "orphan"  # another store's job: to this fleet, no open workload owns it
    # progress.json of the fleet's two jobs (the preempted one never wrote one): read when it changed,
    # a 304 when it did not
    assert reads == [[200, 404], [200, 404], [304, 404]]
    # two passes that start actions found the same preemption: one recover run, keyed
    # job:workload:action; the orphans' action has no deployment here: reported, not started
    assert passes[0][gone_job.id]["flow_run"] == ""
    assert {p[gone_job.id]["flow_run"] for p in passes[1:]} == {last[gone_job.id]["flow_run"]} != {""}
    assert last[orphan_job]["flow_run"] == ""
    with get_client(sync_client=True) as prefect:
        runs = prefect.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))
    assert [(r.idempotency_key, r.parameters) for r in runs] == [
        (f"{gone_job.id}:{gone_w.id}:recover", {"job_id": gone_job.id, "workload_id": gone_w.id, "action": "recover"})]
    assert by_fleet.jobs.get(gone_job.id).status is JobStatus.RUNNING  # the action run, not the pass, acts



def test_the_fleet_deployment_runs_every_interval_one_pass_at_a_time(monkeypatch):
    import yaml

    from deployments.serve import deployments as served

    doc = yaml.safe_load((Path(__file__).resolve().parents[1] / "prefect.yaml").read_text())
    [declared] = [d for d in doc["deployments"] if d["name"] == "fleet"]
    assert (declared["entrypoint"], declared["schedules"], declared["concurrency_limit"]) == \
        ("flows/fleet.py:fleet", [{"interval": 60}], 1)
    monkeypatch.setenv("SPOTSHIFT_FLEET_INTERVAL_SECONDS", "120")
    [fleet_deployment] = [d for d in served() if d.name == "fleet"]
    assert fleet_deployment.schedules[0].schedule.interval.total_seconds() == 120
    assert fleet_deployment.concurrency_limit == 1
    monkeypatch.setenv("SPOTSHIFT_FLEET_INTERVAL_SECONDS", "5")
    with pytest.raises(ValueError, match="fleet_interval_seconds"):
        served()
