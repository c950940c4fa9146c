"""Benchmark: one `fleet` pass over N running jobs (`bench/scale.py --fleet 1000`), on a latency-bound
fake of EC2 and S3, beside the old design's per-job poll loop over the same fake.

    python bench/scale.py --fleet 1000 [--passes 5] [--latency-ms 20] [--regions 3] [--json OUT]

The fake (LatencyBoundAws, a stand-in for AWS, not AWS): one small object with describe_instances and
get_object that sleeps `latency` per call (20 ms: a cross-region API call's round trip) and answers
from memory (tag-key and state filters, MaxResults/NextToken pages, ETag/IfNoneMatch -> 304). The
stores are the embedded default (montydb on disk) with N RUNNING jobs, each with an open workload
on a tagged instance in one of `regions` regions, and a few orphan instances. The pass is the real
`fleet` flow (tasks/fleet.py, spotshift/fleet.py) run against a local `prefect server start`.

Passes, each timed (median of --passes): "changed": every trainer wrote a new heartbeat since the
last pass (the steady state: trainers write every few seconds, the pass runs every minute); "304":
none did (every read answers 304). Memory: RSS/PSS of this process (the fleet pass's process) after
the passes; the Prefect server's is printed apart (both designs need one).

Baseline, measured in the same run (a per-job poll loop over the same fake): what one train-job
process did per poll of its job before the fleet controller (tasks/monitor.py watch_instance: progress.json read in full, the job written,
DescribeInstances of its instance), for every job once; its calls and seconds per poll round, and
its calls per minute at SPOTSHIFT_MONITOR_POLL_SECONDS. The old design's memory: PSS of one
subprocess that imports flows.train_job plus torch and transformers (what the sizing's meta-device
model loaded into every train-job process) and runs that poll loop for one job, times N.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import types
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

REGIONS = ("us-east-1", "us-east-2", "us-west-2", "eu-west-1", "eu-central-1")
BUCKET = "bench-fleet"
ORPHANS = 3


class LatencyBoundAws:
    """A FAKE of EC2 and S3 for benchmarks (not AWS): every call sleeps `latency_s`, then answers from
    memory. describe_instances honours the tag-key and instance-state-name filters and pages of
    MaxResults (NextToken); get_object answers the body with its ETag, 304 to a matching
    IfNoneMatch, 404 NoSuchKey for a missing key. Counts calls per operation and region."""

    def __init__(self, latency_s: float):
        self.latency_s = latency_s
        self.instances: dict[str, list[dict]] = {}  # region -> raw instance records
        self.objects: dict[tuple[str, str], tuple[bytes, str]] = {}  # (bucket, key) -> (body, etag)
        self.calls: Counter = Counter()
        self._lock = threading.Lock()

    def client(self, region: str) -> "LatencyBoundAws._Region":
        return LatencyBoundAws._Region(self, region)

    def _count(self, what: str) -> None:
        with self._lock:
            self.calls[what] += 1

    def put(self, bucket: str, key: str, body: bytes) -> None:
        import hashlib

        self.objects[(bucket, key)] = (body, '"' + hashlib.md5(body).hexdigest() + '"')

    def get_object(self, Bucket: str, Key: str, IfNoneMatch: str | None = None, **_):
        from botocore.exceptions import ClientError

        time.sleep(self.latency_s)
        self._count("s3:GetObject")
        found = self.objects.get((Bucket, Key))
        if found is None:
            raise ClientError({"Error": {"Code": "NoSuchKey", "Message": "The specified key does not exist."}},
                              "GetObject")
        body, etag = found
        if IfNoneMatch is not None and IfNoneMatch == etag:
            self._count("s3:GetObject 304")
            raise ClientError({"Error": {"Code": "304", "Message": "Not Modified"}}, "GetObject")
        return {"Body": io.BytesIO(body), "ETag": etag}

    class _Region:
        """The fake's EC2 client of one region."""

        def __init__(self, fake: "LatencyBoundAws", region: str):
            self._fake, self.region = fake, region
            self.meta = types.SimpleNamespace(region_name=region)

        def get_paginator(self, operation: str):
            """describe_instances' paginator as boto3 drives it: NextToken, PageSize as MaxResults."""
            assert operation == "describe_instances", operation

            class Pages:
                @staticmethod
                def paginate(PaginationConfig=None, **kwargs):
                    size = (PaginationConfig or {}).get("PageSize", 1000)
                    token = None
                    while True:
                        page = self.describe_instances(MaxResults=size, NextToken=token, **kwargs)
                        yield page
                        token = page.get("NextToken")
                        if not token:
                            return
            return Pages()

        def describe_instances(self, Filters=(), MaxResults: int = 1000, NextToken: str | None = None,
                               InstanceIds=None, **_):
            fake = self._fake
            time.sleep(fake.latency_s)
            fake._count(f"ec2:DescribeInstances {self.region}")
            wanted = {f["Name"]: set(f["Values"]) for f in Filters}
            rows = [i for i in fake.instances.get(self.region, [])
                    if (InstanceIds is None or i["InstanceId"] in InstanceIds)
                    and all(k in {t["Key"] for t in i["Tags"]} for k in wanted.get("tag-key", ()))
                    and i["State"]["Name"] in wanted.get("instance-state-name", {i["State"]["Name"]})]
            start = int(NextToken or 0)
            page = rows[start:start + MaxResults]
            answer = {"Reservations": [{"Instances": page}]}
            if start + MaxResults < len(rows):
                answer["NextToken"] = str(start + MaxResults)
            return answer


