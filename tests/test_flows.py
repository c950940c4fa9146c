"""The flows end to end on the embedded defaults: moto for EC2 and S3, embedded stores, the local
compute backend running the real trainer on a tiny model, a replayed market on a virtual clock."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import pytest

from deployments.demo_market import DemoTimeline, demo_market
from flows.runtime import Runtime
from spotshift.clock import VirtualClock
from spotshift.models import ApprovalMode, ApprovalPolicy, EndReason, JobCreate, JobStatus, MigrationReason
from tests.waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("prefect"), pytest.mark.timeout(600)]

SPEEDUP = 60.0  # one wall second = one market minute


@pytest.fixture(scope="module")
def model_uri(moto_endpoint, tiny_lm):
    from deployments.local_aws import client, ensure_bucket

    model_dir, dataset = tiny_lm
    s3 = client("s3", moto_endpoint)
    ensure_bucket(moto_endpoint, "flow-inputs")
    for path in sorted(model_dir.rglob("*")):
        if path.is_file():
            s3.upload_file(str(path), "flow-inputs", f"tiny/{path.relative_to(model_dir).as_posix()}")
    s3.upload_file(str(dataset), "flow-inputs", "data/corpus.jsonl")
    return "s3://flow-inputs/tiny/", "s3://flow-inputs/data/corpus.jsonl"


def runtime(tmp_path: Path, endpoint: str, timeline: DemoTimeline, **overrides) -> Runtime:
    start = datetime.now(UTC).replace(microsecond=0)
    clock = VirtualClock(start=start, speedup=SPEEDUP)
    market = demo_market(start, timeline)
    options = dict(poll_seconds=0.6, rescout_seconds=2.0, min_step_seconds=0.15,  # 1 step = 9 market seconds
                   on_demand_prices={"p3.2xlarge": 3.06},
                   # the model and dataset lie in the user's bucket: granted as `spotshift aws setup --data` would
                   settings={"heartbeat_stall_seconds": 90 * SPEEDUP, "data_prefixes": ["s3://flow-inputs/"]})
    options.update(overrides)
    return Runtime.local(endpoint, tmp_path, market=market, clock=clock, bucket="flow-jobs",
                         backend_options={"grace_s": 15.0}, **options)


# A deadline far beyond the ~1 market hour of work: under CI load the trainer may run many times
# slower than its pace for a while, and its measured rate must not make the Safety Net fire.
DEADLINE = timedelta(hours=48)


def request(rt: Runtime, model: tuple[str, str], *, max_steps: int, key: str, approval=None) -> JobCreate:
    return JobCreate.model_validate(dict(
        name="flow-test", model=model[0], dataset=model[1], max_steps=max_steps, batch_size=4, seq_len=32,
        checkpoint_every_steps=10, budget_usd=50, regions=["us-east-1", "us-east-2", "us-west-2"],
        instance_types=["p3.2xlarge"], deadline=rt.clock() + DEADLINE, idempotency_key=key,
        approval=approval or ApprovalPolicy(max_auto_plan_usd=50, min_auto_saving_usd=0.01)),
        context={"now": rt.clock()})


def get_client_sync():
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def _run_name(event) -> str:
    """The name of the flow run an event names as related."""
    [run_id] = [r.id.split(".", 2)[2] for r in event.related if r.id.startswith("prefect.flow-run.")]
    with get_client_sync() as client:
        return client.read_flow_run(UUID(run_id)).name


def running_instances(rt: Runtime, job_id: str | None = None) -> list:
    return [i for i in rt.backend.list(job_id) if i.state in ("pending", "running")]


def test_train_job_survives_a_preemption_and_moves_once_to_cheaper_capacity(prefect_api, moto_endpoint, model_uri, tmp_path,
                                                                           job_events):
    from flows.controller import run_job

    # the trainer starts ~8 market minutes in; 450 paced steps take 67 minutes: us-east-1a is lost at
    # 15 (~50 steps done) and us-west-2a becomes cheapest at 35 with ~50 minutes of work left
    rt = runtime(tmp_path, moto_endpoint, DemoTimeline(lost_minute=15, cheap_minute=35))
    try:
        job = rt.jobs.create(request(rt, model_uri, max_steps=450, key="preempt-and-move"), now=rt.clock())
        summary = run_job(job.id, runtime=rt)
    finally:
        rt.backend.close()

    assert summary["status"] == "succeeded" and summary["steps"] == 450
    # the final model is in S3, in save_pretrained layout
    keys = {o["Key"] for o in rt.s3.list_objects_v2(Bucket="flow-jobs", Prefix=f"jobs/{job.id}/final/")["Contents"]}
    assert f"jobs/{job.id}/final/model.safetensors" in keys and f"jobs/{job.id}/final/config.json" in keys
    # one preemption, one voluntary move, in that order, each to the zone the market made best
    workloads = sorted(rt.ledger.workloads(job.id), key=lambda w: w.started_at)
    assert [w.zone for w in workloads] == ["us-east-1a", "us-east-2a", "us-west-2a"]
    assert [w.end_reason for w in workloads] == [EndReason.PREEMPTED, EndReason.MIGRATED, EndReason.COMPLETED]
    # exactly one workload open at any time: each starts after the previous one ended
    for before, after in zip(workloads, workloads[1:]):
        assert after.started_at >= before.ended_at
    # billed seconds add up to the workloads' spans, the job's cost to their sum
    for w in workloads:
        assert w.billed_seconds == pytest.approx(max(60.0, (w.ended_at - w.started_at).total_seconds()))
    assert summary["cost_usd"] == pytest.approx(sum(w.cost_usd for w in workloads), abs=1e-3)
    assert rt.jobs.get(job.id).cost_usd == pytest.approx(summary["cost_usd"], abs=1e-3)
    assert summary["on_demand_usd"] > summary["cost_usd"]
    # the migrations link the right workloads
    migrations = sorted(rt.ledger.migrations(job.id), key=lambda m: m.started_at)
    assert [(m.reason, m.from_workload_id, m.to_workload_id) for m in migrations] == [
        (MigrationReason.PREEMPTED, workloads[0].id, workloads[1].id),
        (MigrationReason.CHEAPER, workloads[1].id, workloads[2].id),
    ]
    assert all(m.downtime_seconds and m.downtime_seconds > 0 for m in migrations)
    assert migrations[1].expected_saving_usd > 0
    # nothing left running, and the job closed
    assert running_instances(rt, job.id) == []
    assert rt.jobs.get(job.id).status is JobStatus.SUCCEEDED
    # the rate measured on the instance type is stored for later estimates (paced: 1 step per 9 market s)
    [rate] = rt.throughput.for_model(model_uri[0], "full")
    assert rate.instance_type == "p3.2xlarge" and 0 < rate.steps_per_second <= 1.2 / 9
    # the job's Prefect events (tasks/events.py), in order, on the resource spotshift.job.<id>
    sent = job_events()
    assert [(e.event, e.payload.get("reason"), e.payload.get("zone")) for e in sent] == [
        ("spotshift.job.placed", "submitted", "us-east-1a"), ("spotshift.job.preempted", None, "us-east-1a"),
        ("spotshift.job.placed", "preempted", "us-east-2a"), ("spotshift.job.moved", "cheaper", "us-west-2a"),
        ("spotshift.job.finished", None, None)]
    assert {e.resource.id for e in sent} == {f"spotshift.job.{job.id}"}
    placed, preempted, replaced, moved, finished = sent
    assert [placed.payload["instance_id"], replaced.payload["instance_id"], moved.payload["instance_id"]] == [
        w.instance_id for w in workloads]
    assert preempted.payload["workload_id"] == workloads[0].id and preempted.payload["market"] == "spot"
    assert f"spotshift.instance.{workloads[0].instance_id}" in {r.id for r in preempted.related}
    # each step is its own flow run: train-job placed it, the fleet's action runs recovered and
    # finalized it, continuous-scout's migrate-job moved it (the run each event names)
    assert [_run_name(e) for e in sent] == [f"train-{job.id}", f"recover-{job.id}", f"recover-{job.id}",
                                            f"migrate-{job.id}", f"finalize-{job.id}"]
    assert moved.payload["from"]["workload_id"] == workloads[1].id
    assert moved.payload["expected_saving_usd"] == pytest.approx(migrations[1].expected_saving_usd, abs=1e-4)
    assert moved.payload["downtime_seconds"] == pytest.approx(migrations[1].downtime_seconds)
    assert 0 < placed.payload["expected_cost_usd"] and placed.payload["usd_per_hour"] == pytest.approx(workloads[0].usd_per_hour)
    assert 0 < preempted.payload["cost_usd"] < moved.payload["cost_usd"] < finished.payload["cost_usd"]
    assert finished.payload["cost_usd"] == pytest.approx(summary["cost_usd"], abs=1e-3)
    assert finished.payload["final_model"] == rt.jobs.get(job.id).final_model and finished.payload["step"] == 450


def test_the_same_submission_twice_gives_one_job_and_one_instance(prefect_api, moto_endpoint, model_uri, tmp_path):
    from deployments import api

    rt = runtime(tmp_path, moto_endpoint, DemoTimeline(lost_minute=10_000, cheap_minute=10_000))
    try:
        req = request(rt, model_uri, max_steps=20, key="twice")
        first = api.submit(req, run="inline", runtime=rt)
        second = api.submit(req, run="inline", runtime=rt)
    finally:
        rt.backend.close()
    assert first == second
    assert [j.id for j in rt.jobs.list()] == [first]
    instances = [i for i in _all_instances(rt) if i.job_id == first]
    assert len(instances) == 1 and len(rt.ledger.workloads(first)) == 1
    assert rt.jobs.get(first).status is JobStatus.SUCCEEDED


def test_a_spot_only_job_on_the_default_policy_launches_on_spot_and_finishes(prefect_api, moto_endpoint, model_uri,
                                                                           tmp_path):
    """markets=["spot"] leaves no on-demand offer: the spotshift policy used to wait "until now" for
    a Safety Net that cannot exist, re-deciding in a loop and never launching."""
    from deployments import api
    from spotshift.models import Market

    rt = runtime(tmp_path, moto_endpoint, DemoTimeline(lost_minute=10_000, cheap_minute=10_000))
    try:
        req = request(rt, model_uri, max_steps=20, key="spot-only").model_copy(update={"markets": [Market.SPOT]})
        job_id = api.submit(req, run="inline", runtime=rt)
    finally:
        rt.backend.close()
    workloads = rt.ledger.workloads(job_id)
    assert rt.jobs.get(job_id).status is JobStatus.SUCCEEDED
    assert workloads and all(w.market is Market.SPOT for w in workloads)
    assert not running_instances(rt, job_id)


def _all_instances(rt: Runtime) -> list:
    from spotshift.aws.ec2 import find_instances
    from deployments.local_aws import client

    return find_instances(client("ec2", rt.settings.aws_endpoint_url, "us-east-1"),
                          states=("pending", "running", "shutting-down", "terminated", "stopping", "stopped"))




def test_a_plan_waits_for_a_human_and_the_cli_answer_lets_the_flow_go_on(prefect_api, moto_endpoint, model_uri, tmp_path,
                                                                         monkeypatch):
    from flows.controller import run_job
    from deployments.cli import main as cli

    rt = runtime(tmp_path, moto_endpoint, DemoTimeline(lost_minute=10_000, cheap_minute=10_000))
    monkeypatch.setenv("SPOTSHIFT_HOME", str(tmp_path))  # the CLI finds the job in the same store
    approval = ApprovalPolicy(mode=ApprovalMode.ALWAYS_ASK, timeout_s=120)
    job = rt.jobs.create(request(rt, model_uri, max_steps=20, key="ask", approval=approval), now=rt.clock())
    result: dict = {}
    runner = threading.Thread(target=lambda: result.update(run_job(job.id, runtime=rt)))
    runner.start()
    try:
        wait_for(lambda: rt.jobs.get(job.id).status is JobStatus.AWAITING_APPROVAL, 120, "the approval pause")
        assert running_instances(rt, job.id) == []  # nothing provisioned before the answer
        wait_for(lambda: _paused(rt.jobs.get(job.id).flow_run_id), 60, "the flow run to pause")
        assert cli(["approve", job.id, "--comment", "go"]) == 0
        runner.join(timeout=300)
    finally:
        rt.backend.close()
    assert result["status"] == "succeeded"
    assert len(rt.ledger.workloads(job.id)) == 1


def _paused(flow_run_id: str | None) -> bool:
    from prefect.client.orchestration import get_client

    if not flow_run_id:
        return False
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(flow_run_id).state
    return bool(state and state.is_paused())


def test_an_unanswered_move_is_not_made(prefect_api, moto_endpoint, model_uri, tmp_path):
    from flows.controller import run_job

    # us-west-2a drops to $0.20/h at minute 12, with ~40 minutes of work left: a move worth asking for
    rt = runtime(tmp_path, moto_endpoint, DemoTimeline(lost_minute=10_000, cheap_minute=12, cheap_price=0.2),
                 rescout_seconds=3.0)
    # plans are approved alone; a voluntary move needs a human, who does not answer in 3 s
    approval = ApprovalPolicy(max_auto_plan_usd=50, min_auto_saving_usd=1e6, timeout_s=3)
    try:
        job = rt.jobs.create(request(rt, model_uri, max_steps=300, key="timeout", approval=approval), now=rt.clock())
        summary = run_job(job.id, runtime=rt)
    finally:
        rt.backend.close()
    assert summary["status"] == "succeeded"
    assert rt.ledger.migrations(job.id) == []
    workloads = rt.ledger.workloads(job.id)
    assert [w.zone for w in workloads] == ["us-east-1a"]
    # a migrate-job run paused for the move, the pause timed out, and the same move was not asked
    # again within the quiet hour (market time): the decline is kept with the job, not in a process
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    with get_client_sync() as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(like_=f"migrate-{job.id}")))
    assert runs and all(r.state.is_completed() for r in runs)
    asked_at = sorted(int(key.rsplit("-", 1)[1]) for r in runs for key in r.empirical_policy.pause_keys)
    assert asked_at and all(b - a >= 3600 for a, b in zip(asked_at, asked_at[1:]))
    assert rt.jobs.get(job.id).declined_moves  # the offer declined, and until when


def test_a_preemption_is_acted_on_by_the_first_fleet_pass_after_it(prefect_api, moto_endpoint, model_uri, tmp_path):
    """The instance is taken back between two passes: the very next pass (one fleet interval later)
    finds it and its recover action resumes the job from the last checkpoint on a new instance,
    which has trained by the time the action ends (the changeover). The trainer's own
    checkpoint-on-notice is not involved: the instance is stopped from outside, as a spot
    interruption without notice would."""
    from deployments import api
    from flows.fleet import fleet
    from flows.train_job import train_job
    from training.contract import read_latest, read_progress

    rt = runtime(tmp_path, moto_endpoint, DemoTimeline(lost_minute=10_000, cheap_minute=10_000))
    try:
        job = rt.jobs.create(request(rt, model_uri, max_steps=300, key="one-interval"), now=rt.clock())
        train_job(job.id, runtime=rt)
        output = rt.paths(job).output
        wait_for(lambda: read_latest(rt.s3, output) is not None, 240, "the first checkpoint")
        assert [r["finding"] for r in fleet(runtime=rt, act_here=True) if r["job"] == job.id] == ["healthy"]
        [first] = rt.ledger.workloads(job.id)
        rt.backend.stop(first.instance_id, "spot interruption")  # between two passes
        lost_at = rt.clock()
        rt.sleep(rt.poll_seconds)  # one fleet interval of this controller
        rows = fleet(runtime=rt, act_here=True)  # (other tests' instances left in this moto are orphans to it)
        assert [(r["finding"], r["action"]) for r in rows if r["job"] == job.id] == [("preempted", "recover")]
        # when the pass's action has ended, the job trains again on a new instance, from the checkpoint
        now = rt.clock()
        running = rt.jobs.get(job.id)
        assert running.status is JobStatus.RUNNING and running.current_workload_id != first.id
        progress = read_progress(rt.s3, output)
        second = next(w for w in rt.ledger.workloads(job.id) if w.id == running.current_workload_id)
        assert progress.instance_id == second.instance_id and progress.resumed_from_step is not None
        [migration] = rt.ledger.migrations(job.id)
        assert migration.state.value == "recorded" and migration.to_workload_id == second.id
        # the migration counts from the pass that found the loss: within one interval (and that pass's
        # own reads; 10 wall seconds at most here) of it, and its downtime is at least the changeover
        assert 0 <= (migration.started_at - lost_at).total_seconds() <= 10 * SPEEDUP
        assert migration.downtime_seconds >= running.measured.changeover_hours * 3600 > 0
        assert migration.finished_at <= now
        api.cancel(job.id, runtime=rt)
    finally:
        for left in running_instances(rt, job.id):  # a failed assertion leaves nothing to later tests
            rt.backend.stop(left.instance_id, "test cleanup")
        rt.backend.close()
    assert running_instances(rt, job.id) == []


def test_a_placement_killed_after_its_launch_is_adopted_by_the_next_fleet_pass(prefect_api, moto_endpoint,
                                                                                 model_uri, tmp_path):
    """The train-job process dies between "instance started" and "job running" (SIGKILL): the job is
    left PROVISIONING with a live instance. The next fleet pass adopts it: that instance is kept
    (none started twice), the job runs, and a cancel then leaves nothing running."""
    import os
    import subprocess
    import sys

    from deployments import api
    from flows.fleet import fleet
    from prefect.settings import PREFECT_API_URL

    rt = runtime(tmp_path, moto_endpoint, DemoTimeline(lost_minute=10_000, cheap_minute=10_000))
    job = rt.jobs.create(request(rt, model_uri, max_steps=500, key="killed"), now=rt.clock())
    script = tmp_path / "flow_process.py"
    script.write_text(KILLED_FLOW_SCRIPT)
    try:
        proc = subprocess.run([sys.executable, str(script), moto_endpoint, str(tmp_path), job.id], timeout=300,
                              capture_output=True, env={**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()})
        assert proc.returncode == -9, proc.stderr.decode()[-3000:]
        assert rt.jobs.get(job.id).status is JobStatus.PROVISIONING
        [launched] = [i for i in _all_instances(rt) if i.job_id == job.id and i.state in ("pending", "running")]
        rows = fleet(runtime=rt, act_here=True, lease_seconds=0.0)
        assert [(r["finding"], r["action"]) for r in rows if r["job"] == job.id] == [("abandoned", "adopt")]
        adopted = rt.jobs.get(job.id)
        assert adopted.status is JobStatus.RUNNING
        [workload] = rt.ledger.workloads(job.id)
        assert workload.instance_id == launched.instance_id and workload.open
        api.cancel(job.id, runtime=rt)
    finally:
        for left in running_instances(rt, job.id):  # a failed assertion leaves nothing to later tests
            rt.backend.stop(left.instance_id, "test cleanup")
        rt.backend.close()
    assert [i for i in _all_instances(rt) if i.job_id == job.id and i.state in ("pending", "running")] == []
    assert rt.jobs.get(job.id).status is JobStatus.CANCELLED


def test_a_checkpoint_the_trainer_refuses_fails_the_job_with_its_reason_and_launches_nothing_more(
    prefect_api, moto_endpoint, model_uri, tmp_path, job_events
):
    """The job's checkpoint was written by another transformers minor version: the real trainer
    refuses it (a permanent failure), and the job ends FAILED with the trainer's words instead of
    being resumed on another instance."""
    from flows.controller import run_job
    from flows.train_job import summary
    from spotshift.monitoring import TrainerFailedPermanently
    from training.contract import LATEST, CheckpointManifest, save_json
    from training.storage import S3Store
    from training.versions import minor_release, running_versions

    rt = runtime(tmp_path, moto_endpoint, DemoTimeline(lost_minute=10_000, cheap_minute=10_000))
    running = running_versions()
    major, minor = minor_release(running.transformers)
    written = f"{major}.{minor + 1}.0"
    try:
        job = rt.jobs.create(request(rt, model_uri, max_steps=20, key="refused"), now=rt.clock())
        save_json(S3Store.from_uri(rt.s3, rt.paths(job).output), LATEST, CheckpointManifest(
            step=10, files=[], created_at=rt.clock(), versions=running.model_copy(update={"transformers": written})))
        with pytest.raises(TrainerFailedPermanently, match=f"written with transformers {written}"):
            run_job(job.id, runtime=rt)  # the fleet finds the trainer failed for good: finalize ends the job
    finally:
        rt.backend.close()

    failed = rt.jobs.get(job.id)
    assert failed.status is JobStatus.FAILED
    assert f"checkpoint step-10 was written with transformers {written}" in failed.error
    assert f"this trainer has transformers {running.transformers}" in failed.error
    assert summary(rt, job.id)["error"] == failed.error  # what `spotshift status` prints
    [workload] = rt.ledger.workloads(job.id)  # launched once, never again elsewhere
    assert workload.end_reason is EndReason.FAILED
    assert rt.ledger.migrations(job.id) == []
    assert running_instances(rt, job.id) == []
    # placed, then failed once (finalize; the flow's on_failure hook finds the job ended and sends nothing)
    placed, ended = job_events()
    assert (placed.event, ended.event) == ("spotshift.job.placed", "spotshift.job.failed")
    assert ended.payload["error"] == failed.error and ended.payload["cost_usd"] == pytest.approx(workload.cost_usd)


KILLED_FLOW_SCRIPT = '''
import os, signal, sys
from datetime import UTC, datetime
from deployments.demo_market import DemoTimeline, demo_market
from flows.runtime import Runtime
from flows.train_job import train_job

endpoint, home, job_id = sys.argv[1:4]
start = datetime.now(UTC)
market = demo_market(start, DemoTimeline(lost_minute=10_000, cheap_minute=10_000))

def crash(at):
    if at == "after_launch":  # the instance is up, its workload recorded, the job not yet running
        os.kill(os.getpid(), signal.SIGKILL)

rt = Runtime.local(endpoint, home, market=market, bucket="flow-jobs", fault=crash, poll_seconds=0.3,
                   settings={"data_prefixes": ["s3://flow-inputs/"]})
train_job(job_id, runtime=rt)
sys.exit(3)
'''
