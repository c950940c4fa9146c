"""A deployment's flow for tests/test_approval_suspended.py: train-job's body on the test's market and
clock (a replayed demo market, which a runtime built from settings cannot have), run by a Prefect
runner in its own process as a worker would run the train-job deployment."""

from __future__ import annotations

import time
from datetime import datetime

from prefect import flow

from deployments.demo_market import DemoTimeline, demo_market
from flows.runtime import Runtime
from flows.train_job import train_job
from spotshift.clock import VirtualClock


@flow(name="train-job-on-demo-market", flow_run_name="train-{job_id}")
def train_on_demo_market(job_id: str, endpoint: str, home: str, bucket: str, start: str, wall0: float,
                         speedup: float) -> dict:
    begun = datetime.fromisoformat(start)
    clock = VirtualClock(start=begun, speedup=speedup, _wall0=wall0, _wall=time.time)
    rt = Runtime.local(endpoint, home, market=demo_market(begun, DemoTimeline(lost_minute=10_000, cheap_minute=10_000)),
                       clock=clock, bucket=bucket, poll_seconds=0.3, min_step_seconds=0.15,
                       on_demand_prices={"p3.2xlarge": 3.06}, settings={"data_prefixes": ["s3://flow-inputs/"]})
    try:
        return train_job.fn(job_id, runtime=rt)  # the body in this deployment run: its question suspends it
    finally:
        rt.backend.close()