class FakeBackend:
    """The fleet's view of a compute backend (regions, ec2_client) over the fake."""

    def __init__(self, fake: LatencyBoundAws, regions: list[str]):
        self._fake, self.regions = fake, regions

    def ec2_client(self, region: str):
        return self._fake.client(region)


def seed(rt, fake: LatencyBoundAws, n: int, regions: list[str], now: datetime) -> None:
    """n RUNNING jobs with open workloads on tagged instances of the fake. The documents are inserted
    as the stores would hold them after submit -> planning -> provisioning -> running, in one
    insert_many per collection: montydb scans the collection on every state-machine transition, so
    walking 1,000 jobs through it would take about ten minutes before the benchmark starts."""
    from spotshift.models import Job, JobCreate, JobEvent, JobStatus, Market, Workload
    from spotshift.stores import open_embedded_database
    from spotshift.stores.jobs import _dump
    from spotshift.stores.ledger import workload_row

    jobs, workloads = [], []
    for i in range(n):
        request = JobCreate.model_validate(dict(
            name=f"fleet-{i}", model="gpt2", dataset="s3://bench-data/corpus.txt", max_steps=100_000,
            budget_usd=500, deadline=now + timedelta(hours=48), regions=regions, instance_types=["g5.xlarge"],
            idempotency_key=f"fleet-{i}"), context={"now": now})
        region = regions[i % len(regions)]
        job_id = f"job-fleet{i:06d}"
        w = Workload(job_id=job_id, instance_id=f"i-{i:017x}", instance_type="g5.xlarge", region=region,
                     zone=f"{region}a", market=Market.SPOT, usd_per_hour=0.5, started_at=now - timedelta(hours=1))
        events = [JobEvent(at=now, kind="created")] + [JobEvent(at=now, kind="status", data={"to": s.value}) for s in
                                                       (JobStatus.PLANNING, JobStatus.PROVISIONING, JobStatus.RUNNING)]
        jobs.append(_dump(Job(id=job_id, request=request, status=JobStatus.RUNNING, created_at=now, updated_at=now,
                              idempotency_key=request.idempotency_key, current_workload_id=w.id, events=events)))
        workloads.append({"_id": w.id, **workload_row(w)})
        fake.instances.setdefault(region, []).append(_instance(w.instance_id, region, job_id, w.id))
    database = open_embedded_database(rt.settings.store_dir, rt.settings.mongodb_database)
    with database.write_lock:
        database.database["jobs"].insert_many(jobs)
        database.database["workloads"].insert_many(workloads)
    for k in range(ORPHANS):
        region = regions[k % len(regions)]
        fake.instances.setdefault(region, []).append(_instance(f"i-orphan{k:09x}", region, f"job-gone-{k}",
                                                               f"wl-gone-{k}"))


def _instance(instance_id: str, region: str, job_id: str, workload_id: str) -> dict:
    from spotshift.aws.ec2 import JOB_TAG, WORKLOAD_TAG

    return {"InstanceId": instance_id, "InstanceType": "g5.xlarge", "State": {"Name": "running"},
            "Placement": {"AvailabilityZone": f"{region}a"}, "InstanceLifecycle": "spot",
            "Tags": [{"Key": JOB_TAG, "Value": job_id}, {"Key": WORKLOAD_TAG, "Value": workload_id}]}


def write_heartbeats(rt, fake: LatencyBoundAws, jobs: list, step: int, at: datetime) -> None:
    """Every job's trainer writes progress.json (into the fake's memory, no latency: the trainers' writes)."""
    from training.contract import PROGRESS, Progress, TrainerState

    for job, w in jobs:
        body = Progress(state=TrainerState.training, step=step, max_steps=100_000, instance_id=w.instance_id,
                        updated_at=at).model_dump_json().encode()
        fake.put(BUCKET, job.paths(BUCKET).key(PROGRESS), body)


def memory_mib(pid: int | str = "self") -> tuple[float, float]:
    """(RSS, PSS) MiB of a process from /proc/<pid>/smaps_rollup."""
    values = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("Rss", "Pss"):
            values[key] = int(rest.split()[0]) / 1024
    return values["Rss"], values["Pss"]


