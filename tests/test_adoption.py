"""The crash matrix: the action run's process is killed (SIGKILL, as a worker restart or an OOM kill
would) at each state of a migration (spotshift.models.MigrationState): a voluntary move's
migrate-job run, and a fleet pass carrying out a recovery after a preemption. The next fleet passes
roll the job forward (adoption), and afterwards exactly one instance trains the job, none is left
behind, the ledger matches EC2, every migration row is finished, and training resumes from the
last checkpoint (no step lost beyond it)."""

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

MAX_STEPS = 150  # margin: the move must start (a fresh process) well before the trainer ends
MOVE_AFTER_STEP = 20  # the move starts once the first instance has trained this far (checkpoints every 10)

# The action run's process: the job was placed (train-job) and trains; the process either moves it
# to us-west-2a (a migrate-job run, as continuous-scout starts it) or, its instance taken back, runs
# fleet passes that carry out the recovery here; it dies (SIGKILL) at `point` of that migration.
FLOW_SCRIPT = '''
import os, signal, sys, time
from datetime import datetime
from deployments.demo_market import DemoTimeline, demo_market
from flows.fleet import fleet
from flows.migrate_job import migrate_job
from flows.runtime import Runtime
from spotshift.clock import VirtualClock
from spotshift.market.query import OfferQuery
from spotshift.models import Market, MigrationReason

endpoint, home, job_id, point, kind, lost_minute, start, wall0 = sys.argv[1:9]
start = datetime.fromisoformat(start)
clock = VirtualClock(start=start, speedup=%(speedup)r, _wall0=float(wall0), _wall=time.time)
market = demo_market(start, DemoTimeline(lost_minute=int(lost_minute), cheap_minute=10_000))

def crash(at):
    if at == point:  # the process dies here, with no chance to clean up
        os.kill(os.getpid(), signal.SIGKILL)

rt = Runtime.local(endpoint, home, market=market, clock=clock, bucket="adopt-jobs", fault=crash,
                   poll_seconds=0.3, min_step_seconds=0.15, on_demand_prices={"p3.2xlarge": 3.06},
                   settings={"heartbeat_stall_seconds": 90 * %(speedup)r, "data_prefixes": ["s3://flow-inputs/"]})
if kind == "move":
    query = OfferQuery(regions=("us-west-2",), instance_types=("p3.2xlarge",), markets=(Market.SPOT,))
    target = market.snapshot(query, clock()).offers[0]
    migrate_job(job_id, target, MigrationReason.MANUAL, expected_saving_usd=1.0, runtime=rt)
else:
    for _ in range(400):  # until the pass finds the instance gone and recovers the job here
        fleet(runtime=rt, act_here=True, lease_seconds=60.0)
        time.sleep(0.3)
sys.exit(3)  # the migration ended without reaching `point`
''' % {"speedup": SPEEDUP}


def _runtime(tmp_path, endpoint, start: datetime, wall0: float, lost_minute: int, fault) -> Runtime:
    clock = VirtualClock(start=start, speedup=SPEEDUP, _wall0=wall0, _wall=time.time)
    market = demo_market(start, DemoTimeline(lost_minute=lost_minute, cheap_minute=10_000))
    return Runtime.local(endpoint, tmp_path, market=market, clock=clock, bucket="adopt-jobs", fault=fault,
                         poll_seconds=0.3, min_step_seconds=0.15,
                         on_demand_prices={"p3.2xlarge": 3.06},
                         settings={"heartbeat_stall_seconds": 90 * SPEEDUP, "data_prefixes": ["s3://flow-inputs/"]},
                         backend_options={"grace_s": 15.0})  # the model and dataset: test_flows' user bucket, granted


def _alive(rt: Runtime, job_id: str) -> list:
    return [i for i in rt.backend.list(job_id) if i.state in ("pending", "running")]


# (kind, point): the move's states as migrate-job runs it; the recovery's as the fleet pass runs it
# (a recovery begins at "checkpointed": the instance is already gone, the last checkpoint is known)
# (every non-final state is a crash point of the move; the recovery's run is also the fleet pass's:
# its launched state kills the pass itself)
CRASHES = [("move", "requested"), ("move", "checkpointed"), ("move", "launched"), ("move", "first_step_seen"),
           ("move", "old_stopped"), ("recover", "launched")]
