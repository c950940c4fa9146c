"""`make demo`: one real job end to end on the embedded defaults — a moto server on 127.0.0.1 for
EC2 and S3, the embedded stores, a tiny model built locally, instances as local processes, and a
replayed market (60x: one wall second is one market minute) in which the job is interrupted once
and moved once to a cheaper zone."""

from __future__ import annotations

import json
from contextlib import contextmanager
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

DEMO_BUCKET = "spotshift-demo"


@dataclass(frozen=True)
class DemoOptions:
    speedup: float = 60.0  # market minutes per wall second
    max_steps: int = 300
    min_step_seconds: float = 0.2  # paces the trainer: the job lasts as long on a fast CPU as on a slow one
    home: Path | None = None  # where the demo keeps its stores and logs (default: a temp dir)


def _upload_dir(s3, local: Path, bucket: str, prefix: str) -> str:
    for path in sorted(local.rglob("*")):
        if path.is_file():
            s3.upload_file(str(path), bucket, prefix + path.relative_to(local).as_posix())
    return f"s3://{bucket}/{prefix}"


def run_demo(options: DemoOptions = DemoOptions(), out=sys.stdout) -> dict:
    """Run the demo job; returns its summary (the JSON the CLI prints last)."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from deployments.demo_market import DemoTimeline, demo_market
    from deployments.local_aws import apply_env, client, ensure_bucket, moto_server
    from flows.runtime import Runtime
    from deployments import api
    from spotshift.clock import VirtualClock

    from spotshift.models import ApprovalPolicy, JobCreate
    from training.tiny_model import build_tiny_model, write_demo_dataset

    home = Path(options.home or tempfile.mkdtemp(prefix="spotshift-demo-"))
    say = lambda *a: print(*a, file=out, flush=True)  # noqa: E731
    with prefect_api(say), moto_server() as endpoint:
        apply_env(endpoint)
        say(f"moto server (EC2 + S3 stand-in) on {endpoint}; demo files in {home}")
        s3 = client("s3", endpoint)
        ensure_bucket(endpoint, DEMO_BUCKET)
        dataset = write_demo_dataset(home / "data" / "demo.txt")
        model_dir = build_tiny_model(home / "tiny-model", dataset)
        model_uri = _upload_dir(s3, model_dir, DEMO_BUCKET, "models/tiny/")
        s3.upload_file(str(dataset), DEMO_BUCKET, "data/demo.txt")
        say(f"tiny model {model_uri}, dataset s3://{DEMO_BUCKET}/data/demo.txt")

        start = datetime.now(UTC).replace(microsecond=0)
        clock = VirtualClock(start=start, speedup=options.speedup)
        market = demo_market(start, DemoTimeline())
        rt = Runtime.local(endpoint, home, market=market, clock=clock, bucket=DEMO_BUCKET,
                           backend_options={"grace_s": 20.0}, poll_seconds=0.5, rescout_seconds=5.0,
                           min_step_seconds=options.min_step_seconds,
                           on_demand_prices={"p3.2xlarge": 3.06},
                           settings={"heartbeat_stall_seconds": 120 * options.speedup})
        backend = rt.backend
        request = JobCreate.model_validate(dict(
            name="demo", model=model_uri, dataset=f"s3://{DEMO_BUCKET}/data/demo.txt", max_steps=options.max_steps,
            batch_size=8, seq_len=32, checkpoint_every_steps=20, budget_usd=50, regions=["us-east-1", "us-east-2", "us-west-2"],
            instance_types=["p3.2xlarge"], deadline=clock() + timedelta(hours=12),
            approval=ApprovalPolicy(max_auto_plan_usd=50, min_auto_saving_usd=0.0, timeout_s=60),
            idempotency_key=f"demo-{start:%Y%m%dT%H%M%S}"), context={"now": clock()})
        t0 = time.monotonic()
        try:
            job_id = api.submit(request, run="inline", runtime=rt)
        finally:
            backend.close()
        summary = api.status(job_id, runtime=rt)
        summary["wall_seconds"] = round(time.monotonic() - t0, 1)
        summary["flow_runs"] = job_flow_runs(job_id)
        left = [i.instance_id for i in backend.list(job_id) if i.state not in ("terminated", "shutting-down")]
        if left:
            raise RuntimeError(f"instances left running: {left}")
    _print_summary(summary, say)  # after the servers stopped: the JSON object is the last line
    return summary


@contextmanager
def prefect_api(say):
    """The Prefect API the demo reports to: PREFECT_API_URL if set (a server whose UI you watch),
    else a temporary local server, started before the market clock and stopped before the summary."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if PREFECT_API_URL.value():
        say(f"Prefect API: {PREFECT_API_URL.value()}")
        yield
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    server.start(timeout=180)
    try:
        with temporary_settings({PREFECT_API_URL: server.api_url}):
            try:
                yield
            finally:
                _send_pending_logs_and_events()
    finally:
        server.stop()


def _send_pending_logs_and_events() -> None:
    """Deliver the queued run logs and events while the server still listens (else they are
    retried against a stopped server when the process exits)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()
    EventsWorker.drain_all(timeout=30)


def job_flow_runs(job_id: str) -> list[str]:
    """The names of the flow runs that acted on the job, oldest first (train-job, then each action)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(like_=job_id)),
                                     sort=FlowRunSort.START_TIME_ASC)
    return [r.name for r in runs]


def _print_summary(s: dict, say) -> None:
    say("")
    say(f"job {s['job_id']}: {s['status']} after {s['steps']} steps ({s['wall_seconds']} s wall)")
    for i, w in enumerate(s["workloads"], 1):
        say(f"  workload {i}: {w['zone']:<11} {w['market']:<9} ${w['usd_per_hour']:.3f}/h "
            f"{w['seconds']:>8.0f} s  ended: {w['end_reason']}")
    say(f"preemptions: {s['preemptions']}, voluntary migrations: {s['migrations']}")
    say(f"cost ${s['cost_usd']:.4f} vs ${s['on_demand_usd']:.4f} on demand (market time runs 60x)")
    say(f"final model: {s['final_model']}")
    say(f"flow runs of the job: {', '.join(s['flow_runs'])}")
    say("See the runs in the Prefect UI: `prefect server start`, then run the demo with "
        "PREFECT_API_URL=http://127.0.0.1:4200/api (train-job places the job; each fleet pass judges it and runs "
        "its actions as job-action runs: recover-, restart-, finalize-<job>; continuous-scout moves it: migrate-<job>).")
    keys = ("job_id", "status", "steps", "workloads", "preemptions", "migrations", "cost_usd", "on_demand_usd",
            "final_model")
    say(json.dumps({k: s[k] for k in keys} | {"workloads": [
        {k: w[k] for k in ("zone", "market", "usd_per_hour", "seconds")} for w in s["workloads"]]}))
