"""Cancel: the plan (pure) and POST /jobs/{id}/cancel of a job training on the local backend with
the real trainer and a real Prefect flow run: no instance left, the job CANCELLED, its workload
closed and billed, the flow run Cancelling, the checkpoints still in S3; twice is no error."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from deployments.http.app import create_app
from flows.cancel import PrefectFlowRuns
from flows.runtime import Runtime
from spotshift.aws.ec2 import LaunchRequest
from spotshift.aws.local_backend import MOTO_IMAGE_ID
from spotshift.job_actions import WrongJobState, plan_cancel
from spotshift.models import EndReason, Job, JobCreate, JobStatus, JobUpdate, Market, Offer, Workload
from training.contract import JobPaths, read_latest, write_spec
from training.spec import TrainingSpec
from tests.waiting import wait_for

NOW = datetime(2026, 11, 28, 9, tzinfo=UTC)


def a_job(status: JobStatus, flow_run_id: str | None = "fr-1") -> Job:
    request = JobCreate.model_validate(dict(model="gpt2", dataset="s3://inputs/d.txt", max_steps=10, budget_usd=1,
                                            deadline=NOW + timedelta(days=1)), context={"now": NOW})
    return Job(id="job-1", request=request, status=status, created_at=NOW, updated_at=NOW, flow_run_id=flow_run_id)


def a_workload(started_minutes_ago: float, **closed) -> Workload:
    return Workload(job_id="job-1", instance_type="p3.2xlarge", region="us-east-1", zone="us-east-1a",
                    market=Market.SPOT, usd_per_hour=0.9, started_at=NOW - timedelta(minutes=started_minutes_ago),
                    **closed)


def test_the_plan_cancels_a_live_run_closes_open_workloads_and_bills_them():
    plan = plan_cancel(a_job(JobStatus.RUNNING), [a_workload(30)], "RUNNING", NOW)
    assert plan.cancel_flow_run == "fr-1" and plan.close_job
    [closed] = plan.close_workloads
    assert (closed.ended_at, closed.end_reason, closed.billed_seconds) == (NOW, EndReason.CANCELLED, 1800)
    assert closed.cost_usd == pytest.approx(0.45)
    # a few seconds still bill the one-minute minimum
    assert plan_cancel(a_job(JobStatus.RUNNING), [a_workload(0.1)], "RUNNING", NOW).close_workloads[0].billed_seconds == 60


def test_the_plan_skips_what_is_already_done_and_refuses_a_finished_job():
    again = plan_cancel(a_job(JobStatus.CANCELLED), [], "CANCELLING", NOW)
    assert (again.cancel_flow_run, again.close_job, again.close_workloads) == (None, False, ())
    gone = plan_cancel(a_job(JobStatus.AWAITING_APPROVAL), [], None, NOW)
    assert gone.cancel_flow_run is None and gone.close_job
    for status in (JobStatus.SUCCEEDED, JobStatus.FAILED):
        with pytest.raises(WrongJobState, match=f"is {status.value}: cannot cancel"):
            plan_cancel(a_job(status), [], "COMPLETED", NOW)


# --- a real running job --------------------------------------------------------------------------


def a_flow_run(state) -> str:
    from prefect import flow
    from prefect.client.orchestration import get_client

    @flow(name="train-job")
    def stand_in(job_id: str): ...

    with get_client(sync_client=True) as client:
        flow_run = client.create_flow_run(stand_in, parameters={"job_id": "x"})
        client.set_flow_run_state(flow_run.id, state, force=True)
    return str(flow_run.id)


def flow_run_state(flow_run_id: str) -> str:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id).state.type.value


@pytest.fixture
def api(moto_endpoint, tmp_path):
    """(runtime of the API, its client with a token): its own local backend, as `spotshift api`
    has, over the same stores and instance folder as the flow's."""
    from blocks.stores import open_token_store

    rt = Runtime.local(moto_endpoint, tmp_path, market=None, bucket="cancel-jobs",
                       backend_options={"grace_s": 20.0, "watch_interval_s": None})
    tokens = open_token_store(rt.settings)
    client = TestClient(create_app(rt, tokens, flow_runs=PrefectFlowRuns(), submit_run="none"),
                        headers={"Authorization": f"Bearer {tokens.create('t', now=NOW)}"})
    yield rt, client
    rt.backend.close()