def per_job_round(rt, fake: LatencyBoundAws, jobs: list, now: datetime) -> dict:
    """Baseline: one poll of the old per-job monitor for every job (the retired watch_instance's reads and
    write: progress.json in full, the job's update, DescribeInstances of its instance)."""
    from spotshift.models import JobUpdate
    from training.contract import read_progress

    before = Counter(fake.calls)
    t = time.perf_counter()
    for job, w in jobs:
        progress = read_progress(fake, job.paths(BUCKET).output)
        rt.jobs.update(job.id, JobUpdate(step=progress.step if progress else 0), now=now)
        fake.client(w.region).describe_instances(InstanceIds=[w.instance_id])
    seconds = time.perf_counter() - t
    calls = fake.calls - before
    return {"seconds": seconds, "ec2_calls": sum(v for k, v in calls.items() if k.startswith("ec2:")),
            "s3_calls": calls["s3:GetObject"]}


OLD_PROCESS = """
import sys, time
sys.path.insert(0, {repo!r})
import flows.train_job, tasks.monitor  # the train-job process's modules
import torch, transformers  # loaded in every train-job process by the sizing's meta-device model
from bench.fleet_scale import LatencyBoundAws
from training.contract import read_progress
fake = LatencyBoundAws({latency!r})
fake.put("b", "jobs/j/progress.json", b'{{"state":"training","step":1,"max_steps":10,"updated_at":"2026-12-06T00:00:00Z"}}')
for _ in range(20):  # the per-job poll loop (a fast poll, to be measured soon)
    read_progress(fake, "s3://b/jobs/j/")
    fake.client("us-east-1").describe_instances(InstanceIds=["i-1"])
print("ready", flush=True)
sys.stdin.readline()
"""


def old_process_memory(latency_s: float) -> tuple[float, float, float]:
    """(RSS, PSS MiB, import+loop seconds) of one old-design train-job process (see OLD_PROCESS)."""
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", OLD_PROCESS.format(repo=str(REPO), latency=latency_s)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        line = proc.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"the old-design process did not start: {line!r}")
        seconds = time.perf_counter() - t
        rss, pss = memory_mib(proc.pid)
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
    return rss, pss, seconds


def run(args: argparse.Namespace) -> dict:
    from bench.scale_inflight import prefect_server
    from blocks.stores import open_fleet_marks, open_job_store, open_ledger
    from flows.runtime import Runtime
    from spotshift.settings import Settings

    regions = list(REGIONS[:args.regions])
    fake = LatencyBoundAws(args.latency_ms / 1000)
    now = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    clock = {"now": now}
    with tempfile.TemporaryDirectory() as home_dir:
        home = Path(home_dir)
        settings = Settings(home=home / "spotshift", bucket=BUCKET, regions=regions)
        rt = Runtime(settings=settings, jobs=open_job_store(settings), ledger=open_ledger(settings), s3=fake,
                     market=None, backend=FakeBackend(fake, regions), clock=lambda: clock["now"])
        t = time.perf_counter()
        seed(rt, fake, args.fleet, regions, now)
        jobs = running_pairs(rt)
        seed_s = time.perf_counter() - t
        marks = open_fleet_marks(settings)
        with prefect_server(home) as (server, api):
            os.environ["PREFECT_API_URL"] = api
            from flows.fleet import fleet

            passes: dict[str, list[dict]] = {"changed": [], "304": []}
            step = 1000
            for i in range(2 * args.passes + 1):
                kind = "changed" if i % 2 == 0 else "304"
                clock["now"] += timedelta(seconds=30)
                if kind == "changed":
                    step += 1000
                    write_heartbeats(rt, fake, jobs, step, clock["now"])
                before = Counter(fake.calls)
                t = time.perf_counter()
                rows = fleet(runtime=rt, marks=marks)
                seconds = time.perf_counter() - t
                calls = fake.calls - before
                if i == 0:
                    continue  # the first pass: no marks yet (every read in full, like a "changed" pass)
                passes[kind].append({
                    "seconds": seconds,
                    "ec2_calls": sum(v for k, v in calls.items() if k.startswith("ec2:")),
                    "s3_calls": calls["s3:GetObject"], "s3_304": calls["s3:GetObject 304"],
                    "healthy": sum(1 for r in rows if r["finding"] == "healthy"),
                    "actions": sum(1 for r in rows if r["action"] != "none")})
            rss, pss = memory_mib()
            server_rss, server_pss = memory_mib(server.pid)
        measured = rt.jobs.get(jobs[0][0].id).measured
        baseline = per_job_round(rt, fake, jobs, clock["now"])
    old_rss, old_pss, old_start_s = old_process_memory(args.latency_ms / 1000)
    instances = sum(len(v) for v in fake.instances.values())
    bound = sum(math.ceil(len(fake.instances.get(r, [])) / 1000) for r in regions)
    summary = {kind: {k: statistics.median(p[k] for p in runs) for k in runs[0]} for kind, runs in passes.items()}
    return {"jobs": args.fleet, "regions": len(regions), "instances": instances, "latency_ms": args.latency_ms,
            "cores": len(os.sched_getaffinity(0)), "seed_s": seed_s, "passes": passes, "median": summary,
            "ec2_bound": bound, "rate_steps_per_hour": measured.steps_per_hour,
            "fleet_rss_mib": rss, "fleet_pss_mib": pss, "server_rss_mib": server_rss, "server_pss_mib": server_pss,
            "baseline": baseline, "old_process_rss_mib": old_rss, "old_process_pss_mib": old_pss,
            "old_process_start_s": old_start_s, "poll_seconds": Settings().monitor_poll_seconds}


