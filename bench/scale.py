"""Benchmark: continuous-scout's decision part for N running jobs on a ReplayMarket.

    python bench/scale.py [--jobs 1000] [--traces DIR] [--json OUT]
    python bench/scale.py --in-flight 100 [--modes alone,processes,threads] [--window 30] [--json OUT]
    python bench/scale.py --fleet 1000 [--passes 3] [--latency-ms 20] [--regions 3] [--json OUT]

--in-flight N runs N jobs at once through the real flows instead and measures what they cost the
orchestrating processes (`python bench/scale_inflight.py --help` lists its options).
--fleet N (or --in-flight N --fleet) times one `fleet` pass over N running jobs on a latency-bound
fake of EC2 and S3, beside the old per-job poll loop (`python bench/fleet_scale.py --help`).

Stores on the embedded default (with 14 days of recorded zone observations for the live outlook),
progress.json of every job in a moto server's S3, the real V100 traces (../shared/traces/
skynomad-artifact, 9 zones). Measures what one continuous-scout run does before any migration:
build each running job's state (with its outlook) from the stores, take ONE market snapshot and
record it, let the policy decide stay/move for each job. Baseline in the same run: the same decisions with one
snapshot per job (what a per-job scout would do).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

HISTORY = timedelta(days=14)  # the live outlook's lookback (spotshift/stores/market_history.py LOOKBACK)
SCOUT_EVERY = timedelta(seconds=600)  # continuous-scout's schedule in prefect.yaml
DEFAULT_TRACES = REPO.parent / "shared/traces/skynomad-artifact/data/real/availability/2023-02-15/processed"


def seed(rt, n: int, now: datetime, zones: list[str]) -> None:
    """n running jobs, each with an open spot workload (at its zone's trace price) and a heartbeat in S3."""
    from spotshift.models import JobCreate, JobStatus, JobUpdate, Market, Workload
    from training.contract import Progress, TrainerState, write_progress

    for i in range(n):
        request = JobCreate.model_validate(dict(
            name=f"bench-{i}", model="gpt2", dataset="s3://bench-data/corpus.txt", max_steps=10_000,
            budget_usd=500, deadline=now + timedelta(hours=48 + i % 24), regions=["us-east-1", "us-east-2", "us-west-2"],
            instance_types=["p3.2xlarge"], idempotency_key=f"bench-{i}"), context={"now": now})
        job = rt.jobs.create(request, now=now)
        zone = zones[i % len(zones)]
        w = Workload(job_id=job.id, instance_id=f"i-{i:017x}", instance_type="p3.2xlarge", region=zone[:-1],
                     zone=zone, market=Market.SPOT, usd_per_hour=rt.market.spot_price(zone, now),
                     started_at=now - timedelta(hours=2))
        rt.ledger.upsert_workload(w)
        for status in (JobStatus.PLANNING, JobStatus.PROVISIONING):
            rt.jobs.transition(job.id, status, now=now)
        rt.jobs.transition(job.id, JobStatus.RUNNING, now=now,
                           update=JobUpdate(current_workload_id=w.id, total_work=24.0, gpu_memory_gib=8.0))
        write_progress(rt.s3, job.paths(rt.settings.bucket).output, Progress(
            state=TrainerState.training, step=2_000 + i, max_steps=10_000, instance_id=w.instance_id,
            updated_at=now, started_at=now - timedelta(hours=2), resumed_from_step=0))


def seed_history(history, traces, now: datetime) -> int:
    """The zone observations continuous-scout would have recorded over the outlook's lookback
    (one scout every SCOUT_EVERY, as prefect.yaml schedules it): spot offered at its price, or not."""
    from spotshift.market.replay import ReplayMarket
    from spotshift.policy.outlook import ZoneObservation

    market = ReplayMarket(traces, start=traces.start)
    at, observations = now - HISTORY, []
    while at < now:
        observations += [ZoneObservation(zone=z, at=at, available=True, price=market.spot_price(z, at))
                         if market.available(z, at) else ZoneObservation(zone=z, at=at, available=False)
                         for z in traces.zones]
        at += SCOUT_EVERY
    return history.record(observations, source="scout")


def one_scout_run(rt, now: datetime) -> dict:
    """Time what one continuous-scout run does before any migration, and the per-job-snapshot baseline."""
    from flows.continuous_scout import decide_all, for_job, running_jobs, union_query
    from spotshift.policy import decide
    from tasks.measurements import record_market
    from tasks.scout import scout

    t = time.perf_counter()
    jobs = running_jobs.fn(rt, now)  # each job's state with its outlook, from the stores
    read_s = time.perf_counter() - t
    t = time.perf_counter()
    query = union_query([j.query for j in jobs])
    snapshot = scout.fn(rt.market, query, now)
    record_market.fn(rt.history, snapshot, query.regions, now)
    decisions = decide_all.fn(jobs, snapshot, now, rt.policy)
    decide_s = time.perf_counter() - t
    t = time.perf_counter()  # baseline: one snapshot per job
    for j in jobs:
        decide(j.state, for_job(scout.fn(rt.market, j.query, now), j.query), now, policy=rt.policy)
    baseline_s = time.perf_counter() - t
    wall_s = read_s + decide_s
    return {"jobs": len(jobs), "wall_s": round(wall_s, 3), "per_job_ms": round(1000 * wall_s / max(1, len(jobs)), 3),
            "read_s": round(read_s, 3), "decide_s": round(decide_s, 3), "baseline_s": round(baseline_s, 3),
            "moves": sum(1 for _, d in decisions if type(d).__name__ == "Move")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=1000)
    p.add_argument("--traces", type=Path, default=DEFAULT_TRACES)
    p.add_argument("--json", type=Path)
    p.add_argument("--in-flight", type=int, help="N jobs running at once through the real flows (bench/scale_inflight.py)")
    p.add_argument("--fleet", type=int, nargs="?", const=0, metavar="N",
                   help="one fleet pass over N running jobs on a latency-bound fake of EC2 and S3 (bench/fleet_scale.py); "
                   "`--in-flight N --fleet` takes N from --in-flight")
    args, rest = p.parse_known_args(argv)
    if args.fleet is not None:
        from bench.fleet_scale import main as fleet_pass

        jobs = args.fleet or args.in_flight
        if not jobs:
            p.error("--fleet needs a number of jobs: --fleet 1000, or --in-flight 1000 --fleet")
        return fleet_pass(["--fleet", str(jobs), *rest, *(["--json", str(args.json)] if args.json else [])])
    if args.in_flight is not None:
        from bench.scale_inflight import main as in_flight

        return in_flight(["--in-flight", str(args.in_flight), *rest, *(["--json", str(args.json)] if args.json else [])])
    if rest:
        p.error(f"unrecognized arguments: {' '.join(rest)}")

    from blocks.stores import open_job_store, open_ledger, open_market_history
    from deployments.local_aws import apply_env, client, ensure_bucket, moto_server
    from flows.runtime import Runtime
    from spotshift.market.replay import ReplayMarket
    from spotshift.market.traces import load_traces
    from spotshift.settings import Settings

    traces = load_traces(args.traces)
    now = traces.start + HISTORY + timedelta(days=1)
    market = ReplayMarket(traces, start=traces.start)
    zones = [z for z in traces.zones if market.available(z, now)]
    with moto_server() as endpoint, tempfile.TemporaryDirectory() as home:
        apply_env(endpoint)
        settings = Settings(home=Path(home), bucket="spotshift-bench", aws_endpoint_url=endpoint)
        ensure_bucket(endpoint, settings.bucket)
        rt = Runtime(settings=settings, jobs=open_job_store(settings), ledger=open_ledger(settings),
                     s3=client("s3", endpoint), market=market, backend=None, clock=lambda: now,
                     history=open_market_history(settings))
        t = time.perf_counter()
        seed(rt, args.jobs, now, zones)  # jobs run where spot capacity is up now
        observations = seed_history(rt.history, traces, now)
        seed_s = time.perf_counter() - t
        result = {**one_scout_run(rt, now), "history_observations": observations}

    print(f"seeded {args.jobs} running jobs and {observations} zone observations ({HISTORY.days} days, one scout "
          f"every {SCOUT_EVERY.total_seconds():.0f} s) in {seed_s:.1f} s (not timed below)")
    print(f"continuous-scout decisions for {result['jobs']} jobs: {result['wall_s']:.2f} s "
          f"({result['per_job_ms']:.2f} ms/job; running jobs' states with their outlooks {result['read_s']:.2f} s, "
          f"one snapshot + record + decide {result['decide_s']:.3f} s); {result['moves']} moves")
    print(f"baseline, one snapshot per job (decide part only): {result['baseline_s']:.3f} s -> "
          f"one shared snapshot is {result['baseline_s'] / max(result['decide_s'], 1e-9):.1f}x faster")
    print(f"target: under 30 s -> {'met' if result['wall_s'] < 30 else 'NOT met'}")
    if args.json:
        args.json.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