def start_training(rt: Runtime, flow_rt: Runtime, tiny_lm, flow_run_id: str) -> tuple[str, Workload]:
    """A job RUNNING on one spot instance of the flow's backend, its first checkpoint in S3."""
    model_dir, dataset = tiny_lm
    request = JobCreate(name="cancel-me", model=str(model_dir), dataset=str(dataset), max_steps=5000, batch_size=4,
                        seq_len=32, checkpoint_every_steps=5, budget_usd=5, deadline=datetime.now(UTC) + timedelta(days=1))
    job = rt.jobs.create(request, now=rt.clock())
    for to in (JobStatus.PLANNING, JobStatus.PROVISIONING, JobStatus.RUNNING):
        rt.jobs.transition(job.id, to, now=rt.clock(), update=JobUpdate(flow_run_id=flow_run_id))
    spec = TrainingSpec(job_id=job.id, model=str(model_dir), dataset=str(dataset), max_steps=5000, batch_size=4,
                        seq_len=32, output=JobPaths(rt.settings.bucket, job.id).output, checkpoint_every_steps=5,
                        heartbeat_seconds=0.2, control_poll_seconds=0.2, min_step_seconds=0.05)
    offer = Offer(instance_type="p3.2xlarge", gpu="V100", gpu_count=1, gpu_memory_gib=16, vcpus=8, memory_gib=61,
                  region="us-east-1", zone="us-east-1a", market=Market.SPOT, usd_per_hour=0.95, observed_at=NOW,
                  source="test")
    workload = Workload(job_id=job.id, instance_type="p3.2xlarge", region="us-east-1", zone="us-east-1a",
                        market=Market.SPOT, usd_per_hour=0.95, started_at=rt.clock())
    launched = flow_rt.backend.start(LaunchRequest(job_id=job.id, workload_id=workload.id, flow_run_id=flow_run_id,
                                                   offer=offer, spec_uri=write_spec(rt.s3, spec),
                                                   image_id=MOTO_IMAGE_ID))
    workload = workload.model_copy(update={"instance_id": launched.instance_id})
    rt.ledger.upsert_workload(workload)
    wait_for(lambda: read_latest(rt.s3, spec.output), 240, "the first checkpoint")  # a loaded CI box starts torch slowly
    return job.id, workload


@pytest.mark.slow
@pytest.mark.xdist_group("prefect")
def test_cancel_of_a_running_job_leaves_no_instance_and_keeps_its_checkpoints(
        prefect_api, api, moto_endpoint, tmp_path, tiny_lm, monkeypatch):
    from prefect.states import Running

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # inherited by the trainer
    rt, client = api
    flow_rt = Runtime.local(moto_endpoint, tmp_path, market=None, bucket="cancel-jobs")  # the flow run's process
    try:
        flow_run_id = a_flow_run(Running())
        job_id, workload = start_training(rt, flow_rt, tiny_lm, flow_run_id)

        answer = client.post(f"/jobs/{job_id}/cancel")  # the trainer checkpoints on SIGTERM, then stops
        assert answer.status_code == 200, answer.text
        assert answer.json()["stopped_instances"] == [workload.instance_id]
        assert answer.json()["status"] == "cancelled" and answer.json()["flow_run_cancelled"] is True
    finally:
        flow_rt.backend.close()
    assert [i for i in rt.backend.list(job_id) if i.state in ("pending", "running")] == []
    assert rt.backend.state(workload.instance_id) == "terminated"
    assert flow_run_state(flow_run_id) == "CANCELLING"  # its worker stops it; there is none here
    job, [closed] = rt.jobs.get(job_id), rt.ledger.workloads(job_id)
    assert job.status is JobStatus.CANCELLED
    assert closed.end_reason is EndReason.CANCELLED and closed.billed_seconds >= 60
    assert job.cost_usd == pytest.approx(closed.cost_usd) and answer.json()["cost_usd"] == pytest.approx(closed.cost_usd, abs=1e-4)
    paths = JobPaths("cancel-jobs", job_id)
    latest = read_latest(rt.s3, paths.output)
    stored = {o["Key"]: o["Size"] for o in rt.s3.list_objects_v2(Bucket="cancel-jobs", Prefix=paths.prefix)["Contents"]}
    assert latest.step >= 5 and all(stored.get(paths.key(f.key)) == f.size for f in latest.files)

    again = client.post(f"/jobs/{job_id}/cancel")
    assert again.status_code == 200
    assert again.json() | {"cost_usd": 0} == {"job_id": job_id, "status": "cancelled", "flow_run_cancelled": False,
                                              "stopped_instances": [], "closed_workloads": [], "cost_usd": 0}
    assert rt.ledger.workloads(job_id) == [closed]


