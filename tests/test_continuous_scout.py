"""continuous-scout's decision part: one snapshot for all running jobs, each job's own view of it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from deployments.demo_market import DemoTimeline, demo_market
from flows.continuous_scout import decide_all, for_job, running_jobs, union_query
from flows.runtime import Runtime
from spotshift.market.query import OfferQuery
from spotshift.market.replay import ReplayMarket
from spotshift.models import JobCreate, JobMeasurements, JobStatus, JobUpdate, Market, Workload
from spotshift.policy.state import Move, Stay
from spotshift.settings import Settings
from blocks.stores import open_job_store, open_ledger

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def test_union_query_covers_every_job_and_each_job_sees_only_its_offers():
    a = OfferQuery(regions=("us-east-1",), instance_types=("p3.2xlarge",), markets=(Market.SPOT,))
    b = OfferQuery(regions=("us-west-2",), gpus=("A10G",), min_total_gpu_memory_gib=20)
    u = union_query([a, b])
    assert u.regions == ("us-east-1", "us-west-2")
    assert u.instance_types is None and u.gpus is None  # b accepts any type with an A10G
    assert set(u.markets) == {Market.SPOT, Market.ON_DEMAND} and u.min_total_gpu_memory_gib == 0
    market = demo_market(T0)
    snap = market.snapshot(u, T0)
    mine = for_job(snap, a)
    assert mine.offers and all(o.region == "us-east-1" and o.market is Market.SPOT for o in mine.offers)
    assert for_job(snap, b).offers == []  # the replay only has V100s


@pytest.fixture
def rt(tmp_path, moto_endpoint):
    from deployments.local_aws import client, ensure_bucket

    settings = Settings(home=tmp_path, bucket="scout-test", aws_endpoint_url=moto_endpoint)
    ensure_bucket(moto_endpoint, settings.bucket)
    market = demo_market(T0, DemoTimeline(lost_minute=60, cheap_minute=30))
    return Runtime(settings=settings, jobs=open_job_store(settings), ledger=open_ledger(settings),
                   s3=client("s3", moto_endpoint), market=market, backend=None, clock=lambda: T0)


def _running_job(rt: Runtime, zone: str, price: float, step: int, key: str) -> str:
    request = JobCreate.model_validate(dict(
        model="gpt2", dataset="s3://scout-test/data.txt", max_steps=10_000, budget_usd=500,
        deadline=T0 + timedelta(hours=40), regions=["us-east-1", "us-east-2", "us-west-2"],
        instance_types=["p3.2xlarge"], idempotency_key=key), context={"now": T0})
    job = rt.jobs.create(request, now=T0)
    w = Workload(job_id=job.id, instance_id=f"i-{key}", instance_type="p3.2xlarge", region=zone[:-1], zone=zone,
                 market=Market.SPOT, usd_per_hour=price, started_at=T0 - timedelta(hours=1))
    rt.ledger.upsert_workload(w)
    for status in (JobStatus.PLANNING, JobStatus.PROVISIONING):
        rt.jobs.transition(job.id, status, now=T0)
    rt.jobs.transition(job.id, JobStatus.RUNNING, now=T0, update=JobUpdate(current_workload_id=w.id, total_work=30.0))
    # what the train-job run watching it measured and stored: 1,000 steps per hour on a p3.2xlarge
    rt.jobs.update(job.id, JobUpdate(step=step, measured=JobMeasurements(
        steps_per_hour=1_000, rate_instance_type="p3.2xlarge", training_workload_id=w.id)), now=T0)
    return job.id


def test_a_job_on_dear_capacity_moves_and_one_on_the_cheapest_stays(rt):
    now = T0 + timedelta(minutes=45)  # us-west-2a is the cheapest zone since minute 30
    dear = _running_job(rt, "us-east-2a", 1.30, step=1_000, key="dear")
    cheap = _running_job(rt, "us-west-2a", 0.55, step=1_000, key="cheap")
    jobs = running_jobs.fn(rt, now)
    assert {j.job.id for j in jobs} == {dear, cheap}
    by_id = {j.job.id: j for j in jobs}
    assert by_id[dear].state.remaining_work == pytest.approx(9_000 / 1_000)  # 1,000 steps per hour measured
    snapshot = rt.market.snapshot(union_query([j.query for j in jobs]), now)
    decisions = {j.job.id: d for j, d in decide_all.fn(jobs, snapshot, now, "spotshift")}
    assert isinstance(decisions[dear], Move) and decisions[dear].target.zone == "us-west-2a"
    assert decisions[dear].expected_saving_usd > 0
    assert isinstance(decisions[cheap], Stay)


def test_continuous_scout_and_train_job_build_the_same_state(rt):
    """One builder: the state the scout decides over is the one the job's own run decides over."""
    from flows.steps import JobRun, job_state

    now = T0 + timedelta(minutes=45)
    job_id = _running_job(rt, "us-east-2a", 1.30, step=2_500, key="same")
    [scouted] = running_jobs.fn(rt, now)
    job = rt.jobs.get(job_id)
    run = JobRun(job=job, query=scouted.query, paths=rt.paths(job))
    own = job_state(rt, run, now)
    assert own == scouted.state
    assert own.remaining_work == pytest.approx(7_500 / 1_000) and own.ready_at is None  # it trains
    assert own.current.zone == "us-east-2a" and own.checkpoint_region == "us-east-1"  # the bucket's region