LOST_MINUTE = 12  # the recovery cases: us-east-1a is taken back ~25 steps in


@pytest.mark.parametrize(("kind", "point"), CRASHES, ids=[f"{k}-{p}" for k, p in CRASHES])
def test_an_action_run_killed_at_each_migration_state_is_rolled_forward_and_finishes_the_job(
        prefect_api, moto_endpoint, model_uri, tmp_path, kind, point):
    from flows.controller import run_until_ended
    from flows.train_job import summary, train_job
    from prefect.settings import PREFECT_API_URL
    from tests.waiting import wait_for
    from training.contract import read_latest, read_progress

    start, wall0 = datetime.now(UTC).replace(microsecond=0), time.time()
    lost_minute = LOST_MINUTE if kind == "recover" else 10_000
    seen: dict = {}
    rt = _runtime(tmp_path, moto_endpoint, start, wall0, lost_minute,
                  fault=lambda at: at == "adopted" and seen.update(alive=[i.instance_id for i in _alive(rt, job.id)],
                                                                  latest=read_latest(rt.s3, output)))
    job = rt.jobs.create(JobCreate.model_validate(dict(
        name="adopt", model=model_uri[0], dataset=model_uri[1], max_steps=MAX_STEPS, batch_size=4, seq_len=32,
        checkpoint_every_steps=10, budget_usd=50, regions=["us-east-1", "us-east-2", "us-west-2"],
        instance_types=["p3.2xlarge"], deadline=rt.clock() + DEADLINE, idempotency_key=f"adopt-{kind}-{point}",
        approval=ApprovalPolicy(max_auto_plan_usd=50, min_auto_saving_usd=0.01)), context={"now": rt.clock()}),
        now=rt.clock())
    output = rt.paths(job).output
    try:
        train_job(job.id, runtime=rt)  # placed; from here the job holds no process
        assert rt.jobs.get(job.id).status is JobStatus.RUNNING
        if kind == "move":
            wait_for(lambda: (p := read_progress(rt.s3, output)) is not None and p.step >= MOVE_AFTER_STEP, 240,
                     "the first instance to train")
        else:  # a checkpoint to resume from: the first at step 10, or the one the trainer writes on its notice
            wait_for(lambda: read_latest(rt.s3, output) is not None, 240, "the first checkpoint")
        script = tmp_path / "action_process.py"
        script.write_text(FLOW_SCRIPT)
        proc = subprocess.run([sys.executable, str(script), moto_endpoint, str(tmp_path), job.id, point, kind,
                               str(lost_minute), start.isoformat(), repr(wall0)], timeout=400, capture_output=True,
                              env={**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()})
        assert proc.returncode == -9, proc.stderr.decode()[-3000:]  # killed at `point`, not ended otherwise
        [in_flight] = rt.ledger.migrations(job.id)
        assert in_flight.state.value == point and not rt.jobs.get(job.id).status.terminal
        run_until_ended(rt, [job.id])  # the next passes roll the job forward and train it to the end
    finally:
        rt.backend.close()

    # at adoption (if the job needed one), one instance trained the job at most
    assert len(seen.get("alive", [])) <= 1
    result = summary(rt, job.id)
    assert result["status"] == "succeeded" and result["steps"] == MAX_STEPS
    progress = read_progress(rt.s3, output)
    # no step lost beyond the last checkpoint: the instance kept trained on to the end without a
    # restart, or the last trainer resumed from a checkpoint at least as recent as the newest one at adoption
    kept_to_the_end = bool(seen.get("alive")) and progress.instance_id == seen["alive"][0]
    assert kept_to_the_end or seen.get("latest") is None or progress.resumed_from_step >= seen["latest"].step
    # nothing left running, and the ledger matches EC2: every workload closed, its instance gone
    assert _alive(rt, job.id) == []
    workloads = rt.ledger.workloads(job.id)
    assert all(not w.open for w in workloads) and all(w.instance_id for w in workloads)
    # every migration row finished (recorded, or rolled back / abandoned when the job resumed elsewhere)
    assert all(m.state.terminal and m.finished_at is not None for m in rt.ledger.migrations(job.id))
    # one instance at a time: each workload started once the one before it had ended
    ordered = sorted(workloads, key=lambda w: w.started_at)
    assert all(b.started_at >= a.ended_at for a, b in zip(ordered, ordered[1:]))