@pytest.mark.xdist_group("prefect")
def test_a_job_whose_flow_run_is_gone_is_cancelled_and_a_finished_one_is_a_409(prefect_api, api, job_events):
    rt, client = api
    request = JobCreate(model="gpt2", dataset="s3://inputs/d.txt", max_steps=10, budget_usd=1,
                        deadline=datetime.now(UTC) + timedelta(days=1))
    waiting = rt.jobs.create(request, now=rt.clock())
    rt.jobs.transition(waiting.id, JobStatus.PLANNING, now=rt.clock(), update=JobUpdate(flow_run_id=str(uuid.uuid4())))
    answer = client.post(f"/jobs/{waiting.id}/cancel")
    assert answer.status_code == 200 and answer.json()["flow_run_cancelled"] is False
    assert rt.jobs.get(waiting.id).status is JobStatus.CANCELLED

    done = rt.jobs.create(request.model_copy(update={"idempotency_key": "done"}), now=rt.clock())
    for to in (JobStatus.PLANNING, JobStatus.PROVISIONING, JobStatus.RUNNING, JobStatus.SUCCEEDED):
        rt.jobs.transition(done.id, to, now=rt.clock())
    before = rt.jobs.get(done.id)
    answer = client.post(f"/jobs/{done.id}/cancel")
    assert answer.status_code == 409 and answer.json()["status"] == "succeeded"
    assert rt.jobs.get(done.id) == before
    # one spotshift.job.cancelled event, for the job the cancel ended; none for the refused one
    [cancelled] = job_events()
    assert (cancelled.event, cancelled.resource.id) == ("spotshift.job.cancelled", f"spotshift.job.{waiting.id}")
    assert cancelled.payload["message"] == "cancelled by the user" and cancelled.payload["cost_usd"] == 0


@pytest.mark.xdist_group("prefect")
def test_spotshift_cancel_cancels_from_the_shell_and_refuses_a_finished_job(prefect_api, aws_env, tmp_path,
                                                                            monkeypatch, capsys):
    import json

    from blocks.stores import open_job_store
    from deployments.cli import main
    from spotshift.settings import Settings

    monkeypatch.setenv("SPOTSHIFT_HOME", str(tmp_path))
    monkeypatch.setenv("SPOTSHIFT_AWS_ENDPOINT_URL", aws_env)
    jobs = open_job_store(Settings(home=tmp_path))
    request = JobCreate(model="gpt2", dataset="s3://inputs/d.txt", max_steps=10, budget_usd=1,
                        deadline=datetime.now(UTC) + timedelta(days=1))
    job = jobs.create(request, now=datetime.now(UTC))
    for _ in range(2):  # the second time finds it cancelled already
        assert main(["cancel", job.id]) == 0
        assert json.loads(capsys.readouterr().out)["status"] == "cancelled"
    assert jobs.get(job.id).status is JobStatus.CANCELLED

    done = jobs.create(request.model_copy(update={"idempotency_key": "done"}), now=datetime.now(UTC))
    for to in (JobStatus.PLANNING, JobStatus.PROVISIONING, JobStatus.RUNNING, JobStatus.SUCCEEDED):
        jobs.transition(done.id, to, now=datetime.now(UTC))
    assert main(["cancel", done.id]) == 2
    assert f"job {done.id} is succeeded: cannot cancel it" in capsys.readouterr().err