def running_pairs(rt) -> list:
    """(job, open workload) of every seeded job."""
    by_id = {w.id: w for w in rt.ledger.open_workloads()}
    return [(j, by_id[j.current_workload_id]) for j in rt.jobs.list() if j.current_workload_id in by_id]


def report(r: dict) -> None:
    n, per_minute = r["jobs"], 60 / r["poll_seconds"]
    b = r["baseline"]
    print(f"{n} running jobs in {r['regions']} regions, {r['instances']} tagged instances ({ORPHANS} orphans); fake "
          f"EC2/S3 at {r['latency_ms']:.0f} ms per call (LatencyBoundAws); {r['cores']} cores; seeded in "
          f"{r['seed_s']:.1f} s (not timed)")
    for kind, label in (("changed", "every heartbeat new"), ("304", "no heartbeat new")):
        m, runs = r["median"][kind], r["passes"][kind]
        print(f"fleet pass, {label}: median {m['seconds']:.2f} s over {len(runs)} passes "
              f"({', '.join(format(p['seconds'], '.2f') for p in runs)}); EC2 calls {m['ec2_calls']:.0f} "
              f"(bound: regions x ceil(instances/1000) = {r['ec2_bound']}); S3 GETs {m['s3_calls']:.0f}, "
              f"304s {m['s3_304']:.0f}; healthy {m['healthy']:.0f}, actions {m['actions']:.0f}")
    print(f"fleet pass process: RSS {r['fleet_rss_mib']:.0f} MiB, PSS {r['fleet_pss_mib']:.0f} MiB for all {n} jobs "
          f"(Prefect server apart: RSS {r['server_rss_mib']:.0f} MiB, PSS {r['server_pss_mib']:.0f} MiB); "
          f"rate measured {r['rate_steps_per_hour']:.0f} steps/h")
    print(f"baseline, per-job poll loop over the same fake (one poll of every job, serial): {b['seconds']:.2f} s, "
          f"EC2 calls {b['ec2_calls']}, S3 GETs {b['s3_calls']} per round; at one poll per {r['poll_seconds']:.0f} s: "
          f"{b['ec2_calls'] * per_minute:.0f} EC2 calls/min vs the fleet's "
          f"{r['median']['changed']['ec2_calls']:.0f} per pass (one pass a minute)")
    old_total = r["old_process_pss_mib"] * n / 1024
    print(f"old design, one train-job process (flows.train_job + torch + transformers, per-job poll loop): RSS "
          f"{r['old_process_rss_mib']:.0f} MiB, PSS {r['old_process_pss_mib']:.0f} MiB -> {old_total:.0f} GiB "
          f"for {n} jobs (one process each)")
    worst = max(r["median"].values(), key=lambda m: m["seconds"])
    print(f"targets: pass < 30 s -> {'met' if worst['seconds'] < 30 else 'NOT met'}; EC2 calls <= "
          f"{r['ec2_bound']} -> {'met' if worst['ec2_calls'] <= r['ec2_bound'] else 'NOT met'}; memory for {n} jobs "
          f"< 1 GiB -> {'met' if r['fleet_pss_mib'] < 1024 else 'NOT met'} ({r['fleet_pss_mib']:.0f} MiB PSS)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fleet", type=int, default=1000, help="running jobs (default 1000)")
    p.add_argument("--passes", type=int, default=3, help="timed passes of each kind (default 3)")
    p.add_argument("--latency-ms", type=float, default=20.0, help="the fake's latency per call (default 20)")
    p.add_argument("--regions", type=int, default=3, choices=range(1, len(REGIONS) + 1),
                   help=f"regions the jobs spread over (1-{len(REGIONS)}, default 3)")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    if args.fleet < 1:
        p.error(f"--fleet must be at least 1, got {args.fleet}")
    result = run(args)
    report(result)
    if args.json:
        args.json.write_text(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
