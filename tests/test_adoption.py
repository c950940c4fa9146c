"""A restarted orchestrator adopts its running jobs: the flow process is killed (SIGKILL, as a worker
restart or an OOM kill would) at each step of a voluntary move, the reaper hands the job to a new
train-job run, and afterwards exactly one instance trains the job, none is left behind, the ledger
matches EC2, and training resumes from the last checkpoint (no step lost beyond it)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest

from deployments.demo_market import DemoTimeline, demo_market
from flows.runtime import Runtime
from spotshift.clock import VirtualClock
from spotshift.models import ApprovalPolicy, JobCreate, JobStatus
from tests.test_flows import DEADLINE, SPEEDUP, model_uri  # noqa: F401 - a shared fixture

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("prefect"), pytest.mark.timeout(600)]

TIMELINE = DemoTimeline(lost_minute=10_000, cheap_minute=10_000)  # a quiet market: the move is asked for
MAX_STEPS = 300
MOVE_AFTER_STEP = 20  # the move starts once the first instance has trained this far (checkpoints every 10)

# The flow process: train-job watches the job; once it trains, a migrate-job run (as continuous-scout
# would start) moves it to us-west-2a, and the process dies (SIGKILL) at `point` of that move.
FLOW_SCRIPT = '''
import os, signal, sys, threading, time
from datetime import datetime
from deployments.demo_market import DemoTimeline, demo_market
from flows.migrate_job import migrate_job
from flows.runtime import Runtime
from flows.train_job import train_job
from spotshift.clock import VirtualClock
from spotshift.market.query import OfferQuery
from spotshift.models import Market, MigrationReason

endpoint, home, job_id, point, start, wall0 = sys.argv[1:7]
start = datetime.fromisoformat(start)
clock = VirtualClock(start=start, speedup=%(speedup)r, _wall0=float(wall0), _wall=time.time)
market = demo_market(start, DemoTimeline(lost_minute=10_000, cheap_minute=10_000))

def crash(at):
    if at == point:  # the flow process dies here, with no chance to clean up
        os.kill(os.getpid(), signal.SIGKILL)

rt = Runtime.local(endpoint, home, market=market, clock=clock, bucket="adopt-jobs", fault=crash,
                   poll_seconds=0.3, min_step_seconds=0.15, on_demand_prices={"p3.2xlarge": 3.06},
                   settings={"heartbeat_stall_seconds": 90 * %(speedup)r, "data_prefixes": ["s3://flow-inputs/"]})
threading.Thread(target=train_job, args=(job_id,), kwargs={"runtime": rt}, daemon=True).start()
while not (rt.jobs.get(job_id).status.value == "running" and rt.jobs.get(job_id).step >= %(after)d):
    time.sleep(0.5)
query = OfferQuery(regions=("us-west-2",), instance_types=("p3.2xlarge",), markets=(Market.SPOT,))
target = market.snapshot(query, clock()).offers[0]
migrate_job(job_id, target, MigrationReason.MANUAL, expected_saving_usd=1.0, runtime=rt)
sys.exit(3)  # the move ended without reaching `point`
''' % {"speedup": SPEEDUP, "after": MOVE_AFTER_STEP}


def _runtime(tmp_path, endpoint, start: datetime, wall0: float, fault) -> Runtime:
    clock = VirtualClock(start=start, speedup=SPEEDUP, _wall0=wall0, _wall=time.time)
    market = demo_market(start, TIMELINE)
    return Runtime.local(endpoint, tmp_path, market=market, clock=clock, bucket="adopt-jobs", fault=fault,
                         poll_seconds=0.3, min_step_seconds=0.15,
                         on_demand_prices={"p3.2xlarge": 3.06},
                         settings={"heartbeat_stall_seconds": 90 * SPEEDUP, "data_prefixes": ["s3://flow-inputs/"]},
                         backend_options={"grace_s": 15.0})  # the model and dataset: test_flows' user bucket, granted


def _alive(rt: Runtime, job_id: str) -> list:
    return [i for i in rt.backend.list(job_id) if i.state in ("pending", "running")]


@pytest.mark.parametrize("point", ["after_checkpoint_request", "after_launch", "before_old_stopped",
                                   "after_old_stopped"])
def test_a_flow_killed_during_a_move_is_adopted_and_finishes_the_job(prefect_api, moto_endpoint, model_uri,
                                                                     tmp_path, point):
    from flows.reaper import reaper
    from flows.train_job import train_job
    from prefect.settings import PREFECT_API_URL
    from training.contract import read_latest, read_progress

    start, wall0 = datetime.now(UTC).replace(microsecond=0), time.time()
    seen: dict = {}
    rt = _runtime(tmp_path, moto_endpoint, start, wall0,
                  fault=lambda at: at == "adopted" and seen.update(alive=[i.instance_id for i in _alive(rt, job.id)],
                                                                  latest=read_latest(rt.s3, output)))
    job = rt.jobs.create(JobCreate.model_validate(dict(
        name="adopt", model=model_uri[0], dataset=model_uri[1], max_steps=MAX_STEPS, batch_size=4, seq_len=32,
        checkpoint_every_steps=10, budget_usd=50, regions=["us-east-1", "us-east-2", "us-west-2"],
        instance_types=["p3.2xlarge"], deadline=rt.clock() + DEADLINE, idempotency_key=f"adopt-{point}",
        approval=ApprovalPolicy(max_auto_plan_usd=50, min_auto_saving_usd=0.01)), context={"now": rt.clock()}),
        now=rt.clock())
    output = rt.paths(job).output
    script = tmp_path / "flow_process.py"
    script.write_text(FLOW_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), moto_endpoint, str(tmp_path), job.id, point,
                           start.isoformat(), repr(wall0)], timeout=480, capture_output=True,
                          env={**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()})
    assert proc.returncode == -9, proc.stderr.decode()[-3000:]  # killed at `point`, not ended otherwise
    crashed = rt.jobs.get(job.id)
    assert not crashed.status.terminal

    restarted: list[str] = []
    rt.restart_job = restarted.append
    try:
        reaper(runtime=rt, lease_seconds=0)
        assert restarted == [job.id] and not rt.jobs.get(job.id).status.terminal  # adopted, not failed
        summary = train_job(job.id, runtime=rt)
    finally:
        rt.backend.close()

    # at adoption, one instance trained the job at most (none when the trainer had already exited)
    assert len(seen["alive"]) <= 1
    assert summary["status"] == "succeeded" and summary["steps"] == MAX_STEPS
    progress = read_progress(rt.s3, output)
    # no step lost beyond the last checkpoint: the instance kept trained on to the end without a
    # restart, or (it had been asked to checkpoint and exit, or none was left) the last trainer
    # resumed from a checkpoint at least as recent as the newest one at adoption
    kept_to_the_end = bool(seen["alive"]) and progress.instance_id == seen["alive"][0]
    assert kept_to_the_end or seen["latest"] is None or progress.resumed_from_step >= seen["latest"].step
    # nothing left running, and the ledger matches EC2: every workload closed, its instance gone
    assert _alive(rt, job.id) == []
    workloads = rt.ledger.workloads(job.id)
    assert all(not w.open for w in workloads) and all(w.instance_id for w in workloads)
    assert all(m.succeeded is not None and m.finished_at is not None for m in rt.ledger.migrations(job.id))
    assert rt.jobs.get(job.id).status is JobStatus.SUCCEEDED
